"""Downloads of output files: streamed, bounded, atomic, and only from allowed hosts.

Output URLs are public CDN links, so a download carries no credentials at
all, and it only goes to hosts on an allow-list (RunComfy's own domains and
the API host by default), following at most a few redirects, each checked
again.

Everything here assumes the server may be hostile:

* **Names.** Every name that comes from the server (the URL's last segment,
  the request id used as a fallback) passes :func:`safe_name`, which keeps
  one plain segment of ``[A-Za-z0-9._-]`` or nothing; the final path is then
  checked to lie directly inside the target folder.
* **Links.** The body is written to a partial file created exclusively
  (``O_CREAT | O_EXCL | O_NOFOLLOW``) under a fresh random name beside the
  destination, so no planted file or link is ever opened. The finished file
  is linked into place without replacing anything (``os.link`` fails on any
  existing entry, a link included), or, with ``overwrite=True``, renamed over
  the destination: a rename replaces a link at the destination itself and
  never writes through it.
* **Bounds.** One deadline covers the whole download, redirects and retries
  included (:data:`DEFAULT_TIMEOUT`), and a size cap (:data:`DEFAULT_MAX_BYTES`)
  refuses an announced ``Content-Length`` above it before reading, and cuts a
  body that grows past it.

A crash never leaves a truncated file under the final name: at worst a
``*.part`` file, which is removed on every failure this process sees.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlsplit

import anyio

from ._clock import Clock, RealClock, cancel_at
from ._config import RetryPolicy, is_loopback_host
from ._errors import DownloadError, DownloadTimeoutError, TransportError
from ._events import logger
from ._models import JobResult
from ._retry import retrying
from ._transport import PublicBody, Transport

MAX_REDIRECTS: Final = 3

DEFAULT_MAX_BYTES: Final = 1 << 30
"""The size cap of one output file: 1 GiB.

Today's video models return clips of seconds at up to 1080p: tens of MB. Even
a minute of 4K at 100 Mbit/s (750 MB) fits under the cap, while a runaway or
hostile stream stops long before it fills a disk.
"""

DEFAULT_TIMEOUT: Final = 600.0
"""The deadline of one download in seconds, redirects and retries included.

Ten minutes: a 100 MB clip needs only about 1.3 Mbit/s to make it, and a
stream that trickles forever (each byte inside the read timeout) still ends.
"""

MAX_NAME_CHARS: Final = 200
"""Longest file name kept, leaving room for the partial file's suffix under
the usual 255-byte limit."""

_SAFE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_WINDOWS_DEVICES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_CHUNK: Final = 1 << 16
_CREATE_FLAGS: Final = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def host_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Say whether *url* is https (or loopback http) on an allowed host.

    An entry allows that host and its subdomains: ``runcomfy.net`` allows
    ``playgrounds-storage-public.runcomfy.net``, not ``evilruncomfy.net``.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if not host or parts.username or parts.password:
        return False
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
        return False
    return any(host == entry or host.endswith("." + entry) for entry in allowed)


def safe_name(raw: str) -> str:
    """Reduce *raw* to one harmless file name, or to ``""`` if nothing is left.

    The one sanitiser for every name that comes from a server. It keeps only
    ASCII letters, digits, ``.``, ``_`` and ``-`` (so no separator, drive, NUL
    or control character survives), strips leading dots (no ``..``, no
    hidden file) and trailing dots, sidesteps Windows device names (``con``
    becomes ``_con``) and keeps at most :data:`MAX_NAME_CHARS` characters,
    the extension included.
    """
    name = "".join(c for c in raw if c in _SAFE_CHARS).lstrip(".").rstrip(".")
    if len(name) > MAX_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 16:
            name = stem[: MAX_NAME_CHARS - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_NAME_CHARS]
    if name.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        name = "_" + name
    return name


def file_name(url: str, fallback: str) -> str:
    """Pick a safe file name: the URL's last path segment, else *fallback*.

    Both pass :func:`safe_name`; if neither leaves anything, ``download``.
    """
    from_url = safe_name(PurePosixPath(unquote(urlsplit(url).path)).name)
    return from_url or safe_name(fallback) or "download"


def output_url(target: JobResult | str) -> tuple[str, str]:
    """Return ``(url, fallback name)`` for a result (its primary video) or a URL.

    Raises:
        DownloadError: The result has no output URL.

    """
    if isinstance(target, str):
        return target, "output"
    url = target.video_url or (target.urls[0] if target.urls else None)
    if url is None:
        raise DownloadError(f"result {target.request_id} has no output URL")
    return url, f"{target.request_id}.mp4"


async def download(
    transport: Transport,
    target: JobResult | str,
    dest: str | os.PathLike[str],
    *,
    allowed: Sequence[str],
    retry: RetryPolicy,
    overwrite: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - one deadline over retries, by design
    clock: Clock | None = None,
) -> Path:
    """Stream an output file to disk (atomically) and return its path.

    *target* is a result (its primary video, else its first URL) or one
    output URL. *dest* is a file path, or an existing folder to save into
    under a safe name taken from the URL (else from the request id).
    *timeout* bounds the whole download, retries included (None: no bound);
    *clock* times it and the retries' waits (the real clock by default).

    Raises:
        DownloadError: The host is not allowed (nothing was fetched), the
            destination exists (and *overwrite* is false), the file is larger
            than *max_bytes*, the *timeout* passed, the server answered an
            error, or every retry failed.

    """
    url, fallback = output_url(target)
    if not host_allowed(url, allowed):
        raise DownloadError(f"refusing to download from a host not on the allow-list: {url}")
    path = Path(dest)
    if await anyio.Path(path).is_dir():
        path = _inside(path, file_name(url, fallback))
    # A link counts as a file here, even a dangling one: it is never followed.
    if not overwrite and await anyio.to_thread.run_sync(os.path.lexists, path):
        raise DownloadError(f"{path} exists; pass overwrite=True to replace it")
    clock = RealClock() if clock is None else clock
    deadline = math.inf if timeout is None else clock.now() + timeout
    with cancel_at(clock, deadline):
        return await _download_with_retries(
            transport,
            url,
            path,
            allowed=allowed,
            retry=retry,
            overwrite=overwrite,
            cap=max_bytes,
            clock=clock,
            deadline=deadline,
        )
    # Only the deadline's cancellation of the block above leads here.
    raise DownloadTimeoutError(f"download of {url} passed its deadline of {timeout} s")


def _inside(folder: Path, name: str) -> Path:
    """Join a sanitised name to *folder*, and prove the result is directly inside it."""
    path = folder / name
    if not name or name in {".", ".."} or path.name != name or path.parent != folder:
        raise DownloadError(f"refusing the file name {name!r}: it would leave {folder}")
    return path


def _retryable(error: Exception) -> bool:
    return isinstance(error, (TransportError, _RetryableStatusError))


async def _download_with_retries(
    transport: Transport,
    url: str,
    dest: Path,
    *,
    allowed: Sequence[str],
    retry: RetryPolicy,
    overwrite: bool,
    cap: int,
    clock: Clock,
    deadline: float,
) -> Path:
    def log_retry(attempt: int, delay: float, error: Exception) -> None:
        logger.info("download of %s failed (%s); retry %d in %.2fs", url, error, attempt, delay)

    try:
        part = await retrying(
            lambda: _fetch(transport, url, dest, allowed, cap),
            policy=retry,
            clock=clock,
            retryable=_retryable,
            on_retry=log_retry,
            # No retry whose wait alone would outlast the download's deadline.
            deadline=deadline,
        )
    except (TransportError, _RetryableStatusError) as exc:
        raise DownloadError(f"could not download {url}: {exc}") from exc
    try:
        await anyio.to_thread.run_sync(_put_in_place, part, dest, overwrite)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.Path(part).unlink(missing_ok=True)
    return dest


class _RetryableStatusError(Exception):
    """A 429 or 5xx from the file host: worth another try."""


async def _fetch(
    transport: Transport, url: str, dest: Path, allowed: Sequence[str], cap: int
) -> Path:
    """Fetch *url* once (following allowed redirects) into a new partial file; return it."""
    for _ in range(MAX_REDIRECTS + 1):
        async with transport.fetch_public(url) as body:
            if 300 <= body.status < 400 and body.location:
                url = body.location
                if not host_allowed(url, allowed):
                    raise DownloadError(
                        f"refusing a redirect to a host not on the allow-list: {url}"
                    )
                continue
            if body.status == 429 or body.status >= 500:
                raise _RetryableStatusError(f"HTTP {body.status}")
            if body.status != 200:
                raise DownloadError(f"HTTP {body.status} for {url}", status=body.status)
            if body.content_length is not None and body.content_length > cap:
                raise DownloadError(
                    f"{url} is {body.content_length} bytes, over the cap of {cap} bytes"
                )
            return await _save_body(body, dest, url, cap)
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects for {url}")


async def _save_body(body: PublicBody, dest: Path, url: str, cap: int) -> Path:
    """Stream *body* into a fresh partial file beside *dest*; remove it on any failure."""
    part, fd = await anyio.to_thread.run_sync(_create_part, dest)
    try:
        async with anyio.wrap_file(os.fdopen(fd, "wb")) as handle:
            size = 0
            while chunk := await body.read(_CHUNK):
                size += len(chunk)
                _check_size(size, cap, url)
                await handle.write(chunk)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.Path(part).unlink(missing_ok=True)
        raise
    return part


def _check_size(size: int, cap: int, url: str) -> None:
    if size > cap:
        raise DownloadError(f"{url} grew past the cap of {cap} bytes; cut off")


def _create_part(dest: Path) -> tuple[Path, int]:
    """Create a new partial file beside *dest*, exclusively; never open what is there.

    The name is fresh and random, and ``O_EXCL`` makes the creation fail on
    any existing entry (a planted link included) rather than open it.
    """
    for _ in range(8):
        part = dest.with_name(f"{dest.name}.{secrets.token_hex(6)}.part")
        try:
            return part, os.open(part, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise DownloadError(f"cannot write beside {dest}: {exc.strerror}") from exc
    raise DownloadError(f"cannot create a partial file beside {dest}")


def _put_in_place(part: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished *part* to *dest*; never write through a link.

    Without *overwrite*, ``os.link`` refuses any existing entry atomically (a
    dangling link counts); where hard links are not supported, a check and a
    rename stand in. With it, ``os.replace`` swaps the entry itself, so a
    link at *dest* is replaced, and its target is left alone.
    """
    try:
        if overwrite:
            part.replace(dest)
            return
        try:
            os.link(part, dest)
        except FileExistsError:
            raise DownloadError(f"{dest} exists; pass overwrite=True to replace it") from None
        except OSError:
            # A file system without hard links (FAT, some network shares).
            if os.path.lexists(dest):
                raise DownloadError(f"{dest} exists; pass overwrite=True to replace it") from None
            part.replace(dest)
    except OSError as exc:
        raise DownloadError(f"cannot move the download into {dest}: {exc.strerror}") from exc
