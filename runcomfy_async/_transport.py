"""The HTTP seam: the only module that holds an ``aiohttp.ClientSession``.

It sends one exchange and hands back a :class:`~._wire.Reply`, or raises one of
our transport errors. Everything aiohttp can raise is translated here, in one
place, and the translation keeps the one fact a paid submit depends on: did
the request provably never leave this host (``sent=False``)?

It also keeps the token where it belongs:

* Two sessions. The API session carries ``Authorization`` as a session
  default, so no frame on the request path holds the token in a local (a
  traceback with locals, as pytest ``--showlocals`` or an error tracker
  records it, shows nothing); it only ever sends to ``base_url + path`` and
  never follows a redirect (a redirect could carry the header elsewhere).
  Public files (outputs) go through a second session that has no credentials
  at all.
* No foreign exception is chained. aiohttp's ``ClientResponseError`` keeps
  the request's headers, the token among them, in ``request_info``; our
  errors are raised outside the ``except`` block, so neither ``__cause__``
  nor ``__context__`` reaches it, and their messages are masked.
* Masking is for text that leaves the library: :meth:`Transport.redact` goes
  with each :class:`~._wire.Reply` to the wire layer, which masks the token
  in the messages it builds from a body. The body itself, which is parsed, is
  never changed (a token that happens to occur in an answer must not
  corrupt it).
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
from collections.abc import AsyncIterator, Callable, Mapping
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


def _translated(
    exc: BaseException,
    method: str,
    target: str,
    host: str | None = None,
    redact: Callable[[str], str] = str,
) -> TransportError:
    """Turn an aiohttp failure into one of our transport errors, in one place.

    The distinction that matters for a paid submit is kept: a failure to
    connect means the request never left (``ConnectError``, ``sent=False``);
    anything later may have reached the server. The caller raises the result
    *outside* its ``except`` block, so that the aiohttp error (which may hold
    the request headers) is neither the cause nor the context of ours.
    """
    where = host or target
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectError(f"timed out connecting to {where}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect to {where}: {exc.os_error}")
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return RequestTimeoutError(f"{method} {target} timed out waiting for the answer")
    if isinstance(exc, aiohttp.ClientResponseError):
        # Its str is safe by design (status, message, URL), but the message
        # quotes the server's bytes, which a hostile peer could fill.
        what = f"a malformed answer: {exc.message}" if exc.message else f"HTTP {exc.status}"
    else:
        what = str(exc) or "no detail"
    return TransportError(redact(f"{method} {target} failed: {type(exc).__name__}: {what}"))


_AIOHTTP_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)

_JSON_BODY: Final = {"Content-Type": "application/json"}


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

    __slots__ = ("_response", "_url")

    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url

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
        if not target:
            return None
        try:
            return str(self._response.url.join(URL(target)))
        except ValueError:
            return None  # unreadable: the caller treats the answer as an error

    async def read(self, size: int = 1 << 16) -> bytes:
        """Return the next at most *size* bytes of the body; ``b""`` at its end."""
        error: TransportError | None = None
        try:
            return await self._response.content.read(size)
        except _AIOHTTP_FAILURES as exc:
            error = _translated(exc, "GET", self._url)
        raise error


class Transport:
    """Pooled sessions bound to one API base URL and token (and none for public files)."""

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
        self._public: aiohttp.ClientSession | None = None
        self._user_agent: Final = user_agent()

    def __reduce__(self) -> tuple[object, ...]:
        # It holds the token (and a session that sends it): never pickle it.
        raise TypeError("a Transport cannot be pickled")

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "closed"
        return f"<Transport {self._base_url} {state}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without ``/v1``."""
        return self._base_url

    def redact(self, text: str) -> str:
        """Return *text* with the token masked: for text that leaves the library.

        A proxy or debugging gateway may echo our headers into its answer;
        messages built from answers pass through here. Never used on data
        that is parsed.
        """
        secret = self._token.reveal()
        return text.replace(secret, "***") if secret and secret in text else text

    async def open(self) -> None:
        """Create the API connection pool (inside the running event loop)."""
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(
            connector=self._connector(),
            # Session defaults, never a per-call dict: no frame on the request
            # path holds the token, so a traceback with locals shows nothing.
            headers={
                "Accept": "application/json",
                "User-Agent": self._user_agent,
                "Authorization": f"Bearer {self._token.reveal()}",
            },
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

    def _connector(self) -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=self._max_connections,
            ttl_dns_cache=300,
            enable_cleanup_closed=sys.version_info < (3, 12, 7),
        )

    def _public_session(self) -> aiohttp.ClientSession:
        """Return the session for public files: no credentials; made on first use."""
        if self._session is None:
            raise TransportError("the transport is closed", sent=False)
        if self._public is None:
            self._public = aiohttp.ClientSession(
                connector=self._connector(),
                headers={"User-Agent": self._user_agent},
                timeout=aiohttp.ClientTimeout(
                    # A file may be large: the caller bounds the whole download.
                    total=None,
                    sock_connect=self._timeouts.connect,
                    sock_read=self._timeouts.read,
                ),
                raise_for_status=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._public

    async def close(self) -> None:
        """Close every pooled connection."""
        session, self._session = self._session, None
        public, self._public = self._public, None
        for pool in (session, public):
            if pool is not None:
                await pool.close()

    @asynccontextmanager
    async def fetch_public(self, url: str) -> AsyncIterator[PublicBody]:
        """GET a public URL (an output file) with no credentials at all.

        The caller has checked the host against its allow-list; redirects are
        handed back (``status`` 3xx and ``location``) so that it can check the
        next host too. The body is streamed, never held whole.
        """
        session = self._public_session()
        error: TransportError | None = None
        try:
            response = await session.get(url, allow_redirects=False)
        except _AIOHTTP_FAILURES as exc:
            error = _translated(exc, "GET", url)
        if error is not None:
            raise error
        # Read errors are translated by PublicBody.read, in the reader's frame:
        # translated here they would be raised while the caller's ``async
        # with`` handles the aiohttp error, and would chain to it.
        async with response:
            yield PublicBody(response, url)

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
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
        error: TransportError | None = None
        try:
            async with session.request(
                method,
                self._base_url + path,
                data=data,
                params=params,
                headers=_JSON_BODY if data is not None else None,
                allow_redirects=False,
            ) as response:
                if response.content_length is not None and response.content_length > MAX_BODY_BYTES:
                    raise ProtocolError(
                        f"answer of {response.content_length} bytes is too large",
                        status=response.status,
                    )
                raw = await _read_whole(response)
                status = response.status
                retry_after = response.headers.get("Retry-After")
                reply_headers = {"Retry-After": retry_after} if retry_after is not None else {}
        except _AIOHTTP_FAILURES as exc:
            error = _translated(exc, method, path, self._base_url, self.redact)
        if error is not None:
            # Raised here, outside the except block: see _translated.
            raise error
        if 300 <= status < 400:
            raise ProtocolError(
                f"{method} {path} answered a redirect ({status}); redirects are not "
                "followed, so the token stays with the API host",
                status=status,
            )
        return Reply(status, raw, reply_headers, redact=self.redact)
