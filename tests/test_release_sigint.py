"""SIGINT ends the server promptly, and loses nothing (blockrun_mcp/interrupt.py).

MCP hosts stop a stdio server with SIGINT and send SIGTERM about 100 ms later (Claude Code), so
the server leaves as soon as serving has wound down: exit code 130, no traceback. No wall-clock
limit is asserted here (machines are noisy); the timings are in interrupt.py's docstring. What
is asserted is that it exits by its own hand, and that the wind-down it skips to nothing after
has run: a paid call in flight keeps its signed payment in the ledger, with the note that the
call was cancelled, which is written during that wind-down.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from blockrun_mcp.interrupt import INTERRUPTED_EXIT_CODE
from tests.support.security import wait_until
from tests.support.server import OPUS, PYTHON, new_key, subprocess_env

pytestmark = pytest.mark.anyio

SUBPROCESS_SECONDS = 60
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "sigint-test", "version": "1"},
    },
}


async def _send(process: Process, *messages: dict[str, Any]) -> None:
    assert process.stdin is not None
    for message in messages:
        await process.stdin.send(json.dumps(message).encode() + b"\n")


async def _answer(lines: BufferedByteReceiveStream, request_id: int) -> dict[str, Any]:
    """The response to `request_id` (notifications and other responses before it skipped)."""
    while True:
        message = json.loads(await lines.receive_until(b"\n", 1 << 22))
        if message.get("id") == request_id:
            return message


async def _interrupt(process: Process) -> tuple[int, str]:
    """SIGINT, then the exit code and what the server wrote to stderr."""
    assert process.stderr is not None
    process.send_signal(signal.SIGINT)
    code = await process.wait()
    errors = b"".join([chunk async for chunk in process.stderr])
    return code, errors.decode(errors="replace")


async def test_sigint_ends_an_idle_server_with_130_and_no_traceback(tmp_path):
    env = subprocess_env(tmp_path)
    # No arguments: what every host runs.
    with anyio.fail_after(SUBPROCESS_SECONDS):
        async with await anyio.open_process([PYTHON, "-m", "blockrun_mcp"], env=env) as process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            await _send(process, INITIALIZE)
            assert "result" in await _answer(lines, 1)
            await _send(
                process,
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            )
            assert len((await _answer(lines, 2))["result"]["tools"]) == 10
            code, errors = await _interrupt(process)
    assert code == INTERRUPTED_EXIT_CODE == 130
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors


def _payments(ledger: Path) -> list[dict[str, Any]]:
    """The ledger as another process reads it (read-only)."""
    if not ledger.exists():
        return []
    with sqlite3.connect(f"{ledger.resolve().as_uri()}?mode=ro", uri=True, timeout=5) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute("SELECT * FROM payments")]
        except sqlite3.OperationalError:  # the schema is not there yet
            return []


async def test_sigint_mid_payment_keeps_the_signed_payment_and_notes_the_cancel(sandbox, tmp_path):
    env = subprocess_env(tmp_path, BLOCKRUN_API_URL=sandbox.base_url, BLOCKRUN_WALLET_KEY=new_key())
    ledger = tmp_path / "data" / "ledger.sqlite3"
    state = sandbox.state
    # The paid request lingers at the gateway: SIGINT arrives while it is in flight.
    state.set_faults(delay_seconds=5)
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "ask_model", "arguments": {"prompt": "interrupted", "model": OPUS}},
    }
    command = [PYTHON, "-m", "blockrun_mcp", "serve"]
    with anyio.fail_after(SUBPROCESS_SECONDS):
        async with await anyio.open_process(command, env=env) as process:
            assert process.stdout is not None
            await _send(process, INITIALIZE)
            assert "result" in await _answer(BufferedByteReceiveStream(process.stdout), 1)
            await _send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"}, call)

            def paid_request_arrived() -> bool:
                with state.lock:
                    return any(method == "POST" and paid for method, _, paid in state.requests_seen)

            await wait_until(paid_request_arrived, timeout=30)
            (before,) = _payments(ledger)
            assert before["status"] == "signed" and before["nonce"]
            assert "cancelled" not in before["note"]
            code, errors = await _interrupt(process)
    assert code == INTERRUPTED_EXIT_CODE
    assert "Traceback" not in errors
    # The payment left the process signed: it stays counted, and the call's cancellation,
    # written while the server wound down, is on it.
    (after,) = _payments(ledger)
    assert after["id"] == before["id"] and after["nonce"] == before["nonce"]
    assert after["status"] == "signed"
    assert after["amount_atomic"] == before["amount_atomic"] > 0
    assert "the call was cancelled after the payment was signed" in after["note"]
