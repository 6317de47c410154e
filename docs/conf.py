"""Sphinx configuration: MyST markdown, autodoc with Google-style docstrings, furo."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

project = "runcomfy-async"
author = "runcomfy_async developers"
copyright = "runcomfy_async developers"
try:
    release = version("runcomfy-async")
except PackageNotFoundError:  # building from a checkout that is not installed
    release = "0+unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
# No sphinx.ext.intersphinx: the docs must build offline.

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_heading_anchors = 3

html_theme = "furo"
html_title = "runcomfy-async"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Only documented parameters get their types listed: the constructors of
# API and Job take internal objects that users never pass.
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False

nitpicky = True
# Without intersphinx, names from outside this package cannot resolve. Each
# entry below is such a name, seen in a public signature or annotation.
nitpick_ignore = [
    # the standard library
    ("py:class", "collections.abc.AsyncIterator"),
    ("py:class", "collections.abc.Callable"),
    ("py:class", "collections.abc.Generator"),
    ("py:class", "collections.abc.Iterable"),
    ("py:class", "collections.abc.Mapping"),
    ("py:class", "collections.abc.Sequence"),
    ("py:class", "datetime.datetime"),
    ("py:class", "os.PathLike"),
    ("py:class", "pathlib.Path"),
    ("py:class", "types.TracebackType"),
    ("py:exc", "TimeoutError"),
    # third-party libraries
    ("py:class", "Self"),  # typing_extensions.Self, imported only for type checking
    ("py:class", "anyio.abc.TaskGroup"),
    ("py:func", "anyio.current_time"),
]
