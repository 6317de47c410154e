"""What an installed runcomfy-async looks like from outside."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import pathlib

import pytest

import runcomfy_async

PROJECT = pathlib.Path(__file__).parent.parent


def test_version_comes_from_metadata():
    """``__version__`` is the installed distribution's version."""
    assert importlib.metadata.version("runcomfy-async") == runcomfy_async.__version__


def test_version_is_not_in_all():
    """``__version__`` is lazy: not in ``__all__``, read on access."""
    assert "__version__" not in runcomfy_async.__all__


def test_unknown_attribute():
    """Other missing names still raise AttributeError."""
    with pytest.raises(AttributeError, match="__yolo__"):
        runcomfy_async.__yolo__  # noqa: B018


def test_user_agent_names_the_version():
    """The User-Agent sent to the API carries the same version."""
    from runcomfy_async._transport import user_agent  # noqa: PLC0415

    assert user_agent().startswith(f"runcomfy-async/{runcomfy_async.__version__} ")


def test_py_typed_ships():
    """``py.typed`` is in the package, so type checkers use our annotations."""
    marker = importlib.resources.files("runcomfy_async") / "py.typed"

    assert marker.is_file()


def test_wheel_includes_the_package_directory():
    """The wheel target ships the whole package directory (py.typed and testing/ with it)."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))

    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]

    assert ["runcomfy_async"] == wheel["packages"]
    assert "exclude" not in wheel
    assert (PROJECT / "runcomfy_async" / "py.typed").is_file()


def test_testing_package_is_importable():
    """The emulator ships with the library, for users' own tests."""
    testing = importlib.import_module("runcomfy_async.testing")

    assert "FakeRunComfy" in testing.__all__


def test_console_script_resolves():
    """The ``runcomfy-async`` console script points at a real function."""
    (script,) = [
        entry
        for entry in importlib.metadata.entry_points(group="console_scripts")
        if entry.name == "runcomfy-async"
    ]

    assert callable(script.load())
