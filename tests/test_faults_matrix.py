"""The fault-injection matrix: every paid tool against every way the gateway (or its proxy) fails.

Each cell runs one logical request through the MCP tool, then judges by what the sandbox saw:
at most one nonce signed and settled for it, the ledger equal to the sandbox's settlements (a
pending row is allowed where the outcome is unknown, and is counted), the budget tool equal to
the ledger, and a clear sentence for the agent (never a masked "Error executing tool").
The test ids read `<tool>-<fault>`, so a failing cell names itself.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from blockrun_mcp.sandbox import replies
from tests.support.payer import assert_every_payment_valid
from tests.support.security import (
    assert_budget_consistent,
    error_text,
    expire_on_chain,
    reconcile,
    sandbox_view,
    structured,
    wait_until,
)
from tests.support.server import OPUS, URL_IMAGE_MODEL, VIDEO_MODEL, open_server

pytestmark = pytest.mark.anyio

CHAT_ARGS = {"prompt": "matrix question", "model": OPUS, "max_tokens": 300}
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "ask_model": ("ask_model", CHAT_ARGS),
    "generate_image": ("generate_image", {"prompt": "matrix cat", "model": URL_IMAGE_MODEL}),
    "generate_video": (
        "generate_video",
        {"prompt": "matrix waves", "model": VIDEO_MODEL, "duration_seconds": 2},
    ),
}
SLOW_SECONDS = 0.5
READ_TIMEOUT = 0.15
STREAM_KEEP = 3  # events a cut stream delivers: the role chunk and two pieces of the answer


@dataclass(frozen=True)
class Expect:
    outcome: str  # "ok" (a result), "error" (a tool error) or "failed" (a video that failed)
    says: tuple[str, ...] = ()  # fragments of the error text or the result's note
    settled: int = 0  # settlements the sandbox made
    rows: tuple[str, ...] = ()  # the ledger rows' statuses afterwards
    resume: tuple[str, ...] = ()  # the first answer says these, naming the job to resume once


def ok(rows: str = "settled") -> Expect:
    return Expect("ok", settled=1, rows=(rows,))


NOTHING_SIGNED = Expect("error", ("othing was signed",))


def lost(*says: str, settled: int = 1) -> Expect:
    """An error after signing whose outcome we cannot know: pending, counted as spent."""
    return Expect("error", ("counted as spent", *says), settled=settled, rows=("signed",))


@dataclass(frozen=True)
class Fault:
    faults: dict[str, Any]
    expect: dict[str, Expect]
    read_timeout: float | None = None
    video_wait_seconds: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)


def every_tool(expect: Expect) -> dict[str, Expect]:
    return dict.fromkeys(CALLS, expect)


MALFORMED_402 = ("garbage", "not_json", "no_accepts", "huge", "deep", "missing")

FAULTS: dict[str, Fault] = {
    "5xx_before_payment": Fault(
        {"status_before_payment": 500}, every_tool(Expect("error", ("HTTP 500",)))
    ),
    "502_after_payment_then_ok": Fault({"status_after_payment": 502, "times": 1}, every_tool(ok())),
    "503_after_payment_always": Fault(
        {"status_after_payment": 503}, every_tool(lost("HTTP 503", settled=0))
    ),
    # The gateway settled, then its answer was lost to a 503: the same header meets REPLAY.
    "503_after_settlement": Fault(
        {"status_after_settlement": 503, "times": 1},
        {
            "ask_model": lost("PAYMENT_REPLAY"),
            "generate_image": lost("PAYMENT_REPLAY"),
            "generate_video": ok(),  # settled on a poll, which is simply polled again
        },
    ),
    "connection_dropped_after_payment": Fault(
        {"drop_after_settlement": True, "times": 1},
        {
            # Streamed: the 200 (the gateway's word it settled) came before the cut.
            "ask_model": Expect(
                "error", ("connection dropped", "counted as spent"), settled=1, rows=("settled",)
            ),
            "generate_image": lost("PAYMENT_REPLAY"),
            "generate_video": ok(),  # the lost 202 is resent with the same header: same job
        },
    ),
    "slow_answer_past_timeout": Fault(
        {"delay_seconds": SLOW_SECONDS},
        {
            "ask_model": lost("ReadTimeout"),
            "generate_image": lost("ReadTimeout"),
            "generate_video": lost("ReadTimeout", settled=0),  # video settles on completion
        },
        read_timeout=READ_TIMEOUT,
    ),
    **{
        f"malformed_402_{kind}": Fault({"malformed_402": kind}, every_tool(NOTHING_SIGNED))
        for kind in MALFORMED_402
    },
    "malformed_success_body": Fault(
        {"malformed_success_body": True, "times": 1},
        {
            "ask_model": Expect(
                "error", ("not JSON", "counted as spent"), settled=1, rows=("settled",)
            ),
            "generate_image": Expect(
                "error", ("not JSON", "counted as spent"), settled=1, rows=("settled",)
            ),
            # The settling poll was garbage; the answer names the job, and resuming settles it.
            "generate_video": Expect(
                "ok", settled=1, rows=("settled",), resume=("not JSON", "job_id=")
            ),
        },
    ),
    "receipt_missing": Fault({"omit_receipt": True}, every_tool(ok())),
    "PAYMENT_REPLAY": Fault(
        {"force_payment_code": "PAYMENT_REPLAY"}, every_tool(lost("PAYMENT_REPLAY", settled=0))
    ),
    # The gateway's word after a signature releases nothing: the signature is in its hands.
    "PAYMENT_UNFUNDED": Fault(
        {"force_payment_code": "PAYMENT_UNFUNDED"},
        every_tool(Expect("error", ("PAYMENT_UNFUNDED", "stays counted"), rows=("signed",))),
    ),
    "PAYMENT_INVALID": Fault(
        {"force_payment_code": "PAYMENT_INVALID"},
        every_tool(Expect("error", ("PAYMENT_INVALID", "stays counted"), rows=("signed",))),
    ),
    "video_fails_mid_poll": Fault(
        {"video_fail_mid_poll": True},
        {"generate_video": Expect("failed", ("job failed", "stays counted"), rows=("signed",))},
    ),
    # An 18 s authorization: polling must stop 15 s before it expires, i.e. within 2-3 s.
    "video_outlives_authorization": Fault(
        {"video_timeout_seconds": 18, "video_polls_before_done": 10_000},
        {
            "generate_video": Expect(
                "failed",
                ("authorization ran out", "stays counted"),
                rows=("signed",),
                resume=("Still rendering", "job_id="),
            )
        },
        video_wait_seconds=0.2,
    ),
    # The proxy in front of the gateway cuts a long generation after payment (HTTP 524).
    "proxy_timeout_524_after_payment": Fault(
        {"stream_cut_after_chunks": STREAM_KEEP},
        {
            "ask_model": Expect("ok", ("cut off",), settled=1, rows=("settled",)),
            "generate_image": lost("HTTP 524"),
            "generate_video": ok(),  # a 524 on a poll is transient: polled again
        },
    ),
}

CELLS = [(tool, fault) for fault, spec in FAULTS.items() for tool in spec.expect]


def _job_id(result: Any, text: str | None) -> str:
    if text is not None:
        match = re.search(r"job_id='(vid_[0-9a-f]+)'", text)
        assert match, text
        return match.group(1)
    return result["job_id"]


@pytest.mark.parametrize("tool, fault", CELLS, ids=[f"{t}-{f}" for t, f in CELLS])
async def test_fault_matrix(sandbox, tmp_path: Path, tool: str, fault: str) -> None:
    spec = FAULTS[fault]
    expect = spec.expect[tool]
    state = sandbox.state
    name, arguments = CALLS[tool]
    async with open_server(tmp_path, sandbox, video_wait_seconds=spec.video_wait_seconds) as h:
        h.service.payer.retry_delay_seconds = 0.01
        if spec.read_timeout is not None:
            h.service.gateway.http.timeout = httpx2.Timeout(5.0, read=spec.read_timeout)
        state.set_faults(**{"video_polls_before_done": 1, **spec.faults})
        with anyio.fail_after(20):
            result = await h.call(name, arguments)
        text = error_text(result, name) if result.is_error else None
        data = None if result.is_error else structured(result)
        if expect.resume:
            first = text if text is not None else (data or {}).get("note") or ""
            for fragment in expect.resume:
                assert fragment in first, f"{fragment!r} not in {first!r}"
            job_id = _job_id(data, text)
            if fault == "video_outlives_authorization":
                assert data is not None and data["status"] == "running", data
                row = h.ledger.video_job(job_id)
                assert row is not None
                # Resume only once polling is pointless: the authorization is about to expire.
                await anyio.sleep(max(0.0, row.valid_before - 15 - time.time()) + 0.05)
            else:
                state.clear_faults()
                state.set_faults(video_polls_before_done=0)
            with anyio.fail_after(20):
                result = await h.call(name, {"job_id": job_id})
            text = error_text(result, name) if result.is_error else None
            data = None if result.is_error else structured(result)
            assert data is None or data["job_id"] == job_id

        if spec.read_timeout is not None:
            # The client gave up; let the sandbox finish the sends it is still sleeping on.
            await wait_until(lambda: len(state.payments_seen) >= 3, timeout=10)
            await anyio.sleep(0.05)

        # The outcome the agent saw.
        if expect.outcome == "error":
            assert text is not None, f"expected an error, got {data}"
        elif expect.outcome == "failed":
            assert data is not None and data["status"] == "failed", text or data
            text = data["note"]
        else:
            assert data is not None, f"expected a result, got the error: {text}"
            if tool == "generate_video":
                assert data["status"] == "completed" and Path(data["path"]).is_file()
            if tool == "generate_image":
                assert all(Path(image["path"]).is_file() for image in data["images"])
            text = (text or "") + (data.get("note") or "")
        for fragment in expect.says:
            assert fragment in text, f"{fragment!r} not in {text!r}"

        # What the sandbox saw, against the ledger.
        rows = reconcile(h.ledger, state, logical_requests=1)
        received, settled = sandbox_view(state)
        assert len(settled) == expect.settled, settled
        assert sorted(row.status for row in rows) == sorted(expect.rows)
        if not expect.rows:
            assert not received, "a payment was signed where nothing should have been"
        if data is not None and "cost_usd" in data:
            paid = [r for r in rows if r.status == "settled"]
            assert data["cost_usd"] == pytest.approx(sum(r.settled_atomic for r in paid) / 1e6)
            if paid and expect.outcome == "ok":
                with state.lock:
                    tx = {s.nonce.lower(): s.tx_hash for s in state.settlements}
                receipt_sent = fault != "receipt_missing"
                expected_tx = tx[paid[0].nonce.lower()] if receipt_sent else None
                assert data["transaction"] == expected_tx
        budget = await h.ok("budget")
        assert_budget_consistent(budget, rows)
        if data is not None and "budget_remaining_usd" in data:
            assert data["budget_remaining_usd"] == budget["budget_remaining_usd"]
        if received:
            assert_every_payment_valid(state)

        if tool == "ask_model":
            # Paid chat is always requested as a stream, so a proxy cut never loses it whole.
            with state.lock:
                chats = [body for path, body in state.bodies_seen if path.endswith("/completions")]
            assert chats and all(body.get("stream") is True for body in chats)
            if fault == "proxy_timeout_524_after_payment":
                # The paid part of the answer before the cut is delivered, not thrown away.
                full = replies.answer(OPUS, [{"role": "user", "content": CHAT_ARGS["prompt"]}], 300)
                pieces = replies.stream_events(full)[1:STREAM_KEEP]
                delivered = "".join(e["choices"][0]["delta"]["content"] for e in pieces)
                assert data is not None and data["content"] == delivered != ""
                assert full.content.startswith(data["content"])
                assert data["finish_reason"] is None

        # The server is still fine: a clean call afterwards works and pays once more at most.
        state.clear_faults()
        h.service.gateway.http.timeout = httpx2.Timeout(30.0)
        after = await h.ok("ask_model", {"prompt": "after the fault", "model": OPUS})
        assert "after the fault" in after["content"]
        reconcile(h.ledger, state, logical_requests=2)

        # Once every authorization has expired, the chain decides each pending payment: one the
        # gateway settled is booked as settled, one it never used is released; nothing stays.
        found = await expire_on_chain(h, state)
        assert not found.chain_error and not found.of("pending"), found.outcomes
        _, settled = sandbox_view(state)
        for row in h.ledger.payments():
            assert row.status in ("settled", "released"), row
            assert (row.status == "settled") == (
                row.nonce is not None and row.nonce.lower() in settled
            )
        reconcile(h.ledger, state, logical_requests=2)
