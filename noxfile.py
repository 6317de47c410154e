"""One entry point for every check: ``python3 -m nox`` runs them all.

Each session installs what it needs into its own virtual environment, made
with the Python that runs nox (with uv when it is installed, else venv).
"""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.default_venv_backend = "uv" if shutil.which("uv") else "venv"
nox.options.error_on_external_run = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (extra pytest arguments go after ``--``)."""
    session.install(".[tests]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check the code with ruff, and that it is formatted."""
    # Pinned to a minor series: a new ruff release adds rules, and CI must not
    # start failing on its own. Bump it on purpose.
    session.install("ruff>=0.17,<0.18")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check the package and the typing tests with mypy --strict."""
    session.install(".[typing,tests]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML docs; any warning, or a broken reference, fails it."""
    session.install(".[docs]")
    shutil.rmtree("docs/_build", ignore_errors=True)
    session.run(
        "sphinx-build", "-W", "--keep-going", "-n", "-b", "html", "docs", "docs/_build/html"
    )
