"""Downloads of output files: streamed, atomic, and only from allowed hosts.

Output URLs are public CDN links, so a download carries no credentials at
all, and it only goes to hosts on an allow-list (RunComfy's own domains and
the API host by default), following at most a few redirects, each checked
again. The file is written next to its destination under a ``.part`` name
and renamed into place when complete, so a crash never leaves a truncated
file that looks finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import unquote, urlsplit

import anyio

from ._backoff import backoff_delay
from ._config import RetryPolicy, is_loopback_host
from ._errors import DownloadError, TransportError
from ._events import logger
from ._transport import Transport

MAX_REDIRECTS: Final = 3


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


def file_name(url: str, fallback: str) -> str:
    """Pick a safe file name from a URL's last path segment."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    name = "".join(c for c in name if c.isalnum() or c in "._-")
    return name.lstrip(".") or fallback


async def download(
    transport: Transport,
    url: str,
    dest: Path,
    *,
    allowed: Sequence[str],
    retry: RetryPolicy,
    overwrite: bool = False,
) -> Path:
    """Stream *url* into *dest* (atomically) and return *dest*.

    Raises:
        DownloadError: The host is not allowed (nothing was fetched), the
            server answered an error, or every retry failed.

    """
    if not host_allowed(url, allowed):
        raise DownloadError(f"refusing to download from a host not on the allow-list: {url}")
    if not overwrite and await anyio.Path(dest).exists():
        raise DownloadError(f"{dest} exists; pass overwrite=True to replace it")
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        attempt += 1
        try:
            await _fetch(transport, url, part, allowed)
        except (TransportError, _RetryableStatusError) as exc:
            if attempt >= retry.attempts:
                await anyio.Path(part).unlink(missing_ok=True)
                raise DownloadError(f"could not download {url}: {exc}") from exc
            delay = backoff_delay(attempt, retry)
            logger.info("download of %s failed (%s); retry %d in %.2fs", url, exc, attempt, delay)
            await anyio.sleep(delay)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.Path(part).unlink(missing_ok=True)
            raise
        else:
            break
    await anyio.Path(part).replace(dest)  # atomic on one file system
    return dest


class _RetryableStatusError(Exception):
    """A 429 or 5xx from the file host: worth another try."""


async def _fetch(transport: Transport, url: str, part: Path, allowed: Sequence[str]) -> None:
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
            async with await anyio.open_file(part, "wb") as handle:
                async for chunk in body.chunks():
                    await handle.write(chunk)
            return
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects for {url}")
