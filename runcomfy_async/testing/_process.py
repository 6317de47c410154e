"""Run the emulator in its own process, for benchmarks and cross-process tests."""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import anyio.to_thread

from ._cmdline import fault_args

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from typing_extensions import Self

    from ._config import FaultName, Faults, FaultTarget

_READY: Final = re.compile(rb"RunComfy emulator listening on (http://\S+)")
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[2])
_ADMIN_TIMEOUT: Final = 10.0


class EmulatorProcess:
    """``python -m runcomfy_async.testing`` in a subprocess, as a context manager.

    ``with EmulatorProcess(time_scale=0.01) as emulator:`` starts it, waits
    until it listens and exposes :attr:`base_url`; leaving the block
    terminates it. ``async with`` does the same without blocking the event
    loop. ``faults`` is passed on as ``--fault`` flags; options not listed
    here go through ``extra_args`` as command-line flags (see
    ``python -m runcomfy_async.testing --help``). :meth:`inject`,
    :meth:`accepted_submits` and :meth:`stats` call the admin endpoints.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "test-token",  # noqa: S107 - a fake server's fake token
        time_scale: float = 1.0,
        slots: int | None = None,
        seed: int = 0,
        failure_rate: float = 0.0,
        rate_limit: float | None = None,
        record: bool = True,
        faults: Faults | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        startup_timeout: float = 20.0,
    ) -> None:
        args = [python, "-m", "runcomfy_async.testing", "--host", host]
        args += ["--port", str(port), "--token", token, "--seed", str(seed)]
        args += ["--time-scale", repr(time_scale), "--failure-rate", repr(failure_rate)]
        if slots is not None:
            args += ["--slots", str(slots)]
        if rate_limit is not None:
            args += ["--rate-limit", repr(rate_limit)]
        if not record:
            args.append("--no-record")
        if faults is not None:
            args += fault_args(faults)
        self.args: Final = [*args, *extra_args]
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """Where the emulator listens, e.g. ``http://127.0.0.1:8765``."""
        if self._base_url is None:
            raise RuntimeError("the emulator process is not running")
        return self._base_url

    @property
    def pid(self) -> int:
        """The subprocess's id."""
        if self._process is None:
            raise RuntimeError("the emulator process is not running")
        return self._process.pid

    def _admin(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=_ADMIN_TIMEOUT) as response:  # noqa: S310
            return json.load(response)

    def inject(self, kind: FaultTarget, fault: FaultName, times: int = 1) -> None:
        """Script a fault in the running emulator, as :meth:`FakeRunComfy.inject`.

        A blocking loopback call (``POST /_emulator/inject``).

        Raises:
            urllib.error.HTTPError: the emulator refused the order (400).

        """
        self._admin("POST", "/_emulator/inject", {"kind": kind, "fault": fault, "times": times})

    def accepted_submits(self) -> dict[str, int]:
        """Return :meth:`FakeRunComfy.accepted_submits` of the running emulator."""
        answer = self._admin("GET", "/_emulator/accepted-submits")
        if not isinstance(answer, dict):  # pragma: no cover - the emulator's own answer
            raise TypeError(f"unexpected answer {answer!r}")
        return {str(key): int(count) for key, count in answer.items()}

    def stats(self) -> dict[str, object]:
        """Return what ``GET /_emulator/stats`` answers."""
        answer = self._admin("GET", "/_emulator/stats")
        if not isinstance(answer, dict):  # pragma: no cover - the emulator's own answer
            raise TypeError(f"unexpected answer {answer!r}")
        return answer

    def start(self) -> None:
        """Start the subprocess and wait until it announces its address."""
        if self._process is not None:
            raise RuntimeError("the emulator process is already running")
        env = dict(os.environ)
        # The child must import this very package, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.args, stdout=subprocess.PIPE, env=env
        )
        try:
            self._base_url = self._wait_ready(self._process)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> str:
        stdout: IO[bytes] | None = process.stdout
        if stdout is None:  # pragma: no cover - Popen was given stdout=PIPE
            raise RuntimeError("no stdout pipe")
        deadline = time.monotonic() + self._startup_timeout
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while True:
                match = _READY.search(seen)
                if match and seen.endswith(b"\n"):
                    return match[1].decode()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the emulator did not start in {self._startup_timeout} s")
                if not selector.select(left):
                    continue
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    code = process.wait()
                    raise RuntimeError(
                        f"the emulator exited with code {code} before listening: "
                        f"{seen.decode(errors='replace')[-500:]!r}"
                    )
                seen += chunk

    def stop(self) -> None:
        """Terminate the subprocess (kill it if it lingers) and reap it."""
        process, self._process = self._process, None
        self._base_url = None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def __repr__(self) -> str:
        where = self._base_url or "not running"
        return f"<EmulatorProcess {where}>"
