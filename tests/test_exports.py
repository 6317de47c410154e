"""The public API is exactly ``__all__``: sorted, importable and documented."""

from __future__ import annotations

import ast
import inspect
import itertools
import pathlib

import pytest

import runcomfy_async

PACKAGE_DIR = pathlib.Path(runcomfy_async.__file__).parent
NOT_EXPORTED = {"annotations", "Any", "TYPE_CHECKING"}
"""Names the package module holds for itself (``from __future__``, typing)."""


def isort_key(name):
    # Ruff's RUF022 order: CONSTANTS, then Classes, then functions.
    if name.isupper() and len(name) > 1:
        group = 0
    elif name[0].isupper():
        group = 1
    else:
        group = 2
    return group, name


def test_all_is_sorted():
    """``__all__`` is sorted (constants, classes, functions), with no duplicates."""
    assert sorted(runcomfy_async.__all__, key=isort_key) == runcomfy_async.__all__
    assert len(set(runcomfy_async.__all__)) == len(runcomfy_async.__all__)


def test_all_public_members_are_exported():
    """Every public name of the package is in ``__all__``, and nothing else is."""
    public = {
        name
        for name, value in vars(runcomfy_async).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }

    assert set(runcomfy_async.__all__) == public - NOT_EXPORTED


def test_star_import_gives_all():
    """``from runcomfy_async import *`` binds exactly ``__all__``."""
    namespace: dict[str, object] = {}

    exec("from runcomfy_async import *", namespace)  # noqa: S102 - a fixed statement

    assert set(runcomfy_async.__all__) == set(namespace) - {"__builtins__"}


@pytest.mark.parametrize("name", runcomfy_async.__all__)
def test_exported_name_is_importable(name):
    """Each exported name can be imported by name."""
    namespace: dict[str, object] = {}

    exec(f"from runcomfy_async import {name}", namespace)  # noqa: S102 - names from __all__

    assert getattr(runcomfy_async, name) is namespace[name]


def _attribute_docstrings():
    """Names given a docstring right after their assignment, in any private module."""
    documented = set()
    for path in PACKAGE_DIR.glob("_*.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, after in itertools.pairwise(body):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target.id]
            elif isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            else:
                continue
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
                and after.value.value.strip()
            ):
                documented.update(targets)
    return documented


ATTRIBUTE_DOCSTRINGS = _attribute_docstrings()


@pytest.mark.parametrize("name", runcomfy_async.__all__)
def test_exported_name_is_documented(name):
    """Each exported class and function has its own docstring; each value an attribute one."""
    value = getattr(runcomfy_async, name)

    if inspect.isclass(value):
        assert (vars(value).get("__doc__") or "").strip(), f"{name} has no docstring"
    elif inspect.isfunction(value):
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    else:
        assert name in ATTRIBUTE_DOCSTRINGS, f"{name} has no attribute docstring"


def _public_members(cls):
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        function = value.fget if isinstance(value, property) else value
        if isinstance(function, (classmethod, staticmethod)):
            function = function.__func__
        if inspect.isfunction(function):
            yield attr, function


@pytest.mark.parametrize(
    "name", [n for n in runcomfy_async.__all__ if inspect.isclass(getattr(runcomfy_async, n))]
)
def test_public_methods_are_documented(name):
    """Every public method and property of an exported class has a docstring."""
    cls = getattr(runcomfy_async, name)

    undocumented = [
        attr for attr, function in _public_members(cls) if not (function.__doc__ or "").strip()
    ]

    assert [] == undocumented


def test_errors_form_one_tree():
    """Every exported exception derives from RunComfyError."""
    errors = [
        value
        for value in map(runcomfy_async.__dict__.get, runcomfy_async.__all__)
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]

    assert len(errors) > 15
    assert all(issubclass(error, runcomfy_async.RunComfyError) for error in errors)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        pytest.param("ValidationError", ValueError, id="validation"),
        pytest.param("ClientClosedError", RuntimeError, id="closed"),
        pytest.param("RequestTimeoutError", TimeoutError, id="request-timeout"),
        pytest.param("JobTimeoutError", TimeoutError, id="job-timeout"),
    ],
)
def test_errors_are_also_builtin_errors(error, builtin):
    """Errors that are also a builtin kind can be caught as that kind."""
    assert issubclass(getattr(runcomfy_async, error), builtin)


def test_the_tree_in_the_docstring_names_every_error():
    """The exception tree drawn in ``_errors``'s docstring lists every exported error."""
    from runcomfy_async import _errors  # noqa: PLC0415

    errors = {
        name
        for name in runcomfy_async.__all__
        if inspect.isclass(getattr(runcomfy_async, name))
        and issubclass(getattr(runcomfy_async, name), BaseException)
    }

    assert errors == {name for name in errors if f" {name}" in (_errors.__doc__ or "")}
