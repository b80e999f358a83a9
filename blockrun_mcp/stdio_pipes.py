"""MCP's stdio wire over pipes, read and written on the event loop itself.

The SDK's stdio transport wraps stdin and stdout in anyio's thread-backed files: every line read
and every line written (and its flush) is a hop to a worker thread and back, a measurable share
of the server's CPU per paid call and of every tool call's round trip (bench/README.md).
MCP hosts connect us by pipes, and a pipe can be polled, so here a line is one non-blocking
read or write and the event loop waits for readiness instead of a thread. Anything that is not
a pipe or socket (a terminal, a file, Windows) keeps the SDK's transport.

Like the SDK, the wire is claimed while serving: fd 0 reads /dev/null and fd 1 writes to
stderr, so a stray print or child process cannot corrupt the protocol stream.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

from anyio import wait_readable, wait_writable

READ_CHUNK = 1 << 16
# A \uD800-\uDFFF escape: half of a UTF-16 pair, or a lone one (rare: checked only then).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _stat(fd: int) -> os.stat_result | None:
    try:
        return os.fstat(fd)
    except OSError:
        return None


def _can_claim() -> bool:
    """Pipes (or sockets) on 0 and 1, a stderr of their own, and not Windows.

    O_NONBLOCK belongs to the pipe end, not the descriptor: if stderr is the same pipe as stdout
    (a host that ran us with 2>&1), stderr would turn non-blocking too and a log line could be
    lost, so that case keeps the SDK's transport. So does a closed stderr, which has nowhere to
    divert stray output.
    """
    if sys.platform == "win32":
        return False
    stdin, stdout, stderr = _stat(0), _stat(1), _stat(2)
    if stdin is None or stdout is None or stderr is None:
        return False
    wire = (stdin, stdout)
    if not all(stat.S_ISFIFO(s.st_mode) or stat.S_ISSOCK(s.st_mode) for s in wire):
        return False
    return (stderr.st_dev, stderr.st_ino) not in {(s.st_dev, s.st_ino) for s in wire}


class PipeLines:
    """The incoming messages, one decoded line at a time (what the SDK iterates)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self._scanned = 0  # bytes already searched for a newline: a long line is scanned once

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = self._buffer[: end + 1]
                del self._buffer[: end + 1]
                self._scanned = 0
                return _text(line)
            self._scanned = len(self._buffer)
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                await wait_readable(self.fd)
                continue
            if not chunk:  # the host closed our stdin: a last unterminated line, then the end
                if self._buffer:
                    rest = _text(self._buffer)
                    self._buffer.clear()
                    self._scanned = 0
                    return rest
                raise StopAsyncIteration
            self._buffer += chunk


def _text(line: bytes | bytearray) -> str:
    """One message line as the SDK should see it. (A line never splits a character.)"""
    return mend_surrogates(line.decode("utf-8", errors="replace"))


def mend_surrogates(line: str) -> str:
    """The line with each lone UTF-16 surrogate escape ("\\ud800") made U+FFFD.

    JSON allows the escape, but the SDK's parser rejects it as invalid JSON and drops the message
    without an answer, leaving the host waiting on that request. Invalid UTF-8 on the wire already
    becomes U+FFFD (above); this treats a lone surrogate the same way. Paired escapes (an emoji
    sent as ASCII) come through unchanged in meaning.
    """
    if not _SURROGATE_ESCAPE.search(line):
        return line
    try:
        return json.dumps(_mended(json.loads(line)), ensure_ascii=False) + "\n"
    except (ValueError, RecursionError):
        # Not JSON, or nested past Python's recursion limit (which the SDK's parser has no
        # trouble with): the line goes on as it came, for the SDK to answer or report as before.
        return line


def _mended(value: object) -> object:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_mended(item) for item in value]
    if isinstance(value, dict):
        return {_mended(key): _mended(item) for key, item in value.items()}
    return value


class PipeWriter:
    """The outgoing messages: written whole, waiting (not blocking) while the pipe is full."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        while data:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                await wait_writable(self.fd)
                continue
            data = data[written:]

    async def flush(self) -> None:
        """Nothing is buffered: each write went to the pipe."""


@dataclass
class Wire:
    lines: PipeLines
    writer: PipeWriter


@contextmanager
def claimed_pipes() -> Iterator[Wire | None]:
    """The stdio wire as non-blocking pipes, or None when the SDK's transport must serve it.

    The flags are restored on the way out. A process killed outright leaves its pipe ends
    non-blocking, which matters to nobody: the host made them for this server alone.
    """
    if not _can_claim():
        yield None
        return
    import fcntl

    sys.stdout.flush()
    with ExitStack() as undo:
        wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
        undo.callback(os.close, wire_in)
        wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
        undo.callback(os.close, wire_out)
        # Last in, first out: the wire goes back onto fd 0 and 1 before the duplicates close.
        undo.callback(_restore, 0, wire_in)
        undo.callback(_restore, 1, wire_out)
        undo.callback(sys.stdout.flush)
        devnull = os.open(os.devnull, os.O_RDONLY)  # fd >= 3: 0, 1 and 2 are all open
        undo.callback(os.close, devnull)
        os.dup2(devnull, 0)
        os.dup2(2, 1)
        for fd in (wire_in, wire_out):
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            undo.callback(_suppressed, fcntl.fcntl, fd, fcntl.F_SETFL, flags)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        yield Wire(PipeLines(wire_in), PipeWriter(wire_out))


def _restore(fd: int, wire: int) -> None:
    _suppressed(os.dup2, wire, fd)


def _suppressed(call: Callable[..., object], *args: object) -> None:
    with suppress(OSError):
        call(*args)
