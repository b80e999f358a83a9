"""Several opinions at once (ask_models), priced before anything is paid, and a person's
approval for big spends (BLOCKRUN_CONFIRM_ABOVE_USD), through a real MCP client and the sandbox.

What was signed is read from the payments the sandbox received, never from our own results.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest

from blockrun_mcp.sandbox.replies import REFUSAL_MARKER
from tests.support.payer import assert_every_payment_valid
from tests.support.security import reconcile, sandbox_view
from tests.support.server import CHEAP_MODEL, OPUS, assert_ledger_matches_sandbox, open_server

pytestmark = pytest.mark.anyio

GPT = "openai/gpt-5.5"
SONNET = "anthropic/claude-sonnet-4.6"
GEMINI = "google/gemini-3.1-pro"
THREE = [GPT, OPUS, GEMINI]


def signed(state: Any) -> dict[str, int]:
    with state.lock:
        return {
            p["payload"]["authorization"]["nonce"]: int(p["payload"]["authorization"]["value"])
            for p in state.payments_seen
        }


def paid_bodies(state: Any) -> list[dict[str, Any]]:
    with state.lock:
        return [body for path, body in state.bodies_seen if path.endswith("/completions")]


async def test_every_model_answers_blind_and_every_quote_is_signed_once(sandbox, tmp_path):
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with open_server(tmp_path, sandbox) as h:
        result = await h.ok(
            "ask_models",
            {"prompt": "is this migration safe?", "models": THREE, "synthesize_with": SONNET},
            progress_callback=on_progress,
        )
        state = sandbox.state
        assert [a["model"] for a in result["answers"]] == THREE
        assert all(a["content"] and not a["error"] and a["thread_id"] for a in result["answers"])
        received, settled = sandbox_view(state)
        # Three answers and one synthesis: four distinct signatures, each settled once.
        assert len(received) == len(set(received)) == len(settled) == 4
        total = sum(a["cost_usd"] for a in result["answers"]) + result["synthesis"]["cost_usd"]
        assert result["cost_usd"] == pytest.approx(total)
        assert result["cost_usd"] == pytest.approx(sum(settled.values()) / 1e6)
        # The synthesis compares labelled answers and never learns who wrote them.
        synthesis_body = paid_bodies(state)[-1]
        assert synthesis_body["model"] == SONNET
        text = synthesis_body["messages"][-1]["content"]
        assert "Answer A" in text and "Answer C" in text
        for model in THREE:
            assert model not in text and model.split("/")[1] not in text
        assert result["synthesis"]["content"]
        assert sorted(progress) == sorted(f"{m} answered" for m in THREE)
        reconcile(h.ledger, state, logical_requests=4)
        assert_ledger_matches_sandbox(h.ledger, state)
        assert_every_payment_valid(state)
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(result["cost_usd"])
        assert result["budget_remaining_usd"] == budget["budget_remaining_usd"]


async def test_the_models_answer_at_the_same_time(sandbox, tmp_path):
    sandbox.state.set_faults(model_latency_seconds=0.6)
    async with open_server(tmp_path, sandbox) as h:
        with anyio.fail_after(30):
            started = anyio.current_time()
            await h.ok("ask_models", {"prompt": "race", "models": [GPT, OPUS, GEMINI, SONNET]})
            elapsed = anyio.current_time() - started
        # One after another would take 4 x 0.6 s; in parallel about one latency (generous margin:
        # figures are the bench's business, this only tells parallel from serial).
        assert elapsed < 4 * 0.6


async def test_a_consult_over_the_budget_is_refused_with_the_breakdown_and_nothing_signed(
    sandbox, tmp_path
):
    env = {"BLOCKRUN_SESSION_BUDGET_USD": "0.10"}
    async with open_server(tmp_path, sandbox, env=env) as h:
        text = await h.fail(
            "ask_models", {"prompt": "too dear", "models": [OPUS, GPT], "max_tokens": 32_000}
        )
        assert "budget" in text and "othing was signed" in text
        assert OPUS in text and GPT in text  # the breakdown per model
        state = sandbox.state
        assert not state.payments_seen
        with state.lock:
            assert all(not had_payment for _, _, had_payment in state.requests_seen)
        assert not [row for row in h.ledger.payments() if row.status != "released"]


async def test_max_cost_usd_caps_the_whole_consult(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail(
            "ask_models",
            {"prompt": "cheap please", "models": [CHEAP_MODEL, GPT], "max_cost_usd": 0.001},
        )
        assert "max_cost_usd" in text and "othing was signed" in text
        assert not sandbox.state.payments_seen
        result = await h.ok(
            "ask_models",
            {"prompt": "cheap please", "models": [CHEAP_MODEL, GPT], "max_cost_usd": 0.5},
        )
        assert result["cost_usd"] <= 0.5 and len(signed(sandbox.state)) == 2


async def test_a_model_over_the_per_call_cap_refuses_the_whole_consult(sandbox, tmp_path):
    env = {"BLOCKRUN_MAX_PER_CALL_USD": "0.05"}
    async with open_server(tmp_path, sandbox, env=env) as h:
        text = await h.fail(
            "ask_models", {"prompt": "q", "models": [CHEAP_MODEL, OPUS], "max_tokens": 32_000}
        )
        assert OPUS in text and "per-call cap" in text and "drop that model" in text
        assert not sandbox.state.payments_seen


async def test_one_model_failing_leaves_the_others(sandbox, tmp_path):
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        # Opus refuses this prompt (content_filter); the others answer it.
        result = await h.ok(
            "ask_models",
            {"prompt": f"{REFUSAL_MARKER} judge this", "models": [OPUS, GPT, CHEAP_MODEL]},
        )
        errors = {a["model"]: a["error"] for a in result["answers"] if a["error"]}
        assert list(errors) == [OPUS] and "refused" in errors[OPUS]
        assert result["note"] == f"1 of 3 failed: {OPUS}."
        answered = [a for a in result["answers"] if not a["error"]]
        assert [a["model"] for a in answered] == [GPT, CHEAP_MODEL]
        assert all(a["content"] for a in answered)
        received, settled = sandbox_view(state)
        assert len(received) == len(set(received)) == len(settled) == 3  # a refusal is paid for
        reconcile(h.ledger, state, logical_requests=3)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_a_consult_with_failures_books_exactly_what_the_gateway_holds(sandbox, tmp_path):
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        h.service.payer.retry_delay_seconds = 0.01
        state.set_faults(status_after_payment=503)  # every paid request: signed, then lost
        result = await h.ok("ask_models", {"prompt": "q", "models": [GPT, CHEAP_MODEL]})
        assert all(
            "HTTP 503" in a["error"] and "stays counted" in a["error"] for a in result["answers"]
        )
        received, settled = sandbox_view(state)
        assert len(set(received)) == 2 and not settled  # each signed once, resent, never again
        rows = reconcile(h.ledger, state, logical_requests=2)
        assert sorted(r.status for r in rows) == ["signed", "signed"]
        assert result["cost_usd"] == pytest.approx(sum(r.counted_atomic for r in rows) / 1e6)
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(result["cost_usd"])


async def test_bad_consults_cost_nothing(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        for arguments, says in (
            ({"models": [GPT]}, "2 to 8"),
            ({"models": [GPT, GPT]}, "same model twice"),
            ({"models": [GPT, "nope/never"]}, "Unknown chat model"),
            ({"models": [GPT, OPUS], "effort": "high"}, "does not take a reasoning effort"),
            ({"models": [GPT, OPUS], "max_cost_usd": -1}, "max_cost_usd"),
        ):
            text = await h.fail("ask_models", {"prompt": "q", **arguments})
            assert says in text
        assert not sandbox.state.payments_seen


# --- approval of big spends ----------------------------------------------------------------


def answering(action: str, approve: bool = True) -> Any:
    asked: list[str] = []

    async def callback(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params.message)
        content = {"approve": approve} if action == "accept" else None
        return types.ElicitResult(action=action, content=content)

    callback.asked = asked  # type: ignore[attr-defined]
    return callback


THRESHOLD = {"BLOCKRUN_CONFIRM_ABOVE_USD": "0.0005"}


@pytest.mark.parametrize("tool", ["ask_model", "ask_models"])
async def test_an_approved_spend_goes_ahead(sandbox, tmp_path, tool):
    callback = answering("accept")
    arguments = (
        {"prompt": "approve me", "model": GPT}
        if tool == "ask_model"
        else {
            "prompt": "approve me",
            "models": [GPT, OPUS],
        }
    )
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        await h.ok(tool, arguments)
    (question,) = callback.asked  # one question for the whole consult
    assert "$" in question and GPT in question and "budget is left" in question
    assert len(signed(sandbox.state)) == (1 if tool == "ask_model" else 2)


@pytest.mark.parametrize(
    ("tool", "action", "approve"),
    [
        ("ask_model", "decline", True),
        ("ask_model", "cancel", True),
        ("ask_model", "accept", False),
        ("ask_models", "decline", True),
        ("generate_image", "decline", True),
    ],
)
async def test_a_declined_spend_signs_nothing(sandbox, tmp_path, tool, action, approve):
    arguments = {
        "ask_model": {"prompt": "no", "model": GPT},
        "ask_models": {"prompt": "no", "models": [GPT, OPUS]},
        "generate_image": {"prompt": "no"},
    }[tool]
    callback = answering(action, approve)
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        text = await h.fail(tool, arguments)
        assert ("cancelled" if action == "cancel" else "declined") in text
        assert "othing was signed" in text
        assert not sandbox.state.payments_seen
        assert len(callback.asked) == 1


@pytest.mark.parametrize("tool", ["ask_model", "ask_models"])
async def test_a_client_that_cannot_ask_is_refused_never_paid(sandbox, tmp_path, tool):
    arguments = (
        {"prompt": "no", "model": GPT}
        if tool == "ask_model"
        else {
            "prompt": "no",
            "models": [GPT, OPUS],
        }
    )
    async with open_server(tmp_path, sandbox, env=THRESHOLD) as h:
        text = await h.fail(tool, arguments)
        assert "BLOCKRUN_CONFIRM_ABOVE_USD" in text and "raise" in text and "unset" in text
        assert "othing was signed" in text
        assert not sandbox.state.payments_seen


async def test_spends_under_the_threshold_ask_nobody(sandbox, tmp_path):
    callback = answering("decline")
    env = {"BLOCKRUN_CONFIRM_ABOVE_USD": "1.00"}
    async with open_server(tmp_path, sandbox, env=env, elicitation=callback) as h:
        await h.ok("ask_model", {"prompt": "small", "model": CHEAP_MODEL})
    assert callback.asked == [] and len(signed(sandbox.state)) == 1


async def test_a_consult_cancelled_while_asking_signs_nothing(sandbox, tmp_path):
    asked = anyio.Event()

    async def never_answers(context: Any, params: Any) -> types.ElicitResult:
        asked.set()
        await anyio.sleep(3600)
        raise AssertionError("unreachable")

    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=never_answers) as h:
        async with anyio.create_task_group() as group:
            group.start_soon(h.call, "ask_models", {"prompt": "wait", "models": [GPT, OPUS]})
            with anyio.fail_after(15):
                await asked.wait()
            group.cancel_scope.cancel()
        assert not sandbox.state.payments_seen
        assert all(row.status == "released" for row in h.ledger.payments())
