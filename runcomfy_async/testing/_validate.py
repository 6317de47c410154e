"""The seed model's input schema, checked the way the service checks it.

Written from the API contract alone, apart from the client's own checks (see
``_imagefile``): ``prompt`` required, at most 800 characters; ``image_urls``
exactly one JPEG or PNG; ``seed`` an integer; ``frames`` 121 or 241; no other
keys. Images (``data:`` URIs, and URLs on loopback, which the emulator
fetches) must be smaller than 4.7 MB, each side > 320 and <= 4096 pixels,
long side to short side under 3:1, and whole enough to decode.

Two readings of the contract are choices, made on the strict side so that a
client passing here passes the real service under either reading:

- "4.7 MB" is read as 4,700,000 bytes (decimal megabytes, as "MB" says;
  4.7 MiB would be 4,928,307 bytes).
- "width/height < 3 and > 0.33" is read as the long side under three times
  the short one (1/3, not 0.33, as "within 3:1" says), in integer arithmetic.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias, TypedDict
from urllib.parse import urlsplit

import anyio.to_thread

from ._imagefile import ImageFacts, ImageFileError, read_image


class Problem(TypedDict):
    """One entry of a 422 ``detail`` list."""

    loc: list[str | int]
    msg: str
    type: str


# Fetches a loopback URL as (content type or "", body); raises FetchError.
Fetch: TypeAlias = Callable[[str], Awaitable[tuple[str, bytes]]]

SEED_FIELDS: Final = frozenset({"prompt", "image_urls", "seed", "frames"})
MAX_PROMPT: Final = 800
FRAMES: Final = (121, 241)
MAX_IMAGE_BYTES: Final = 4_700_000
MIN_SIDE: Final = 320
MAX_SIDE: Final = 4096
MAX_RATIO: Final = 3
# Above this, an image is read in a worker thread (zlib and CRCs release the
# GIL), so a 4 MB photo does not stall every other request for milliseconds.
_THREAD_ABOVE: Final = 2**20
_MIME_KIND: Final = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg"}
_DATA_URI: Final = re.compile(
    r"data:(?P<mime>image/[a-z]+);base64,(?P<data>[A-Za-z0-9+/]*={0,2})",
    re.IGNORECASE,
)


class FetchError(Exception):
    """A loopback image could not be fetched."""


class _Rejected(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind
        self.msg = msg


def _problem(loc: tuple[str | int, ...], msg: str, kind: str) -> Problem:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which is an int to Python, not to JSON.
    return isinstance(value, int) and not isinstance(value, bool)


def is_loopback(host: str) -> bool:
    """Whether a URL host names this machine (the only hosts the emulator fetches)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_prompt(payload: dict[str, object]) -> list[Problem]:
    if "prompt" not in payload:
        return [_problem(("prompt",), "field required", "missing")]
    prompt = payload["prompt"]
    if not isinstance(prompt, str):
        return [_problem(("prompt",), "prompt must be a string", "string_type")]
    if not prompt:
        return [_problem(("prompt",), "prompt must not be empty", "string_too_short")]
    if len(prompt) > MAX_PROMPT:
        return [
            _problem(
                ("prompt",),
                f"prompt is {len(prompt)} characters; at most {MAX_PROMPT} allowed",
                "string_too_long",
            )
        ]
    return []


def _check_facts(facts: ImageFacts) -> None:
    if facts.size >= MAX_IMAGE_BYTES:
        raise _Rejected(
            "size", f"the image is {facts.size} bytes; it must be under 4.7 MB (4,700,000 bytes)"
        )
    width, height = facts.width, facts.height
    if not (MIN_SIDE < width <= MAX_SIDE and MIN_SIDE < height <= MAX_SIDE):
        raise _Rejected(
            "dimensions",
            f"the image is {width}x{height}; width and height must each be "
            f"> {MIN_SIDE} and <= {MAX_SIDE} pixels",
        )
    if max(width, height) >= MAX_RATIO * min(width, height):
        raise _Rejected(
            "ratio",
            f"the image is {width}x{height}; its long side must be under "
            f"{MAX_RATIO} times its short side",
        )


def _check_bytes(data: bytes, declared: str | None) -> None:
    """Apply the image rules to a file, and to the type it was declared as."""
    if declared is not None and declared not in _MIME_KIND:
        raise _Rejected("type", f"{declared} is not accepted: JPEG or PNG only")
    try:
        facts = read_image(data)
    except ImageFileError as exc:
        kind = "image_corrupt" if exc.kind == "corrupt" else "type"
        raise _Rejected(kind, f"{exc}; JPEG or PNG only") from exc
    if declared is not None and _MIME_KIND[declared] != facts.kind:
        raise _Rejected("type", f"declared as {declared} but the file is a {facts.kind.upper()}")
    _check_facts(facts)


async def _check_off_loop(data: bytes, declared: str | None) -> None:
    if len(data) > _THREAD_ABOVE:
        await anyio.to_thread.run_sync(_check_bytes, data, declared)
    else:
        _check_bytes(data, declared)


async def _check_data_uri(uri: str) -> None:
    match = _DATA_URI.fullmatch(uri)
    if match is None:
        raise _Rejected("data_uri", "a data URI must be data:image/(jpeg|png);base64,<data>")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Rejected("data_uri", f"the data URI's base64 does not decode: {exc}") from exc
    if not data:
        raise _Rejected("data_uri", "the data URI is empty")
    await _check_off_loop(data, match["mime"].lower())


async def _check_image_url(url: str, index: int, fetch: Fetch) -> list[Problem]:
    loc = ("image_urls", index)
    try:
        if url[:5].lower() == "data:":
            await _check_data_uri(url)
            return []
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme in {"http", "https"} and is_loopback(host):
            try:
                content_type, data = await fetch(url)
            except FetchError as exc:
                return [_problem(loc, f"could not fetch the image: {exc}", "url_fetch")]
            mime = content_type.partition(";")[0].strip().lower()
            await _check_off_loop(data, mime if mime.startswith("image/") else None)
            return []
        if parts.scheme == "https" and host:
            # A public URL the emulator cannot reach: taken on trust.
            return []
    except _Rejected as exc:
        return [_problem(loc, exc.msg, exc.kind)]
    return [
        _problem(
            loc,
            "must be a public https:// URL or a data:image/(jpeg|png);base64 URI",
            "url_scheme",
        )
    ]


async def _check_image_urls(payload: dict[str, object], fetch: Fetch) -> list[Problem]:
    if "image_urls" not in payload:
        return [_problem(("image_urls",), "field required", "missing")]
    urls = payload["image_urls"]
    if not isinstance(urls, list):
        return [_problem(("image_urls",), "image_urls must be a list", "list_type")]
    if len(urls) != 1:
        return [
            _problem(
                ("image_urls",),
                f"exactly 1 image URL is required, got {len(urls)}",
                "too_short" if not urls else "too_long",
            )
        ]
    problems: list[Problem] = []
    for index, url in enumerate(urls):
        if not isinstance(url, str):
            problems.append(_problem(("image_urls", index), "must be a string", "string_type"))
            continue
        problems += await _check_image_url(url, index, fetch)
    return problems


def problem_fields(problems: list[Problem]) -> str:
    """Name the fields at fault, for the 422 message: ``prompt, image_urls.0``."""
    return ", ".join(".".join(map(str, p["loc"][1:])) for p in problems)


async def check_seed_payload(payload: dict[str, object], fetch: Fetch) -> list[Problem]:
    """Every problem with a seed-model body, as 422 ``detail`` entries."""
    problems = [
        _problem((key,), "extra inputs are not permitted", "extra_forbidden")
        for key in sorted(set(payload) - SEED_FIELDS)
    ]
    problems += _check_prompt(payload)
    problems += await _check_image_urls(payload, fetch)
    if "seed" in payload and not _is_int(payload["seed"]):
        problems.append(_problem(("seed",), "seed must be an integer", "int_type"))
    if "frames" in payload and not (_is_int(payload["frames"]) and payload["frames"] in FRAMES):
        problems.append(
            _problem(
                ("frames",),
                f"frames must be one of {FRAMES[0]} or {FRAMES[1]}",
                "literal_error",
            )
        )
    return problems
