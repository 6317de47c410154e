"""Local image checks: every rule at its boundary, and whole, decodable files."""

# The house style is `assert expected == actual`.

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
import zlib

import pytest

from runcomfy_async._errors import ValidationError
from runcomfy_async._images import (
    ALLOWED_MIME_TYPES,
    DREAMINA_IMAGE_RULES,
    MAX_IMAGE_BYTES,
    ImageInfo,
    ImageRules,
    check_image,
    decode_data_uri,
    inspect_image,
    to_data_uri,
    validate_data_uri,
    validate_image_bytes,
    verify_image,
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


# -- rules as a value ----------------------------------------------------------------


def test_dreamina_rules_are_the_documented_values():
    """The seed model's rules, and the old constants that name them."""
    assert (("image/jpeg", "image/png"), 4_700_000, 320, 4096, 3.0) == (
        DREAMINA_IMAGE_RULES.formats,
        DREAMINA_IMAGE_RULES.max_bytes,
        DREAMINA_IMAGE_RULES.min_side,
        DREAMINA_IMAGE_RULES.max_side,
        DREAMINA_IMAGE_RULES.max_ratio,
    )
    assert MAX_IMAGE_BYTES == DREAMINA_IMAGE_RULES.max_bytes


@pytest.mark.parametrize(
    ("info", "rule"),
    [
        (ImageInfo("image/jpeg", 640, 480, 1000), "type"),
        (ImageInfo("image/png", 640, 480, 2000), "size"),
        (ImageInfo("image/png", 100, 100, 1000), "dimensions"),
        (ImageInfo("image/png", 850, 300, 1000), "ratio"),
    ],
    ids=["type", "size", "dimensions", "ratio"],
)
def test_other_rules_apply_their_own_numbers(info, rule):
    """Another model's rules (PNG only, < 2000 bytes, ratio < 2.5) are applied as given."""
    rules = ImageRules(
        formats=("image/png",), max_bytes=2000, min_side=100, max_side=900, max_ratio=2.5
    )

    with pytest.raises(ValidationError) as excinfo:
        check_image(info, rules=rules)

    assert ("image_url", rule) == rule_of(excinfo)


def test_a_fractional_ratio_limit_is_exact():
    """999x400 is under 2.5:1 and 1000x400 is not."""
    rules = ImageRules(max_bytes=10**6, min_side=1, max_side=4096, max_ratio=2.5)
    rules.check(ImageInfo("image/png", 999, 400, 10))
    with pytest.raises(ValidationError, match=r"< 2\.5 and > 1/2\.5"):
        rules.check(ImageInfo("image/png", 1000, 400, 10))


@pytest.mark.parametrize(
    "fields",
    [
        {"formats": ("image/gif",)},
        {"formats": ()},
        {"max_bytes": 0},
        {"min_side": 500, "max_side": 400},
        {"max_ratio": 0.5},
    ],
    ids=["gif", "no-format", "zero-bytes", "sides", "ratio-below-1"],
)
def test_impossible_rules_are_a_programming_error(fields):
    """Rules that no image could meet raise ValueError when defined."""
    settings = {"max_bytes": 10**6, "min_side": 1, "max_side": 4096, "max_ratio": 3.0, **fields}
    with pytest.raises(ValueError):
        ImageRules(**settings)


# -- whole, decodable images ----------------------------------------------------------


def chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png(ihdr: bytes, *chunks: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + b"".join(chunks) + chunk(b"IEND", b"")


def grey_ihdr(width: int, height: int, *, depth: int = 8, colour: int = 0, interlace: int = 0):
    return struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)


def adam7_size(width: int, height: int, bytes_per_pixel: int) -> int:
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    passes.append((0, 1, 1, 2))
    size = 0
    for x0, y0, dx, dy in passes:
        columns = len(range(x0, width, dx))
        rows = len(range(y0, height, dy))
        if columns and rows:
            size += rows * (1 + columns * bytes_per_pixel)
    return size


def bad(data: bytes) -> str:
    with pytest.raises(ValidationError) as excinfo:
        verify_image(data)
    assert ("image_url", "corrupt") == rule_of(excinfo)
    return excinfo.value.message


@pytest.mark.parametrize(
    "data",
    [
        sample_png(321, 321),
        sample_png(4096, 4096),
        sample_png(962, 321),
        sample_png(321, 962),
        sample_png(640, 480, size=4_699_999),
        sample_jpeg(321, 321),
        sample_jpeg(4096, 4096),
        sample_jpeg(962, 321),
        sample_jpeg(640, 480, size=4_699_999),
    ],
    ids=[
        "png-321",
        "png-4096",
        "png-ratio-just-under-3",
        "png-ratio-just-over-third",
        "png-just-under-4.7MB",
        "jpeg-321",
        "jpeg-4096",
        "jpeg-ratio-just-under-3",
        "jpeg-just-under-4.7MB",
    ],
)
def test_whole_images_at_the_edges_pass(data):
    """Valid files at every boundary are accepted whole."""
    verify_image(data)
    assert len(data) == validate_image_bytes(data).size


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (PNG_640[: len(PNG_640) // 2], "ends after"),
        (PNG_640[:40], "ends after 40 bytes"),
        (PNG_640[:-12], "before its IEND"),
        (JPEG_640[:-2], "inside its image data"),
        (JPEG_640[: len(JPEG_640) // 2], "inside its image data"),
        (JPEG_640[:60], "inside a segment"),
    ],
    ids=["png-first-half", "png-first-40", "png-no-iend", "jpeg-no-eoi", "jpeg-half", "jpeg-60"],
)
def test_truncated_images_are_refused(data, words):
    """A file cut short fails "corrupt", and the message says where it ends."""
    assert words in bad(data)


def test_truncated_data_uri_is_refused():
    """A data URI of half a PNG fails like the file does."""
    with pytest.raises(ValidationError) as excinfo:
        validate_data_uri("data:image/png;base64," + b64(PNG_640[:70]))
    assert ("image_url", "corrupt") == rule_of(excinfo)


@pytest.mark.parametrize("make", [sample_png, sample_jpeg], ids=["png", "jpeg"])
def test_every_strict_prefix_of_an_image_is_refused(make):
    """No cut of a valid file passes, wherever it falls."""
    data = make(640, 480)
    for end in range(len(data)):
        with pytest.raises(ValidationError):
            verify_image(data[:end])


def test_a_corrupted_crc_is_refused():
    """One flipped byte inside a PNG chunk breaks its CRC."""
    data = bytearray(PNG_640)
    data[40] ^= 0x01
    assert "fails its CRC" in bad(bytes(data))


def test_pixel_data_must_inflate_to_the_size_ihdr_states():
    """Too little or too much pixel data, or a broken zlib stream, is refused."""
    rows = 400 * (1 + 400)
    ok = png(grey_ihdr(400, 400), chunk(b"IDAT", zlib.compress(bytes(rows))))
    verify_image(ok)
    short = png(grey_ihdr(400, 400), chunk(b"IDAT", zlib.compress(bytes(rows - 1))))
    assert "cut short" in bad(short)
    long = png(grey_ihdr(400, 400), chunk(b"IDAT", zlib.compress(bytes(rows + 1))))
    assert "more pixel data" in bad(long)
    broken = png(grey_ihdr(400, 400), chunk(b"IDAT", zlib.compress(bytes(rows))[:-6]))
    assert "cut short" in bad(broken)
    garbage = png(grey_ihdr(400, 400), chunk(b"IDAT", b"\x78\x9c" + bytes(range(200))))
    assert "corrupt" in bad(garbage)


def test_pixel_data_may_span_many_idat_chunks():
    """The stream is inflated across consecutive IDAT chunks."""
    stream = zlib.compress(bytes(400 * 401))
    pieces = [chunk(b"IDAT", stream[i : i + 7]) for i in range(0, len(stream), 7)]
    verify_image(png(grey_ihdr(400, 400), *pieces))
    split = png(grey_ihdr(400, 400), pieces[0], chunk(b"tEXt", b"a\x00b"), *pieces[1:])
    assert "not consecutive" in bad(split)


def test_every_scanline_needs_a_known_filter():
    """A filter type byte above 4 cannot be decoded."""
    rows = bytearray(400 * 401)
    rows[401 * 7] = 5
    assert "filter" in bad(png(grey_ihdr(400, 400), chunk(b"IDAT", zlib.compress(bytes(rows)))))


def test_interlaced_png_has_the_adam7_size():
    """An Adam7 PNG is checked against the size of its seven passes."""
    for width, height in [(401, 333), (329, 400), (640, 480)]:
        size = adam7_size(width, height, 3)
        ihdr = grey_ihdr(width, height, colour=2, interlace=1)
        verify_image(png(ihdr, chunk(b"IDAT", zlib.compress(bytes(size)))))
        short = png(ihdr, chunk(b"IDAT", zlib.compress(bytes(size - 1))))
        assert "cut short" in bad(short)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (png(grey_ihdr(400, 400, depth=3)), "bit depth"),
        (
            png(grey_ihdr(400, 400, colour=3), chunk(b"IDAT", zlib.compress(bytes(400 * 401)))),
            "palette",
        ),
        (png(grey_ihdr(400, 400), chunk(b"ABCD", b"")), "unknown critical chunk"),
        (PNG_640[:8] + chunk(b"gAMA", bytes(4)) + PNG_640[8:], "IHDR"),
        (png(grey_ihdr(400, 400), chunk(b"IHDR", grey_ihdr(400, 400))), "second IHDR"),
    ],
    ids=["bad-depth", "no-palette", "unknown-critical", "ihdr-not-first", "two-ihdr"],
)
def test_malformed_png_structure_is_refused(data, words):
    """Chunk order and header values follow the PNG specification."""
    with pytest.raises(ValidationError) as excinfo:
        verify_image(data)
    assert ("image_url", "corrupt") == rule_of(excinfo)
    assert words in excinfo.value.message


def test_data_after_the_end_is_ignored():
    """Bytes after IEND or EOI (a phone's motion-photo video) do not matter."""
    verify_image(PNG_640 + b"trailing")
    verify_image(JPEG_640 + b"\x00\x00ftypmp42")


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.replace(b"\xff\xda", b"\xff\xfe", 1), "no marker"),
        (lambda d: d.replace(b"\xff\xc0", b"\xff\xfe", 1), "scan before its frame"),
        (lambda d: d.replace(b"\xff\xc4\x00\x14\x00\x01", b"\xff\xc4\x00\x14\x00\x03", 1), "DHT"),
        (lambda d: d.replace(b"\xff\xda\x00\x08\x01\x01", b"\xff\xda\x00\x08\x01\x07", 1), "SOS"),
        (lambda d: d.replace(b"\xff\xdb\x00\x43\x00", b"\xff\xdb\x00\x43\x01", 1), "quantisation"),
        (lambda d: d[:2] + b"\xff\x80\x00\x02" + d[2:], "invalid marker"),
        (lambda d: d[:2] + b"\x00" + d[2:], "no marker"),
    ],
    ids=[
        "no-scan",
        "no-frame",
        "bad-huffman-counts",
        "unknown-component",
        "no-table-0",
        "reserved-marker",
        "junk",
    ],
)
def test_malformed_jpeg_structure_is_refused(mutate, words):
    """Segments, tables and scans must hang together."""
    data = mutate(JPEG_640)
    assert data != JPEG_640
    assert words in bad(data)


def test_a_progressive_jpeg_with_restart_markers_passes():
    """Several scans with tables between them, and restart markers in the data."""
    pil = pytest.importorskip("PIL.Image")
    image = pil.effect_noise((500, 400), 60).convert("RGB")
    for options in [{"progressive": True}, {"restart_marker_blocks": 2}, {"optimize": True}]:
        out = io.BytesIO()
        image.save(out, "JPEG", **options)
        data = out.getvalue()
        verify_image(data)
        bad(data[: len(data) - 3])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_pngs_from_a_real_encoder_pass(mode):
    """Pillow's PNGs of every colour type and depth pass; cut short, they fail."""
    pil = pytest.importorskip("PIL.Image")
    noise = pil.effect_noise((400, 350), 60)
    image = noise.convert("I").convert(mode) if mode == "I;16" else noise.convert(mode)
    out = io.BytesIO()
    image.save(out, "PNG")
    data = out.getvalue()
    verify_image(data)
    bad(data[: len(data) // 2])


def test_verifying_a_large_png_holds_little_memory():
    """A 4096x4096 16-bit RGBA PNG (134 MB of scanlines) is checked in bounded memory."""
    row = bytes(1 + 4096 * 8)
    stream = zlib.compressobj(1)
    idat = b"".join(stream.compress(row) for _ in range(4096)) + stream.flush()
    data = png(grey_ihdr(4096, 4096, depth=16, colour=6), chunk(b"IDAT", idat))
    tracemalloc.start()
    try:
        verify_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
