"""Typed requests check every rule of their schema when built, with no server."""

from __future__ import annotations

import base64
import types

import attrs
import pytest

from runcomfy_async import (
    DREAMINA_I2V_MODEL_ID,
    ImageToVideo,
    JobResult,
    ModelRequest,
    RunComfyError,
    ValidationError,
)
from runcomfy_async.testing import sample_image_data_uri, sample_jpeg, sample_png

HTTPS = "https://images.example.com/cat.png"
PNG_URI = sample_image_data_uri(640, 480, "png")
JPEG_URI = sample_image_data_uri(640, 480, "jpeg")


def png_uri(width=640, height=480, *, size=None):
    data = sample_png(width, height, size=size)
    return "data:image/png;base64," + base64.b64encode(data).decode()


def jpeg_uri(width=640, height=480, *, size=None, mime="image/jpeg"):
    data = sample_jpeg(width, height, size=size)
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def build(**fields):
    settings = {"prompt": "a cat walks", "image_url": HTTPS, **fields}
    return ImageToVideo(**settings)


def rejected(field, rule, **fields):
    """Build a request that must fail; return its ValidationError."""
    with pytest.raises(ValidationError) as info:
        build(**fields)
    assert (field, rule) == (info.value.field, info.value.rule)
    return info.value


def test_defaults():
    """A request needs a prompt and an image; seed and frames have defaults."""
    request = ImageToVideo(prompt="a cat walks", image_url=HTTPS)

    assert ("a cat walks", HTTPS, -1, 121) == (
        request.prompt,
        request.image_url,
        request.seed,
        request.frames,
    )
    assert DREAMINA_I2V_MODEL_ID == request.model_id == "bytedance/dreamina-3-0/pro/image-to-video"


def test_validation_error_shape():
    """The error is a ValueError and a RunComfyError with ``field`` and ``rule``."""
    error = rejected("prompt", "max_length", prompt="x" * 801)

    assert isinstance(error, ValueError)
    assert isinstance(error, RunComfyError)
    assert str(error).startswith("prompt: is 801 characters")
    assert (None, None, None) == (error.status, error.error_code, error.request_id)


# -- prompt ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("x", id="one-char"),
        pytest.param("x" * 800, id="800-chars"),
        pytest.param("é" * 800, id="800-non-ascii"),
        pytest.param("  a cat  ", id="padded"),
    ],
)
def test_prompt_ok(prompt):
    """Prompts of 1 to 800 characters are kept as given."""
    assert prompt == build(prompt=prompt).prompt


@pytest.mark.parametrize(
    ("prompt", "rule"),
    [
        pytest.param("", "required", id="empty"),
        pytest.param("   \n\t", "required", id="whitespace"),
        pytest.param("x" * 801, "max_length", id="801-chars"),
        pytest.param(None, "type", id="none"),
        pytest.param(42, "type", id="int"),
        pytest.param(b"a cat", "type", id="bytes"),
        pytest.param(["a cat"], "type", id="list"),
    ],
)
def test_prompt_bad(prompt, rule):
    """Empty, blank, too long or non-string prompts are refused."""
    rejected("prompt", rule, prompt=prompt)


def test_prompt_missing():
    """A missing prompt is a TypeError, like any missing argument."""
    with pytest.raises(TypeError, match="prompt"):
        ImageToVideo(image_url=HTTPS)  # type: ignore[call-arg]


# -- image_url -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://images.example.com/cat.png", id="https-png"),
        pytest.param("https://images.example.com/cat.JPG", id="https-jpg-upper"),
        pytest.param("https://images.example.com/cat", id="https-no-extension"),
        pytest.param("https://images.example.com/cat.png?sig=abc", id="https-query"),
        pytest.param("http://127.0.0.1:8080/cat.png", id="http-loopback-v4"),
        pytest.param("http://127.1.2.3/cat.png", id="http-loopback-v4-other"),
        pytest.param("http://localhost:9000/cat.jpeg", id="http-localhost"),
        pytest.param("http://[::1]:9000/cat.png", id="http-loopback-v6"),
        pytest.param(PNG_URI, id="data-png"),
        pytest.param(JPEG_URI, id="data-jpeg"),
        pytest.param(jpeg_uri(mime="image/jpg"), id="data-jpg-mime"),
        pytest.param(jpeg_uri(mime="IMAGE/JPEG"), id="data-upper-mime"),
        pytest.param(png_uri(4096, 4096), id="data-4096-square"),
        pytest.param(png_uri(321, 321), id="data-321-square"),
        pytest.param(png_uri(962, 321), id="data-ratio-just-under-3"),
        pytest.param(png_uri(321, 962), id="data-ratio-just-over-third"),
        pytest.param(png_uri(size=4_699_999), id="data-just-under-4.7MB"),
    ],
)
def test_image_url_ok(url):
    """https URLs, loopback http URLs and good JPEG/PNG data URIs are accepted."""
    assert url == build(image_url=url).image_url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        pytest.param("http://images.example.com/cat.png", "format", id="http-public"),
        pytest.param("http://10.0.0.5/cat.png", "format", id="http-private-ip"),
        pytest.param("http://127.evil.example/cat.png", "format", id="http-127-dns-name"),
        pytest.param("http://localhost.evil.example/cat.png", "format", id="http-localhost-dns"),
        pytest.param("ftp://images.example.com/cat.png", "format", id="ftp"),
        pytest.param("file:///tmp/cat.png", "format", id="file"),
        pytest.param("images.example.com/cat.png", "format", id="no-scheme"),
        pytest.param("https:///cat.png", "format", id="no-host"),
        pytest.param(" https://images.example.com/cat.png", "format", id="leading-space"),
        pytest.param("https://images.example.com/my cat.png", "format", id="inner-space"),
        pytest.param("", "format", id="empty"),
        pytest.param("https://images.example.com/cat.gif", "type", id="gif"),
        pytest.param("https://images.example.com/cat.webp", "type", id="webp"),
        pytest.param("https://images.example.com/cat.WEBP", "type", id="webp-upper"),
        pytest.param("https://images.example.com/cat.heic", "type", id="heic"),
        pytest.param(None, "type", id="none"),
        pytest.param(["https://images.example.com/cat.png"], "type", id="list"),
    ],
)
def test_image_url_bad(url, rule):
    """Plain http off loopback, other schemes and non-JPEG/PNG files are refused."""
    rejected("image_url", rule, image_url=url)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        pytest.param("data:image/png;base64,!!!not-base64!!!", "data_uri", id="bad-base64"),
        pytest.param("data:image/png;base64,iVBORw0KGgo", "data_uri", id="bad-padding"),
        pytest.param("data:image/png;base64,", "data_uri", id="empty-payload"),
        pytest.param("data:image/gif;base64,R0lGODlhAQABAAAAACw=", "data_uri", id="gif-mime"),
        pytest.param("data:image/webp;base64,UklGRg==", "data_uri", id="webp-mime"),
        pytest.param("data:text/plain;base64,aGVsbG8=", "data_uri", id="text-mime"),
        pytest.param("data:image/png," + "x" * 10, "data_uri", id="not-base64-encoded"),
        pytest.param(
            "data:image/png;base64," + base64.b64encode(b"GIF89a" + bytes(40)).decode(),
            "type",
            id="gif-bytes-as-png",
        ),
        pytest.param(
            "data:image/png;base64," + base64.b64encode(sample_jpeg(640, 480)).decode(),
            "type",
            id="jpeg-bytes-declared-png",
        ),
        pytest.param(jpeg_uri(mime="image/png"), "type", id="jpeg-as-png"),
        pytest.param(png_uri(320, 480), "dimensions", id="width-320"),
        pytest.param(png_uri(640, 320), "dimensions", id="height-320"),
        pytest.param(png_uri(4097, 2000), "dimensions", id="width-4097"),
        pytest.param(png_uri(100, 100), "dimensions", id="tiny"),
        pytest.param(jpeg_uri(300, 400), "dimensions", id="jpeg-too-small"),
        pytest.param(png_uri(963, 321), "ratio", id="ratio-3-wide"),
        pytest.param(png_uri(321, 963), "ratio", id="ratio-3-tall"),
        pytest.param(jpeg_uri(2000, 400), "ratio", id="jpeg-ratio-5"),
        pytest.param(png_uri(size=4_700_000), "size", id="png-4.7MB"),
        pytest.param(jpeg_uri(size=4_800_000), "size", id="jpeg-4.8MB"),
    ],
)
def test_data_uri_bad(url, rule):
    """Every image rule is applied to a data URI, each with its own rule name."""
    rejected("image_url", rule, image_url=url)


def test_image_error_message_names_the_numbers():
    """An image error says what the image is and what the limit is."""
    error = rejected("image_url", "dimensions", image_url=png_uri(5000, 3000))

    assert "5000x3000" in str(error)
    assert "4096" in str(error)


# -- seed and frames -------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(-1, id="random"),
        pytest.param(0, id="zero"),
        pytest.param(123456, id="some"),
        pytest.param(2**32 - 1, id="max"),
    ],
)
def test_seed_ok(seed):
    """-1 (random) and 0..2**32-1 are seeds."""
    assert seed == build(seed=seed).seed


@pytest.mark.parametrize(
    ("seed", "rule"),
    [
        pytest.param(2**32, "range", id="2**32"),
        pytest.param(-2, "range", id="minus-2"),
        pytest.param(True, "type", id="bool"),
        pytest.param(1.5, "type", id="float"),
        pytest.param(1.0, "type", id="integral-float"),
        pytest.param("1", "type", id="string"),
        pytest.param(None, "type", id="none"),
    ],
)
def test_seed_bad(seed, rule):
    """Seeds out of range or not integers are refused."""
    rejected("seed", rule, seed=seed)


@pytest.mark.parametrize("frames", [121, 241])
def test_frames_ok(frames):
    """121 and 241 frames are the two choices."""
    request = build(frames=frames)

    assert frames == request.frames
    assert frames / 121 == request.run_time_scale


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(120, id="120"),
        pytest.param(122, id="122"),
        pytest.param(0, id="zero"),
        pytest.param(True, id="bool"),
        pytest.param(121.0, id="float-121"),
        pytest.param("121", id="string"),
        pytest.param(None, id="none"),
    ],
)
def test_frames_bad(frames):
    """Anything but the integers 121 and 241 is refused."""
    rejected("frames", "one_of", frames=frames)


# -- immutability, repr ----------------------------------------------------------------


def test_requests_are_frozen():
    """A built request cannot be changed behind its validators' back."""
    request = build()

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.prompt = ""  # type: ignore[misc]


def test_evolve_validates_again():
    """``attrs.evolve`` builds a new request and checks it again."""
    with pytest.raises(ValidationError):
        attrs.evolve(build(), frames=120)


def test_repr_of_a_data_uri_request_is_short():
    """A multi-megabyte data URI shows as its head and its length."""
    uri = png_uri(size=3_000_000)
    request = build(image_url=uri)

    text = repr(request)

    assert len(text) < 250
    assert f"...<{len(uri)} chars>" in text
    assert "prompt='a cat walks'" in text


def test_repr_of_a_short_url_is_whole():
    """A short URL shows in full."""
    assert f"image_url={HTTPS!r}" in repr(build())


# -- from_file -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [
        pytest.param("cat.png", sample_png(640, 480), "image/png", id="png"),
        pytest.param("cat.jpg", sample_jpeg(640, 480), "image/jpeg", id="jpeg"),
        pytest.param("cat.bin", sample_png(640, 480), "image/png", id="sniffed-not-named"),
    ],
)
def test_from_file(tmp_path, name, data, mime):
    """A local JPEG or PNG is sent inline as a data URI of its sniffed type."""
    path = tmp_path / name
    path.write_bytes(data)

    request = ImageToVideo.from_file(path, prompt="a cat", seed=5, frames=241)

    assert f"data:{mime};base64,{base64.b64encode(data).decode()}" == request.image_url
    assert ("a cat", 5, 241) == (request.prompt, request.seed, request.frames)


def test_from_file_takes_a_string_path(tmp_path):
    """A path may be a plain string."""
    path = tmp_path / "cat.png"
    path.write_bytes(sample_png(640, 480))

    assert PNG_URI == ImageToVideo.from_file(str(path), prompt="a cat").image_url


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        pytest.param(b"GIF89a" + bytes(100), "type", id="gif"),
        pytest.param(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "type", id="webp"),
        pytest.param(b"", "type", id="empty"),
        pytest.param(sample_png(200, 200), "dimensions", id="too-small"),
        pytest.param(sample_png(3000, 500), "ratio", id="bad-ratio"),
        pytest.param(sample_jpeg(640, 480, size=4_700_000), "size", id="too-big"),
    ],
)
def test_from_file_bad(tmp_path, data, rule):
    """A bad local file fails with the field ``image_url``, before any call."""
    path = tmp_path / "input"
    path.write_bytes(data)

    with pytest.raises(ValidationError) as info:
        ImageToVideo.from_file(path, prompt="a cat")

    assert ("image_url", rule) == (info.value.field, info.value.rule)


def test_from_file_checks_the_other_fields(tmp_path):
    """from_file applies the prompt, seed and frames rules too."""
    path = tmp_path / "cat.png"
    path.write_bytes(sample_png(640, 480))

    with pytest.raises(ValidationError) as info:
        ImageToVideo.from_file(path, prompt="a cat", frames=120)  # type: ignore[arg-type]

    assert "frames" == info.value.field


def test_from_file_missing(tmp_path):
    """A missing file is the usual FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        ImageToVideo.from_file(tmp_path / "nope.png", prompt="a cat")


# -- ModelRequest ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    [
        pytest.param("bytedance/dreamina-3-0/pro/image-to-video", id="seed-model"),
        pytest.param("acme/text-to-video", id="two-parts"),
        pytest.param("Owner_1/model.v2/variant", id="dots-underscores-case"),
    ],
)
def test_model_request_ok(model_id):
    """Any well-formed model id is accepted, with its payload as given."""
    payload = {"prompt": "a cat", "image_url": HTTPS}

    request = ModelRequest(model_id, payload)

    assert (model_id, payload, 1.0) == (request.model_id, request.payload, request.run_time_scale)


@pytest.mark.parametrize(
    "model_id",
    [
        pytest.param("", id="empty"),
        pytest.param("noslash", id="one-part"),
        pytest.param("/acme/model", id="leading-slash"),
        pytest.param("acme/model/", id="trailing-slash"),
        pytest.param("acme//model", id="double-slash"),
        pytest.param("acme/../model", id="dot-dot"),
        pytest.param("acme/model?x=1", id="query"),
        pytest.param("acme/model#x", id="fragment"),
        pytest.param("acme/my model", id="space"),
        pytest.param("acme/model\n", id="newline"),
        pytest.param("https://evil.example/model", id="url"),
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
    ],
)
def test_model_request_bad_model_id(model_id):
    """Malformed model ids are refused before anything is sent."""
    with pytest.raises(ValidationError) as info:
        ModelRequest(model_id, {})

    assert ("model_id", "format") == (info.value.field, info.value.rule)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="empty-dict"),
        pytest.param({"a": [1, {"b": None}]}, id="nested"),
        pytest.param(types.MappingProxyType({"a": 1}), id="mapping-proxy"),
    ],
)
def test_model_request_payload_ok(payload):
    """Any str-keyed mapping is a payload."""
    assert payload == ModelRequest("acme/model", payload).payload


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param([("a", 1)], id="list"),
        pytest.param({1: "a"}, id="int-keys"),
        pytest.param(None, id="none"),
        pytest.param('{"a": 1}', id="json-string"),
    ],
)
def test_model_request_payload_bad(payload):
    """A payload must be a JSON object."""
    with pytest.raises(ValidationError) as info:
        ModelRequest("acme/model", payload)

    assert ("payload", "type") == (info.value.field, info.value.rule)


def test_model_request_run_time_scale():
    """``run_time_scale`` is a keyword-only hint."""
    assert 2.0 == ModelRequest("acme/model", {}, run_time_scale=2.0).run_time_scale


def test_model_request_repr_hides_the_payload():
    """The payload (maybe a data URI) stays out of the repr."""
    text = repr(ModelRequest("acme/model", {"image": PNG_URI}))

    assert "ModelRequest(model_id='acme/model', run_time_scale=1.0)" == text


# -- results ----------------------------------------------------------------------------


def test_job_result_video_url_is_the_first():
    """``video_url`` is the first video, or None without one."""
    assert ("https://a.test/1.mp4", None) == (
        JobResult(
            request_id="r", video_urls=("https://a.test/1.mp4", "https://a.test/2.mp4")
        ).video_url,
        JobResult(request_id="r").video_url,
    )
