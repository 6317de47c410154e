"""Settings objects, their defaults, and how the environment fills them in."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

DEFAULT_BASE_URL: Final = "https://model-api.runcomfy.net"
"""The production API host (the client appends ``/v1``)."""

TOKEN_ENV_VARS: Final = ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY")
"""Where the official tools keep the token, read in this order."""

BASE_URL_ENV_VAR: Final = "RUNCOMFY_MODEL_API_BASE_URL"
"""Overrides the API host, as RunComfy's MCP server does."""

DEFAULT_OUTPUT_HOST_SUFFIXES: Final = ("runcomfy.net", "runcomfy.com")
"""Hosts (and their subdomains) that serve output files."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback.

    >>> Secret("abc")
    Secret('***')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret; only the transport calls this, for one header."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling a client would write the token to disk; refuse.
        raise TypeError("a Secret cannot be pickled")


def token_from_env(environ: Mapping[str, str] | None = None) -> Secret | None:
    """Return the first non-empty token of :data:`TOKEN_ENV_VARS`, if any."""
    env = os.environ if environ is None else environ
    for name in TOKEN_ENV_VARS:
        value = env.get(name, "").strip()
        if value:
            return Secret(value)
    return None


def base_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """Return the API base URL: :data:`BASE_URL_ENV_VAR` or the default."""
    env = os.environ if environ is None else environ
    return normalize_base_url(env.get(BASE_URL_ENV_VAR, "").strip() or DEFAULT_BASE_URL)


def normalize_base_url(url: str) -> str:
    """Check a base URL and strip a trailing slash and a trailing ``/v1``.

    Plain ``http`` is refused except on loopback, where the emulator runs: the
    token must never cross a network in clear text.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"base URL must be an http(s) URL with a host, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("base URL must use https (plain http only on loopback)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base URL must not carry credentials, a query or a fragment")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


def is_loopback_host(host: str) -> bool:
    """Say whether *host* names this machine (127.0.0.0/8, ::1 or localhost)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    # Parse, never match a prefix: "127.evil.example" is a DNS name that can
    # point anywhere, and plain http to it would send the token in clear.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen(kw_only=True)
class Timeouts:
    """Time limits, in seconds, for one HTTP exchange.

    Attributes:
        connect: To open a connection (a failure here means nothing was sent).
        read: Between bytes of the answer.
        total: For the whole exchange.

    """

    connect: float = 10.0
    read: float = 60.0
    total: float = 90.0


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{attribute.name} must be None or a positive number of seconds")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed exchange is tried again.

    Only exchanges that are safe to repeat are retried: status, result and
    cancel always; a paid submit only when the server provably did not take
    it (connection refused, 429, 503).

    Attributes:
        attempts: Tries in all, the first included.
        initial: The first backoff, in seconds.
        maximum: The longest backoff, in seconds.
        multiplier: Growth of the backoff per try.
        jitter: Share of each backoff drawn at random (0 = none, 1 = "full
            jitter"), so that many clients do not retry in step.
        max_retry_after: The longest ``Retry-After`` the client will honour;
            longer hints are capped to this.
        timeout: The total time budget, in seconds, of one call's retries
            (None: no budget). A retry whose wait would end past it is not
            made; the last error is raised instead. A job's polls share one
            such budget across a run of failures, so a server that stops
            answering costs a job minutes, not hours.

    """

    attempts: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    initial: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    maximum: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    jitter: float = attrs.field(
        default=1.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    max_retry_after: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    timeout: float | None = attrs.field(default=120.0, validator=_positive_or_none)


@attrs.frozen(kw_only=True)
class Limits:
    """Caps that keep a batch polite and the machine healthy.

    Attributes:
        max_jobs_in_flight: Jobs submitted and not yet finished; more wait
            locally, unsent (and unbilled).
        max_concurrent_requests: HTTP exchanges at once, submits and polls
            together.
        max_rate: The most requests a second (a token bucket); None for no cap
            but what the server's 429s teach.
        initial_rate: The rate the adaptive controller starts from.
        min_rate: The rate it never goes below.
        burst: Requests the bucket may send at once after an idle spell.
        max_body_bytes: The most bytes of submit bodies built at once (a local
            image is read and base64-encoded only when its submit goes out):
            with several copies of each body alive while it is sent, this
            keeps a batch of large local images under a few hundred MB. A
            larger body still goes, alone.

    """

    max_jobs_in_flight: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_concurrent_requests: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_rate: float | None = attrs.field(default=None)
    initial_rate: float = attrs.field(default=50.0, validator=attrs.validators.gt(0))
    min_rate: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    burst: float = attrs.field(default=10.0, validator=attrs.validators.ge(1))
    max_body_bytes: int = attrs.field(default=32 << 20, validator=attrs.validators.ge(1))


def package_version() -> str:
    """Return the installed version of this library (``0+unknown`` if not installed)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("runcomfy-async")
    except PackageNotFoundError:
        return "0+unknown"
