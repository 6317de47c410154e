"""Learned run-time models kept in a file between sessions (the user's cache folder).

The client loads them when a session opens and saves them when it closes,
unless it keeps them in its journal instead (see :class:`~runcomfy_async.RunComfy`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ._polling import AdaptivePolling

__all__ = ["default_model_cache", "load_model_cache", "save_model_cache"]


def default_model_cache() -> Path:
    """Return the file where learned run-time models are kept between sessions.

    It lies in the user's cache folder (``platformdirs``), for example
    ``~/.cache/runcomfy-async/runtime-models.json`` on Linux.
    """
    import platformdirs  # noqa: PLC0415 - only the cache needs it

    return Path(platformdirs.user_cache_dir("runcomfy-async")) / "runtime-models.json"


def load_model_cache(policy: AdaptivePolling, path: Path | None = None) -> int:
    """Warm *policy* with the models saved at *path*; return how many loaded.

    A missing or unreadable file loads nothing: a cache never stops a session.
    """
    path = default_model_cache() if path is None else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return policy.load_models(data) if isinstance(data, dict) else 0


def save_model_cache(policy: AdaptivePolling, path: Path | None = None) -> None:
    """Save *policy*'s models to *path*, atomically (a rename), merged with what is there."""
    path = default_model_cache() if path is None else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data.update(policy.export_models())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data), encoding="utf-8")
    temporary.replace(path)
