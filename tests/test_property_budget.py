"""Property: whatever the interleaving of concurrent calls, faults and budgets, no limit is ever
passed (not by what settled, and not by the signatures the gateway holds, which it could still
submit) and the ledger always reconciles with what the gateway settled.

Each example draws budgets (session, per-call, daily), a wallet balance, a set of gateway faults
and a batch of paid calls from one or two MCP sessions sharing one ledger, runs the batch at once
and then judges by the sandbox's own settlements.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import py_ecc  # noqa: F401  (raises the recursion limit on import: before hypothesis watches)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from blockrun_mcp.sandbox import SandboxServer
from blockrun_mcp.server import build_server
from tests.support.eras import mcp_client
from tests.support.security import (
    assert_budget_consistent,
    error_text,
    reconcile,
    sandbox_view,
    structured,
)
from tests.support.server import (
    CHEAP_MODEL,
    DATA_URI_IMAGE_MODEL,
    FREE_MODEL,
    NANO_MODEL,
    OPUS,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    make_service,
)

EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

FAULTS = st.sampled_from(
    [
        {},
        {"status_before_payment": 502, "times": 1},
        {"status_after_payment": 503, "times": 1},
        {"status_after_payment": 502, "times": 3},
        {"status_after_settlement": 503, "times": 1},
        {"drop_after_settlement": True, "times": 2},
        {"force_payment_code": "PAYMENT_REPLAY", "times": 1},
        {"force_payment_code": "PAYMENT_UNFUNDED", "times": 2},
        {"force_payment_code": "PAYMENT_INVALID", "times": 1},
        {"omit_receipt": True, "times": 2},
        {"malformed_success_body": True, "times": 1},
        {"stream_cut_after_chunks": 2, "times": 1},
        {"hostile_terms": "overpriced"},
        {"delay_seconds": 0.02},
        # A hostile gateway's words after a signature: none may talk the budget down.
        {"receipt_amount": "0"},
        {"receipt_amount": "1"},
        {"force_payment_code": "PAYMENT_INVALID"},
        {"force_payment_code": "PAYMENT_UNFUNDED"},
        {"video_fail_mid_poll": True},
        {"image_count": 7},
        {"hostile_terms": "pricier_first"},
        {"hostile_terms": "malformed_first"},
    ]
)
CHAT = st.fixed_dictionaries(
    {
        "model": st.sampled_from([OPUS, CHEAP_MODEL, NANO_MODEL, FREE_MODEL]),
        "max_tokens": st.integers(16, 20_000),
    }
).map(lambda a: ("ask_model", {"prompt": "property", **a}))
IMAGE = st.sampled_from([URL_IMAGE_MODEL, DATA_URI_IMAGE_MODEL, "zai/cogview-4"]).map(
    lambda m: ("generate_image", {"prompt": "property", "model": m})
)
VIDEO = st.sampled_from([1, 2, 3]).map(
    lambda s: (
        "generate_video",
        {"prompt": "property", "model": VIDEO_MODEL, "duration_seconds": s},
    )
)
CALLS = st.lists(
    st.tuples(st.sampled_from([0, 1]), st.one_of(CHAT, CHAT, IMAGE, VIDEO)), min_size=1, max_size=8
)
SCENARIO = st.fixed_dictionaries(
    {
        "session_usd": st.sampled_from([0.0, 0.01, 0.05, 0.2, 1.0]),
        "per_call_usd": st.sampled_from([0.005, 0.05, 0.5]),
        "daily_usd": st.sampled_from([None, 0.02, 0.1, 0.5]),
        "balance_usd": st.sampled_from([10.0, 0.05, 0.0]),
        "sessions": st.sampled_from([1, 2]),
        "faults": st.lists(FAULTS, max_size=2),
        "calls": CALLS,
    }
)


@pytest.fixture(scope="module")
def shared_sandbox():
    with SandboxServer() as server:
        yield server


def _atomic(usd: float) -> int:
    return round(usd * 1e6)


async def check_scenario(sandbox: SandboxServer, scenario: dict[str, Any], root: Path) -> None:
    """Run one generated scenario, then hold every limit against the sandbox and the ledger."""
    state = sandbox.state
    state.reset()
    env = {
        "BLOCKRUN_SESSION_BUDGET_USD": str(scenario["session_usd"]),
        "BLOCKRUN_MAX_PER_CALL_USD": str(scenario["per_call_usd"]),
    }
    if scenario["daily_usd"] is not None:
        env["BLOCKRUN_DAILY_BUDGET_USD"] = str(scenario["daily_usd"])
    service, _ = make_service(root, sandbox, env=env, video_wait_seconds=5)
    service.payer.retry_delay_seconds = 0.005
    state.set_balance(service.wallet().address, scenario["balance_usd"])
    merged: dict[str, Any] = {"video_polls_before_done": 1}
    for fault in scenario["faults"]:
        merged.update(fault)
    state.set_faults(**merged)

    async with (
        mcp_client(build_server(service, "session-a")) as first,
        mcp_client(build_server(service, "session-b")) as second,
    ):
        clients = [first, second][: scenario["sessions"]]
        outcomes: list[tuple[str, Any]] = []

        async def call(client: Client, name: str, arguments: dict[str, Any]) -> None:
            result = await client.call_tool(name, arguments)
            outcomes.append((name, error_text(result, name) if result.is_error else result))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for which, (name, arguments) in scenario["calls"]:
                    group.start_soon(call, clients[which % len(clients)], name, arguments)

        for _name, outcome in outcomes:
            if not isinstance(outcome, str):
                data = structured(outcome)
                assert data["cost_usd"] <= scenario["per_call_usd"] + 1e-9

        # The ledger reconciles with what the gateway settled, call for call.
        rows = reconcile(service.ledger, state, logical_requests=len(scenario["calls"]))
        _, settled = sandbox_view(state)
        cap = _atomic(scenario["per_call_usd"])
        assert all(amount <= cap for amount in settled.values()), "a payment above the cap"
        # No limit is ever passed: not by what settled, nor by what is counted as spent.
        counted: dict[str, int] = defaultdict(int)
        for row in rows:
            counted[row.session] += row.counted_atomic
        assert set(counted) <= {"session-a", "session-b"} and len(counted) <= scenario["sessions"]
        for spent in counted.values():
            assert spent <= _atomic(scenario["session_usd"])
        total_counted = sum(counted.values())
        assert sum(settled.values()) <= total_counted
        if scenario["daily_usd"] is not None:
            assert total_counted <= _atomic(scenario["daily_usd"])
        assert sum(settled.values()) <= _atomic(scenario["balance_usd"])
        # Every authorization the gateway holds could still be submitted on chain: the sum of
        # their signed values stays within each session's budget and the day's, whatever the
        # gateway answered (receipts for less, rejections, failed videos, drops).
        with state.lock:
            held = {
                str(p["payload"]["authorization"]["nonce"]).lower(): int(
                    p["payload"]["authorization"]["value"]
                )
                for p in state.payments_seen
            }
        session_of = {row.nonce.lower(): row.session for row in rows if row.nonce}
        assert set(held) <= set(session_of), "the gateway holds a signature the ledger lacks"
        held_by_session: dict[str, int] = defaultdict(int)
        for nonce, value in held.items():
            assert value <= cap, "a signature above the per-call cap"
            held_by_session[session_of[nonce]] += value
        for value in held_by_session.values():
            assert value <= _atomic(scenario["session_usd"])
        if scenario["daily_usd"] is not None:
            assert sum(held.values()) <= _atomic(scenario["daily_usd"])
        # And each session's budget tool tells the ledger's truth.
        for client, session in zip(clients, ("session-a", "session-b"), strict=False):
            budget = structured(await client.call_tool("budget", {}))
            assert_budget_consistent(budget, [r for r in rows if r.session == session], rows)


@EXAMPLES
@given(scenario=SCENARIO)
def test_no_interleaving_of_calls_faults_and_budgets_passes_a_limit(shared_sandbox, scenario):
    with tempfile.TemporaryDirectory() as root:
        anyio.run(check_scenario, shared_sandbox, scenario, Path(root))
