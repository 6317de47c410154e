"""Local image checks: a model's image rules, and whole, decodable files.

What a model accepts as an input image (types, byte size, sides, ratio) is a
value, :class:`ImageRules`; the seed model's are :data:`DREAMINA_IMAGE_RULES`.
Checking before a paid submit saves a round trip and a confusing 422.

Every image is also verified whole (:mod:`._image_format`), because the
server accepts (and bills) a truncated upload.

A local file is held as a :class:`LocalImage`: its path and content hash,
never its bytes, so a batch of thousands of files costs memory for the few
being sent, not for all of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Final

import attrs

from ._errors import ValidationError
from ._image_format import ImageInfo, inspect_image, verify_image

__all__ = [
    "ALLOWED_MIME_TYPES",
    "DREAMINA_IMAGE_RULES",
    "MAX_IMAGE_BYTES",
    "MAX_RATIO",
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageInfo",
    "ImageRules",
    "LocalImage",
    "check_image",
    "decode_data_uri",
    "inspect_image",
    "to_data_uri",
    "validate_data_uri",
    "validate_image_bytes",
    "verify_image",
]

ALLOWED_MIME_TYPES: Final = ("image/jpeg", "image/png")
"""The image types this module can read, and the seed model's types."""

_FORMAT_NAMES: Final = {"image/jpeg": "JPEG", "image/png": "PNG"}


def _check_formats(_: object, __: attrs.Attribute[tuple[str, ...]], value: object) -> None:
    if not isinstance(value, tuple) or not value or not set(value) <= set(ALLOWED_MIME_TYPES):
        raise ValueError(f"formats must be a non-empty tuple drawn from {ALLOWED_MIME_TYPES}")


def _check_sides(rules: ImageRules, _: attrs.Attribute[int], __: int) -> None:
    if not 0 <= rules.min_side < rules.max_side:
        raise ValueError(f"need 0 <= min_side < max_side, not {rules.min_side}, {rules.max_side}")


@attrs.frozen(kw_only=True)
class ImageRules:
    """What a model accepts as an input image.

    Attributes:
        formats: The accepted types, a subset of ``("image/jpeg", "image/png")``.
        max_bytes: A file must be strictly smaller than this.
        min_side: Width and height must each be strictly greater than this.
        max_side: Width and height must each be at most this.
        max_ratio: Long side over short side must be strictly below this.

    """

    formats: tuple[str, ...] = attrs.field(default=ALLOWED_MIME_TYPES, validator=_check_formats)
    max_bytes: int = attrs.field(validator=attrs.validators.gt(0))
    min_side: int = attrs.field(validator=attrs.validators.ge(0))
    max_side: int = attrs.field(validator=_check_sides)
    max_ratio: float = attrs.field(validator=attrs.validators.ge(1))

    @property
    def format_names(self) -> str:
        """Name the accepted types in words, such as ``"JPEG or PNG"``."""
        return " or ".join(_FORMAT_NAMES[mime] for mime in self.formats)

    def check_size(self, size: int, *, field: str = "image_url") -> None:
        """Apply the byte-size rule alone (a file's size is known before it is read).

        Raises:
            ValidationError: rule ``"size"``.

        """
        if size >= self.max_bytes:
            raise ValidationError(
                field,
                "size",
                f"image is {size} bytes; it must be smaller than {self.max_bytes} bytes"
                f" ({self.max_bytes / 1e6:g} MB)",
            )

    def check(self, info: ImageInfo, *, field: str = "image_url") -> None:
        """Apply every rule to an image's header facts.

        Raises:
            ValidationError: rule ``"type"``, ``"size"``, ``"dimensions"`` or
                ``"ratio"``; the message names the image's numbers and the limit.

        """
        if info.mime not in self.formats:
            raise ValidationError(
                field, "type", f"image is {info.mime}; this model takes {self.format_names} only"
            )
        self.check_size(info.size, field=field)
        w, h = info.width, info.height
        low, high = self.min_side, self.max_side
        if not (low < w <= high and low < h <= high):
            raise ValidationError(
                field,
                "dimensions",
                f"image is {w}x{h} pixels; each side must be > {low} and <= {high}",
            )
        # Exact rational arithmetic: no float rounding right at the boundary.
        limit = Fraction(self.max_ratio)
        if w >= limit * h or h >= limit * w:
            raise ValidationError(
                field,
                "ratio",
                f"image is {w}x{h} pixels (ratio {w / h:.3f}); width/height must be "
                f"< {self.max_ratio:g} and > 1/{self.max_ratio:g}",
            )


DREAMINA_IMAGE_RULES: Final = ImageRules(
    formats=ALLOWED_MIME_TYPES, max_bytes=4_700_000, min_side=320, max_side=4096, max_ratio=3.0
)
"""The seed model's rules: JPEG or PNG, < 4.7 MB, sides in (320, 4096], ratio < 3:1."""

MAX_IMAGE_BYTES: Final = DREAMINA_IMAGE_RULES.max_bytes
"""The seed model's byte limit (exclusive); see :data:`DREAMINA_IMAGE_RULES`."""

MIN_SIDE: Final = DREAMINA_IMAGE_RULES.min_side
"""The seed model's smallest side (exclusive); see :data:`DREAMINA_IMAGE_RULES`."""

MAX_SIDE: Final = DREAMINA_IMAGE_RULES.max_side
"""The seed model's largest side (inclusive); see :data:`DREAMINA_IMAGE_RULES`."""

MAX_RATIO: Final = DREAMINA_IMAGE_RULES.max_ratio
"""The seed model's ratio limit (exclusive); see :data:`DREAMINA_IMAGE_RULES`."""

_DATA_URI: Final = re.compile(
    r"data:image/(?P<subtype>jpeg|jpg|png);base64,(?P<payload>.*)",
    re.IGNORECASE | re.DOTALL,
)


def check_image(
    info: ImageInfo, *, field: str = "image_url", rules: ImageRules = DREAMINA_IMAGE_RULES
) -> None:
    """Apply a model's type, size, dimension and ratio rules to an image.

    Raises:
        ValidationError: as :meth:`ImageRules.check`.

    """
    rules.check(info, field=field)


def _normal_mime(mime: str) -> str:
    mime = mime.lower()
    return "image/jpeg" if mime == "image/jpg" else mime


def decode_data_uri(uri: str, *, field: str = "image_url") -> tuple[str, bytes]:
    """Split a ``data:image/...;base64,`` URI into its declared type and bytes.

    Returns:
        ``(mime, data)``: the declared type (``image/jpg`` normalised to
        ``image/jpeg``) and the decoded bytes.

    Raises:
        ValidationError: (rule ``"data_uri"``) not a base64 JPEG or PNG data
            URI, or the base64 is not strictly valid.

    """
    match = _DATA_URI.fullmatch(uri)
    if match is None:
        head = uri[:40]
        raise ValidationError(
            field,
            "data_uri",
            f"expected 'data:image/jpeg;base64,...' or 'data:image/png;base64,...',"
            f" got {head!r}{'...' if len(uri) > 40 else ''}",
        )
    try:
        data = base64.b64decode(match["payload"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(
            field, "data_uri", f"the data URI's base64 is invalid: {exc}"
        ) from exc
    if not data:
        raise ValidationError(field, "data_uri", "the data URI holds no data")
    return _normal_mime("image/" + match["subtype"]), data


def validate_image_bytes(
    data: bytes,
    *,
    field: str = "image_url",
    declared_mime: str | None = None,
    rules: ImageRules = DREAMINA_IMAGE_RULES,
) -> ImageInfo:
    """Check an image against a model's rules, and that it is whole.

    The cheap header rules come first, so a file that breaks them is refused
    without inflating its pixels.

    Raises:
        ValidationError: rule ``"type"`` (not JPEG/PNG, or not the declared
            type), ``"size"``, ``"dimensions"``, ``"ratio"`` or ``"corrupt"``.

    """
    info = inspect_image(data, field=field)
    if declared_mime is not None and _normal_mime(declared_mime) != info.mime:
        raise ValidationError(
            field,
            "type",
            f"declared as {declared_mime} but the bytes are {info.mime}",
        )
    rules.check(info, field=field)
    verify_image(data, field=field)
    return info


def validate_data_uri(
    uri: str, *, field: str = "image_url", rules: ImageRules = DREAMINA_IMAGE_RULES
) -> ImageInfo:
    """Decode a data URI and check the image in it.

    Raises:
        ValidationError: as :func:`decode_data_uri` and
            ``validate_image_bytes``.

    """
    mime, data = decode_data_uri(uri, field=field)
    return validate_image_bytes(data, field=field, declared_mime=mime, rules=rules)


def to_data_uri(
    data: bytes, *, field: str = "image", rules: ImageRules = DREAMINA_IMAGE_RULES
) -> str:
    """Check an image and wrap it in a ``data:<mime>;base64,`` URI.

    Raises:
        ValidationError: as ``validate_image_bytes``.

    """
    info = validate_image_bytes(data, field=field, rules=rules)
    return _encode(info.mime, data)


def _encode(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@attrs.frozen
class LocalImage:
    """A checked local image file, held as its path and content hash, not its bytes.

    Build one with :meth:`open`. :meth:`read` and :meth:`data_uri` read the
    file again and refuse it if its content changed since it was checked, so
    what is sent is exactly what was checked.

    Attributes:
        path: The file, made absolute when it was checked.
        sha256: The hex SHA-256 of its content.
        info: Its type, dimensions and size in bytes.

    """

    path: Path
    sha256: str
    info: ImageInfo

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        rules: ImageRules = DREAMINA_IMAGE_RULES,
        field: str = "image_file",
    ) -> LocalImage:
        """Read a file, check it against *rules* and that it is whole, hash it, drop it.

        A file at or over ``rules.max_bytes`` is refused before it is read.

        Raises:
            OSError: The file cannot be read (``FileNotFoundError`` ...).
            ValidationError: as ``validate_image_bytes``.

        """
        path = Path(path).absolute()
        rules.check_size(path.stat().st_size, field=field)
        data = path.read_bytes()
        info = validate_image_bytes(data, field=field, rules=rules)
        return cls(path=path, sha256=hashlib.sha256(data).hexdigest(), info=info)

    def read(self, *, field: str = "image_file") -> bytes:
        """Read the file again, as it was checked.

        Raises:
            ValidationError: rule ``"changed"``: the file can no longer be
                read, or its content differs from what was checked.

        """
        try:
            with self.path.open("rb") as file:
                # One byte more than expected is enough to see it has grown.
                data = file.read(self.info.size + 1)
        except OSError as exc:
            raise ValidationError(
                field,
                "changed",
                f"{self.path} can no longer be read ({exc.strerror or exc}); nothing was sent",
            ) from exc
        if len(data) != self.info.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise ValidationError(
                field,
                "changed",
                f"{self.path} changed after it was checked; nothing was sent"
                " (build the request again to send the file as it is now)",
            )
        return data

    def data_uri(self, *, field: str = "image_file") -> str:
        """Read the file again and wrap it in a ``data:<mime>;base64,`` URI.

        Raises:
            ValidationError: as :meth:`read`.

        """
        return _encode(self.info.mime, self.read(field=field))
