"""The live display, in a real pseudo-terminal, with the screen rebuilt and asserted on."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios

import pytest

pytest.importorskip("rich")
pty = pytest.importorskip("pty")

TOKEN_VARS = ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY")
COLUMNS, ROWS = 110, 40
_CONTROL = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|[\r\n\b]")


class Screen:
    """Just enough of a terminal to replay what rich draws: cursor moves and erasures.

    The screen has no bottom: lines that would scroll away are kept, so the
    whole session can be read back as the user saw it last.
    """

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.lines: list[list[str]] = [[]]
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        at = 0
        for match in _CONTROL.finditer(text):
            self._put(text[at : match.start()])
            self._control(match)
            at = match.end()
        self._put(text[at:])

    def _line(self) -> list[str]:
        while self.row >= len(self.lines):
            self.lines.append([])
        return self.lines[self.row]

    def _put(self, chars: str) -> None:
        for char in chars:
            if self.col >= self.columns:  # wrap
                self.row, self.col = self.row + 1, 0
            line = self._line()
            line.extend(" " * (self.col + 1 - len(line)))
            line[self.col] = char
            self.col += 1

    def _control(self, match: re.Match[str]) -> None:
        token = match.group(0)
        if token == "\r":
            self.col = 0
        elif token == "\n":
            self.row += 1
            self._line()
        elif token == "\b":
            self.col = max(self.col - 1, 0)
        elif match.group(2):
            self._csi(match.group(1), match.group(2))

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?") or final == "m":
            return  # cursor visibility, modes and colours change nothing we read
        first = params.split(";", 1)[0]
        n = int(first or 1) if final in "ABCDG" else int(first or 0)
        if final == "A":
            self.row = max(self.row - n, 0)
        elif final == "B":
            self.row += n
        elif final == "C":
            self.col += n
        elif final == "D":
            self.col = max(self.col - n, 0)
        elif final == "G":
            self.col = n - 1
        elif final == "K":
            line = self._line()
            if n == 0:
                del line[self.col :]
            elif n == 1:
                line[: self.col] = " " * min(self.col, len(line))
            else:
                line.clear()

    def text(self) -> str:
        return "\n".join("".join(line).rstrip() for line in self.lines).strip("\n")


def run_in_terminal(*argv: str) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal; return code, stdout, screen."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARS}
    env.pop("RUNCOMFY_MODEL_API_BASE_URL", None)
    env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(ROWS))
    env.pop("NO_COLOR", None)
    child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "runcomfy_async", *argv],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    screen = Screen(COLUMNS)
    raw = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal (EIO on Linux)
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    child.stdout.close()
    code = child.wait(timeout=40)
    screen.feed(raw.decode("utf-8", "replace"))
    return code, out, screen.text()


def test_screen_replays_cursor_moves():
    """The stand-in terminal redraws a line in place as a real one does."""
    screen = Screen(20)
    screen.feed("one\r\nbar 1/3\r\x1b[2Kbar 2/3\r\x1b[2Kbar 3/3\r\nend")
    assert "one\nbar 3/3\nend" == screen.text()


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_live_display_on_a_terminal():
    """On a terminal: one bar redrawn in place, lines scrolling above it, a summary table."""
    code, out, screen = run_in_terminal("run", "--emulator", "--count", "6")
    assert 0 == code, screen
    results = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert 6 == len(results)
    lines = screen.splitlines()
    bars = [line for line in lines if line.startswith("jobs ") and "6/6" in line]
    assert 1 == len(bars), screen  # redrawn in place, never repeated
    assert not [line for line in lines if line.startswith("jobs ") and "6/6" not in line]
    assert "6 ok" in bars[0]
    accepted = [n for n, line in enumerate(lines) if line.startswith("accepted  #")]
    finished = [n for n, line in enumerate(lines) if line.startswith("finished  #")]
    assert 6 == len(accepted)
    assert 6 == len(finished)
    bar_at = lines.index(bars[0])
    assert max(accepted + finished) < bar_at  # the log scrolls above the bar
    assert not any(line.startswith("progress  ") for line in lines)  # no plain log
    table = "\n".join(lines[bar_at + 1 :])
    assert "outcome" in table
    assert "6 succeeded" in table
    assert "emulated: nothing was billed" in table
    assert "\x1b" not in screen
