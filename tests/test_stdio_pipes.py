"""The stdio wire over non-blocking pipes (blockrun_mcp.stdio_pipes).

PipeLines and PipeWriter run over real os.pipe()s on the event loop: lines split and joined in
every way a pipe can deliver them, a line far larger than one read, invalid UTF-8, EOF with and
without a last unterminated line, and writes far larger than the pipe buffer to a slow reader.
claimed_pipes() rewires fd 0 and 1, so it only ever runs in a child process. Last, the real server
answers two JSON-RPC messages that reach it in one write (so one read) through this path.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from blockrun_mcp import stdio_pipes
from blockrun_mcp.stdio_pipes import PipeLines, PipeWriter
from tests.support.server import INITIALIZE, PYTHON, REPO_ROOT, new_key, subprocess_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes and fcntl only")

# Guards that turn a hang into a failure; nothing here measures how long anything takes.
HANG_GUARD_SECONDS = 60
SUBPROCESS_SECONDS = 60


# --- helpers -------------------------------------------------------------------------------


class Pipe:
    """One os.pipe(); either end may be closed early (EOF for the reader), the rest at teardown."""

    def __init__(self, *, nonblocking_end: str) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd if nonblocking_end == "read" else self.write_fd, False)

    def close_write(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


@contextmanager
def open_pipe(*, nonblocking_end: str) -> Iterator[Pipe]:
    pipe = Pipe(nonblocking_end=nonblocking_end)
    try:
        yield pipe
    finally:
        pipe.close()


@pytest.fixture
def reader_pipe() -> Iterator[Pipe]:
    """A pipe whose read end is non-blocking, as PipeLines gets it."""
    with open_pipe(nonblocking_end="read") as pipe:
        yield pipe


@pytest.fixture
def writer_pipe() -> Iterator[Pipe]:
    """A pipe whose write end is non-blocking, as PipeWriter gets it."""
    with open_pipe(nonblocking_end="write") as pipe:
        yield pipe


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ReadinessSpy:
    """Wraps one of stdio_pipes' readiness waits: counts the waits, and lets a test act once the
    wire is actually waiting (on the loop, or from another thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.waits = 0
        self.waited = threading.Event()  # set at the first wait; for threads
        self._waiting = anyio.Event()
        real: Callable[[int], Awaitable[None]] = getattr(stdio_pipes, name)

        async def spy(fd: int) -> None:
            self.waits += 1
            self.waited.set()
            self._waiting.set()
            await real(fd)

        monkeypatch.setattr(stdio_pipes, name, spy)

    async def next_wait(self) -> None:
        """Return once the wire is (again) waiting for readiness."""
        await self._waiting.wait()
        self._waiting = anyio.Event()


async def read_all(lines: PipeLines) -> list[str]:
    with anyio.fail_after(HANG_GUARD_SECONDS):
        return [line async for line in lines]


# --- PipeLines -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_several_lines_in_one_write(reader_pipe: Pipe) -> None:
    write_all(reader_pipe.write_fd, b'{"a":1}\n{"b":2}\n\n{"c":"\xc3\xa9"}\n')
    reader_pipe.close_write()
    lines = await read_all(PipeLines(reader_pipe.read_fd))
    assert lines == ['{"a":1}\n', '{"b":2}\n', "\n", '{"c":"é"}\n']


@pytest.mark.anyio
async def test_a_line_split_across_writes_waits_for_each_part(
    reader_pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ReadinessSpy(monkeypatch, "wait_readable")
    # A newline may open a read, and "é" (c3 a9) may be split between reads: still one character.
    parts = [b'{"jsonrpc":', b'"2.0","id"', b":1}", b'\n{"n":"\xc3', b'\xa9"}', b"\n"]

    async def feed() -> None:
        for part in parts:
            await spy.next_wait()  # each part reaches a reader that is already waiting
            write_all(reader_pipe.write_fd, part)
        await spy.next_wait()
        reader_pipe.close_write()

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed)
        lines = await read_all(PipeLines(reader_pipe.read_fd))
    assert lines == ['{"jsonrpc":"2.0","id":1}\n', '{"n":"é"}\n']
    assert spy.waits >= len(parts) + 1


@pytest.mark.anyio
async def test_a_line_far_larger_than_one_read_arrives_whole(reader_pipe: Pipe) -> None:
    big = secrets.token_hex(512 * 1024)  # 1 MiB of text, 16 times READ_CHUNK
    assert len(big) >= 16 * stdio_pipes.READ_CHUNK
    payload = f'{{"big":"{big}"}}\n'.encode() + b"tail\n"
    writer = threading.Thread(target=write_all, args=(reader_pipe.write_fd, payload))
    writer.start()
    try:
        lines = PipeLines(reader_pipe.read_fd)
        with anyio.fail_after(HANG_GUARD_SECONDS):
            first = await anext(lines)
            second = await anext(lines)
    finally:
        writer.join(HANG_GUARD_SECONDS)
    assert first == f'{{"big":"{big}"}}\n'
    assert second == "tail\n"
    reader_pipe.close_write()
    assert await read_all(lines) == []


@pytest.mark.anyio
async def test_invalid_utf8_is_replaced_and_the_stream_goes_on(reader_pipe: Pipe) -> None:
    write_all(reader_pipe.write_fd, b'{"x":"\xff\xfe"}\n\xc3\n{"ok":true}\n')
    reader_pipe.close_write()
    lines = await read_all(PipeLines(reader_pipe.read_fd))
    assert lines == ['{"x":"\ufffd\ufffd"}\n', "\ufffd\n", '{"ok":true}\n']


@pytest.mark.anyio
async def test_eof_returns_the_unterminated_last_line_then_stops(reader_pipe: Pipe) -> None:
    write_all(reader_pipe.write_fd, b"one\ntwo \xc3\xa9")
    reader_pipe.close_write()
    lines = PipeLines(reader_pipe.read_fd)
    assert await read_all(lines) == ["one\n", "two é"]
    with pytest.raises(StopAsyncIteration):  # and it stays stopped
        await anext(lines)


@pytest.mark.anyio
async def test_eof_with_nothing_buffered_just_stops(reader_pipe: Pipe) -> None:
    reader_pipe.close_write()
    assert await read_all(PipeLines(reader_pipe.read_fd)) == []


# --- PipeWriter ----------------------------------------------------------------------------


def slow_reader(fd: int, start: threading.Event, received: bytearray) -> None:
    """Read fd to EOF in small sips, starting once the writer has had to wait."""
    start.wait(HANG_GUARD_SECONDS)
    while chunk := os.read(fd, 16 * 1024):
        received += chunk
        time.sleep(0.0005)  # slow, so the writer keeps finding the pipe full


@pytest.mark.anyio
async def test_writes_far_larger_than_the_pipe_arrive_exact_while_the_loop_runs(
    writer_pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = ReadinessSpy(monkeypatch, "wait_writable")
    # 4 MiB in 8 writes, each distinct, with multi-byte characters in the mix.
    messages = [f"{i}:é✓:" + secrets.token_hex(256 * 1024) + "\n" for i in range(8)]
    expected = "".join(messages).encode()
    assert len(expected) > 4 * 1024 * 1024
    received = bytearray()
    reader = threading.Thread(target=slow_reader, args=(writer_pipe.read_fd, spy.waited, received))
    reader.start()
    ticks = 0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.sleep(0)

    writer = PipeWriter(writer_pipe.write_fd)
    try:
        with anyio.fail_after(HANG_GUARD_SECONDS):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                for message in messages:
                    await writer.write(message)
                    await writer.flush()
                done.set()
    finally:
        spy.waited.set()  # never leave the reader parked, whatever happened
        writer_pipe.close_write()
        reader.join(HANG_GUARD_SECONDS)
    assert not reader.is_alive()
    assert spy.waits > 0  # the pipe was full: the writer waited for it...
    assert ticks > 0  # ...on the loop, which kept running other tasks meanwhile
    assert bytes(received) == expected


@pytest.mark.anyio
async def test_flush_is_a_no_op(writer_pipe: Pipe) -> None:
    writer = PipeWriter(writer_pipe.write_fd)
    await writer.flush()
    await writer.write("x\n")
    await writer.flush()
    assert os.read(writer_pipe.read_fd, 100) == b"x\n"  # the write itself reached the pipe
    writer_pipe.close_write()
    assert os.read(writer_pipe.read_fd, 100) == b""  # and flush added nothing


# --- claimed_pipes, in a child process -----------------------------------------------------

CLAIM_SCRIPT = r"""
import os, stat, sys
import anyio
from blockrun_mcp.stdio_pipes import claimed_pipes

def open_fds():
    return sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None

async def echo_one_line(wire):
    line = await anext(wire.lines)
    await wire.writer.write("echo " + line)
    await wire.writer.flush()

fds_before = open_fds()
with claimed_pipes() as wire:
    assert wire is not None, "stdin and stdout are pipes: the wire must be claimed"
    assert not os.get_blocking(wire.lines.fd) and not os.get_blocking(wire.writer.fd)
    assert wire.lines.fd > 2 and wire.writer.fd > 2
    assert os.read(0, 10) == b"", "fd 0 reads /dev/null while claimed"
    print("stray")
    sys.stdout.flush()
    os.write(1, b"raw\n")
    anyio.run(echo_one_line, wire)
assert os.get_blocking(0) and os.get_blocking(1), "blocking mode restored"
assert stat.S_ISFIFO(os.fstat(0).st_mode) and stat.S_ISFIFO(os.fstat(1).st_mode)
assert open_fds() == fds_before, "no descriptor leaked"
print("after")
"""

UNCLAIMED_SCRIPT = r"""
import os
from blockrun_mcp.stdio_pipes import claimed_pipes

def identities():
    return [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (0, 1)]

before = identities()
with claimed_pipes() as wire:
    assert wire is None, "the SDK's transport serves it"
    assert identities() == before, "nothing rewired"
    assert os.get_blocking(0) and os.get_blocking(1)
os.write(1, b"unclaimed\n")
"""


def run_python(script: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a script in a child; subprocess.run kills and reaps it on timeout."""
    return subprocess.run(
        [PYTHON, "-c", script],
        cwd=REPO_ROOT,
        timeout=SUBPROCESS_SECONDS,
        check=False,
        **kwargs,
    )


def test_claimed_pipes_serves_the_wire_and_diverts_stray_output() -> None:
    line = b'{"jsonrpc":"2.0","id":7,"method":"ping"}\n'
    done = run_python(CLAIM_SCRIPT, input=line, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"echo " + line + b"after\n"
    assert b"stray" in done.stderr
    assert b"raw" in done.stderr


@pytest.mark.parametrize("regular_file", ["stdin", "stdout"])
def test_claimed_pipes_yields_none_when_not_both_pipes(tmp_path: Path, regular_file: str) -> None:
    stdin_file = tmp_path / "stdin.txt"
    stdin_file.write_text("not a pipe\n")
    stdout_file = tmp_path / "stdout.txt"
    with stdin_file.open("rb") as stdin_f, stdout_file.open("wb") as stdout_f:
        streams: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
        streams[regular_file] = stdin_f if regular_file == "stdin" else stdout_f
        done = run_python(UNCLAIMED_SCRIPT, stderr=subprocess.PIPE, **streams)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout if regular_file == "stdin" else stdout_file.read_bytes()
    assert out == b"unclaimed\n"


def test_claimed_pipes_yields_none_when_stderr_is_the_stdout_pipe() -> None:
    # 2>&1: O_NONBLOCK on the shared pipe end would make stderr non-blocking too.
    done = run_python(
        UNCLAIMED_SCRIPT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert done.returncode == 0, done.stdout.decode()
    assert done.stdout == b"unclaimed\n"


def test_claimed_pipes_yields_none_when_stderr_is_closed() -> None:
    # With fd 2 closed, stray output would have nowhere to go (and /dev/null would land on 2).
    done = run_python(
        "import os\nos.close(2)\n" + UNCLAIMED_SCRIPT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert done.returncode == 0
    assert done.stdout == b"unclaimed\n"


# --- the real server -----------------------------------------------------------------------


def read_lines(fd: int, count: int, timeout: float) -> list[bytes]:
    """Read `count` newline-terminated lines from fd, or fail after `timeout` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while data.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise AssertionError(f"no {count} lines in time; got {data!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout ended early; got {data!r}")
            data += chunk
    return data.splitlines(keepends=True)


@contextmanager
def spawn_server(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "blockrun_mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(SUBPROCESS_SECONDS)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_server_answers_two_messages_that_arrive_in_one_read(tmp_path: Path) -> None:
    env = subprocess_env(
        tmp_path, BLOCKRUN_WALLET_KEY=new_key(), BLOCKRUN_API_URL="http://127.0.0.1:9/api"
    )
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    payload = (json.dumps(INITIALIZE) + "\n" + json.dumps(ping) + "\n").encode()
    assert len(payload) <= select.PIPE_BUF  # one atomic write: the server reads both at once
    with spawn_server(env) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        assert os.write(proc.stdin.fileno(), payload) == len(payload)
        try:
            lines = read_lines(proc.stdout.fileno(), 2, SUBPROCESS_SECONDS)
        except AssertionError:
            proc.kill()
            raise AssertionError(proc.stderr.read().decode()) from None
        proc.stdin.close()  # EOF: the server ends its session and exits
        assert proc.wait(SUBPROCESS_SECONDS) == 0, proc.stderr.read().decode()
    responses = {message["id"]: message for message in map(json.loads, lines)}
    assert set(responses) == {INITIALIZE["id"], ping["id"]}
    assert responses[ping["id"]]["result"] == {}
    initialized = responses[INITIALIZE["id"]]["result"]
    assert initialized["protocolVersion"] == INITIALIZE["params"]["protocolVersion"]
    assert initialized["serverInfo"]["name"] == "blockrun"


def test_lone_surrogate_escapes_become_replacement_characters():
    from blockrun_mcp.stdio_pipes import mend_surrogates

    plain = '{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
    assert mend_surrogates(plain) is plain  # the common case is not even parsed
    line = r'{"a":"x\ud800y","\udfffkey":["\ud83d\ude00",{"b":"\\ud800"}],"n":1}' + "\n"
    mended = mend_surrogates(line)
    assert json.loads(mended) == {
        "a": "x\ufffdy",
        "\ufffdkey": ["\U0001f600", {"b": "\\ud800"}],
        "n": 1,
    }
    assert mended.endswith("\n") and mended.count("\n") == 1
    mended.encode("utf-8")  # encodable: no surrogate is left
    assert mend_surrogates("not json \\ud800\n") == "not json \\ud800\n"


def test_a_deeply_nested_line_with_a_surrogate_escape_is_passed_on_unchanged():
    """Python's json gives up past its recursion limit: the line must survive that, not the server."""
    from blockrun_mcp.stdio_pipes import mend_surrogates

    for depth in (900, 990, 50_000):  # around the limit, where json.loads or the walk gives up
        line = '{"a":"\\ud800","b":' + "[" * depth + "]" * depth + "}\n"
        mended = mend_surrogates(line)  # must not raise: it runs in the server's only reader
        assert mended == line or mended.startswith('{"a": "\ufffd", "b": [[')
