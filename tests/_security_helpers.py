"""Helpers to prove a token is nowhere a user, a log or an error tracker can see.

Reusable by any test: ``assert_token_absent(text)`` for a string (a journal, a
results file, a log), ``assert_nothing_shows(value)`` for an object or an
exception (its whole chain, its attributes and its traceback with locals).
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import AsyncIterator, Iterable, Iterator

TOKEN = "rc-SECRET-7f3a9c2e1b5d"
"""A distinctive token: any occurrence of it in output is a leak."""

OTHER_TOKEN = "rc-REVOKED-0d9e8f7a6b"
"""A second distinctive token (a client the server does not know)."""


def assert_token_absent(text: str | bytes, tokens: Iterable[str] = (TOKEN, OTHER_TOKEN)) -> None:
    """Fail if any of *tokens* occurs in *text* (str or bytes)."""
    for token in tokens:
        needle: str | bytes = token.encode() if isinstance(text, bytes) else token
        at = text.find(needle)  # type: ignore[arg-type]
        assert at < 0, f"token {token[:3]}... leaked at {at}: ...{text[max(0, at - 1500) : at]!r}"


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """Yield *error* and every exception reachable from it.

    Through ``__cause__`` and ``__context__`` (whether or not a traceback would
    show them: ``raise ... from None`` only hides the context) and through the
    members of exception groups.
    """
    seen: set[int] = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        stack.extend(getattr(current, "exceptions", ()))


def shown(value: object, *, with_locals: bool = True) -> list[str]:
    """Every way *value* shows itself: repr and str; for errors, far more.

    For an exception, each one of its chain contributes its repr, str, args,
    attributes (``vars``: where aiohttp keeps ``request_info`` and its
    headers) and its traceback formatted with the locals of every frame (as
    pytest ``--showlocals`` and error trackers capture them).

    Pass ``with_locals=False`` where the server itself sent the token back:
    the body it echoed is data, decoded in the locals of the parsing frames.
    """
    texts = [repr(value), str(value)]
    if not isinstance(value, BaseException):
        return texts
    for error in exception_chain(value):
        texts += [repr(error), str(error), repr(error.args)]
        texts.append(repr(getattr(error, "__dict__", {})))
        report = traceback.TracebackException.from_exception(error, capture_locals=with_locals)
        texts.append("".join(report.format()))
    return texts


def assert_nothing_shows(
    value: object, tokens: Iterable[str] = (TOKEN, OTHER_TOKEN), *, with_locals: bool = True
) -> None:
    """Fail if any of *tokens* shows in anything :func:`shown` lists for *value*."""
    tokens = tuple(tokens)
    for text in shown(value, with_locals=with_locals):
        assert_token_absent(text, tokens)


@contextlib.asynccontextmanager
async def raw_http_server(answer: bytes) -> AsyncIterator[str]:
    """A loopback server that answers every request with the bytes *answer*.

    For answers no web framework will write: a broken status line, an
    invalid header. ``{token}`` in *answer* is replaced by :data:`TOKEN` (so
    that a test's own locals do not hold it). Yields its base URL.
    """
    answer = answer.replace(b"{token}", TOKEN.encode())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
