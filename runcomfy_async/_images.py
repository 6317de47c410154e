"""Local image checks, shared by the request models and the emulator.

The seed model accepts JPEG and PNG only, smaller than 4.7 MB, each side
> 320 and <= 4096 pixels, long side to short side under 3:1. Checking this
before a paid submit saves a round trip and a confusing 422. Only headers are
read: nothing here decodes pixels, so a 4 MB image is checked in microseconds.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import TYPE_CHECKING, Final

import attrs

from ._errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "ALLOWED_MIME_TYPES",
    "MAX_IMAGE_BYTES",
    "MAX_RATIO",
    "MAX_SIDE",
    "MIN_SIDE",
    "ImageInfo",
    "check_image",
    "decode_data_uri",
    "inspect_image",
    "to_data_uri",
    "validate_data_uri",
    "validate_image_bytes",
]

MAX_IMAGE_BYTES: Final = 4_700_000
"""An image file must be strictly smaller than this many bytes."""

MIN_SIDE: Final = 320
"""Width and height must each be strictly greater than this."""

MAX_SIDE: Final = 4096
"""Width and height must each be at most this."""

MAX_RATIO: Final = 3.0
"""Width/height must be strictly below this and strictly above its inverse."""

ALLOWED_MIME_TYPES: Final = ("image/jpeg", "image/png")
"""The image types the service accepts."""

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI: Final = b"\xff\xd8"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the
# range but are not frame headers.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
_DATA_URI: Final = re.compile(
    r"data:image/(?P<subtype>jpeg|jpg|png);base64,(?P<payload>.*)",
    re.IGNORECASE | re.DOTALL,
)
_ONLY: Final = "JPEG or PNG only"


@attrs.frozen
class ImageInfo:
    """What an image's header says about it.

    Attributes:
        mime: ``"image/jpeg"`` or ``"image/png"``, sniffed from the bytes.
        width: Width in pixels.
        height: Height in pixels.
        size: Size of the file in bytes.

    """

    mime: str
    width: int
    height: int
    size: int


def _not_an_image(field: str, why: str) -> ValidationError:
    return ValidationError(field, "type", f"{why}; images must be {_ONLY}")


def _png_info(data: bytes, field: str) -> ImageInfo:
    # The IHDR chunk must come first: length (4), type (4), width, height.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise _not_an_image(field, "the PNG header is truncated or has no IHDR")
    width, height = struct.unpack_from(">II", data, 16)
    return ImageInfo(mime="image/png", width=width, height=height, size=len(data))


def _jpeg_segments(data: bytes, field: str) -> Iterator[tuple[int, int, int]]:
    """Yield ``(marker, offset of its length field, length)`` up to the scan."""
    size, i = len(data), 2
    while i < size:
        if data[i] != 0xFF:
            raise _not_an_image(field, f"the JPEG header is corrupt at byte {i}")
        # Any number of 0xFF fill bytes may precede a marker.
        while i < size and data[i] == 0xFF:
            i += 1
        if i >= size:
            return
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        # A new image, its end or its scan: no frame header can follow.
        if marker in {0xD8, 0xD9, 0xDA} or i + 2 > size:
            return
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2:
            return
        yield marker, i, length
        i += length


def _jpeg_info(data: bytes, field: str) -> ImageInfo:
    for marker, at, length in _jpeg_segments(data, field):
        if marker in _JPEG_SOF:
            if length < 7 or at + 7 > len(data):
                break
            height, width = struct.unpack_from(">HH", data, at + 3)
            return ImageInfo(mime="image/jpeg", width=width, height=height, size=len(data))
    raise _not_an_image(field, "the JPEG has no frame header (SOF) with its size")


def inspect_image(data: bytes, *, field: str = "image_url") -> ImageInfo:
    """Sniff an image's type and size from its header, without decoding it.

    Raises:
        ValidationError: (rule ``"type"``) the bytes are neither PNG nor JPEG,
            or the header is truncated.

    """
    if data.startswith(_PNG_SIGNATURE):
        return _png_info(data, field)
    if data.startswith(_JPEG_SOI):
        return _jpeg_info(data, field)
    raise _not_an_image(field, "the file is neither JPEG nor PNG")


def check_image(info: ImageInfo, *, field: str = "image_url") -> None:
    """Apply the service's size, dimension and ratio rules to an image.

    Raises:
        ValidationError: rule ``"size"``, ``"dimensions"`` or ``"ratio"``; the
            message names the image's numbers and the limit.

    """
    if info.size >= MAX_IMAGE_BYTES:
        raise ValidationError(
            field,
            "size",
            f"image is {info.size} bytes; it must be smaller than {MAX_IMAGE_BYTES} bytes (4.7 MB)",
        )
    w, h = info.width, info.height
    if not (MIN_SIDE < w <= MAX_SIDE and MIN_SIDE < h <= MAX_SIDE):
        raise ValidationError(
            field,
            "dimensions",
            f"image is {w}x{h} pixels; each side must be > {MIN_SIDE} and <= {MAX_SIDE}",
        )
    # Integer cross-multiplication: no float rounding right at the boundary.
    limit = int(MAX_RATIO)
    if w >= limit * h or limit * w <= h:
        raise ValidationError(
            field,
            "ratio",
            f"image is {w}x{h} pixels (ratio {w / h:.3f}); width/height must be "
            f"< {limit} and > 1/{limit}",
        )


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
    data: bytes, *, field: str = "image_url", declared_mime: str | None = None
) -> ImageInfo:
    """Inspect and check an image; optionally match it to its declared type.

    Raises:
        ValidationError: rule ``"type"`` (not JPEG/PNG, or not the declared
            type), ``"size"``, ``"dimensions"`` or ``"ratio"``.

    """
    info = inspect_image(data, field=field)
    if declared_mime is not None and _normal_mime(declared_mime) != info.mime:
        raise ValidationError(
            field,
            "type",
            f"declared as {declared_mime} but the bytes are {info.mime}",
        )
    check_image(info, field=field)
    return info


def validate_data_uri(uri: str, *, field: str = "image_url") -> ImageInfo:
    """Decode a data URI and check the image in it.

    Raises:
        ValidationError: as :func:`decode_data_uri` and
            :func:`validate_image_bytes`.

    """
    mime, data = decode_data_uri(uri, field=field)
    return validate_image_bytes(data, field=field, declared_mime=mime)


def to_data_uri(data: bytes, *, field: str = "image") -> str:
    """Check an image and wrap it in a ``data:<mime>;base64,`` URI.

    Raises:
        ValidationError: as :func:`validate_image_bytes`.

    """
    info = validate_image_bytes(data, field=field)
    return f"data:{info.mime};base64,{base64.b64encode(data).decode('ascii')}"
