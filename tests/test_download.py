"""Output downloads: allow-list, no token, streaming, atomic, retries."""

from __future__ import annotations

import pytest
from aiohttp import web

from runcomfy_async import DownloadError, ImageToVideo, Limits, RetryPolicy, RunComfy
from runcomfy_async._download import file_name, host_allowed
from runcomfy_async.testing import FakeRunComfy

SCALE = 0.001


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://playgrounds-storage-public.runcomfy.net/a/b.mp4", True),
        ("https://runcomfy.com/x.mp4", True),
        ("https://evilruncomfy.net/x.mp4", False),
        ("https://runcomfy.net.evil.com/x.mp4", False),
        ("http://playgrounds-storage-public.runcomfy.net/a.mp4", False),
        ("http://127.0.0.1:8000/a.mp4", False),
        ("https://user:pw@runcomfy.net/a.mp4", False),
        ("ftp://runcomfy.net/a.mp4", False),
    ],
    ids=[
        "cdn",
        "apex",
        "lookalike",
        "suffix-trick",
        "plain-http",
        "loopback-not-listed",
        "credentials",
        "ftp",
    ],
)
def test_host_allow_list(url, allowed):
    """Only https (or loopback http) on a listed host or its subdomains passes."""
    assert allowed == host_allowed(url, ("runcomfy.net", "runcomfy.com"))


def test_loopback_http_passes_when_listed():
    """Loopback hosts may use plain http (the emulator does)."""
    assert host_allowed("http://127.0.0.1:8000/a.mp4", ("127.0.0.1",))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h/a/b/video%20one.mp4", "videoone.mp4"),
        ("https://h/a/../../etc/passwd", "passwd"),
        ("https://h/", "fallback.mp4"),
        ("https://h/.hidden", "hidden"),
    ],
)
def test_file_names_are_safe(url, expected):
    """File names come from the URL's last segment, stripped of anything unsafe."""
    assert expected == file_name(url, "fallback.mp4")


def open_client(fake: FakeRunComfy, **kw) -> RunComfy:
    return RunComfy(
        "test-token",
        base_url=fake.base_url,
        limits=Limits(initial_rate=5000.0, burst=500.0),
        retry=RetryPolicy(initial=0.001, maximum=0.005, attempts=3),
        **kw,
    )


async def test_a_result_downloads_without_the_token(tmp_path):
    """The primary video lands in the folder; the file request has no token."""
    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        result = await client.submit(ImageToVideo(prompt="a", image_url="https://e.com/a.png"))
        path = await client.download(result, tmp_path)
    assert path.parent == tmp_path
    assert path.read_bytes()[4:8] == b"ftyp"
    assert not list(tmp_path.glob("*.part"))
    files = [r for r in fake.requests if r.kind == "file"]
    assert 1 == len(files)
    assert "authorization" not in {k.lower() for k in files[0].headers}
    with pytest.raises(DownloadError, match="exists"):
        async with open_client(fake) as again:
            await again.download(result, path)


async def test_a_host_off_the_list_is_refused_before_any_request(tmp_path):
    """Nothing is fetched from a host that is not allowed."""
    async with FakeRunComfy(time_scale=SCALE) as fake, open_client(fake) as client:
        before = fake.count()
        with pytest.raises(DownloadError, match="allow-list"):
            await client.download("https://example.com/x.mp4", tmp_path / "x.mp4")
        assert before == fake.count()


async def test_redirects_off_the_list_are_refused_and_5xx_retried(tmp_path, serving):
    """A redirect to another host is refused; a 503 is retried, then saved."""
    hits = {"flaky": 0}

    async def away(_request: web.Request) -> web.Response:
        raise web.HTTPFound("https://example.com/stolen.mp4")

    async def flaky(_request: web.Request) -> web.Response:
        hits["flaky"] += 1
        if hits["flaky"] == 1:
            return web.Response(status=503)
        return web.Response(body=b"video-bytes")

    async def route(request: web.Request) -> web.Response:
        return await (away if request.path == "/away.mp4" else flaky)(request)

    async with serving(route) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            with pytest.raises(DownloadError, match="redirect"):
                await client.download(f"{base}/away.mp4", tmp_path / "a.mp4")
            path = await client.download(f"{base}/flaky.mp4", tmp_path)
    assert b"video-bytes" == path.read_bytes()
    assert 2 == hits["flaky"]
    assert not (tmp_path / "a.mp4").exists()
