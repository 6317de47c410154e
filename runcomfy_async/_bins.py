"""The log-spaced bins of normalised run time a run-time model counts in.

From 50 ms to about 28 hours, each 15 % wider than the one before; a
persisted model names them, so a later version can tell whether it can read
the model.
"""

from __future__ import annotations

import math

__all__ = ["COUNT", "EDGES", "LOW", "RATIO", "index", "zeros"]

LOW = 0.05
"""The upper edge of the first bin (seconds)."""
RATIO = 1.15
"""Each bin's edges are this many times apart."""
COUNT = 96
"""How many bins."""
_LOG_RATIO = math.log(RATIO)
EDGES = [LOW * RATIO**i for i in range(COUNT + 1)]
"""The bins' edges: bin i covers ``[EDGES[i], EDGES[i + 1])``."""
EDGES[0] = 0.0


def index(seconds: float) -> int:
    """Return the bin that *seconds* of run time falls in."""
    if seconds <= LOW:
        return 0
    return min(COUNT - 1, int(math.log(seconds / LOW) / _LOG_RATIO))


def zeros() -> list[float]:
    """Return one zero per bin."""
    return [0.0] * COUNT
