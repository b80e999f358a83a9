"""Crash safety and shared ledgers, with real server processes.

A server killed (SIGKILL) between signing and the gateway's answer leaves the payment in the
ledger as pending: a restarted server counts it against the daily budget and `blockrun-mcp
spend` shows it. Two servers on one data dir (two hosts open at once) never pass the daily
budget together, and the ledger holds every payment either made.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import StdioServerParameters

from tests.support.eras import mcp_client
from tests.support.payer import assert_every_payment_valid
from tests.support.security import (
    assert_budget_consistent,
    error_text,
    nonce_of,
    reconcile,
    sandbox_view,
    wait_until,
)
from tests.support.server import OPUS, PYTHON, new_key, open_ledger, open_server, subprocess_env

pytestmark = pytest.mark.anyio

SUBPROCESS_SECONDS = 60
INITIALIZE = (
    '{"protocolVersion":"2025-11-25","capabilities":{},'
    '"clientInfo":{"name":"crash-test","version":"1"}}'
)


def _ledger_rows(path: Path) -> list[dict[str, Any]]:
    """The ledger file as another process sees it (read-only, no schema, no cleanup)."""
    if not path.exists():
        return []
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute("SELECT * FROM payments")]
        except sqlite3.OperationalError:  # the schema is not there yet
            return []


async def test_sigkill_mid_payment_leaves_it_pending_and_counted(sandbox, tmp_path):
    key = new_key()
    daily = "0.06"
    env = subprocess_env(
        tmp_path,
        BLOCKRUN_API_URL=sandbox.base_url,
        BLOCKRUN_WALLET_KEY=key,
        BLOCKRUN_DAILY_BUDGET_USD=daily,
    )
    ledger_file = tmp_path / "data" / "ledger.sqlite3"
    state = sandbox.state
    # Paid requests linger at the gateway: the server is killed while one is in flight.
    state.set_faults(delay_seconds=1.5)
    arguments = {"prompt": "killed mid-payment", "model": OPUS, "max_tokens": 20_000}
    command = [PYTHON, "-m", "blockrun_mcp", "serve"]
    with anyio.fail_after(SUBPROCESS_SECONDS):
        async with await anyio.open_process(command, env=env) as process:
            assert process.stdin is not None
            for line in (
                f'{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{INITIALIZE}}}',
                '{"jsonrpc":"2.0","method":"notifications/initialized"}',
                '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":'
                f'{{"name":"ask_model","arguments":{json.dumps(arguments)}}}}}',
            ):
                await process.stdin.send(line.encode() + b"\n")

            def paid_request_arrived() -> bool:
                with state.lock:
                    return any(method == "POST" and paid for method, _, paid in state.requests_seen)

            await wait_until(paid_request_arrived, timeout=30)
            # The payment left the process; it was recorded as signed before it did.
            (row,) = _ledger_rows(ledger_file)
            assert row["status"] == "signed" and row["nonce"]
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
    signed_nonce = row["nonce"].lower()
    amount = row["amount_atomic"] / 1e6

    # A new server on the same data dir: the in-flight payment is pending and counted.
    restart_env = {"BLOCKRUN_DAILY_BUDGET_USD": daily}
    async with open_server(tmp_path, sandbox, key=key, env=restart_env) as h:
        (pending,) = h.ledger.payments()
        assert pending.status == "signed" and pending.nonce.lower() == signed_nonce
        budget = await h.ok("budget")
        assert budget["daily_spent_usd"] == pytest.approx(amount)
        assert budget["session_spent_usd"] == 0  # a new session; the day remembers
        assert budget["budget_remaining_usd"] == pytest.approx(float(daily) - amount)
        assert budget["budget_remaining_usd"] < amount
        # The same call again does not fit beside the pending one: refused, nothing signed.
        state.clear_faults()
        seen = len(state.payments_seen)
        text = error_text(await h.call("ask_model", arguments), "ask_model")
        assert "daily budget" in text and "Nothing was signed" in text
        with state.lock:
            assert len(state.payments_seen) == seen

        # `blockrun-mcp spend` shows it as pending.
        report = await anyio.run_process(
            [PYTHON, "-m", "blockrun_mcp", "spend", "--json"], env=env, check=True
        )
        summary = json.loads(report.stdout)
        assert summary["totals"]["pending"] == 1
        assert summary["totals"]["pending_usd"] == pytest.approx(amount)
        (shown,) = summary["pending"]
        assert shown["tool"] == "ask_model" and shown["model"] == OPUS
        assert shown["amount_usd"] == pytest.approx(amount)

        # The gateway, unaware of the crash, settles the payment: the pending row covers it.
        await wait_until(lambda: len(state.settlements) == 1, timeout=10)
        received, settled = sandbox_view(state)
        assert set(received) == {signed_nonce} and set(settled) == {signed_nonce}
        rows = reconcile(h.ledger, state, logical_requests=1)
        assert_budget_consistent(await h.ok("budget"), [], rows)
        assert_every_payment_valid(state)


async def test_two_servers_on_one_data_dir_share_the_daily_budget(sandbox, tmp_path):
    daily = 0.05
    key = new_key()
    env = subprocess_env(
        tmp_path,
        BLOCKRUN_API_URL=sandbox.base_url,
        BLOCKRUN_WALLET_KEY=key,
        BLOCKRUN_DAILY_BUDGET_USD=str(daily),
    )
    params = StdioServerParameters(command=PYTHON, args=["-m", "blockrun_mcp", "serve"], env=env)
    state = sandbox.state
    state.set_faults(delay_seconds=0.05)  # payments overlap in flight, across both processes
    results: list[tuple[int, bool, str]] = []

    async def host(index: int, calls: int) -> None:
        async with mcp_client(params) as client:

            async def ask(n: int) -> None:
                arguments = {"prompt": f"host {index} call {n:02d}", "model": OPUS}
                result = await client.call_tool("ask_model", {**arguments, "max_tokens": 4000})
                text = error_text(result, "ask_model") if result.is_error else ""
                results.append((index, result.is_error, text))

            async with anyio.create_task_group() as group:
                for n in range(calls):
                    group.start_soon(ask, n)

    with anyio.fail_after(SUBPROCESS_SECONDS):
        async with anyio.create_task_group() as group:
            group.start_soon(host, 1, 6)
            group.start_soon(host, 2, 6)

    _, settled = sandbox_view(state)
    paid = [r for r in results if not r[1]]
    refused = [r for r in results if r[1]]
    assert len(results) == 12 and paid and refused
    assert all("daily budget" in text and "Nothing was signed" in text for _, _, text in refused)
    # Together they never passed the day's budget.
    assert sum(settled.values()) <= round(daily * 1e6)
    quote = max(settled.values())
    assert len(paid) == len(settled) == round(daily * 1e6) // quote
    ledger = open_ledger(_config(env))
    try:
        rows = reconcile(ledger, state, logical_requests=len(results))
        # Every payment of either host is in the one ledger, under two sessions and processes.
        assert sorted(row.status for row in rows) == ["settled"] * len(paid)
        assert {row.nonce.lower() for row in rows} == set(settled)
        assert len({row.session for row in rows}) == len({index for index, _, _ in paid})
        assert sum(row.counted_atomic for row in rows) <= round(daily * 1e6)
        assert ledger.day_spent_atomic() == sum(settled.values())
    finally:
        ledger.close()
    assert {nonce_of(p) for p in state.payments_seen} == set(settled)
    assert_every_payment_valid(state)


def _config(env: dict[str, str]) -> Any:
    from blockrun_mcp.config import load_config

    return load_config(env)
