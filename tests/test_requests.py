"""Requests: every schema rule checked when built, lazy local images, the protocol."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import math
import threading
import types

import attrs
import pytest

from runcomfy_async import (
    DREAMINA_I2V_MODEL_ID,
    ImageToVideo,
    ModelRequest,
    RunComfyError,
    ValidationError,
)
from runcomfy_async._images import ImageRules, LocalImage
from runcomfy_async._requests import Request
from runcomfy_async.testing import sample_image_data_uri, sample_jpeg, sample_png

HTTPS = "https://images.example.com/cat.png"
PNG_URI = sample_image_data_uri(640, 480, "png")
JPEG_URI = sample_image_data_uri(640, 480, "jpeg")
PNG_640 = sample_png(640, 480)
JPEG_640 = sample_jpeg(640, 480)


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
        pytest.param(None, "required", id="none"),
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


# -- from_file: checked now, read when sent ------------------------------------------


def local(tmp_path, data, name="cat.png"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [
        pytest.param("cat.png", sample_png(640, 480), "image/png", id="png"),
        pytest.param("cat.jpg", sample_jpeg(640, 480), "image/jpeg", id="jpeg"),
        pytest.param("cat.bin", sample_png(640, 480), "image/png", id="sniffed-not-named"),
    ],
)
async def test_from_file_is_sent_inline_as_a_data_uri(tmp_path, name, data, mime):
    """A local JPEG or PNG goes out as a data URI of its sniffed type."""
    path = local(tmp_path, data, name)

    request = ImageToVideo.from_file(path, prompt="a cat", seed=5, frames=241)

    expected = {
        "prompt": "a cat",
        "image_urls": [f"data:{mime};base64,{base64.b64encode(data).decode()}"],
        "seed": 5,
        "frames": 241,
    }
    assert expected == await request.encode()


def test_from_file_holds_the_path_and_hash_not_the_bytes(tmp_path):
    """The request keeps the file's path, hash and size; image_url stays None."""
    data = sample_png(640, 480, size=50_000)
    path = local(tmp_path, data)

    request = ImageToVideo.from_file(str(path), prompt="a cat")

    assert (None, path, hashlib.sha256(data).hexdigest(), 50_000) == (
        request.image_url,
        request.image_file.path,
        request.image_file.sha256,
        request.image_file.info.size,
    )
    held = [value for value in gc.get_referents(request.image_file) if isinstance(value, bytes)]
    assert [] == held
    assert "base64" not in repr(request)


def test_from_file_relative_path_is_made_absolute(tmp_path, monkeypatch):
    """A relative path is resolved once, so a later chdir does not change the file."""
    local(tmp_path, sample_png(640, 480))
    monkeypatch.chdir(tmp_path)

    request = ImageToVideo.from_file("cat.png", prompt="a cat")

    assert tmp_path / "cat.png" == request.image_file.path


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        pytest.param(b"GIF89a" + bytes(100), "type", id="gif"),
        pytest.param(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "type", id="webp"),
        pytest.param(b"", "type", id="empty"),
        pytest.param(sample_png(200, 200), "dimensions", id="too-small"),
        pytest.param(sample_png(3000, 500), "ratio", id="bad-ratio"),
        pytest.param(sample_jpeg(640, 480, size=4_700_000), "size", id="too-big"),
        pytest.param(PNG_640[: len(PNG_640) // 2], "corrupt", id="png-first-half"),
        pytest.param(PNG_640[:40], "corrupt", id="png-first-40-bytes"),
        pytest.param(JPEG_640[:-2], "corrupt", id="jpeg-without-eoi"),
    ],
)
def test_from_file_bad(tmp_path, data, rule):
    """A bad local file fails with the field ``image_file``, before any call."""
    path = local(tmp_path, data, "input")

    with pytest.raises(ValidationError) as info:
        ImageToVideo.from_file(path, prompt="a cat")

    assert ("image_file", rule) == (info.value.field, info.value.rule)


def test_from_file_refuses_a_huge_file_without_reading_it(tmp_path, monkeypatch):
    """A file over the size limit is refused from its size alone."""
    path = local(tmp_path, bytes(4_700_000), "huge.png")

    def no_reading(*_):
        raise AssertionError("the file was read")

    monkeypatch.setattr(type(path), "read_bytes", no_reading)
    with pytest.raises(ValidationError) as info:
        ImageToVideo.from_file(path, prompt="a cat")

    assert ("image_file", "size") == (info.value.field, info.value.rule)


def test_from_file_checks_the_other_fields(tmp_path):
    """from_file applies the prompt, seed and frames rules too."""
    path = local(tmp_path, sample_png(640, 480))

    with pytest.raises(ValidationError) as info:
        ImageToVideo.from_file(path, prompt="a cat", frames=120)  # type: ignore[arg-type]

    assert "frames" == info.value.field


def test_from_file_missing(tmp_path):
    """A missing file is the usual FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        ImageToVideo.from_file(tmp_path / "nope.png", prompt="a cat")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda path: path.write_bytes(sample_png(641, 480)), id="other-image"),
        pytest.param(lambda path: path.write_bytes(sample_png(640, 480) + b"x"), id="grown"),
        pytest.param(lambda path: path.unlink(), id="deleted"),
    ],
)
async def test_encode_refuses_a_file_changed_since_it_was_checked(tmp_path, change):
    """What is sent is what was checked: a changed or deleted file is refused."""
    path = local(tmp_path, sample_png(640, 480))
    request = ImageToVideo.from_file(path, prompt="a cat")
    change(path)

    with pytest.raises(ValidationError) as info:
        await request.encode()

    assert ("image_file", "changed") == (info.value.field, info.value.rule)
    assert str(path) in info.value.message


def test_a_local_image_may_be_shared_between_requests(tmp_path):
    """One checked LocalImage serves many requests (a batch reads each file once)."""
    image = LocalImage.open(local(tmp_path, sample_png(640, 480)))

    requests = [ImageToVideo(prompt=f"take {n}", image_file=image) for n in range(3)]

    assert {image} == {request.image_file for request in requests}


def test_a_local_image_is_checked_against_the_models_rules(tmp_path):
    """A LocalImage opened under looser rules still meets the model's rules."""
    loose = ImageRules(max_bytes=10**7, min_side=1, max_side=10_000, max_ratio=100)
    image = LocalImage.open(local(tmp_path, sample_png(200, 200)), rules=loose)

    with pytest.raises(ValidationError) as info:
        ImageToVideo(prompt="a cat", image_file=image)

    assert ("image_file", "dimensions") == (info.value.field, info.value.rule)


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        pytest.param({}, "image_url", "required", id="neither"),
        pytest.param({"image_url": HTTPS, "image_file": "x"}, "image_file", "type", id="not-local"),
        pytest.param({"image_file": "cat.png"}, "image_file", "type", id="a-path"),
    ],
)
def test_an_image_must_be_given_once(fields, field, rule):
    """Exactly one of image_url and image_file, and image_file is a LocalImage."""
    with pytest.raises(ValidationError) as info:
        ImageToVideo(prompt="a cat", **fields)

    assert (field, rule) == (info.value.field, info.value.rule)


def test_url_and_file_together_are_refused(tmp_path):
    """A request has one first frame."""
    image = LocalImage.open(local(tmp_path, sample_png(640, 480)))

    with pytest.raises(ValidationError) as info:
        ImageToVideo(prompt="a cat", image_url=HTTPS, image_file=image)

    assert ("image_file", "exclusive") == (info.value.field, info.value.rule)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        pytest.param("cat.png", "ImageToVideo.from_file('cat.png', prompt=...)", id="relative"),
        pytest.param(
            "/home/me/my cat.png",
            "ImageToVideo.from_file('/home/me/my cat.png', prompt=...)",
            id="abs",
        ),
        pytest.param(
            "file:///tmp/cat.png", "ImageToVideo.from_file('/tmp/cat.png', prompt=...)", id="file"
        ),
        pytest.param("C:\\pics\\cat.png", "ImageToVideo.from_file('C:\\\\pics", id="windows"),
    ],
)
def test_a_local_path_given_as_url_points_to_from_file(url, hint):
    """``image_url="cat.png"`` says how to send a local file."""
    error = rejected("image_url", "format", image_url=url)

    assert hint in error.message
    assert "is not a URL" in error.message


# -- the protocol: encode and fingerprint -------------------------------------------------


def test_both_requests_are_requests():
    """ImageToVideo and ModelRequest implement the Request protocol."""
    assert isinstance(build(), Request)
    assert isinstance(ModelRequest("acme/model", {}), Request)
    assert not isinstance("https://example.com/a.png", Request)


async def test_encode_of_a_url_request():
    """The body maps 1:1 to the seed model's schema."""
    body = await build(image_url=HTTPS, seed=7, frames=241).encode()

    assert {"prompt": "a cat walks", "image_urls": [HTTPS], "seed": 7, "frames": 241} == body


async def test_encode_reads_a_local_file_in_a_worker_thread(tmp_path):
    """The file is read off the event loop's thread."""
    request = ImageToVideo.from_file(local(tmp_path, sample_png(640, 480)), prompt="a cat")
    readers = []
    real_read = LocalImage.read

    def spy(self, **kwargs):
        readers.append(threading.get_ident())
        return real_read(self, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalImage, "read", spy)
        await request.encode()

    assert [threading.get_ident()] != readers
    assert 1 == len(readers)


def test_fingerprint_of_a_url_request():
    """Every field, the image by its URL."""
    expected = {
        "model_id": DREAMINA_I2V_MODEL_ID,
        "prompt": "a cat walks",
        "image": {"kind": "url", "url": HTTPS},
        "seed": 3,
        "frames": 121,
    }
    assert expected == build(seed=3).fingerprint()


def test_fingerprint_of_a_file_and_of_a_data_uri_has_the_hash_not_the_bytes(tmp_path):
    """A file is named by path and SHA-256; a data URI by SHA-256; no base64 in either."""
    data = sample_png(640, 480)
    digest = {"mime": "image/png", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    path = local(tmp_path, data)

    from_file = ImageToVideo.from_file(path, prompt="a cat").fingerprint()
    inline = build(prompt="a cat", image_url=PNG_URI).fingerprint()

    assert {"kind": "file", "path": str(path), **digest} == from_file["image"]
    assert {"kind": "data_uri", **digest} == inline["image"]
    b64 = base64.b64encode(data).decode()[:40]
    assert b64 not in json.dumps(from_file) + json.dumps(inline)


def test_fingerprint_is_deterministic_and_json_safe():
    """Equal requests give equal fingerprints; key order does not matter."""
    one = ModelRequest("acme/model", {"b": [1, 2.5, None], "a": {"y": True, "x": "s"}})
    two = ModelRequest(
        "acme/model", types.MappingProxyType({"a": {"x": "s", "y": True}, "b": (1, 2.5, None)})
    )

    assert json.dumps(one.fingerprint()) == json.dumps(two.fingerprint())
    assert json.loads(json.dumps(one.fingerprint())) == one.fingerprint()


def test_model_request_fingerprint_hides_nested_data_uris():
    """A data URI anywhere in a payload is replaced by its digest."""
    data = sample_jpeg(640, 480)
    uri = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    request = ModelRequest("acme/model", {"inputs": [{"image": uri}], "prompt": "p"})

    expected = {
        "model_id": "acme/model",
        "payload": {
            "inputs": [
                {
                    "image": {
                        "kind": "data_uri",
                        "mime": "image/jpeg",
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                    }
                }
            ],
            "prompt": "p",
        },
        "run_time_scale": 1.0,
    }
    assert expected == request.fingerprint()


async def test_model_request_encode_is_a_plain_copy():
    """The body is the payload as plain dicts and lists, the user's object untouched."""
    payload = types.MappingProxyType({"a": (1, {"b": "c"})})

    body = await ModelRequest("acme/model", payload).encode()

    assert {"a": [1, {"b": "c"}]} == body
    assert isinstance(body, dict)


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
        pytest.param({"a": {1: "x"}}, id="nested-int-key"),
        pytest.param({"a": [{1, 2}]}, id="a-set"),
        pytest.param({"a": math.nan}, id="nan"),
        pytest.param({"a": b"bytes"}, id="bytes"),
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


@pytest.mark.parametrize("scale", [0, -1.0, math.inf, math.nan, "2", True], ids=repr)
def test_model_request_run_time_scale_bad(scale):
    """The hint is a positive, finite number."""
    with pytest.raises(ValidationError) as info:
        ModelRequest("acme/model", {}, run_time_scale=scale)

    assert ("run_time_scale", "range") == (info.value.field, info.value.rule)


def test_model_request_repr_hides_the_payload():
    """The payload (maybe a data URI) stays out of the repr."""
    text = repr(ModelRequest("acme/model", {"image": PNG_URI}))

    assert "ModelRequest(model_id='acme/model', run_time_scale=1.0)" == text
