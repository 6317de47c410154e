"""A pytest plugin with a ready emulator fixture.

Enable it in your ``conftest.py``::

    pytest_plugins = ["runcomfy_async.testing.pytest_plugin"]

Then ask for ``runcomfy_emulator`` in a test. To configure it, override
``runcomfy_emulator_options`` (in a conftest, a module or a class), or
parametrize it directly::

    @pytest.mark.parametrize("runcomfy_emulator_options", [{"slots": 1}])
    async def test_queue(runcomfy_emulator): ...

The plugin needs pytest-asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from ._app import FakeRunComfy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["runcomfy_emulator", "runcomfy_emulator_options"]

DEFAULT_TIME_SCALE = 0.001
"""The fixture's ``time_scale``: a nominal minute takes 60 ms."""


@pytest.fixture
def runcomfy_emulator_options() -> dict[str, Any]:
    """Keyword options for the ``runcomfy_emulator`` fixture; override to change."""
    return {}


@pytest_asyncio.fixture
async def runcomfy_emulator(
    runcomfy_emulator_options: dict[str, Any],
) -> AsyncIterator[FakeRunComfy]:
    """Yield a started :class:`FakeRunComfy` (``time_scale=0.001`` by default)."""
    options = {"time_scale": DEFAULT_TIME_SCALE, **runcomfy_emulator_options}
    async with FakeRunComfy(**options) as fake:
        yield fake
