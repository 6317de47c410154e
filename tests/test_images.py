"""Local image checks: every rule, passing and failing, at its boundary."""

# The house style is `assert expected == actual`.

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from runcomfy_async._errors import ValidationError
from runcomfy_async._images import (
    ALLOWED_MIME_TYPES,
    MAX_IMAGE_BYTES,
    ImageInfo,
    check_image,
    decode_data_uri,
    inspect_image,
    to_data_uri,
    validate_data_uri,
    validate_image_bytes,
)
from runcomfy_async.testing import sample_image_data_uri, sample_jpeg, sample_png

PNG_640 = sample_png(640, 480)
JPEG_640 = sample_jpeg(640, 480)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rule_of(excinfo: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    return excinfo.value.field, excinfo.value.rule


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (sample_png(640, 480), ImageInfo("image/png", 640, 480, len(PNG_640))),
        (sample_jpeg(640, 480), ImageInfo("image/jpeg", 640, 480, len(JPEG_640))),
        (sample_png(1, 4096), ImageInfo("image/png", 1, 4096, len(sample_png(1, 4096)))),
    ],
    ids=["png", "jpeg", "png-tall"],
)
def test_inspect_reads_type_and_dimensions(data, expected):
    """inspect_image sniffs the type and reads the size from the header."""
    assert expected == inspect_image(data)


def jpeg_with(*segments: bytes, width: int = 800, height: int = 600) -> bytes:
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + b"".join(segments) + sof + b"\xff\xda\x00\x02\xff\xd9"


@pytest.mark.parametrize(
    "segments",
    [
        (),
        (b"\xff\xc4\x00\x04\x00\x00",),  # DHT shares the SOF range
        (b"\xff\xcc\x00\x04\x00\x00",),  # DAC too
        (b"\xff\xff\xff\xe1\x00\x04ab",),  # fill bytes before a marker
        (b"\xff\xd0",),  # a standalone marker (RST0)
        (b"\xff\xfe" + struct.pack(">H", 60002) + bytes(60000),),  # long comment
    ],
    ids=["plain", "dht-first", "dac-first", "fill-bytes", "standalone", "comment"],
)
def test_inspect_walks_jpeg_markers_to_the_frame_header(segments):
    """Only a real SOF marker gives the size; other segments are skipped."""
    data = jpeg_with(*segments)
    assert ImageInfo("image/jpeg", 800, 600, len(data)) == inspect_image(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a\x01\x00\x01\x00",
        b"<html>not an image</html>",
        PNG_640[:20],
        PNG_640[:12] + b"IDAT" + PNG_640[16:],
        b"\xff\xd8\xff\xda\x00\x02\xff\xd9",
        b"\xff\xd8\xff\xc0\x00",
        b"\xff\xd8\x00\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    ],
    ids=[
        "empty",
        "gif",
        "html",
        "png-truncated",
        "png-no-ihdr",
        "jpeg-scan-before-sof",
        "jpeg-truncated-sof",
        "jpeg-corrupt",
        "webp",
    ],
)
def test_inspect_rejects_anything_but_jpeg_and_png(data):
    """Other formats and broken headers fail the "type" rule."""
    with pytest.raises(ValidationError) as excinfo:
        inspect_image(data, field="image_urls")
    assert ("image_urls", "type") == rule_of(excinfo)
    assert "JPEG or PNG only" in excinfo.value.message


@pytest.mark.parametrize(
    ("size", "ok"),
    [(4_699_999, True), (4_700_000, False), (4_700_001, False)],
    ids=["just-under", "at-limit", "over"],
)
def test_size_must_be_below_4_7_mb(size, ok):
    """A file of 4,699,999 bytes passes; 4,700,000 does not."""
    data = sample_png(640, 480, size=size)
    assert size == len(data)
    if ok:
        assert size == validate_image_bytes(data).size
        return
    with pytest.raises(ValidationError) as excinfo:
        validate_image_bytes(data)
    assert ("image_url", "size") == rule_of(excinfo)
    assert f"{size} bytes" in excinfo.value.message
    assert str(MAX_IMAGE_BYTES) in excinfo.value.message


@pytest.mark.parametrize(
    ("width", "height", "ok"),
    [
        (320, 480, False),
        (321, 480, True),
        (480, 320, False),
        (480, 321, True),
        (4096, 2048, True),
        (4097, 2048, False),
        (2048, 4096, True),
        (2048, 4097, False),
    ],
    ids=str,
)
def test_each_side_must_be_over_320_and_at_most_4096(width, height, ok):
    """Sides of 320 and 4097 fail; 321 and 4096 pass."""
    info = ImageInfo("image/png", width, height, 1000)
    if ok:
        check_image(info)
        return
    with pytest.raises(ValidationError) as excinfo:
        check_image(info)
    assert ("image_url", "dimensions") == rule_of(excinfo)
    assert f"{width}x{height}" in excinfo.value.message


@pytest.mark.parametrize(
    ("width", "height", "ok"),
    [
        (963, 321, False),
        (962, 321, True),
        (321, 963, False),
        (321, 962, True),
        (3000, 1000, False),
        (2999, 1000, True),
        (1000, 3000, False),
    ],
    ids=str,
)
def test_ratio_must_stay_strictly_within_3_to_1(width, height, ok):
    """Exactly 3:1 or 1:3 fails; just inside passes."""
    info = ImageInfo("image/png", width, height, 1000)
    if ok:
        check_image(info)
        return
    with pytest.raises(ValidationError) as excinfo:
        check_image(info)
    assert ("image_url", "ratio") == rule_of(excinfo)
    assert f"{width}x{height}" in excinfo.value.message


def test_dimension_message_names_numbers_and_limits():
    """The message says what the image is and what the limit is."""
    with pytest.raises(ValidationError) as excinfo:
        check_image(ImageInfo("image/png", 5000, 300, 1000), field="image")
    expected = "image: image is 5000x300 pixels; each side must be > 320 and <= 4096"
    assert expected == excinfo.value.message


@pytest.mark.parametrize(
    ("prefix", "data", "mime"),
    [
        ("data:image/png;base64,", PNG_640, "image/png"),
        ("data:image/jpeg;base64,", JPEG_640, "image/jpeg"),
        ("data:image/jpg;base64,", JPEG_640, "image/jpeg"),
        ("DATA:IMAGE/PNG;BASE64,", PNG_640, "image/png"),
    ],
    ids=["png", "jpeg", "jpg-alias", "upper-case"],
)
def test_decode_data_uri_accepts_png_and_jpeg(prefix, data, mime):
    """Both types decode; the scheme and type are case-insensitive."""
    assert (mime, data) == decode_data_uri(prefix + b64(data))


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/a.png",
        "data:image/gif;base64,R0lGODlh",
        "data:image/png,rawdata",
        "data:image/png;charset=utf-8;base64,AAAA",
        "data:;base64,AAAA",
        "data:image/png;base64,",
        "data:image/png;base64,@@@@",
        "data:image/png;base64,iVBORw0KGgo",
        "data:image/png;base64,iVBO Rw0KGgo=",
        "data:image/png;base64,iVBORw0K\nGgo=",
        " data:image/png;base64,iVBORw0KGgo=",
    ],
    ids=[
        "https",
        "gif",
        "not-base64",
        "parameters",
        "no-type",
        "empty",
        "bad-alphabet",
        "bad-padding",
        "space",
        "newline",
        "leading-space",
    ],
)
def test_decode_data_uri_is_strict(uri):
    """Anything but an exact base64 JPEG/PNG data URI fails "data_uri"."""
    with pytest.raises(ValidationError) as excinfo:
        decode_data_uri(uri, field="image_urls")
    assert ("image_urls", "data_uri") == rule_of(excinfo)


@pytest.mark.parametrize(
    ("declared", "data", "ok"),
    [
        ("image/png", PNG_640, True),
        ("image/jpeg", JPEG_640, True),
        ("image/jpg", JPEG_640, True),
        ("IMAGE/PNG", PNG_640, True),
        ("image/jpeg", PNG_640, False),
        ("image/png", JPEG_640, False),
        ("image/gif", PNG_640, False),
    ],
    ids=["png", "jpeg", "jpg", "upper", "jpeg-is-png", "png-is-jpeg", "gif-is-png"],
)
def test_declared_type_must_match_the_bytes(declared, data, ok):
    """A declared type that differs from the sniffed one fails "type"."""
    if ok:
        validate_image_bytes(data, declared_mime=declared)
        return
    with pytest.raises(ValidationError) as excinfo:
        validate_image_bytes(data, declared_mime=declared)
    assert ("image_url", "type") == rule_of(excinfo)


def test_validate_data_uri_checks_type_and_rules():
    """A data URI is decoded, matched to its type and checked."""
    assert ImageInfo("image/png", 640, 480, len(PNG_640)) == validate_data_uri(
        sample_image_data_uri(640, 480)
    )
    with pytest.raises(ValidationError) as excinfo:
        validate_data_uri("data:image/jpeg;base64," + b64(PNG_640))
    assert ("image_url", "type") == rule_of(excinfo)
    with pytest.raises(ValidationError) as excinfo:
        validate_data_uri(sample_image_data_uri(5000, 300))
    assert ("image_url", "dimensions") == rule_of(excinfo)


@pytest.mark.parametrize("data", [PNG_640, JPEG_640], ids=["png", "jpeg"])
def test_to_data_uri_round_trips(data):
    """to_data_uri labels the bytes with their sniffed type."""
    uri = to_data_uri(data)
    assert (inspect_image(data).mime, data) == decode_data_uri(uri)


def test_to_data_uri_refuses_bad_images():
    """to_data_uri validates first, under the field name "image"."""
    with pytest.raises(ValidationError) as excinfo:
        to_data_uri(sample_png(100, 100))
    assert ("image", "dimensions") == rule_of(excinfo)


def test_allowed_types():
    """Only JPEG and PNG are allowed."""
    assert ("image/jpeg", "image/png") == ALLOWED_MIME_TYPES


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, i = [], 8
    while i < len(data):
        (length,) = struct.unpack_from(">I", data, i)
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack_from(">I", data, i + 8 + length)
        assert zlib.crc32(kind + body) == crc
        chunks.append((kind, body))
        i += 12 + length
    return chunks


def test_sample_png_is_a_real_small_png():
    """The sample PNG has valid chunks and scanlines, and stays small."""
    data = sample_png(4096, 4096)
    chunks = png_chunks(data)
    assert [b"IHDR", b"PLTE", b"IDAT", b"IEND"] == [kind for kind, _ in chunks]
    raw = zlib.decompress(chunks[2][1])
    assert 4096 * (1 + 4096 // 8) == len(raw)
    assert len(data) < 10_000


def test_sample_png_padding_is_an_ancillary_chunk():
    """Padding adds a chunk decoders may skip, before IEND."""
    chunks = png_chunks(sample_png(640, 480, size=10_000))
    assert [b"IHDR", b"PLTE", b"IDAT", b"rcPd", b"IEND"] == [k for k, _ in chunks]


@pytest.mark.parametrize("make", [sample_png, sample_jpeg], ids=["png", "jpeg"])
def test_sample_padding_must_be_reachable(make):
    """Asking for a size smaller than the image raises ValueError."""
    with pytest.raises(ValueError, match="padded"):
        make(640, 480, size=10)


def test_sample_jpeg_pads_to_any_large_size():
    """JPEG padding spans several comment segments and hits the size exactly."""
    data = sample_jpeg(640, 480, size=200_003)
    assert ImageInfo("image/jpeg", 640, 480, 200_003) == inspect_image(data)
