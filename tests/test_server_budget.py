"""Estimates against real quotes, and every budget limit, enforced before anything is signed."""

from __future__ import annotations

import anyio
import pytest

from tests.support.payer import assert_every_payment_valid
from tests.support.server import (
    CHEAP_MODEL,
    FREE_MODEL,
    NANO_MODEL,
    OPUS,
    assert_ledger_matches_sandbox,
    open_ledger,
    open_server,
    paid_posts,
    quote_usd,
    settled_rows,
)

pytestmark = pytest.mark.anyio


async def _estimate_without_spending(h, sandbox, arguments) -> float:
    """estimate_cost, checked to reach no paid endpoint and to sign nothing."""
    state = sandbox.state
    posts, payments, terms = (
        len(paid_posts(state)),
        len(state.payments_seen),
        len(state.issued_terms),
    )
    rows = len(h.ledger.payments())
    estimate = await h.ok("estimate_cost", arguments)
    assert len(paid_posts(state)) == posts
    assert len(state.payments_seen) == payments and len(state.issued_terms) == terms
    assert len(h.ledger.payments()) == rows
    return estimate["estimated_usd"]


@pytest.mark.parametrize(
    "model, prompt_chars, max_tokens",
    [
        ("openai/gpt-5.2", 10, 16),
        ("openai/gpt-5.2", 400, 1024),
        ("openai/gpt-5.2", 4_000, 4_096),
        ("openai/gpt-5.2", 40_000, 8_000),
        (OPUS, 120_000, 100),
        (OPUS, 2_000, 20_000),
        (CHEAP_MODEL, 80_000, 2_000),
    ],
)
async def test_chat_estimate_is_within_5_percent_of_the_quote(
    sandbox, tmp_path, model, prompt_chars, max_tokens
):
    prompt = ("The quick brown fox jumps over the lazy dog. " * (prompt_chars // 45 + 1))[
        :prompt_chars
    ]
    async with open_server(tmp_path, sandbox) as h:
        estimate = await _estimate_without_spending(
            h, sandbox, {"model": model, "prompt": prompt, "max_tokens": max_tokens}
        )
        answer = await h.ok(
            "ask_model", {"model": model, "prompt": prompt, "max_tokens": max_tokens}
        )
        quote = quote_usd(sandbox.state)
        assert estimate == pytest.approx(quote, rel=0.05)
        assert answer["cost_usd"] == pytest.approx(quote)
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


@pytest.mark.parametrize(
    "model, size",
    [
        ("openai/gpt-image-2", "1536x1024"),
        ("openai/gpt-image-2", None),
        ("google/nano-banana", None),
        ("zai/cogview-4", "1440x1440"),
        ("openai/dall-e-3", "1792x1024"),
    ],
)
async def test_image_estimate_is_within_5_percent_of_the_quote(sandbox, tmp_path, model, size):
    async with open_server(tmp_path, sandbox) as h:
        arguments = {"model": model} | ({"size": size} if size else {})
        estimate = await _estimate_without_spending(h, sandbox, arguments)
        image = await h.ok("generate_image", {"prompt": "a lighthouse", **arguments})
        quote = quote_usd(sandbox.state)
        assert estimate == pytest.approx(quote, rel=0.05)
        assert image["cost_usd"] == pytest.approx(quote)
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


@pytest.mark.parametrize(
    "model, seconds", [("xai/grok-imagine-video", 4), ("bytedance/seedance-1.5-pro", 2.5)]
)
async def test_video_estimate_is_within_5_percent_of_the_quote(sandbox, tmp_path, model, seconds):
    sandbox.state.set_faults(video_polls_before_done=0)
    async with open_server(tmp_path, sandbox) as h:
        estimate = await _estimate_without_spending(
            h, sandbox, {"model": model, "duration_seconds": seconds}
        )
        video = await h.ok(
            "generate_video", {"prompt": "a storm", "model": model, "duration_seconds": seconds}
        )
        quote = quote_usd(sandbox.state)
        assert estimate == pytest.approx(quote, rel=0.05)
        assert video["status"] == "completed" and video["cost_usd"] == pytest.approx(quote)
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_estimates_alone_never_touch_a_paid_endpoint(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        for arguments in (
            {"model": OPUS, "prompt": "hello " * 1000, "max_tokens": 4000},
            {"model": "openai/gpt-image-2", "size": "1024x1536"},
            {"model": "bytedance/seedance-1.5-pro", "duration_seconds": 12},
            {"model": FREE_MODEL},
        ):
            await _estimate_without_spending(h, sandbox, arguments)
        state = sandbox.state
        assert {path for _, path, _ in state.requests_seen} == {"/api/v1/models"}
        assert not state.payments_seen and not state.issued_terms and not state.bodies_seen


# --- limits ------------------------------------------------------------------------------


async def test_session_budget_refusal_says_budget_and_what_is_left(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_SESSION_BUDGET_USD": "0.05"}) as h:
        first = await h.ok("ask_model", {"prompt": "small", "model": OPUS, "max_tokens": 1000})
        left = 0.05 - first["cost_usd"]
        assert first["budget_remaining_usd"] == pytest.approx(left)
        state = sandbox.state
        signed_before = len(state.payments_seen)
        text = await h.fail("ask_model", {"prompt": "big", "model": OPUS, "max_tokens": 32_000})
        assert "budget" in text and f"${left:.6f}" in text
        assert "Nothing was signed" in text
        assert len(state.payments_seen) == signed_before and len(state.settlements) == 1
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(first["cost_usd"])
        assert budget["budget_remaining_usd"] == pytest.approx(left)
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_per_call_cap_refusal_says_per_call_cap(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_MAX_PER_CALL_USD": "0.05"}) as h:
        text = await h.fail("ask_model", {"prompt": "big", "model": OPUS, "max_tokens": 32_000})
        assert "per-call cap" in text and "0.05" in text
        assert "BLOCKRUN_MAX_PER_CALL_USD" in text and "Budget remaining: $1.000000" in text
        image_text = await h.fail(
            "generate_image", {"prompt": "big", "model": "openai/gpt-image-2", "size": "1536x1024"}
        )
        assert "per-call cap" in image_text
        state = sandbox.state
        assert len(state.issued_terms) == 2  # both were quoted, neither signed
        assert not state.payments_seen and not state.settlements
        # A call under the cap still works.
        answer = await h.ok("ask_model", {"prompt": "small", "model": OPUS, "max_tokens": 1000})
        assert answer["cost_usd"] > 0
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_daily_budget_refusal_says_daily_budget(sandbox, tmp_path):
    env = {"BLOCKRUN_DAILY_BUDGET_USD": "0.01"}
    async with open_server(tmp_path, sandbox, env=env) as h:
        first = await h.ok("ask_model", {"prompt": "one", "model": OPUS, "max_tokens": 2000})
        left = 0.01 - first["cost_usd"]
        assert first["budget_remaining_usd"] == pytest.approx(left)
        text = await h.fail("ask_model", {"prompt": "two", "model": OPUS, "max_tokens": 4000})
        assert "daily budget" in text and f"${left:.6f}" in text
        assert "BLOCKRUN_DAILY_BUDGET_USD" in text
        budget = await h.ok("budget")
        assert budget["daily_limit_usd"] == 0.01
        assert budget["daily_spent_usd"] == pytest.approx(first["cost_usd"])
        assert budget["budget_remaining_usd"] == pytest.approx(left)
        assert len(sandbox.state.payments_seen) == 1
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_zero_session_budget_allows_free_models_only(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_SESSION_BUDGET_USD": "0"}) as h:
        free = await h.ok("ask_model", {"prompt": "free", "model": FREE_MODEL})
        assert free["cost_usd"] == 0 and free["budget_remaining_usd"] == 0
        text = await h.fail("ask_model", {"prompt": "paid", "model": CHEAP_MODEL})
        assert "budget" in text and "$0.000000 is left" in text
        image_text = await h.fail("generate_image", {"prompt": "paid"})
        assert "budget" in image_text
        video_text = await h.fail("generate_video", {"prompt": "paid", "duration_seconds": 1})
        assert "budget" in video_text
        state = sandbox.state
        assert not state.payments_seen and not state.settlements
        assert h.ledger.payments() == []


async def test_suspicious_quote_is_refused_unsigned(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        estimate = (await h.ok("estimate_cost", {"model": NANO_MODEL, "prompt": "hi"}))[
            "estimated_usd"
        ]
        sandbox.state.set_faults(hostile_terms="overpriced")
        text = await h.fail("ask_model", {"prompt": "hi", "model": NANO_MODEL})
        quoted = quote_usd(sandbox.state)
        assert quoted == pytest.approx(estimate * 100)
        assert quoted < h.config.max_per_call_usd  # so only the suspicion check can catch it
        assert "suspicious" in text and "Nothing was signed" in text
        state = sandbox.state
        assert not state.payments_seen and not state.settlements
        assert h.ledger.payments() == []
        assert (await h.ok("budget"))["session_spent_usd"] == 0


async def test_agent_may_lower_its_session_limit_but_not_raise_it(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_SESSION_BUDGET_USD": "0.50"}) as h:
        lowered = await h.ok("budget", {"set_session_limit_usd": 0.004})
        assert lowered["session_limit_usd"] == 0.004 and lowered["budget_remaining_usd"] == 0.004
        first = await h.ok("ask_model", {"prompt": "one", "model": OPUS, "max_tokens": 1000})
        text = await h.fail("ask_model", {"prompt": "two", "model": OPUS, "max_tokens": 1000})
        assert "budget" in text and f"${0.004 - first['cost_usd']:.6f}" in text

        text = await h.fail("budget", {"set_session_limit_usd": 0.51})
        assert "0.50" in text and "BLOCKRUN_SESSION_BUDGET_USD" in text
        assert (await h.ok("budget"))["session_limit_usd"] == 0.004
        text = await h.fail("budget", {"set_session_limit_usd": -1})
        assert "negative" in text
        assert len(sandbox.state.settlements) == 1
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_concurrent_calls_never_overspend_a_small_budget(sandbox, tmp_path):
    limit = 0.02
    results: dict[int, tuple[bool, object]] = {}
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_SESSION_BUDGET_USD": str(limit)}) as h:
        estimate = (
            await h.ok(
                "estimate_cost", {"model": OPUS, "prompt": "question 00", "max_tokens": 1024}
            )
        )["estimated_usd"]

        async def ask(index: int) -> None:
            result = await h.call(
                "ask_model", {"prompt": f"question {index:02d}", "model": OPUS, "max_tokens": 1024}
            )
            results[index] = (
                result.is_error,
                result.content[0].text if result.is_error else result.structured_content,
            )

        # Paid requests linger a little at the gateway, so reservations overlap in flight.
        sandbox.state.set_faults(delay_seconds=0.05)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for index in range(20):
                    group.start_soon(ask, index)

        state = sandbox.state
        # The calls really ran at once: several asked for terms before the first one paid.
        posts = [had_payment for _, _, had_payment in paid_posts(state)]
        # Serialized calls would strictly alternate unpaid, paid; overlapping ones cannot.
        assert posts != [False, True] * (len(posts) // 2)
        paid = [data for is_error, data in results.values() if not is_error]
        refused = [text for is_error, text in results.values() if is_error]
        assert len(paid) + len(refused) == 20
        assert len(paid) == int(limit // estimate)  # every quote is the same; all that fit ran
        assert refused and all(
            "budget" in text and "Nothing was signed" in text for text in refused
        )
        spent_atomic = sum(s.amount_atomic for s in state.settlements)
        assert spent_atomic <= round(limit * 1e6)
        assert sum(d["cost_usd"] for d in paid) == pytest.approx(spent_atomic / 1e6)
        # Refused calls signed nothing: one payment per answered call, each settled once.
        assert len(state.payments_seen) == len(state.settlements) == len(paid)
        assert len({s.nonce for s in state.settlements}) == len(paid)
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(spent_atomic / 1e6)
        assert all(row.status in ("settled",) for row in h.ledger.payments())
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


# --- persistence -------------------------------------------------------------------------


async def test_a_restart_keeps_the_ledger_and_the_daily_spend(sandbox, tmp_path):
    env = {"BLOCKRUN_DAILY_BUDGET_USD": "0.02"}
    async with open_server(tmp_path, sandbox, env=env) as first:
        key = first.key
        answer = await first.ok(
            "ask_model", {"prompt": "before", "model": OPUS, "max_tokens": 3000}
        )
        spent = answer["cost_usd"]
        config = first.config

    # The first server is gone (its lifespan closed the ledger); open everything anew.
    reopened = open_ledger(config)
    try:
        rows = reopened.payments()
        assert [(r.tool, r.model, r.status) for r in rows] == [("ask_model", OPUS, "settled")]
        assert rows[0].tx_hash == answer["transaction"]
        assert reopened.day_spent_atomic() == round(spent * 1e6)
    finally:
        reopened.close()

    async with open_server(tmp_path, sandbox, env=env, key=key) as second:
        budget = await second.ok("budget")
        assert budget["session_spent_usd"] == 0  # a new session...
        assert budget["daily_spent_usd"] == pytest.approx(spent)  # ...on the same day
        assert budget["budget_remaining_usd"] == pytest.approx(0.02 - spent)
        text = await second.fail(
            "ask_model", {"prompt": "after", "model": OPUS, "max_tokens": 6000}
        )
        assert "daily budget" in text and f"${0.02 - spent:.6f}" in text
        assert len(settled_rows(second.ledger)) == 1
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(second.ledger, sandbox.state)


async def test_a_reservation_released_by_another_process_is_never_sent(
    sandbox, tmp_path, monkeypatch
):
    """Two servers share a data dir; the other one (which took our pid for dead, as across PID
    namespaces) releases our reservation between approval and sending. The signed payment must
    be dropped: sent, it would be spent and counted nowhere."""
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.ledger import Ledger

    reserve = SessionBudget.reserve

    def reserve_then_lose_it(self, amount_atomic, *, tool, model):
        payment_id = reserve(self, amount_atomic, tool=tool, model=model)
        other_process = Ledger(self.ledger.path)  # its own connection to the same file
        other_process.mark_released(payment_id, "process ended before signing")
        other_process.close()
        return payment_id

    monkeypatch.setattr(SessionBudget, "reserve", reserve_then_lose_it)
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail("ask_model", {"prompt": "hi", "model": CHEAP_MODEL})
        assert "no longer holds this call's budget reservation" in text
        assert "nothing was spent" in text
        state = sandbox.state
        assert not state.payments_seen and not state.settlements
        assert [p[2] for p in paid_posts(state)] == [False]  # the 402 request only
        (row,) = h.ledger.payments()
        assert row.status == "released" and row.counted_atomic == 0
        assert h.ledger.session_spent_atomic(row.session) == 0
        assert (await h.ok("budget"))["session_spent_usd"] == 0
