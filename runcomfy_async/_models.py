"""Value objects: what you ask for (requests) and what the API answers.

Requests check their own inputs when they are built, so a bad prompt or image
fails here, before anything is sent or paid for. Answers are a small closed set
of status types to ``match`` on::

    match status:
        case Queued(position=p): ...
        case Running(): ...
        case Succeeded(result=r): print(r.video_url)
        case Failed(message=m): ...
        case Cancelled(): ...
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeAlias
from urllib.parse import urlsplit

import attrs

from ._config import is_loopback_host
from ._errors import ValidationError
from ._images import to_data_uri, validate_data_uri

DREAMINA_I2V_MODEL_ID: Final = "bytedance/dreamina-3-0/pro/image-to-video"
"""The model id of ByteDance Dreamina 3.0 Pro image-to-video."""

MAX_PROMPT_LENGTH: Final = 800
FRAME_CHOICES: Final = (121, 241)
SEED_RANDOM: Final = -1
SEED_MAX: Final = 2**32 - 1

_NOT_JPEG_OR_PNG = (".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".svg")
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+$", re.IGNORECASE)


def _short_repr(value: str) -> str:
    # A data URI can be megabytes of base64; a repr shows its head only.
    return repr(value) if len(value) <= 80 else repr(value[:60] + f"...<{len(value)} chars>")


def _check_prompt(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise ValidationError("prompt", "type", f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValidationError("prompt", "required", "must not be empty")
    if len(value) > MAX_PROMPT_LENGTH:
        raise ValidationError(
            "prompt",
            "max_length",
            f"is {len(value)} characters; at most {MAX_PROMPT_LENGTH} are allowed",
        )


def check_image_url(value: object, field: str = "image_url") -> str:
    """Check one image reference: an https URL, a loopback http URL or a data URI.

    Data URIs are decoded and checked against every image rule (type, size,
    dimensions, ratio); URLs are checked for scheme, host and file type only.
    """
    if not isinstance(value, str):
        raise ValidationError(field, "type", f"must be a string, not {type(value).__name__}")
    if value[:5].lower() == "data:":
        validate_data_uri(value, field=field)
        return value
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValidationError(field, "format", "must not contain white space")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError(
            field,
            "format",
            "must be an https:// URL or a data:image/jpeg|png;base64 URI",
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValidationError(
            field, "format", "must use https:// (plain http:// only for loopback hosts)"
        )
    if parts.path.lower().endswith(_NOT_JPEG_OR_PNG):
        raise ValidationError(field, "type", "must be a JPEG or PNG image")
    return value


def _check_image_url(_: object, __: attrs.Attribute[str], value: str) -> None:
    check_image_url(value)


def _check_seed(_: object, __: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("seed", "type", f"must be an integer, not {type(value).__name__}")
    if value != SEED_RANDOM and not 0 <= value <= SEED_MAX:
        raise ValidationError("seed", "range", f"is {value}; use -1 (random) or 0 to {SEED_MAX}")


def _check_frames(_: object, __: attrs.Attribute[int], value: object) -> None:
    # 121.0 == 121, but the server's schema wants a JSON integer.
    if isinstance(value, bool) or not isinstance(value, int) or value not in FRAME_CHOICES:
        raise ValidationError(
            "frames", "one_of", f"is {value!r}; use 121 (about 5 s) or 241 (about 10 s)"
        )


@attrs.frozen(kw_only=True)
class ImageToVideo:
    """A ByteDance Dreamina 3.0 Pro image-to-video generation.

    Every rule of the model's schema is checked here, so a bad request raises
    :class:`~runcomfy_async.ValidationError` before any call is made.

    Attributes:
        prompt: What should happen in the video; 1 to 800 characters.
        image_url: The first frame: an ``https://`` URL to a JPEG or PNG, or a
            ``data:image/png;base64,...`` URI (see :meth:`from_file`).
        seed: -1 for a random seed, or 0 to 2**32-1 to repeat a result.
        frames: 121 (about 5 s) or 241 (about 10 s).

    """

    model_id: ClassVar[str] = DREAMINA_I2V_MODEL_ID

    prompt: str = attrs.field(validator=_check_prompt)
    image_url: str = attrs.field(validator=_check_image_url, repr=_short_repr)
    seed: int = attrs.field(default=SEED_RANDOM, validator=_check_seed)
    frames: Literal[121, 241] = attrs.field(default=121, validator=_check_frames)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        prompt: str,
        seed: int = SEED_RANDOM,
        frames: Literal[121, 241] = 121,
    ) -> ImageToVideo:
        """Build a request from a local JPEG or PNG, sent inline as a data URI.

        The image is checked here (type, < 4.7 MB, sides in (320, 4096],
        ratio under 3:1), so a bad file costs nothing.
        """
        data = Path(path).read_bytes()
        return cls(
            prompt=prompt,
            image_url=to_data_uri(data, field="image_url"),
            seed=seed,
            frames=frames,
        )

    @property
    def run_time_scale(self) -> float:
        """How long this job runs relative to the model's shortest setting."""
        return self.frames / FRAME_CHOICES[0]


def _check_model_id(_: object, __: attrs.Attribute[str], value: object) -> None:
    # fullmatch: "$" alone would let a trailing newline through.
    if not isinstance(value, str) or not _MODEL_ID.fullmatch(value) or ".." in value:
        raise ValidationError(
            "model_id", "format", f"{value!r} is not a model id like 'owner/model/variant'"
        )


def _check_payload(_: object, __: attrs.Attribute[Mapping[str, Any]], value: object) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValidationError("payload", "type", "must be a JSON object (a str-keyed mapping)")


@attrs.frozen
class ModelRequest:
    """A request for any catalogue model, as a plain JSON object.

    The payload's keys map 1:1 to the model's input schema; the server checks
    it (and answers :class:`~runcomfy_async.InputRejectedError` on a mismatch).

    Attributes:
        model_id: For example ``"bytedance/dreamina-3-0/pro/image-to-video"``.
        payload: The input object.
        run_time_scale: A hint for the poller: how long this job runs
            relative to the model's typical job (1.0 when unknown).

    """

    model_id: str = attrs.field(validator=_check_model_id)
    payload: Mapping[str, Any] = attrs.field(validator=_check_payload, repr=False)
    run_time_scale: float = attrs.field(default=1.0, kw_only=True)


Request: TypeAlias = ImageToVideo | ModelRequest
"""Anything :meth:`RunComfy.submit` accepts."""


@attrs.frozen
class Submission:
    """The server's receipt for an accepted (and billed) submit."""

    request_id: str
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None


@attrs.frozen
class Pending:
    """Created locally and not accepted yet: not sent (or on its way), not billed."""


@attrs.frozen
class Accepted:
    """Accepted by the server (so billed, or about to be), not yet seen by a poll."""


@attrs.frozen
class Queued:
    """Accepted and waiting for a slot; ``position`` 0 is next (if reported)."""

    position: int | None = None


@attrs.frozen
class Running:
    """The model is running."""


@attrs.frozen
class Completed:
    """Finished, as ``/status`` says it: the outcome is only on ``/result``.

    ``/status`` shows ``completed`` for failed jobs too, so this is neither a
    success nor a failure until the result is fetched.
    """


@attrs.frozen(kw_only=True)
class JobResult:
    """A finished generation's output.

    Attributes:
        request_id: The job's id.
        video_url: The primary video (the first one), if the output has any.
        video_urls: Every video URL in the output, in order.
        image_urls: Every image URL in the output, in order.
        urls: Every URL found anywhere in the output.
        output: The output object exactly as the server sent it.
        model_id: The model, if the server said.
        created_at: When the server took the job.
        finished_at: When the server finished it.
        cost: The price in USD, when it was asked for.

    """

    request_id: str
    video_urls: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    output: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    model_id: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    cost: float | None = None

    @property
    def video_url(self) -> str | None:
        """The primary video URL, the first of :attr:`video_urls`."""
        return self.video_urls[0] if self.video_urls else None

    @property
    def run_seconds(self) -> float | None:
        """Server time from acceptance to finish (queue included), if known."""
        if self.created_at is None or self.finished_at is None:
            return None
        seconds = (self.finished_at - self.created_at).total_seconds()
        return seconds if math.isfinite(seconds) and seconds >= 0 else None

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON object (what :meth:`from_json` reads back).

        Times are ISO 8601 strings; the output object is kept as sent.
        """
        return {
            "request_id": self.request_id,
            "model_id": self.model_id,
            "video_url": self.video_url,
            "video_urls": list(self.video_urls),
            "image_urls": list(self.image_urls),
            "urls": list(self.urls),
            "output": dict(self.output),
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "cost": self.cost,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobResult:
        """Rebuild a result written by :meth:`to_json`."""

        def when(key: str) -> datetime | None:
            value = data.get(key)
            return None if value is None else datetime.fromisoformat(value)

        cost = data.get("cost")
        return cls(
            request_id=str(data["request_id"]),
            video_urls=tuple(data.get("video_urls") or ()),
            image_urls=tuple(data.get("image_urls") or ()),
            urls=tuple(data.get("urls") or ()),
            output=dict(data.get("output") or {}),
            model_id=data.get("model_id"),
            created_at=when("created_at"),
            finished_at=when("finished_at"),
            cost=None if cost is None else float(cost),
        )


@attrs.frozen
class Succeeded:
    """Finished with an output."""

    result: JobResult


@attrs.frozen(kw_only=True)
class Failed:
    """Finished without an output; ``error`` is the server's opaque value."""

    message: str
    error: Any = None


@attrs.frozen
class Cancelled:
    """Cancelled before it ran."""


JobStatus: TypeAlias = Pending | Accepted | Queued | Running | Completed | Succeeded | Failed | Cancelled
"""Every state a job can be seen in."""

TERMINAL_STATES: Final = (Completed, Succeeded, Failed, Cancelled)


@attrs.frozen(kw_only=True)
class CancelOutcome:
    """What a remote cancel achieved.

    Attributes:
        request_id: The job's id.
        cancelled: True only if the server cancelled the job; False means it
            was already running or finished (``not_cancellable``): it runs on
            and is billed.
        status: The job's state as the server reported it.
        outcome: The server's ``outcome`` word, as sent.

    """

    request_id: str
    cancelled: bool
    status: str
    outcome: str | None
