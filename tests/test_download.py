"""Output downloads: allow-list, no token, streaming, atomic, retries."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from aiohttp import web

from runcomfy_async import DownloadError, ImageToVideo, JobResult, Limits, RetryPolicy, RunComfy
from runcomfy_async._clock import VirtualClock
from runcomfy_async._download import download, file_name, host_allowed, safe_name
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


# -- names from the server never leave the folder (issue #9, item 1) ---------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("../../escaped", "escaped", id="parent"),
        pytest.param("/somewhere/escaped", "somewhereescaped", id="absolute"),
        pytest.param("..", "", id="dotdot"),
        pytest.param("a/../b\\c.mp4", "a..bc.mp4", id="separators"),
        pytest.param("C:evil.mp4", "Cevil.mp4", id="drive"),
        pytest.param("con.mp4", "_con.mp4", id="windows-device"),
        pytest.param("v\x00ideo.mp4", "video.mp4", id="nul"),
        pytest.param("vidéo.mp4", "vido.mp4", id="non-ascii"),
        pytest.param("x" * 300 + ".mp4", "x" * 196 + ".mp4", id="too-long"),
    ],
)
def test_safe_name(raw, expected):
    """One sanitiser for every name: one plain segment, or nothing."""
    assert expected == safe_name(raw)


@pytest.mark.parametrize("fallback", ["../../escaped.mp4", "/somewhere/escaped.mp4", "..", ""])
def test_the_fallback_name_is_sanitised_too(fallback):
    """A URL whose name sanitises to nothing falls back to a name that is sanitised as well."""
    name = file_name("https://h/files/%3F%3F", fallback)
    assert name
    assert name == safe_name(name)
    assert "/" not in name
    assert not name.startswith(".")


def file_host(body: bytes = b"video-bytes"):
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body)

    return handler


def result_for(url: str, request_id: str) -> JobResult:
    return JobResult(request_id=request_id, video_urls=(url,), urls=(url,))


@pytest.mark.parametrize("request_id", ["../../escaped", "ABSOLUTE/escaped"])
async def test_a_hostile_request_id_cannot_move_the_file(tmp_path, serving, request_id):
    """The fallback name (from the request id) stays inside the target folder."""
    folder = tmp_path / "a" / "b" / "out"
    folder.mkdir(parents=True)
    request_id = request_id.replace("ABSOLUTE", str(tmp_path / "abs"))
    (tmp_path / "abs").mkdir()

    async with serving(file_host()) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            path = await client.download(result_for(f"{base}/files/%3F%3F", request_id), folder)

    assert folder == path.parent
    assert b"video-bytes" == path.read_bytes()
    everything = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [path] == everything


async def test_the_one_function_names_the_file_from_a_result(tmp_path, serving):
    """download() takes a result and a folder and picks the (safe) name itself."""
    async with serving(file_host()) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            by_url = await download(
                client._transport,
                result_for(f"{base}/v/clip%20one.mp4", "r1"),
                tmp_path,
                allowed=("127.0.0.1",),
                retry=RetryPolicy(attempts=1),
            )
            by_id = await download(
                client._transport,
                result_for(f"{base}/v/%2E%2E", "../r2"),
                tmp_path,
                allowed=("127.0.0.1",),
                retry=RetryPolicy(attempts=1),
            )
    assert (tmp_path / "clipone.mp4", tmp_path / "r2.mp4") == (by_url, by_id)


# -- partial files and links (issue #9, item 2) -------------------------------------------------


async def test_a_planted_part_link_is_not_followed(tmp_path, serving):
    """A symlink planted at the old partial name is neither followed nor needed."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "clip.mp4.part").symlink_to(victim)

    async with serving(file_host()) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            path = await client.download(f"{base}/clip.mp4", folder)

    assert b"precious" == victim.read_bytes()
    assert (folder / "clip.mp4", b"video-bytes") == (path, path.read_bytes())
    assert not path.is_symlink()
    assert {"clip.mp4", "clip.mp4.part"} == {p.name for p in folder.iterdir()}


async def test_a_link_at_the_destination_is_never_followed(tmp_path, serving):
    """Without overwrite a planted link counts as a file; with it, the link itself is replaced."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "clip.mp4").symlink_to(victim)
    (folder / "dangling.mp4").symlink_to(tmp_path / "nowhere.txt")

    async with serving(file_host()) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            for name in ("clip.mp4", "dangling.mp4"):
                with pytest.raises(DownloadError, match="exists"):
                    await client.download(f"{base}/{name}", folder)
            path = await client.download(f"{base}/clip.mp4", folder, overwrite=True)

    assert b"precious" == victim.read_bytes()
    assert not (tmp_path / "nowhere.txt").exists()
    assert not path.is_symlink()
    assert b"video-bytes" == path.read_bytes()
    assert {"clip.mp4", "dangling.mp4"} == {p.name for p in folder.iterdir()}


# -- a deadline and a size cap (issue #9, item 3) ------------------------------------------------


async def fetch(client, url, dest, **options):
    return await download(
        client._transport,
        url,
        dest,
        allowed=("127.0.0.1",),
        retry=RetryPolicy(attempts=3, initial=0.001, maximum=0.002),
        **options,
    )


async def test_a_stalled_download_ends_at_its_deadline(tmp_path, serving):
    """A stream that never ends (a byte, then nothing) is stopped by the total deadline."""
    clock = VirtualClock()
    sent = asyncio.Event()
    ended = []

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x")
        sent.set()
        await asyncio.Event().wait()  # never finishes, and never idles long enough to time out
        return response

    async def run(client):
        with pytest.raises(DownloadError, match="deadline of 600"):
            await fetch(client, f"{base}/slow.mp4", tmp_path, timeout=600.0, clock=clock)
        ended.append(clock.now())

    async with serving(stall) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            async with anyio.create_task_group() as group:
                group.start_soon(run, client)
                await sent.wait()
                await clock.advance(599.0)
                assert [] == ended
                await clock.advance(1.0)

    assert [600.0] == ended
    assert [] == list(tmp_path.iterdir())


async def test_an_announced_size_above_the_cap_is_refused_unread(tmp_path, serving):
    """A Content-Length above the cap is refused before a byte is written, and not retried."""
    hits = []

    async def big(_request: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(body=b"x" * 5000)

    async with serving(big) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            with pytest.raises(DownloadError, match="4096"):
                await fetch(client, f"{base}/big.mp4", tmp_path, max_bytes=4096)
    assert [1] == hits
    assert [] == list(tmp_path.iterdir())


async def test_a_stream_past_the_cap_is_cut_and_removed(tmp_path, serving):
    """A body of no announced size is cut as it passes the cap; nothing is left behind."""
    hits = []

    async def endless(request: web.Request) -> web.StreamResponse:
        hits.append(1)
        response = web.StreamResponse()  # chunked: no Content-Length
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"x" * 1024)
        await response.write_eof()
        return response

    async with serving(endless) as base, FakeRunComfy(time_scale=SCALE) as fake:
        async with open_client(fake, output_hosts=("127.0.0.1",)) as client:
            with pytest.raises(DownloadError, match="4096"):
                await fetch(client, f"{base}/big.mp4", tmp_path, max_bytes=4096)
            ok = await fetch(client, f"{base}/ok.mp4", tmp_path, max_bytes=100 * 1024)
    assert [1, 1] == hits
    assert [ok] == list(tmp_path.iterdir())
    assert 100 * 1024 == ok.stat().st_size
