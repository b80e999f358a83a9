"""A signature is money: no gateway answer, header or session id may talk the budget down.

Each test plays a hostile gateway (the sandbox's switches) or a hostile HTTP client against the
real server through a real MCP client, and judges by what the gateway *received*: the distinct
signed authorizations, each of which could be submitted on chain until its validBefore.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from blockrun_mcp.payments import FINALITY_MARGIN_SECONDS
from blockrun_mcp.sandbox import TREASURY
from tests.support.payer import assert_every_payment_valid
from tests.support.security import expire_on_chain
from tests.support.server import (
    CHEAP_MODEL,
    OPUS,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    assert_ledger_matches_sandbox,
    http_server,
    make_service,
    open_ledger,
    open_server,
)

pytestmark = pytest.mark.anyio

TOKEN = "money-rule-token-" + "c" * 24
# Opus at its maximum output: a quote of about $0.084 (10% of 32,000 tokens at $25/M, +5%).
DEAR_CHAT = {"model": OPUS, "max_tokens": 32_000}


def signed_atomic(state: Any) -> dict[str, int]:
    """Every distinct authorization the gateway received: nonce -> signed value."""
    with state.lock:
        return {
            str(p["payload"]["authorization"]["nonce"]).lower(): int(
                p["payload"]["authorization"]["value"]
            )
            for p in state.payments_seen
        }


def usd(atomic: int) -> float:
    return atomic / 1e6


# --- 1. a receipt claiming less ------------------------------------------------------------


async def test_a_receipt_claiming_less_never_lowers_what_counts(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(receipt_amount="0")
    env = {"BLOCKRUN_SESSION_BUDGET_USD": "0.30"}
    async with open_server(tmp_path, sandbox, env=env) as h:
        answers = [
            await h.call("ask_model", {"prompt": f"question {i}", **DEAR_CHAT}) for i in range(8)
        ]
        paid = [a.structured_content for a in answers if not a.is_error]
        refused = [a.content[0].text for a in answers if a.is_error]
        signed = signed_atomic(state)
        # The gateway got no more signatures than the budget allows, whatever it claimed.
        assert sum(signed.values()) <= 300_000
        assert len(paid) == len(signed) == 3 and len(refused) == 5
        assert all("budget" in text for text in refused)
        for answer in paid:
            assert answer["cost_usd"] == pytest.approx(usd(max(signed.values())), abs=1e-5)
        rows = h.ledger.payments()
        settled = [row for row in rows if row.status == "settled"]
        assert len(settled) == 3
        for row in settled:
            assert row.settled_atomic == row.amount_atomic == signed[row.nonce.lower()]
            assert "receipt claimed '0'" in row.note
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(usd(sum(signed.values())))
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


# --- 2. the gateway's word after a signature ------------------------------------------------


@pytest.mark.parametrize("code", ["PAYMENT_INVALID", "PAYMENT_UNFUNDED"])
async def test_a_rejection_after_signing_keeps_the_payment_counted(sandbox, tmp_path, code):
    state = sandbox.state
    state.set_faults(force_payment_code=code)
    env = {"BLOCKRUN_SESSION_BUDGET_USD": "0.30"}
    async with open_server(tmp_path, sandbox, env=env) as h:
        texts = [
            await h.fail("ask_model", {"prompt": f"rejected {i}", **DEAR_CHAT}) for i in range(6)
        ]
        signed = signed_atomic(state)
        assert sum(signed.values()) <= 300_000 and len(signed) == 3
        assert all(code in text and "stays counted" in text for text in texts[:3])
        assert all("budget" in text and code not in text for text in texts[3:])
        rows = h.ledger.payments()
        assert sorted(row.status for row in rows) == ["signed"] * 3
        assert all(code in row.note for row in rows)
        # Only the chain can release them: expired, and never used.
        found = await expire_on_chain(h, state)
        assert len(found.of("released")) == 3 and not found.chain_error
        assert all(row.status == "released" for row in h.ledger.payments())
        assert (await h.ok("budget"))["budget_remaining_usd"] == 0.30
        assert not state.settlements
        assert_every_payment_valid(state)


async def test_failed_videos_never_pass_the_budget(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(video_fail_mid_poll=True)
    env = {"BLOCKRUN_SESSION_BUDGET_USD": "0.30"}
    video = {"prompt": "doomed", "model": VIDEO_MODEL, "duration_seconds": 5}  # $0.2625
    async with open_server(tmp_path, sandbox, env=env) as h:
        results = [await h.call("generate_video", video) for _ in range(5)]
        signed = signed_atomic(state)
        assert len(signed) == 1 and sum(signed.values()) <= 300_000
        first = results[0].structured_content
        assert first["status"] == "failed" and "stays counted" in first["note"]
        assert "Nothing was charged" not in first["note"]
        assert all(r.is_error and "budget" in r.content[0].text for r in results[1:])
        assert not state.settlements


# --- 3. a video's hold is never released by the clock alone ------------------------------


async def test_a_video_past_its_poll_deadline_stays_counted_until_the_chain_decides(
    sandbox, tmp_path
):
    state = sandbox.state
    # A 15 s authorization: polling stops 15 s before it expires, so after the first poll.
    state.set_faults(video_timeout_seconds=15, video_polls_before_done=10_000)
    async with open_server(tmp_path, sandbox, video_wait_seconds=5) as h:
        video = await h.ok(
            "generate_video", {"prompt": "slow", "model": VIDEO_MODEL, "duration_seconds": 1}
        )
        assert video["status"] == "failed" and "stays counted" in video["note"]
        (row,) = h.ledger.payments()
        assert row.status == "signed" and row.valid_before is not None
        # Still valid on chain: the reconciler keeps it, however long ago polling stopped.
        early = await h.service.reconcile()
        assert [o.result for o in early.outcomes] == ["pending"]
        assert "may still settle" in early.outcomes[0].reason
        # Past validBefore by the chain's clock but within the finality margin: still kept.
        offset = row.valid_before - int(time.time()) + 1
        state.set_faults(chain_time_offset_seconds=offset)
        h.service.options.clock = lambda: time.time() + offset
        margin = await h.service.reconcile()
        assert [o.result for o in margin.outcomes] == ["pending"]
        await expire_on_chain(h, state)
        (row,) = h.ledger.payments()
        assert row.status == "released" and "expired unused" in row.note
        assert h.ledger.video_job(video["job_id"]).status == "failed"


async def test_a_signed_payment_the_chain_saw_used_is_settled_not_released(sandbox, tmp_path):
    """The gateway settles, then claims PAYMENT_INVALID on the resend: the chain knows better."""
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        h.service.payer.retry_delay_seconds = 0.01
        # Settled, answer lost (503), resent: the sandbox answers the resend PAYMENT_REPLAY.
        state.set_faults(status_after_settlement=503, times=1)
        text = await h.fail("ask_model", {"prompt": "lost answer", "model": CHEAP_MODEL})
        assert "PAYMENT_REPLAY" in text
        (row,) = h.ledger.payments()
        assert row.status == "signed" and len(state.settlements) == 1
        found = await expire_on_chain(h, state)
        assert [o.result for o in found.outcomes] == ["settled"]
        (row,) = h.ledger.payments()
        assert row.status == "settled" and row.settled_atomic == row.amount_atomic
        assert_ledger_matches_sandbox_amounts(h.ledger, state)


def assert_ledger_matches_sandbox_amounts(ledger: Any, state: Any) -> None:
    """Settled rows (some settled from the chain's word, without a receipt) equal the sandbox's
    settlements by nonce and amount."""
    settled = {row.nonce.lower(): row.settled_atomic for row in ledger.payments() if row.nonce}
    with state.lock:
        for settlement in state.settlements:
            assert settled[settlement.nonce.lower()] == settlement.amount_atomic


async def test_without_an_answer_from_the_chain_nothing_is_released(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(force_payment_code="PAYMENT_INVALID")
    async with open_server(tmp_path, sandbox) as h:
        await h.fail("ask_model", {"prompt": "x", "model": CHEAP_MODEL})
        (row,) = h.ledger.payments()
        ahead = row.valid_before + FINALITY_MARGIN_SECONDS + 10 - int(time.time())
        h.service.options.clock = lambda: time.time() + ahead
        for switch in ({"rpc_down": True}, {"rpc_garbage": True}):
            state.set_faults(chain_time_offset_seconds=ahead, **switch)
            found = await h.service.reconcile()
            assert found.chain_error and [o.result for o in found.outcomes] == ["pending"]
            assert h.ledger.payments()[0].status == "signed"
            state.set_faults(rpc_down=False, rpc_garbage=False)
        found = await h.service.reconcile()
        assert [o.result for o in found.outcomes] == ["released"]


async def test_a_chain_clock_running_ahead_of_ours_releases_nothing(sandbox, tmp_path):
    """A node that lies about the time alone cannot get a still-valid payment released."""
    state = sandbox.state
    state.set_faults(force_payment_code="PAYMENT_INVALID")
    async with open_server(tmp_path, sandbox) as h:
        await h.fail("ask_model", {"prompt": "x", "model": CHEAP_MODEL})
        assert [row.status for row in h.ledger.payments()] == ["signed"]
        state.set_faults(chain_time_offset_seconds=7 * 24 * 3600)  # the chain says: next week
        found = await h.service.reconcile()
        assert [o.result for o in found.outcomes] == ["pending"]
        assert h.ledger.payments()[0].status == "signed"


async def test_an_unreachable_chain_keeps_everything_counted(sandbox, tmp_path):
    dead_rpc = "http://127.0.0.1:9/rpc"
    state = sandbox.state
    state.set_faults(force_payment_code="PAYMENT_UNFUNDED")
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_RPC_URL": dead_rpc}) as h:
        await h.fail("ask_model", {"prompt": "x", "model": CHEAP_MODEL})
        found = await expire_on_chain(h, state)
        assert found.chain_error and "127.0.0.1:9" in found.chain_error
        assert h.ledger.payments()[0].status == "signed"


# --- 4. forged session ids over HTTP ------------------------------------------------------


def _forging_client(session_ids: list[str]) -> httpx2.AsyncClient:
    """An HTTP client that puts a fresh made-up Mcp-Session-Id on every request."""

    async def forge(request: httpx2.Request) -> None:
        forged = secrets.token_hex(16)
        session_ids.append(forged)
        request.headers["mcp-session-id"] = forged

    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=httpx2.Timeout(30, read=60),
        event_hooks={"request": [forge]},
    )


async def test_made_up_session_ids_never_open_fresh_budgets(sandbox, tmp_path):
    env = {"BLOCKRUN_HTTP_TOKEN": TOKEN, "BLOCKRUN_SESSION_BUDGET_USD": "0.30"}
    service, _ = make_service(tmp_path, sandbox, env=env)
    forged: list[str] = []
    with http_server(service) as url:
        with anyio.fail_after(60):
            async with (
                _forging_client(forged) as http,
                Client(streamable_http_client(url, http_client=http), mode="2026-07-28") as client,
            ):
                results = [
                    await client.call_tool("ask_model", {"prompt": f"forged {i}", **DEAR_CHAT})
                    for i in range(6)
                ]
    assert len(set(forged)) >= 6, "every request carried its own made-up id"
    signed = signed_atomic(sandbox.state)
    assert sum(signed.values()) <= 300_000 and len(signed) == 3
    assert sum(not r.is_error for r in results) == 3
    ledger = open_ledger(service.config)
    ledger_sessions = {row.session for row in ledger.payments()}
    ledger.close()
    assert len(ledger_sessions) == 1 and not any(s.startswith("http-") for s in ledger_sessions)
    assert service.session_count == 1  # no budget object per made-up id


async def test_naming_another_sessions_id_does_not_spend_its_budget(sandbox, tmp_path):
    env = {"BLOCKRUN_HTTP_TOKEN": TOKEN, "BLOCKRUN_SESSION_BUDGET_USD": "0.30"}
    service, _ = make_service(tmp_path, sandbox, env=env)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    issued: list[str] = []

    async def remember(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            issued.append(response.headers["mcp-session-id"])

    with http_server(service) as url:
        async with (
            httpx2.AsyncClient(
                headers=auth, timeout=60, event_hooks={"response": [remember]}
            ) as honest_http,
            Client(streamable_http_client(url, http_client=honest_http), mode="legacy") as honest,
        ):
            victim_id = issued[0]
            assert (await honest.call_tool("budget", {})).structured_content[
                "budget_remaining_usd"
            ] == 0.30

            async def steal(request: httpx2.Request) -> None:
                request.headers["mcp-session-id"] = victim_id

            async with (
                httpx2.AsyncClient(
                    headers=auth, timeout=60, event_hooks={"request": [steal]}
                ) as thief_http,
                Client(
                    streamable_http_client(url, http_client=thief_http), mode="2026-07-28"
                ) as thief,
            ):
                stolen = await thief.call_tool("ask_model", {"prompt": "on you", **DEAR_CHAT})
                assert not stolen.is_error
            victim = (await honest.call_tool("budget", {})).structured_content
            assert victim["session_spent_usd"] == 0 and victim["budget_remaining_usd"] == 0.30
    ledger = open_ledger(service.config)
    rows = ledger.payments()
    ledger.close()
    assert len(rows) == 1 and rows[0].session != f"http-{victim_id}"


async def test_ended_and_excess_sessions_are_forgotten(tmp_path):
    from blockrun_mcp.sessions import IssuedSessions

    forgotten: list[str] = []
    sessions = IssuedSessions(limit=3, on_forget=forgotten.append)
    for name in "abcd":
        sessions.issue(name)
    assert forgotten == ["a"] and len(sessions) == 3
    assert sessions.knows("b")  # b is now the most recently used
    sessions.issue("e")
    assert forgotten == ["a", "c"]
    sessions.end("b")
    sessions.end("never-issued")
    assert forgotten == ["a", "c", "b"] and not sessions.knows("b") and len(sessions) == 2


# --- 5. one image call writes what was asked for ----------------------------------------


async def test_an_image_answer_listing_a_hundred_urls_saves_one(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(image_count=100)
    async with open_server(tmp_path, sandbox) as h:
        result = await h.ok("generate_image", {"prompt": "one cat", "model": URL_IMAGE_MODEL})
        assert len(result["images"]) == 1 and Path(result["images"][0]["path"]).is_file()
        out = Path(h.config.output_dir)
        assert len([p for p in out.rglob("*") if p.is_file()]) == 1
        with state.lock:
            downloads = [r for r in state.requests_seen if "/media/" in r[1]]
        assert len(downloads) == 1


# --- 6. a lowered session limit is a promise ---------------------------------------------


async def test_a_lowered_session_limit_cannot_be_raised_back(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_SESSION_BUDGET_USD": "1.00"}) as h:
        await h.ok("budget", {"set_session_limit_usd": 0.10})
        for higher in (0.5, 0.11, 0.100001, 1.0):
            text = await h.fail("budget", {"set_session_limit_usd": higher})
            assert "only be lowered" in text
            assert (await h.ok("budget"))["session_limit_usd"] == 0.10
        assert (await h.ok("budget", {"set_session_limit_usd": 0.05}))["session_limit_usd"] == 0.05


# --- 7 and 9. which option is signed -----------------------------------------------------


async def test_the_cheapest_acceptable_option_is_signed(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(hostile_terms="pricier_first")
    async with open_server(tmp_path, sandbox) as h:
        answer = await h.ok("ask_model", {"prompt": "cheap please", "model": OPUS})
        with state.lock:
            dear, cheap = (int(t["amount"]) for t in state.issued_terms[:2])
        assert dear > cheap
        assert list(signed_atomic(state).values()) == [cheap]
        assert answer["cost_usd"] == pytest.approx(usd(cheap))
        assert_every_payment_valid(state)


async def test_a_malformed_first_option_does_not_hide_a_good_one(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(hostile_terms="malformed_first")
    async with open_server(tmp_path, sandbox) as h:
        answer = await h.ok("ask_model", {"prompt": "still fine", "model": OPUS})
        with state.lock:
            (honest,) = state.issued_terms  # the malformed option is not payable at all
        assert list(signed_atomic(state).values()) == [int(honest["amount"])]
        assert answer["cost_usd"] == pytest.approx(usd(int(honest["amount"])))


async def test_a_pinned_payee_is_the_only_one_ever_signed_for(sandbox, tmp_path):
    other = "0x" + "12" * 20
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_PAY_TO": other}) as h:
        text = await h.fail("ask_model", {"prompt": "to whom?", "model": CHEAP_MODEL})
        assert "pinned payee" in text and "othing was signed" in text
        assert not signed_atomic(sandbox.state)
    async with open_server(tmp_path / "2", sandbox, env={"BLOCKRUN_PAY_TO": TREASURY}) as h:
        await h.ok("ask_model", {"prompt": "to the treasury", "model": CHEAP_MODEL})
        assert len(signed_atomic(sandbox.state)) == 1


async def test_a_changing_payee_is_logged(sandbox, tmp_path, caplog):
    sandbox.state.set_faults(hostile_terms="payto_changes")
    caplog.set_level(logging.WARNING, logger="blockrun_mcp")
    async with open_server(tmp_path, sandbox) as h:
        await h.call("ask_model", {"prompt": "first", "model": CHEAP_MODEL})
        assert not [r for r in caplog.records if "payTo changed" in r.getMessage()]
        await h.call("ask_model", {"prompt": "second", "model": CHEAP_MODEL})
        changes = [r.getMessage() for r in caplog.records if "payTo changed" in r.getMessage()]
        assert len(changes) == 1 and "pin the payee" in changes[0]
        payees = {row.pay_to for row in h.ledger.payments()}
        assert len(payees) == 2  # the ledger keeps each payment's payee, for doctor


# --- 8. deadlines ------------------------------------------------------------------------


async def test_a_trickling_answer_is_cut_by_the_call_timeout_and_stays_counted(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(trickle_seconds=0.2, trickle_at="answer")
    env = {"BLOCKRUN_CALL_TIMEOUT_S": "1.5"}
    async with open_server(tmp_path, sandbox, env=env) as h:
        started = time.monotonic()
        with anyio.fail_after(20):
            text = await h.fail("ask_model", {"prompt": "slowly", "model": CHEAP_MODEL})
        assert time.monotonic() - started < 15
        assert "BLOCKRUN_CALL_TIMEOUT_S" in text and "counted as spent" in text
        assert text.count("Its payment of") == 1
        (row,) = h.ledger.payments()
        assert row.status in ("signed", "settled") and row.counted_atomic == row.amount_atomic
        assert len(signed_atomic(state)) == 1
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(usd(row.amount_atomic))


async def test_a_trickling_402_is_cut_before_anything_is_signed(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(trickle_seconds=0.2, trickle_at="402")
    async with open_server(tmp_path, sandbox) as h:
        h.service.payer.terms_timeout_seconds = 0.5
        with anyio.fail_after(20):
            text = await h.fail("ask_model", {"prompt": "terms?", "model": CHEAP_MODEL})
        assert "payment terms" in text and "othing was signed" in text
        assert not signed_atomic(state) and not h.ledger.payments()


async def test_a_trickling_video_poll_is_bounded(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(trickle_seconds=0.2, trickle_at="poll")
    async with open_server(tmp_path, sandbox, video_wait_seconds=1.0) as h:
        h.service.options.video_poll_timeout = 0.3
        with anyio.fail_after(30):
            result = await h.call(
                "generate_video", {"prompt": "p", "model": VIDEO_MODEL, "duration_seconds": 1}
            )
        text = result.content[0].text
        assert "job_id" in text
        (row,) = h.ledger.payments()
        assert row.status == "signed"


# --- 10. the payment header is never sent in the clear -----------------------------------


async def test_a_poll_url_with_another_scheme_never_gets_the_payment(sandbox, tmp_path):
    state = sandbox.state
    https_poll = sandbox.base_url.replace("http://", "https://") + "/v1/videos/generations/x"
    state.set_faults(poll_url=https_poll)
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail(
            "generate_video", {"prompt": "p", "model": VIDEO_MODEL, "duration_seconds": 1}
        )
        assert "points away from the gateway" in text and "stays counted" in text
        with state.lock:
            polls = [r for r in state.requests_seen if r[0] == "GET" and "/videos/" in r[1]]
        assert not polls


def test_a_downgraded_poll_url_is_refused():
    from blockrun_mcp.gateway import GatewayError, poll_url_for

    api = "https://gateway.example/api"
    for poll_url in (
        "http://gateway.example/api/v1/videos/generations/j",
        "https://gateway.example:8443/api/v1/videos/generations/j",
        "https://evil.example/api/v1/videos/generations/j",
        "//evil.example/api/v1/videos/generations/j",
    ):
        with pytest.raises(GatewayError, match="points away"):
            poll_url_for(api, "j", poll_url)
    expected = "https://gateway.example/api/v1/videos/generations/j"
    assert poll_url_for(api, "j", "/api/v1/videos/generations/j") == expected
    assert poll_url_for(api, "j", None) == expected
