"""The HTTP seam: the only module that holds an ``aiohttp.ClientSession``.

It sends one exchange and hands back a :class:`~._wire.Reply`, or raises one of
our transport errors. Everything aiohttp can raise is translated here, in one
place, and the translation keeps the one fact a paid submit depends on: did
the request provably never leave this host (``sent=False``)?

It also keeps the token where it belongs: the ``Authorization`` header is
added per request, only for paths under the API base URL, and redirects are
never followed (a redirect could carry the header to another host).
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import aiohttp
from yarl import URL

from ._config import Secret, Timeouts, package_version
from ._errors import ConnectError, ProtocolError, RequestTimeoutError, TransportError
from ._wire import Reply

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""API answers are small JSON objects; a body past this is a broken server."""


def user_agent() -> str:
    """Name this library, its version and the runtime, as the contract asks."""
    return (
        f"runcomfy-async/{package_version()} "
        f"({platform.python_implementation()} {sys.version_info.major}.{sys.version_info.minor}; "
        f"aiohttp/{aiohttp.__version__})"
    )


def _masked(body: bytes, token: Secret) -> bytes:
    # A proxy or debugging gateway may echo our headers into its body, which
    # would carry the token into error messages and logs.
    secret = token.reveal().encode()
    return body.replace(secret, b"***") if secret and secret in body else body


def _translated(exc: BaseException, method: str, target: str, host: str | None = None) -> Exception:
    """Turn an aiohttp failure into one of our transport errors, in one place.

    The distinction that matters for a paid submit is kept: a failure to
    connect means the request never left (``ConnectError``, ``sent=False``);
    anything later may have reached the server.
    """
    where = host or target
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectError(f"timed out connecting to {where}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect to {where}: {exc.os_error}")
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return RequestTimeoutError(f"{method} {target} timed out waiting for the answer")
    return TransportError(f"{method} {target} failed: {type(exc).__name__}: {exc}")


_AIOHTTP_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)


async def _read_whole(response: aiohttp.ClientResponse) -> bytes:
    """Read the whole body, but never more than MAX_BODY_BYTES.

    Reading it to the end matters twice over: a partial body would be
    misread, and an unfinished one keeps aiohttp from reusing the connection.
    """
    if response.content_length is not None:
        return await response.read()  # its size was checked above
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProtocolError("answer is too large", status=response.status)
        chunks.append(chunk)
    return b"".join(chunks)


class PublicBody:
    """An open answer from a public host: status, size and the streamed body."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        """The HTTP status."""
        return self._response.status

    @property
    def content_length(self) -> int | None:
        """The announced size in bytes, if any."""
        return self._response.content_length

    @property
    def location(self) -> str | None:
        """Where a redirect points, resolved against the request URL."""
        target = self._response.headers.get("Location")
        return str(self._response.url.join(URL(target))) if target else None

    async def chunks(self, size: int = 1 << 16) -> AsyncIterator[bytes]:
        """Yield the body in chunks of at most *size* bytes."""
        async for chunk in self._response.content.iter_chunked(size):
            yield chunk


class Transport:
    """One pooled aiohttp session bound to one API base URL and token."""

    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        timeouts: Timeouts,
        max_connections: int,
    ) -> None:
        self._base_url = base_url
        self._token = token
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._headers: Final = {
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }
        # Built once, not per request: every exchange sends the same ones.
        self._api_headers = {**self._headers, "Authorization": f"Bearer {token.reveal()}"}
        self._json_headers = {**self._api_headers, "Content-Type": "application/json"}

    def __reduce__(self) -> tuple[object, ...]:
        # It holds the token in its headers: never write it to a pickle.
        raise TypeError("a Transport cannot be pickled")

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "closed"
        return f"<Transport {self._base_url} {state}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without ``/v1``."""
        return self._base_url

    async def open(self) -> None:
        """Create the connection pool (inside the running event loop)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=self._max_connections,
            ttl_dns_cache=300,
            enable_cleanup_closed=sys.version_info < (3, 12, 7),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=self._timeouts.total,
                sock_connect=self._timeouts.connect,
                sock_read=self._timeouts.read,
            ),
            # Our own loop decides what an error is; never raise on status.
            raise_for_status=False,
            # No cookies: the API uses none, and a jar costs work per request.
            cookie_jar=aiohttp.DummyCookieJar(),
            json_serialize=json.dumps,
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @asynccontextmanager
    async def fetch_public(self, url: str) -> AsyncIterator[PublicBody]:
        """GET a public URL (an output file) with no credentials at all.

        The caller has checked the host against its allow-list; redirects are
        handed back (``status`` 3xx and ``location``) so that it can check the
        next host too. The body is streamed, never held whole.
        """
        session = self._session
        if session is None:
            raise TransportError("the transport is closed", sent=False)
        headers = {"User-Agent": self._headers["User-Agent"]}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeouts.connect, sock_read=self._timeouts.read
        )
        try:
            async with session.get(
                url, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                yield PublicBody(response)
        except _AIOHTTP_FAILURES as exc:
            raise _translated(exc, "GET", url) from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one exchange to ``base_url + path`` and read the whole answer."""
        session = self._session
        if session is None:
            raise TransportError("the transport is closed", sent=False)
        headers = self._api_headers
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers = self._json_headers
        url = self._base_url + path
        try:
            async with session.request(
                method,
                url,
                data=data,
                params=params,
                headers=headers,
                allow_redirects=False,
            ) as response:
                if response.content_length is not None and response.content_length > MAX_BODY_BYTES:
                    raise ProtocolError(
                        f"answer of {response.content_length} bytes is too large",
                        status=response.status,
                    )
                raw = await _read_whole(response)
                raw = _masked(raw, self._token)
                status = response.status
                retry_after = response.headers.get("Retry-After")
                reply_headers = {"Retry-After": retry_after} if retry_after is not None else {}
        except _AIOHTTP_FAILURES as exc:
            raise _translated(exc, method, path, self._base_url) from exc
        if 300 <= status < 400:
            raise ProtocolError(
                f"{method} {path} answered a redirect ({status}); redirects are not "
                "followed, so the token stays with the API host",
                status=status,
            )
        return Reply(status, raw, reply_headers)
