"""Sample media: images to submit and the fake videos the emulator serves."""

from __future__ import annotations

import base64
import functools
import struct
import zlib
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Ancillary (lower-case first letter), private, safe-to-copy: decoders skip it.
_PNG_PAD_CHUNK: Final = b"rcPd"
_CHUNK_OVERHEAD: Final = 12
_JPEG_SEGMENT_OVERHEAD: Final = 4
_JPEG_MAX_SEGMENT_DATA: Final = 65533
_MAX_SAMPLE_SIDE: Final = 16384


def _check_side(width: int, height: int) -> None:
    if not (0 < width <= _MAX_SAMPLE_SIDE and 0 < height <= _MAX_SAMPLE_SIDE):
        raise ValueError(
            f"sample images are 1..{_MAX_SAMPLE_SIDE} pixels a side, not {width}x{height}"
        )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@functools.lru_cache(maxsize=32)
def _solid_png(width: int, height: int) -> bytes:
    # One-entry palette at one bit per pixel: a 4096x4096 image is 2 MB of
    # raw scanlines that deflate to a couple of kilobytes.
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)
    row = bytes(1 + (width + 7) // 8)
    idat = zlib.compress(row * height, 9)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"PLTE", bytes((64, 128, 192))),
            _png_chunk(b"IDAT", idat),
            _png_chunk(b"IEND", b""),
        )
    )


@functools.lru_cache(maxsize=32)
def sample_png(width: int, height: int, *, size: int | None = None) -> bytes:
    """Build a real, decodable, solid-colour PNG of the given dimensions.

    Args:
        width: Width in pixels (1..16384).
        height: Height in pixels (1..16384).
        size: Pad the file with an ancillary chunk (which decoders skip) to
            exactly this many bytes, to test size limits.

    Raises:
        ValueError: the dimensions are out of range, or ``size`` is smaller
            than the image (or than the image plus one empty chunk).

    """
    _check_side(width, height)
    png = _solid_png(width, height)
    if size is None or size == len(png):
        return png
    extra = size - len(png) - _CHUNK_OVERHEAD
    if extra < 0:
        raise ValueError(
            f"a {width}x{height} PNG is {len(png)} bytes; it can be padded to "
            f"{len(png) + _CHUNK_OVERHEAD} bytes or more, not {size}"
        )
    iend = _png_chunk(b"IEND", b"")
    return png[: -len(iend)] + _png_chunk(_PNG_PAD_CHUNK, bytes(extra)) + iend


def _jpeg_segment(marker: int, data: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(data) + 2) + data


def _jpeg_scan(width: int, height: int) -> bytes:
    # Grey baseline JPEG: every 8x8 block is "DC difference 0" then "end of
    # block", one 1-bit Huffman code each, so the scan is all zero bits.
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    full, rest = divmod(2 * blocks, 8)
    tail = bytes(((1 << (8 - rest)) - 1,)) if rest else b""
    return bytes(full) + tail


@functools.lru_cache(maxsize=32)
def sample_jpeg(width: int, height: int, *, size: int | None = None) -> bytes:
    """Build a small grey baseline JPEG whose SOF0 header has the dimensions.

    Args:
        width: Width in pixels (1..16384).
        height: Height in pixels (1..16384).
        size: Pad the file with comment segments to exactly this many bytes.

    Raises:
        ValueError: the dimensions are out of range, or ``size`` cannot be
            reached (smaller than the image, or 1 to 3 bytes more).

    """
    _check_side(width, height)
    one_code = bytes((1,) + (0,) * 15) + b"\x00"
    head = [
        b"\xff\xd8",
        _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
    ]
    tail = [
        _jpeg_segment(0xDB, b"\x00" + bytes((1,)) * 64),
        _jpeg_segment(0xC0, struct.pack(">BHHB3B", 8, height, width, 1, 1, 0x11, 0)),
        _jpeg_segment(0xC4, b"\x00" + one_code),
        _jpeg_segment(0xC4, b"\x10" + one_code),
        _jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
        _jpeg_scan(width, height),
        b"\xff\xd9",
    ]
    base = sum(map(len, head)) + sum(map(len, tail))
    if size is None:
        return b"".join(head + tail)
    extra = size - base
    if extra < 0 or 0 < extra < _JPEG_SEGMENT_OVERHEAD:
        raise ValueError(
            f"a {width}x{height} JPEG is {base} bytes; it can be padded to "
            f"{base + _JPEG_SEGMENT_OVERHEAD} bytes or more, not {size}"
        )
    comments = []
    while extra > 0:
        take = min(extra, _JPEG_MAX_SEGMENT_DATA + _JPEG_SEGMENT_OVERHEAD)
        if 0 < extra - take < _JPEG_SEGMENT_OVERHEAD:
            take -= _JPEG_SEGMENT_OVERHEAD
        comments.append(_jpeg_segment(0xFE, bytes(take - _JPEG_SEGMENT_OVERHEAD)))
        extra -= take
    return b"".join(head + comments + tail)


def sample_image_data_uri(
    width: int = 640, height: int = 480, kind: Literal["png", "jpeg"] = "png"
) -> str:
    """Build a ``data:image/...;base64,`` URI of a sample image.

    The image is not checked against the service's rules, so tests can build
    rejected inputs too (``sample_image_data_uri(5000, 300)``).
    """
    data = sample_png(width, height) if kind == "png" else sample_jpeg(width, height)
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload) + 8) + kind + payload


def fake_mp4(name: str) -> bytes:
    """Build a few hundred bytes that start like an MP4 file (an ``ftyp`` box)."""
    ftyp = _box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
    note = f"runcomfy_async emulator output {name}".encode()
    return ftyp + _box(b"free", note.ljust(200, b" ")) + _box(b"mdat", bytes(128))


_MP4_MAX_SMALL_BOX: Final = 2**32 - 1


def fake_mp4_stream(size: int, piece: int = 2**16) -> Iterator[bytes]:
    """Yield a fake MP4 of exactly ``size`` bytes, ``piece`` bytes at a time.

    An ``ftyp`` box, then one ``mdat`` box of zeros filling the rest (its
    64-bit size form past 4 GiB): a file of any size that starts like a
    video, built as it goes so a big one is never held in memory.
    """
    ftyp = _box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
    mdat_size = size - len(ftyp)
    if mdat_size <= _MP4_MAX_SMALL_BOX:
        mdat = struct.pack(">I4s", max(mdat_size, 0), b"mdat")
    else:
        mdat = struct.pack(">I4sQ", 1, b"mdat", mdat_size)
    head = (ftyp + mdat)[:size]
    left = size - len(head)
    first = min(left, max(piece - len(head), 0))
    yield head + bytes(first)
    left -= first
    zeros = bytes(min(piece, left))
    while left > 0:
        chunk = zeros if left >= len(zeros) else zeros[:left]
        left -= len(chunk)
        yield chunk
