"""Checks shared by the fault, property and security tests: what the sandbox saw, against the ledger.

Every check here reads the sandbox's own records (payments received, settlements made) and the
ledger file, never what our code says about itself in a tool result.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import anyio
from mcp_types import CallToolResult

from blockrun_mcp.ledger import Ledger, PaymentRow
from blockrun_mcp.sandbox import SandboxState

# What a clear error must not look like.
MASKED_PREFIX = "Error executing tool"
INTERNAL = "Unexpected internal error"


def nonce_of(payment: dict[str, Any]) -> str:
    return str(payment["payload"]["authorization"]["nonce"]).lower()


def sandbox_view(state: SandboxState) -> tuple[list[str], dict[str, int]]:
    """(every nonce received, in order; settled nonce -> amount), read under the sandbox lock."""
    with state.lock:
        received = [nonce_of(p) for p in state.payments_seen]
        settled = Counter(s.nonce.lower() for s in state.settlements)
        assert all(count == 1 for count in settled.values()), f"a nonce settled twice: {settled}"
        amounts = {s.nonce.lower(): s.amount_atomic for s in state.settlements}
    return received, amounts


def reconcile(ledger: Ledger, state: SandboxState, *, logical_requests: int) -> list[PaymentRow]:
    """The invariants of every fault cell. Returns the ledger rows.

    - each logical request signed at most one nonce, and each nonce settled at most once;
    - every settlement the sandbox made is in the ledger under its nonce: settled for the same
      amount, or still pending (signed: outcome unknown, counted as spent);
    - every row the ledger calls settled was settled by the sandbox, for that amount;
    - no row the ledger released (proven uncharged) was ever settled;
    - no reservation is left hanging once the calls are over.
    """
    received, settled = sandbox_view(state)
    rows = ledger.payments()
    by_nonce = {row.nonce.lower(): row for row in rows if row.nonce}
    assert len(set(received)) <= logical_requests, "more nonces signed than logical requests"
    assert len(settled) <= logical_requests
    assert len(by_nonce) == len([row for row in rows if row.nonce]), "a nonce used by two rows"
    for nonce, amount in settled.items():
        row = by_nonce.get(nonce)
        assert row is not None, f"the sandbox settled {nonce} but the ledger has no such payment"
        assert row.status in ("settled", "signed"), f"settled at the gateway, {row.status} here"
        booked = row.settled_atomic if row.status == "settled" else row.amount_atomic
        assert booked == amount, f"ledger books {booked} for a settlement of {amount}"
    for row in rows:
        assert row.status != "reserved", f"row {row.id} is still only reserved"
        if row.status == "settled":
            assert row.nonce and row.nonce.lower() in settled, f"row {row.id} settled, sandbox not"
        if row.status == "released" and row.nonce:
            assert row.nonce.lower() not in settled, f"row {row.id} released but it was charged"
    # Spent as the ledger counts it is never less than what really left the wallet.
    assert sum(row.counted_atomic for row in rows) >= sum(settled.values())
    return rows


def counted_usd(rows: list[PaymentRow]) -> float:
    return round(sum(row.counted_atomic for row in rows) / 1e6, 6)


def assert_budget_consistent(
    budget: dict[str, Any], rows: list[PaymentRow], day_rows: list[PaymentRow] | None = None
) -> None:
    """The budget tool's numbers are the ledger's counted rows (the session's `rows`; all of
    today's `day_rows`, by default the same), and the limits minus them."""
    spent = counted_usd(rows)
    assert budget["session_spent_usd"] == spent, (budget, spent)
    remaining = max(0.0, round(budget["session_limit_usd"] - spent, 6))
    if budget.get("daily_limit_usd") is not None:
        from blockrun_mcp.ledger import utc_day

        today = counted_usd(
            [r for r in (rows if day_rows is None else day_rows) if r.day == utc_day()]
        )
        assert budget["daily_spent_usd"] == today, (budget, today)
        remaining = min(remaining, max(0.0, round(budget["daily_limit_usd"] - today, 6)))
    assert abs(budget["budget_remaining_usd"] - remaining) < 2e-6, (budget, remaining)


def error_text(result: CallToolResult, tool: str) -> str:
    """The text of a tool error, checked to be a clear sentence for the agent."""
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    text = result.content[0].text
    assert text.strip() and text.strip() != MASKED_PREFIX
    assert not text.startswith(MASKED_PREFIX), f"the SDK masked a crash: {text}"
    assert INTERNAL not in text and "Traceback" not in text, text
    assert ". " in text + " " and len(text.split()) >= 5, f"not a sentence: {text}"
    return text


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data = result.structured_content
    assert isinstance(data, dict)
    return data


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the sandbox"
        await anyio.sleep(interval)


def contains_secret(blob: bytes, key_hex: str) -> list[str]:
    """Every form of the key found in `blob`: bare or 0x-prefixed hex, in any case."""
    bare = key_hex.lower().removeprefix("0x")
    lowered = blob.lower()
    found = []
    if bare.encode() in lowered:
        found.append("hex")
    # The key as raw bytes, or base64 of it, would be just as bad.
    import base64

    raw = bytes.fromhex(bare)
    if raw in blob:
        found.append("raw bytes")
    if base64.b64encode(raw) in blob or base64.b64encode(raw).rstrip(b"=") in blob:
        found.append("base64")
    return found


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)


async def expire_on_chain(harness: Any, state: SandboxState) -> Any:
    """Move the sandbox's chain clock (and the server's) past every authorization's validBefore
    and the finality margin, then run the server's reconciliation pass; returns what it found."""
    from blockrun_mcp.payments import FINALITY_MARGIN_SECONDS

    rows = harness.ledger.payments()
    latest = max((row.valid_before or 0 for row in rows), default=0)
    ahead = max(0, latest + FINALITY_MARGIN_SECONDS + 1 - int(time.time()))
    state.set_faults(chain_time_offset_seconds=ahead)
    # Both clocks must agree an authorization expired: move ours the same way.
    harness.service.options.clock = lambda: time.time() + ahead
    return await harness.service.reconcile()
