"""Gateway faults as the agent meets them through the tools, and resuming a running video job."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.payer import assert_every_payment_valid
from tests.support.security import expire_on_chain
from tests.support.server import (
    CHEAP_MODEL,
    OPUS,
    VIDEO_MODEL,
    assert_ledger_matches_sandbox,
    free_port,
    nonces_seen,
    open_server,
    paid_posts,
    quote_usd,
)

pytestmark = pytest.mark.anyio


async def test_a_503_after_payment_is_retried_with_the_same_payment(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        sandbox.state.set_faults(status_after_payment=503, times=1)
        answer = await h.ok("ask_model", {"prompt": "retry me", "model": OPUS, "max_tokens": 300})
        assert "retry me" in answer["content"]
        state = sandbox.state
        assert len(state.settlements) == 1
        assert answer["transaction"] == state.settlements[0].tx_hash
        assert answer["cost_usd"] == pytest.approx(state.settlements[0].amount_atomic / 1e6)
        # Two sends of one payment: the same nonce, never a second signature.
        assert len(nonces_seen(state)) == 2 and len(set(nonces_seen(state))) == 1
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(answer["cost_usd"])
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_an_unfunded_wallet_is_named_with_how_to_fund_it(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        sandbox.state.set_balance(h.address, 0)
        text = await h.fail("ask_model", {"prompt": "no money", "model": CHEAP_MODEL})
        assert "PAYMENT_UNFUNDED" in text
        assert h.address in text and "Send USDC" in text
        assert "stays counted" in text
        state = sandbox.state
        assert len(state.payments_seen) == 1 and not state.settlements
        # The gateway's word is not proof: the signature it holds counts until the chain says
        # it expired unused.
        (row,) = h.ledger.payments()
        assert row.status == "signed" and "PAYMENT_UNFUNDED" in row.note
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(row.amount_atomic / 1e6)
        await expire_on_chain(h, state)
        (row,) = h.ledger.payments()
        assert row.status == "released" and "expired unused" in row.note
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == 0 and budget["budget_remaining_usd"] == 1.0
        wallet = await h.ok("wallet")
        assert wallet["address"] == h.address
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_an_unreachable_gateway_is_a_clear_error(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/api"
    async with open_server(tmp_path, None, api_url=dead) as h:
        for name, arguments in (
            ("ask_model", {"prompt": "hello?"}),
            ("list_models", {}),
            ("generate_image", {"prompt": "a cat"}),
            ("estimate_cost", {"model": CHEAP_MODEL}),
        ):
            text = await h.fail(name, arguments)
            assert "could not be reached" in text and dead in text, text
            assert "BLOCKRUN_API_URL" in text
        # Tools that need no gateway still answer.
        assert (await h.ok("budget"))["session_spent_usd"] == 0
        assert (await h.ok("wallet"))["address"] == h.address
        assert h.ledger.payments() == []


async def test_a_payment_with_unknown_outcome_counts_as_spent(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        sandbox.state.set_faults(status_after_payment=503)  # every time: no answer ever comes
        text = await h.fail("ask_model", {"prompt": "lost", "model": OPUS, "max_tokens": 500})
        quote = quote_usd(sandbox.state)
        assert "counted as spent" in text
        assert f"Budget remaining: ${1.0 - quote:.6f}" in text
        state = sandbox.state
        assert not state.settlements
        assert len(set(nonces_seen(state))) == 1  # retried with the same payment only
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(quote)
        assert budget["budget_remaining_usd"] == pytest.approx(1.0 - quote)
        (receipt,) = budget["recent"]
        assert receipt["status"] == "pending" and receipt["transaction"] is None
        assert receipt["cost_usd"] == pytest.approx(quote)
        # The next call sees the pending amount as spent.
        sandbox.state.clear_faults()
        answer = await h.ok("ask_model", {"prompt": "next", "model": OPUS, "max_tokens": 500})
        assert answer["budget_remaining_usd"] == pytest.approx(1.0 - quote - answer["cost_usd"])
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_a_dropped_answer_after_settlement_is_not_paid_twice(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        sandbox.state.set_faults(
            drop_after_settlement=True, times=1, endpoints=["/v1/images/generations"]
        )
        text = await h.fail("generate_image", {"prompt": "dropped"})
        state = sandbox.state
        assert len(state.settlements) == 1
        # The resend of the same payment met PAYMENT_REPLAY: it was charged, the answer lost.
        assert "PAYMENT_REPLAY" in text and "counted as spent" in text
        budget = await h.ok("budget")
        paid_usd = state.settlements[0].amount_atomic / 1e6
        assert budget["session_spent_usd"] == pytest.approx(paid_usd)
        assert budget["recent"][0]["status"] == "pending"
        (row,) = h.ledger.payments()
        assert row.status == "signed" and row.nonce == state.settlements[0].nonce
        assert len(set(nonces_seen(state))) == 1
        assert_every_payment_valid(state)


# --- video jobs --------------------------------------------------------------------------


async def test_a_running_video_resumes_by_job_id_without_paying_again(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(video_polls_before_done=10_000)
    async with open_server(tmp_path, sandbox, video_wait_seconds=0.2) as first:
        key = first.key
        running = await first.ok(
            "generate_video", {"prompt": "slow waves", "model": VIDEO_MODEL, "duration_seconds": 2}
        )
        assert running["status"] == "running" and running["job_id"]
        assert running["path"] is None and running["cost_usd"] == 0
        assert running["job_id"] in running["note"]
        job_id = running["job_id"]
        assert state.jobs[job_id].status in ("queued", "in_progress") and not state.settlements
        # Signed but not settled: counted as spent until the job ends.
        budget = await first.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(0.10)
        assert budget["recent"][0]["status"] == "pending"
        assert running["budget_remaining_usd"] == pytest.approx(0.90)

        # Still running on a resume within the same server: still no second payment.
        again = await first.ok("generate_video", {"job_id": job_id})
        assert again["status"] == "running" and again["job_id"] == job_id
        assert len(set(nonces_seen(state))) == 1

    # A restarted server finishes the job from the ledger.
    state.set_faults(video_polls_before_done=0)
    async with open_server(tmp_path, sandbox, key=key, video_wait_seconds=5) as second:
        done = await second.ok("generate_video", {"job_id": job_id})
        assert done["status"] == "completed" and done["job_id"] == job_id
        assert Path(done["path"]).is_file()
        assert Path(done["path"]).read_bytes()[4:8] == b"ftyp"
        assert done["cost_usd"] == pytest.approx(0.10)
        assert len(state.settlements) == 1 and done["transaction"] == state.settlements[0].tx_hash
        # Every poll carried the one payment that submitted the job.
        assert len(set(nonces_seen(state))) == 1
        assert state.settlements[0].nonce == nonces_seen(state)[0]
        assert len([r for r in paid_posts(state) if r[2]]) == 1

        # A finished job answered again costs nothing and reaches no paid endpoint.
        posts = len(paid_posts(state))
        repeat = await second.ok("generate_video", {"job_id": job_id})
        assert repeat["status"] == "completed" and repeat["cost_usd"] == 0
        assert repeat["path"] == done["path"]
        assert len(paid_posts(state)) == posts and len(state.settlements) == 1
        rows = second.ledger.payments()
        assert [(r.tool, r.status) for r in rows] == [("generate_video", "settled")]
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(second.ledger, state)


async def test_a_running_video_completes_on_resume_in_the_same_server(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(video_polls_before_done=10_000)
    # The wait must hold a few 0.05 s polls with room to spare on a busy machine.
    async with open_server(tmp_path, sandbox, video_wait_seconds=0.6) as h:
        running = await h.ok("generate_video", {"prompt": "tide", "duration_seconds": 3})
        assert running["status"] == "running" and running["cost_usd"] == 0
        polls = state.jobs[running["job_id"]].polls
        assert polls >= 1
        state.set_faults(video_polls_before_done=polls + 2)
        updates: list[str | None] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            updates.append(message)

        done = await h.ok(
            "generate_video", {"job_id": running["job_id"]}, progress_callback=on_progress
        )
        assert done["status"] == "completed" and done["cost_usd"] == pytest.approx(0.15)
        assert Path(done["path"]).is_file()
        assert len(updates) >= 2 and "completed" in updates[-1]
        assert done["budget_remaining_usd"] == pytest.approx(1.0 - 0.15)
        assert len(state.settlements) == 1 and len(set(nonces_seen(state))) == 1
        assert len([r for r in paid_posts(state) if r[2]]) == 1
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


@pytest.mark.parametrize(
    "job_id", ["../../etc/passwd", "", " ", "vid 1", "x" * 500, "vid_1;rm -rf", "%2e%2e"]
)
async def test_a_malformed_job_id_is_an_error_costing_nothing(sandbox, tmp_path, job_id):
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail("generate_video", {"job_id": job_id})
        assert "job_id" in text
        assert not sandbox.state.requests_seen and not sandbox.state.payments_seen
        assert h.ledger.payments() == []


async def test_an_unknown_job_id_is_an_error_costing_nothing(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail("generate_video", {"job_id": "vid_0123456789abcdef01234567"})
        assert "No video job" in text and "prompt" in text
        assert not sandbox.state.requests_seen and not sandbox.state.payments_seen


async def test_a_failed_video_stays_counted_until_the_chain_says_unused(sandbox, tmp_path):
    sandbox.state.set_faults(video_fail_mid_poll=True)
    async with open_server(tmp_path, sandbox) as h:
        video = await h.ok("generate_video", {"prompt": "doomed", "duration_seconds": 2})
        assert video["status"] == "failed" and video["cost_usd"] == 0
        assert "stays counted" in video["note"]
        (row,) = h.ledger.payments()
        assert row.status == "signed" and "job failed" in row.note
        assert video["budget_remaining_usd"] == pytest.approx(1.0 - row.amount_atomic / 1e6)
        assert not sandbox.state.settlements
        await expire_on_chain(h, sandbox.state)
        (row,) = h.ledger.payments()
        assert row.status == "released"
        assert (await h.ok("budget"))["budget_remaining_usd"] == 1.0
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)
