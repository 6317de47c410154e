"""The seed model's input schema, checked the way the service checks it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias, TypedDict
from urllib.parse import urlsplit

from runcomfy_async._errors import ValidationError
from runcomfy_async._images import validate_data_uri, validate_image_bytes


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
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class FetchError(Exception):
    """A loopback image could not be fetched."""


def _problem(loc: tuple[str | int, ...], msg: str, kind: str) -> Problem:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _is_int(value: object) -> bool:
    # JSON true/false arrive as bool, which is an int to Python, not to JSON.
    return isinstance(value, int) and not isinstance(value, bool)


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


async def _check_image_url(url: str, index: int, fetch: Fetch) -> list[Problem]:
    loc = ("image_urls", index)
    try:
        if url[:5].lower() == "data:":
            validate_data_uri(url, field="image_urls")
            return []
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme in {"http", "https"} and host in LOOPBACK_HOSTS:
            try:
                content_type, data = await fetch(url)
            except FetchError as exc:
                return [_problem(loc, f"could not fetch the image: {exc}", "url_fetch")]
            declared = content_type if content_type.startswith("image/") else None
            validate_image_bytes(data, field="image_urls", declared_mime=declared)
            return []
        if parts.scheme == "https" and host:
            return []
    except ValidationError as exc:
        msg = exc.message.removeprefix(f"{exc.field}: ")
        return [_problem(loc, msg, exc.rule)]
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
