"""An emulated RunComfy Model API, for tests and benchmarks.

:class:`FakeRunComfy` is a faithful aiohttp server for the four queue
endpoints, with queues, run times, failures and every documented drift and
fault as a switch. It runs in-process (``async with FakeRunComfy() as fake``),
in a subprocess (:class:`EmulatorProcess`, ``python -m runcomfy_async.testing``)
or as a pytest fixture (``runcomfy_async.testing.pytest_plugin``).
"""

from __future__ import annotations

from ._app import FakeRunComfy, JobView, RecordedRequest, submit_key
from ._config import (
    DEFAULT_MODELS,
    EmulatorConfig,
    EmulatorOptions,
    Faults,
    Fixed,
    JobPlan,
    LogNormal,
    ManualClock,
    Uniform,
)
from ._process import EmulatorProcess
from ._samples import sample_image_data_uri, sample_jpeg, sample_png

__all__ = [
    "DEFAULT_MODELS",
    "EmulatorConfig",
    "EmulatorOptions",
    "EmulatorProcess",
    "FakeRunComfy",
    "Faults",
    "Fixed",
    "JobPlan",
    "JobView",
    "LogNormal",
    "ManualClock",
    "RecordedRequest",
    "Uniform",
    "sample_image_data_uri",
    "sample_jpeg",
    "sample_png",
    "submit_key",
]
