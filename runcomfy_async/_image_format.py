"""PNG and JPEG as formats: header sniffing, and verifying a file is whole.

:func:`inspect_image` reads an image's type and size from its header alone;
:func:`verify_image` checks the whole file, because the server accepts (and
bills) a truncated upload: the first half of a PNG, or its first 40 bytes,
went through before. A PNG's chunks are walked (each CRC, IHDR first, IEND
last) and its pixel stream is inflated in bounded steps to exactly the size
IHDR implies, with a valid filter byte on every scanline; a JPEG's segments
are walked, with every scan's entropy-coded data, up to its end marker (EOI).
This is hand-written on purpose rather than left to an image library: the
standard library has all it needs (zlib), no pixels are kept (memory stays at
a few megabytes whatever the image), and the verdict is the same on every
install. A JPEG's entropy-coded bits are not Huffman-decoded, so a flipped bit
inside them passes; libjpeg itself only warns about those.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING, Final

import attrs

from ._errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ImageInfo", "inspect_image", "verify_image"]

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI: Final = b"\xff\xd8"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the
# range but are not frame headers.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS: Final = 0xDA
_JPEG_DHT: Final = 0xC4
_JPEG_DQT: Final = 0xDB
# Huffman-coded frames whose scans this module checks in full.
_JPEG_SEQUENTIAL: Final = frozenset({0xC0, 0xC1})
_JPEG_PROGRESSIVE: Final = 0xC2
# 0x02..0xBF are reserved: no encoder writes them.
_JPEG_RESERVED: Final = frozenset(range(0x02, 0xC0))
_JPEG_EOI: Final = 0xD9
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
        if marker in {0xD8, _JPEG_EOI, _JPEG_SOS} or i + 2 > size:
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
    """Sniff an image's type and size from its header, without reading the rest.

    Raises:
        ValidationError: (rule ``"type"``) the bytes are neither PNG nor JPEG,
            or the header is truncated.

    """
    if data.startswith(_PNG_SIGNATURE):
        return _png_info(data, field)
    if data.startswith(_JPEG_SOI):
        return _jpeg_info(data, field)
    raise _not_an_image(field, "the file is neither JPEG nor PNG")


# -- whole-image verification --------------------------------------------------

# Colour type -> (channels, allowed bit depths), from the PNG specification.
_PNG_COLOUR: Final = {
    0: (1, (1, 2, 4, 8, 16)),
    2: (3, (8, 16)),
    3: (1, (1, 2, 4, 8)),
    4: (2, (8, 16)),
    6: (4, (8, 16)),
}
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
_PNG_CRITICAL: Final = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
_PNG_MAX_FILTER: Final = 4
# Inflate at most this much at a time: a 4096x4096 16-bit RGBA image is
# 134 MB of scanlines, and none of it needs to be held.
_INFLATE_STEP: Final = 1 << 20
_BEYOND: Final = 1 << 62


def _damaged(field: str, why: str) -> ValidationError:
    return ValidationError(field, "corrupt", f"the image is damaged or incomplete: {why}")


def _png_scanlines(width: int, height: int, bits: int, interlaced: bool) -> list[int]:
    """Each scanline's length in bytes (filter byte included), in stream order."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    rows: list[int] = []
    for x0, y0, dx, dy in passes:
        columns = (width - x0 + dx - 1) // dx if width > x0 else 0
        lines = (height - y0 + dy - 1) // dy if height > y0 else 0
        # An empty pass has no scanlines at all, not even filter bytes.
        if columns and lines:
            rows += [1 + (columns * bits + 7) // 8] * lines
    return rows


@attrs.define
class _PixelStream:
    """Inflates a PNG's IDAT data in bounded steps and checks each scanline."""

    field: str
    rows: list[int]
    expected: int = attrs.field(init=False)
    seen: int = attrs.field(default=0, init=False)
    next_row: int = attrs.field(default=0, init=False)
    _lengths: Iterator[int] = attrs.field(init=False)
    _inflater: zlib._Decompress = attrs.field(factory=zlib.decompressobj, init=False)

    def __attrs_post_init__(self) -> None:
        self.expected = sum(self.rows)
        self._lengths = iter(self.rows)

    def feed(self, chunk: memoryview) -> None:
        """Inflate one IDAT chunk's data; data past the stream's end is ignored."""
        pending: bytes | memoryview = chunk
        while not self._inflater.eof:
            try:
                out = self._inflater.decompress(pending, _INFLATE_STEP)
            except zlib.error as exc:
                raise _damaged(self.field, f"the PNG's pixel data is corrupt ({exc})") from exc
            pending = self._inflater.unconsumed_tail
            self._scan(out)
            # A full step may leave output inside zlib even with no input left.
            if not pending and len(out) < _INFLATE_STEP:
                return

    def _scan(self, out: bytes) -> None:
        end = self.seen + len(out)
        if end > self.expected:
            raise _damaged(self.field, "the PNG holds more pixel data than its size implies")
        while self.next_row < end:
            if out[self.next_row - self.seen] > _PNG_MAX_FILTER:
                raise _damaged(self.field, "a PNG scanline has an unknown filter type")
            self.next_row += next(self._lengths, _BEYOND)
        self.seen = end

    def finish(self) -> None:
        """Check that the stream ended with exactly the pixel data IHDR implies."""
        if not self._inflater.eof or self.seen != self.expected:
            raise _damaged(
                self.field,
                f"the PNG's pixel data is cut short ({self.seen} of {self.expected} bytes)",
            )


def _png_header(body: memoryview, field: str) -> tuple[int, _PixelStream]:
    """Check IHDR; return the colour type and a stream sized for the pixels."""
    if len(body) != 13:
        raise _damaged(field, "the PNG's IHDR chunk has the wrong length")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", body
    )
    if colour not in _PNG_COLOUR or depth not in _PNG_COLOUR[colour][1]:
        raise _damaged(field, f"the PNG has an invalid colour type {colour} / bit depth {depth}")
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise _damaged(field, "the PNG's width or height is out of range")
    if compression or filtering or interlace > 1:
        raise _damaged(field, "the PNG names an unknown compression, filter or interlace method")
    rows = _png_scanlines(width, height, depth * _PNG_COLOUR[colour][0], interlace == 1)
    return colour, _PixelStream(field, rows)


def _png_chunks(data: bytes, field: str) -> Iterator[tuple[bytes, memoryview, int]]:
    """Yield ``(type, body, offset)`` of each chunk whose CRC holds, up to IEND."""
    view = memoryview(data)
    size, i = len(data), len(_PNG_SIGNATURE)
    while True:
        if i + 8 > size:
            raise _damaged(field, f"the PNG ends after {size} bytes, before its IEND chunk")
        (length,) = struct.unpack_from(">I", data, i)
        kind = bytes(view[i + 4 : i + 8])
        if length >= 2**31 or not (kind.isascii() and kind.isalpha()):
            raise _damaged(field, f"the PNG has a malformed chunk at byte {i}")
        name = kind.decode()
        if i + 12 + length > size:
            raise _damaged(field, f"the PNG ends after {size} bytes, inside its {name} chunk")
        body = view[i + 8 : i + 8 + length]
        (crc,) = struct.unpack_from(">I", data, i + 8 + length)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise _damaged(field, f"the PNG's {name} chunk at byte {i} fails its CRC check")
        # An upper-case first letter marks a chunk a decoder cannot skip.
        if kind[:1].isupper() and kind not in _PNG_CRITICAL:
            raise _damaged(field, f"the PNG has an unknown critical chunk {name!r}")
        yield kind, body, i
        if kind == b"IEND":
            # Anything after IEND is ignored, as decoders do.
            return
        i += 12 + length


def _verify_png(data: bytes, field: str) -> None:
    chunks = _png_chunks(data, field)
    kind, body, _ = next(chunks)
    if kind != b"IHDR":
        raise _damaged(field, "the PNG does not start with its IHDR chunk")
    colour, pixels = _png_header(body, field)
    palette, idat = False, "before"
    for kind, body, at in chunks:
        if kind == b"IHDR":
            raise _damaged(field, f"the PNG has a second IHDR chunk at byte {at}")
        if kind == b"IDAT":
            if idat == "after":
                raise _damaged(field, "the PNG's IDAT chunks are not consecutive")
            if colour == 3 and not palette:
                raise _damaged(field, "the PNG has no palette (PLTE) before its pixels")
            idat = "in"
            pixels.feed(body)
            continue
        if idat == "in":
            idat = "after"
        palette = palette or kind == b"PLTE"
    # The chunk walk ended at IEND (anything else raised on the way).
    pixels.finish()


def _skip_entropy_data(data: bytes, i: int, field: str) -> int:
    """Return where the marker after a scan's entropy-coded data starts."""
    start, size = i, len(data)
    while True:
        at = data.find(b"\xff", i)
        if at < 0 or at + 1 >= size:
            raise _damaged(field, f"the JPEG ends after {size} bytes, inside its image data")
        following = data[at + 1]
        # FF00 is a stuffed 0xFF byte and FFD0..FFD7 are restart markers: both
        # belong to the data. FFFF is fill before the next marker.
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            i = at + 2
        elif following == 0xFF:
            i = at + 1
        elif at == start:
            raise _damaged(field, "a JPEG scan holds no image data")
        else:
            return at


def _huffman_tables(body: memoryview, field: str) -> Iterator[tuple[int, int]]:
    """Check a DHT segment; yield the ``(class, id)`` of each table it defines."""
    # Class and id (1 byte), 16 code counts, then the symbols; repeated. The
    # counts must fit the code space without the all-ones code, as libjpeg
    # requires (ITU T.81 annex C).
    i = 0
    while i < len(body):
        if body[i] >> 4 > 1 or body[i] & 0x0F > 3 or i + 17 > len(body):
            raise _damaged(field, "a JPEG Huffman table (DHT) is malformed")
        counts = body[i + 1 : i + 17]
        codes = 0
        for length, count in enumerate(counts, start=1):
            codes = (codes << 1) + count
            if codes >= 1 << length:
                raise _damaged(field, "a JPEG Huffman table (DHT) has impossible code counts")
        symbols = sum(counts)
        if symbols > 256:
            raise _damaged(field, "a JPEG Huffman table (DHT) has impossible code counts")
        yield body[i] >> 4, body[i] & 0x0F
        i += 17 + symbols
    if i != len(body):
        raise _damaged(field, "a JPEG Huffman table (DHT) is malformed")


@attrs.define
class _JpegFrame:
    """What a JPEG's segments define so far, to check each scan against it."""

    field: str
    marker: int | None = None
    # Component id -> its quantisation table id.
    components: dict[int, int] = attrs.field(factory=dict)
    quantisation: set[int] = attrs.field(factory=set)
    # (class, id): class 0 for DC tables, 1 for AC. libjpeg supplies the
    # standard tables 0 and 1 when a file (Motion JPEG) leaves them out.
    huffman: set[tuple[int, int]] = attrs.field(factory=lambda: {(0, 0), (0, 1), (1, 0), (1, 1)})
    scans: int = 0

    def bad(self, what: str) -> ValidationError:
        """Build the error for a malformed segment."""
        return _damaged(self.field, f"the JPEG's {what} is malformed")

    def segment(self, marker: int, body: memoryview) -> None:
        """Check one segment and note what it defines."""
        if marker in _JPEG_SOF:
            self._frame(marker, body)
        elif marker == _JPEG_SOS:
            self._scan(body)
        elif marker == _JPEG_DHT:
            self.huffman.update(_huffman_tables(body, self.field))
        elif marker == _JPEG_DQT:
            self._quantisation(body)

    def _quantisation(self, body: memoryview) -> None:
        # Precision and id (1 byte), then 64 entries of 1 or 2 bytes; repeated.
        i = 0
        while i < len(body):
            precision, table = body[i] >> 4, body[i] & 0x0F
            if precision > 1 or table > 3:
                break
            self.quantisation.add(table)
            i += 1 + 64 * (precision + 1)
        if i != len(body):
            raise self.bad("quantisation table (DQT)")

    def _frame(self, marker: int, body: memoryview) -> None:
        # Precision, height, width, count, then per component: id, sampling
        # factors (4 bits each, 1 to 4), quantisation table id.
        if self.marker is not None or len(body) < 6 or len(body) != 6 + 3 * body[5]:
            raise self.bad("frame header (SOF)")
        for at in range(6, len(body), 3):
            ident, sampling, table = body[at : at + 3]
            if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 0x0F <= 4) or table > 3:
                raise self.bad("frame header (SOF)")
            self.components[ident] = table
        if not self.components or len(self.components) != body[5]:
            raise self.bad("frame header (SOF)")
        self.marker = marker

    def _scan(self, body: memoryview) -> None:
        # Count, then per component: id and table ids; then the spectral
        # selection (start, end) and the successive approximation bits.
        if self.marker is None:
            raise _damaged(self.field, "the JPEG has a scan before its frame header (SOF)")
        count = body[0] if body else 0
        if not 1 <= count <= 4 or len(body) != 4 + 2 * count:
            raise self.bad("scan header (SOS)")
        chosen = {body[1 + 2 * n] for n in range(count)}
        if len(chosen) != count or not chosen <= self.components.keys():
            raise self.bad("scan header (SOS)")
        missing = {self.components[ident] for ident in chosen} - self.quantisation
        if missing:
            raise _damaged(self.field, f"the JPEG uses quantisation table {min(missing)} undefined")
        start, end, bits = body[-3:]
        # Each scan component names its DC table (high nibble) and AC table.
        selectors = [body[2 + 2 * n] for n in range(count)]
        dc = {(0, selector >> 4) for selector in selectors}
        ac = {(1, selector & 0x0F) for selector in selectors}
        if self.marker in _JPEG_SEQUENTIAL:
            # libjpeg only warns about odd spectral values in a sequential scan.
            needed = dc | ac
        elif self.marker == _JPEG_PROGRESSIVE:
            if not (
                start <= end <= 63
                and (start == 0) == (end == 0)
                and (start == 0 or count == 1)
                and bits >> 4 <= 13
                and bits & 0x0F <= 13
            ):
                raise self.bad("scan header (SOS)")
            # A DC refinement scan reads raw bits; other scans one kind of table.
            needed = ac if start else set() if bits >> 4 else dc
        else:
            needed = set()  # arithmetic, lossless, hierarchical: rare, left to the server
        if not needed <= self.huffman:
            raise _damaged(self.field, "a JPEG scan uses a Huffman table that is not defined")
        self.scans += 1


def _next_marker(data: bytes, i: int, field: str) -> int:
    """Return the offset just past the marker that starts at *i*."""
    size = len(data)
    if i < size and data[i] != 0xFF:
        raise _damaged(field, f"the JPEG has no marker where one must be, at byte {i}")
    # Any number of 0xFF fill bytes may precede a marker.
    while i < size and data[i] == 0xFF:
        i += 1
    if i >= size:
        raise _damaged(field, f"the JPEG ends after {size} bytes, without its end marker")
    if data[i] in _JPEG_RESERVED or data[i] in {0x00, 0xD8}:
        raise _damaged(field, f"the JPEG has an invalid marker at byte {i}")
    return i + 1


def _verify_jpeg(data: bytes, field: str) -> None:
    view = memoryview(data)
    size, i = len(data), len(_JPEG_SOI)
    frame = _JpegFrame(field)
    while True:
        i = _next_marker(data, i, field)
        marker = data[i - 1]
        if marker == _JPEG_EOI:
            if not frame.scans:
                raise _damaged(field, "the JPEG ends before any image data")
            # Anything after EOI (a phone's motion-photo video, say) is ignored.
            return
        if marker in _JPEG_STANDALONE:
            continue
        length = int.from_bytes(data[i : i + 2], "big")
        if i + 2 > size or i + length > size:
            raise _damaged(field, f"the JPEG ends after {size} bytes, inside a segment")
        if length < 2:
            raise _damaged(field, f"the JPEG has a malformed segment at byte {i}")
        frame.segment(marker, view[i + 2 : i + length])
        i += length
        if marker == _JPEG_SOS:
            i = _skip_entropy_data(data, i, field)


def verify_image(data: bytes, *, field: str = "image_url") -> None:
    """Check that a JPEG or PNG is whole and well formed, not just its header.

    Raises:
        ValidationError: rule ``"type"`` (neither JPEG nor PNG) or
            ``"corrupt"`` (cut short, a CRC fails, pixel data does not
            inflate to the size the header states, a segment is malformed).

    """
    if data.startswith(_PNG_SIGNATURE):
        _verify_png(data, field)
    elif data.startswith(_JPEG_SOI):
        _verify_jpeg(data, field)
    else:
        raise _not_an_image(field, "the file is neither JPEG nor PNG")
