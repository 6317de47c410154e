"""The emulator's own PNG and JPEG reader: type, size and integrity.

This is deliberately not the client's image code (its ``_images`` module):
the emulator stands for the service, and a rule misread once must not be
mirrored on both sides. It also goes further than the client's header sniff:
the service has to decode the image, so a file that no decoder can read (a
PNG without ``IEND`` or whose ``IDAT`` stream does not inflate, a JPEG that
never reaches its ``EOI``) is rejected here even though its header is fine.

Nothing here holds a decoded image: PNG data is inflated in bounded pieces
and only counted, JPEG scans are only walked for their markers.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator

ImageKind: TypeAlias = Literal["png", "jpeg"]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
JPEG_SOI: Final = b"\xff\xd8"

# Valid PNG bit depths for each colour type, and its samples per pixel.
_PNG_DEPTHS: Final = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS: Final = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7: Final = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_PNG_MAX_FILTER: Final = 4
_PNG_IHDR_SIZE: Final = 13
_PNG_INDEXED: Final = 3
_PNG_MAX_SIDE: Final = 2**31 - 1
_INFLATE_PIECE: Final = 2**20  # bytes of inflated data held at once

# Frame headers: SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_RST: Final = frozenset(range(0xD0, 0xD8))
_JPEG_SOS: Final = 0xDA
_JPEG_SOI_MARKER: Final = 0xD8
_JPEG_EOI: Final = 0xD9
_JPEG_TEM: Final = 0x01
_JPEG_MAX_COMPONENTS: Final = 4


class ImageFileError(ValueError):
    """The bytes are not a JPEG or PNG, or not one a decoder could read.

    Attributes:
        kind: ``"type"`` (neither JPEG nor PNG) or ``"corrupt"`` (a JPEG or
            PNG that is truncated or damaged).

    """

    def __init__(self, kind: Literal["type", "corrupt"], message: str) -> None:
        super().__init__(message)
        self.kind: Final = kind


@attrs.frozen
class ImageFacts:
    """What the emulator learnt from an image file.

    Attributes:
        kind: ``"png"`` or ``"jpeg"``.
        width: Width in pixels.
        height: Height in pixels.
        size: Length of the file in bytes.

    """

    kind: ImageKind
    width: int
    height: int
    size: int


def _corrupt(message: str) -> ImageFileError:
    return ImageFileError("corrupt", message)


def read_image(data: bytes) -> ImageFacts:
    """Identify a PNG or JPEG and check that it is whole and decodable.

    Raises:
        ImageFileError: not PNG or JPEG (``kind="type"``), or truncated or
            corrupt (``kind="corrupt"``).

    """
    if data.startswith(PNG_SIGNATURE):
        width, height = _read_png(data)
        return ImageFacts("png", width, height, len(data))
    if data.startswith(JPEG_SOI):
        width, height = _read_jpeg(data)
        return ImageFacts("jpeg", width, height, len(data))
    raise ImageFileError("type", "the file is neither a PNG nor a JPEG")


# -- PNG -----------------------------------------------------------------------------


@attrs.frozen
class _Header:
    width: int
    height: int
    depth: int
    colour: int
    interlaced: bool


def _png_header(data: bytes) -> _Header:
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data
    )
    if not (0 < width <= _PNG_MAX_SIDE and 0 < height <= _PNG_MAX_SIDE):
        raise _corrupt(f"the PNG's IHDR gives an impossible size {width}x{height}")
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise _corrupt(f"the PNG's IHDR has colour type {colour} with bit depth {depth}")
    if compression or filtering or interlace > 1:
        raise _corrupt("the PNG's IHDR names an unknown compression, filter or interlace")
    return _Header(width, height, depth, colour, interlaced=interlace == 1)


def _png_rows(header: _Header) -> list[tuple[int, int]]:
    """``(bytes per row including its filter byte, rows)`` for each pass."""
    bits = _PNG_CHANNELS[header.colour] * header.depth
    passes = _ADAM7 if header.interlaced else ((0, 0, 1, 1),)
    rows = []
    for x0, y0, dx, dy in passes:
        width = (header.width - x0 + dx - 1) // dx if header.width > x0 else 0
        height = (header.height - y0 + dy - 1) // dy if header.height > y0 else 0
        # An empty pass has no rows at all, not even filter bytes.
        if width and height:
            rows.append((1 + (width * bits + 7) // 8, height))
    return rows


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """Yield each chunk's type and data, through ``IEND``; check lengths and CRCs."""
    at, size = len(PNG_SIGNATURE), len(data)
    view = memoryview(data)
    kind = b""
    while kind != b"IEND":
        if at + 8 > size:
            raise _corrupt("the PNG is truncated: it ends before its IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, at)
        end = at + 8 + length
        if length > _PNG_MAX_SIDE or end + 4 > size:
            raise _corrupt(f"the PNG is truncated inside its {kind!r} chunk")
        # Decoders insist on the CRC of critical chunks (upper-case first letter).
        (crc,) = struct.unpack_from(">I", data, end)
        if kind[0:1].isupper() and zlib.crc32(view[at + 4 : end]) != crc:
            raise _corrupt(f"the PNG's {kind.decode('latin-1')} chunk fails its CRC")
        yield kind, view[at + 8 : end]
        at = end + 4


def _read_png(data: bytes) -> tuple[int, int]:
    chunks = _png_chunks(data)
    kind, body = next(chunks)
    if kind != b"IHDR" or len(body) != _PNG_IHDR_SIZE:
        raise _corrupt("the PNG does not start with an IHDR chunk")
    header = _png_header(bytes(body))
    palette = False
    idat: list[memoryview] = []
    idat_done = False
    for kind, body in chunks:
        if kind == b"IDAT":
            if idat_done:
                raise _corrupt("the PNG's IDAT chunks are not consecutive")
            idat.append(body)
        else:
            idat_done = bool(idat)
            palette = palette or kind == b"PLTE"
    if not idat:
        raise _corrupt("the PNG has no image data (IDAT)")
    if header.colour == _PNG_INDEXED and not palette:
        raise _corrupt("the indexed-colour PNG has no palette (PLTE)")
    _inflate_png(idat, _png_rows(header))
    return header.width, header.height


def _row_starts(rows: list[tuple[int, int]]) -> list[int]:
    starts: list[int] = []
    at = 0
    for stride, count in rows:
        starts.extend(range(at, at + stride * count, stride))
        at += stride * count
    return starts


def _inflate_png(idat: list[memoryview], rows: list[tuple[int, int]]) -> None:
    """Inflate the image data in pieces; check its length and filter bytes."""
    expected = sum(stride * count for stride, count in rows)
    starts = _row_starts(rows)
    next_row = 0
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for chunk in idat:
            pending: bytes | memoryview = chunk
            while pending and not inflater.eof:
                piece = inflater.decompress(pending, _INFLATE_PIECE)
                pending = inflater.unconsumed_tail
                end = produced + len(piece)
                while next_row < len(starts) and starts[next_row] < end:
                    if piece[starts[next_row] - produced] > _PNG_MAX_FILTER:
                        raise _corrupt("the PNG's image data has an invalid row filter")
                    next_row += 1
                produced = end
    except zlib.error as exc:
        raise _corrupt(f"the PNG's image data does not inflate: {exc}") from exc
    # Data after the zlib stream is ignored by decoders; a stream cut short is not.
    if not inflater.eof:
        raise _corrupt("the PNG's image data is truncated (the zlib stream does not end)")
    if produced < expected:
        raise _corrupt(
            f"the PNG's image data is {produced} bytes inflated; its size needs {expected}"
        )


# -- JPEG ----------------------------------------------------------------------------


def _skip_scan(data: bytes, at: int) -> int:
    """Return where the marker after an entropy-coded scan starts."""
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            raise _corrupt("the JPEG is truncated: its scan never ends in a marker (no EOI)")
        following = data[at + 1]
        # FF00 is a stuffed data byte, RSTn sit inside scans, FFFF is fill.
        if following == 0 or following in _JPEG_RST or following == 0xFF:
            at += 1 if following == 0xFF else 2
            continue
        return at


def _frame_size(data: bytes, at: int, length: int) -> tuple[int, int]:
    if length < 8:
        raise _corrupt("the JPEG's frame header (SOF) is too short")
    _, height, width, components = struct.unpack_from(">BHHB", data, at + 2)
    if not 0 < components <= _JPEG_MAX_COMPONENTS or length != 8 + 3 * components:
        raise _corrupt("the JPEG's frame header (SOF) has a bad component list")
    if not width or not height:
        raise _corrupt(f"the JPEG's frame header gives no usable size ({width}x{height})")
    return width, height


def _next_marker(data: bytes, at: int) -> tuple[int, int]:
    """Read the marker at ``at`` (after any fill bytes): ``(marker, where its body starts)``."""
    size = len(data)
    if at >= size:
        raise _corrupt("the JPEG is truncated: it ends before its EOI marker")
    if data[at] != 0xFF:
        raise _corrupt(f"the JPEG is corrupt: no marker at byte {at}")
    while at < size and data[at] == 0xFF:
        at += 1
    if at >= size:
        raise _corrupt("the JPEG is truncated: it ends before its EOI marker")
    return data[at], at + 1


def _segment_length(data: bytes, at: int, marker: int) -> int:
    if at + 2 > len(data):
        raise _corrupt("the JPEG is truncated inside a segment header")
    (length,) = struct.unpack_from(">H", data, at)
    # The length counts its own two bytes.
    if length < 2 or at + length > len(data):
        raise _corrupt(f"the JPEG is truncated inside its {marker:02X} segment")
    return int(length)


def _check_scan_header(data: bytes, at: int, length: int) -> None:
    components = data[at + 2] if length > 2 else 0
    if not 0 < components <= _JPEG_MAX_COMPONENTS or length != 6 + 2 * components:
        raise _corrupt("the JPEG's scan header (SOS) is malformed")


def _read_jpeg(data: bytes) -> tuple[int, int]:
    at = len(JPEG_SOI)
    frame: tuple[int, int] | None = None
    scans = 0
    while True:
        marker, at = _next_marker(data, at)
        if marker == _JPEG_EOI:
            break
        if marker in _JPEG_RST or marker == _JPEG_TEM:
            continue
        if marker == _JPEG_SOI_MARKER:
            raise _corrupt("the JPEG starts a second image before its EOI")
        length = _segment_length(data, at, marker)
        if marker in _JPEG_SOF:
            if frame is not None:
                raise _corrupt("the JPEG has two frame headers (SOF)")
            frame = _frame_size(data, at, length)
        elif marker == _JPEG_SOS:
            if frame is None:
                raise _corrupt("the JPEG's scan comes before its frame header (SOF)")
            _check_scan_header(data, at, length)
            scans += 1
            at = _skip_scan(data, at + length)
            continue
        at += length
    if frame is None or not scans:
        raise _corrupt("the JPEG has no frame header (SOF) or no scan (SOS)")
    return frame
