"""Faults as command-line text: ``--fault NAME=VALUE`` both ways."""

from __future__ import annotations

from typing import Final

import attrs

from ._config import Faults

_BOOL: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

# The Faults fields whose default (None) does not tell their type.
_OPTIONAL: Final[dict[str, type[float | int]]] = {
    "rate_limit": float,
    "slow_file": float,
    "big_file": int,
}


def fault_value(name: str, raw: str) -> object:
    """Parse the text of one ``Faults`` field (``--fault NAME=VALUE``).

    Raises:
        ValueError: no such field, or a value of the wrong type.

    """
    fields = attrs.fields_dict(Faults)
    if name not in fields:
        raise ValueError(f"no fault switch {name!r}; one of {', '.join(sorted(fields))}")
    default = fields[name].default
    if isinstance(default, bool):
        if raw.lower() not in _BOOL:
            raise ValueError(f"{name} takes true or false")
        return _BOOL[raw.lower()]
    if isinstance(default, str):
        return raw
    kind = _OPTIONAL.get(name, float)
    if name in _OPTIONAL and raw.lower() == "none":
        return None
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name} takes {'an integer' if kind is int else 'a number'}") from exc


def fault_args(faults: Faults) -> list[str]:
    """Build the ``--fault NAME=VALUE`` arguments that rebuild ``faults`` (non-defaults)."""
    args = []
    for field in attrs.fields(Faults):
        value = getattr(faults, field.name)
        if value == field.default:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif value is None:
            text = "none"
        else:
            text = value if isinstance(value, str) else repr(value)
        args += ["--fault", f"{field.name}={text}"]
    return args
