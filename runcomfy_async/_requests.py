"""What you ask for: the request protocol and the typed requests.

The engine knows a request only through :class:`Request`: a model id, a
run-time hint, the submit body (built when the submit is about to go out) and
a fingerprint for journals and job keys. A new typed model is one more class
here, and nothing in the engine changes.

Typed requests check their own inputs when they are built, so a bad prompt or
image fails before anything is sent or paid for. A local image is checked,
hashed and dropped at once (:meth:`ImageToVideo.from_file`); its bytes are read
again only by :meth:`~Request.encode`, so memory follows the submits in
flight, not the length of a batch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal, Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit

import anyio.to_thread
import attrs

from ._config import is_loopback_host
from ._errors import ValidationError
from ._images import (
    DREAMINA_IMAGE_RULES,
    ImageRules,
    LocalImage,
    validate_data_uri,
)

__all__ = [
    "DREAMINA_I2V_MODEL_ID",
    "FRAME_CHOICES",
    "MAX_PROMPT_LENGTH",
    "SEED_MAX",
    "SEED_RANDOM",
    "ImageToVideo",
    "ModelRequest",
    "Request",
    "check_image_url",
]

DREAMINA_I2V_MODEL_ID: Final = "bytedance/dreamina-3-0/pro/image-to-video"
"""The model id of ByteDance Dreamina 3.0 Pro image-to-video."""

MAX_PROMPT_LENGTH: Final = 800
FRAME_CHOICES: Final = (121, 241)
SEED_RANDOM: Final = -1
SEED_MAX: Final = 2**32 - 1

# Extensions of image types a URL may name, to refuse a .gif before a submit.
_URL_TYPES: Final = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".png": "image/png",
    **dict.fromkeys(
        (".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".svg"), "other"
    ),
}
_MODEL_ID: Final = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)+$", re.IGNORECASE)
_ANY_DATA_URI: Final = re.compile(r"data:(?P<mime>[^;,]*)(?:;[^;,]*)*;base64,", re.IGNORECASE)


@runtime_checkable
class Request(Protocol):
    """Anything :meth:`RunComfy.submit` accepts: one paid generation.

    :class:`ImageToVideo` and :class:`ModelRequest` implement it; so can a
    class of your own for another model.
    """

    @property
    def model_id(self) -> str:
        """The catalogue model, for example ``"owner/model/variant"``."""
        ...

    @property
    def run_time_scale(self) -> float:
        """Expected run time relative to the model's typical job (1.0 if unknown)."""
        ...

    async def encode(self) -> dict[str, Any]:
        """Build the submit body now, right before it is sent.

        May read and encode a local file (in a worker thread).

        Raises:
            ValidationError: a local file changed or vanished since it was
                checked; nothing may be sent.

        """
        ...

    def fingerprint(self) -> dict[str, Any]:
        """Describe the request for journals and job keys, deterministically.

        Every field, JSON-safe; images by source (URL or file path) and
        SHA-256, never their bytes or a data URI's base64.
        """
        ...


def _short_repr(value: str | None) -> str:
    # A data URI can be megabytes of base64; a repr shows its head only.
    if value is None or len(value) <= 80:
        return repr(value)
    return repr(value[:60] + f"...<{len(value)} chars>")


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


def _looks_local(parts: SplitResult) -> bool:
    # No scheme, "file:", or a Windows drive letter ("C:\\cat.png" parses as
    # scheme "c").
    return not parts.scheme or parts.scheme == "file" or len(parts.scheme) == 1


def _split_url(value: str, field: str) -> SplitResult:
    try:
        return urlsplit(value)
    except ValueError as exc:  # "Invalid IPv6 URL": an unbalanced [ or ]
        raise ValidationError(field, "format", f"is not a valid URL: {exc}") from None


def check_image_url(
    value: object, field: str = "image_url", *, rules: ImageRules = DREAMINA_IMAGE_RULES
) -> str:
    """Check one image reference: an https URL, a loopback http URL or a data URI.

    Data URIs are decoded and checked whole against *rules* (type, size,
    dimensions, ratio, an intact file); URLs are checked for scheme, host and
    file type only. A local path gets pointed to
    :meth:`ImageToVideo.from_file`.
    """
    if not isinstance(value, str):
        raise ValidationError(field, "type", f"must be a string, not {type(value).__name__}")
    if value[:5].lower() == "data:":
        validate_data_uri(value, field=field, rules=rules)
        return value
    if not value:
        raise ValidationError(field, "format", "must not be empty")
    if value != value.strip():
        raise ValidationError(field, "format", "must not start or end with white space")
    parts = _split_url(value, field)
    if _looks_local(parts):
        path = parts.path if parts.scheme == "file" else value
        raise ValidationError(
            field,
            "format",
            f"{value!r} is not a URL (https://...); to send a local file, use "
            f"ImageToVideo.from_file({path!r}, prompt=...)",
        )
    if any(c.isspace() for c in value):
        raise ValidationError(field, "format", "must not contain white space")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError(
            field,
            "format",
            f"must be an https:// URL or a data:image/...;base64 URI, not {value[:40]!r}",
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValidationError(
            field, "format", "must use https:// (plain http:// only for loopback hosts)"
        )
    suffix = os.path.splitext(parts.path.lower())[1]  # noqa: PTH122 - a URL path, not a file
    # A URL without a known image extension may serve anything: the server judges.
    if _URL_TYPES.get(suffix, rules.formats[0]) not in rules.formats:
        raise ValidationError(field, "type", f"must be a {rules.format_names} image")
    return value


def _check_image_url(instance: ImageToVideo, _: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        check_image_url(value, rules=instance.image_rules)


def _check_image_file(
    instance: ImageToVideo, _: attrs.Attribute[LocalImage | None], value: object
) -> None:
    if value is None:
        return
    if not isinstance(value, LocalImage):
        raise ValidationError(
            "image_file",
            "type",
            f"must be a LocalImage, not {type(value).__name__}; "
            "use ImageToVideo.from_file(path, prompt=...)",
        )
    # The file was checked when it was opened, perhaps against other rules.
    instance.image_rules.check(value.info, field="image_file")


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


def _data_uri_digest(uri: str) -> dict[str, Any] | None:
    """Describe a base64 data URI by type, hash and size; None if it is not one."""
    match = _ANY_DATA_URI.match(uri)
    if match is None:
        return None
    payload = uri[match.end() :]
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        # Not valid base64: the text itself identifies it.
        data = payload.encode()
    return {
        "kind": "data_uri",
        "mime": match["mime"].lower(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


@attrs.frozen(kw_only=True)
class ImageToVideo:
    """A ByteDance Dreamina 3.0 Pro image-to-video generation.

    Every rule of the model's schema is checked here, so a bad request raises
    :class:`~runcomfy_async.ValidationError` before any call is made. Give the
    first frame as ``image_url`` (a URL or data URI), or build the request
    from a local file with :meth:`from_file`.

    Attributes:
        prompt: What should happen in the video; 1 to 800 characters.
        image_url: The first frame as an ``https://`` URL to a JPEG or PNG,
            or a ``data:image/png;base64,...`` URI; None when the image is
            a local file.
        image_file: The first frame as a checked local file (path, SHA-256,
            size), read and sent inline only when the submit goes out; None
            when ``image_url`` is given.
        seed: -1 for a random seed, or 0 to 2**32-1 to repeat a result.
        frames: 121 (about 5 s) or 241 (about 10 s).

    """

    model_id: ClassVar[str] = DREAMINA_I2V_MODEL_ID
    image_rules: ClassVar[ImageRules] = DREAMINA_IMAGE_RULES
    """What the model accepts as its first frame."""

    prompt: str = attrs.field(validator=_check_prompt)
    image_url: str | None = attrs.field(default=None, validator=_check_image_url, repr=_short_repr)
    image_file: LocalImage | None = attrs.field(default=None, validator=_check_image_file)
    seed: int = attrs.field(default=SEED_RANDOM, validator=_check_seed)
    frames: Literal[121, 241] = attrs.field(default=121, validator=_check_frames)

    def __attrs_post_init__(self) -> None:
        if self.image_url is None and self.image_file is None:
            raise ValidationError(
                "image_url",
                "required",
                "give an image: image_url='https://...' (or a data URI), "
                "or build the request with ImageToVideo.from_file(path, prompt=...)",
            )
        if self.image_url is not None and self.image_file is not None:
            raise ValidationError(
                "image_file", "exclusive", "give image_url or image_file, not both"
            )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        prompt: str,
        seed: int = SEED_RANDOM,
        frames: Literal[121, 241] = 121,
    ) -> ImageToVideo:
        """Build a request from a local JPEG or PNG, sent inline when it is submitted.

        The file is checked here (type, < 4.7 MB, sides in (320, 4096],
        ratio under 3:1, a whole and intact image), hashed and dropped, so a
        bad file costs nothing and a batch of thousands of files holds none
        of them. It is read again right before its submit, and refused then
        if it changed meanwhile.

        Raises:
            OSError: The file cannot be read.
            ValidationError: The file or another field breaks a rule (the
                image's errors name the field ``image_file``).

        """
        image = LocalImage.open(path, rules=cls.image_rules, field="image_file")
        return cls(prompt=prompt, image_file=image, seed=seed, frames=frames)

    @property
    def run_time_scale(self) -> float:
        """How long this job runs relative to the model's shortest setting."""
        return self.frames / FRAME_CHOICES[0]

    def _body(self, image: str) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "image_urls": [image],
            "seed": self.seed,
            "frames": self.frames,
        }

    @property
    def body_size(self) -> int:
        """About how many bytes the submit body will take once built.

        A local file is counted as its base64 form (it is read only when the
        submit goes out); the client keeps the bytes of bodies in flight
        under ``Limits.max_body_bytes``.
        """
        if self.image_file is not None:
            return 4 * -(-self.image_file.info.size // 3) + len(self.prompt) + 128
        return 0  # a URL or a data URI: nothing more is built than is held

    def _encode_now(self) -> dict[str, Any]:
        # Blocking: reads a local file in the calling thread.
        if self.image_file is not None:
            return self._body(self.image_file.data_uri())
        assert self.image_url is not None  # noqa: S101 - the constructor ensured it
        return self._body(self.image_url)

    async def encode(self) -> dict[str, Any]:
        """Build the submit body; a local file is read and encoded now, in a worker thread.

        Raises:
            ValidationError: rule ``"changed"``: the local file changed or
                vanished since it was checked.

        """
        if self.image_file is None:
            return self._encode_now()
        return await anyio.to_thread.run_sync(self._encode_now)

    def fingerprint(self) -> dict[str, Any]:
        """Describe the request for journals and job keys; never an image's bytes."""
        image: dict[str, Any]
        if self.image_file is not None:
            image = {
                "kind": "file",
                "path": str(self.image_file.path),
                "mime": self.image_file.info.mime,
                "sha256": self.image_file.sha256,
                "size": self.image_file.info.size,
            }
        else:
            assert self.image_url is not None  # noqa: S101 - the constructor ensured it
            image = _data_uri_digest(self.image_url) or {"kind": "url", "url": self.image_url}
        return {
            "model_id": self.model_id,
            "prompt": self.prompt,
            "image": image,
            "seed": self.seed,
            "frames": self.frames,
        }


def _check_model_id(_: object, __: attrs.Attribute[str], value: object) -> None:
    # fullmatch: "$" alone would let a trailing newline through.
    if not isinstance(value, str) or not _MODEL_ID.fullmatch(value) or ".." in value:
        raise ValidationError(
            "model_id", "format", f"{value!r} is not a model id like 'owner/model/variant'"
        )


_MAX_DEPTH: Final = 100


def _json_problem(value: object, where: str, depth: int = 0) -> str | None:
    """Say where *value* is not plain JSON, or None if it is."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if depth > _MAX_DEPTH:
        # Deeper than any real input, and recursion must stay bounded.
        return f"{where.partition('.')[0]} is nested more than {_MAX_DEPTH} levels deep"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value}, which JSON cannot carry"
    items: list[tuple[object, object]]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    else:
        return f"{where} is a {type(value).__name__}, which is not JSON"
    if isinstance(value, Mapping) and not all(isinstance(key, str) for key, _ in items):
        key = next(key for key, _ in items if not isinstance(key, str))
        return f"{where} has a key {key!r} that is not a string"
    problems = (_json_problem(item, f"{where}.{key}", depth + 1) for key, item in items)
    return next((problem for problem in problems if problem), None)


def _check_payload(_: object, __: attrs.Attribute[Mapping[str, Any]], value: object) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValidationError("payload", "type", "must be a JSON object (a str-keyed mapping)")
    problem = _json_problem(value, "payload")
    if problem:
        raise ValidationError("payload", "type", f"must be plain JSON: {problem}")


def _check_scale(_: object, __: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError("run_time_scale", "range", f"is {value!r}; use a number above 0")


def _plain(value: Any, *, digest: bool) -> Any:
    """Copy JSON as plain dicts and lists; with *digest*, data URIs become their digest."""
    if isinstance(value, Mapping):
        keys = sorted(value) if digest else value
        return {key: _plain(value[key], digest=digest) for key in keys}
    if isinstance(value, (list, tuple)):
        return [_plain(item, digest=digest) for item in value]
    if digest and isinstance(value, str):
        return _data_uri_digest(value) or value
    return value


@attrs.frozen
class ModelRequest:
    """A request for any catalogue model, as a plain JSON object.

    The payload's keys map 1:1 to the model's input schema; the server checks
    it (and answers :class:`~runcomfy_async.InputRejectedError` on a mismatch).

    Attributes:
        model_id: For example ``"bytedance/dreamina-3-0/pro/image-to-video"``.
        payload: The input object: plain JSON (str keys, finite numbers).
        run_time_scale: A hint for the poller: how long this job runs
            relative to the model's typical job (1.0 when unknown).

    """

    model_id: str = attrs.field(validator=_check_model_id)
    payload: Mapping[str, Any] = attrs.field(validator=_check_payload, repr=False)
    run_time_scale: float = attrs.field(default=1.0, kw_only=True, validator=_check_scale)

    def _encode_now(self) -> dict[str, Any]:
        body: dict[str, Any] = _plain(self.payload, digest=False)
        return body

    async def encode(self) -> dict[str, Any]:
        """Build the submit body: a copy of the payload as plain dicts and lists."""
        return self._encode_now()

    def fingerprint(self) -> dict[str, Any]:
        """Describe the request for journals and job keys; data URIs by hash only."""
        return {
            "model_id": self.model_id,
            "payload": _plain(self.payload, digest=True),
            "run_time_scale": self.run_time_scale,
        }
