"""Approving a payment, on both protocol eras: what the person approves is the most that is signed.

On the handshake era the question goes out in the middle of the call (`elicitation/create`) and
the quote it names is the one signed. On 2026-07-28 the call ends with an `input_required`
result; the client retries with the answer, the gateway quotes again, and the payment goes ahead
only within the amount approved, else the person is asked again. These tests drive the rounds by
hand where the era has them, and count the signatures the sandbox received.
"""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ElicitResult, InputRequiredResult

from blockrun_mcp.money import parse_usd_text, usd_to_atomic
from tests.support.eras import is_sessionless
from tests.support.payer import assert_every_payment_valid
from tests.support.server import CHEAP_MODEL, OPUS, open_server

pytestmark = pytest.mark.anyio

THRESHOLD = {"BLOCKRUN_CONFIRM_ABOVE_USD": "0.0005"}
ASK = {"prompt": "approve me", "model": CHEAP_MODEL}
YES = ElicitResult(action="accept", content={"approve": True})


def asked_amount(message: str) -> int:
    """The atomic amount a question asks about: "Pay $0.003000 in USDC for ..."."""
    text = message.split("Pay ", 1)[1].split(" ", 1)[0].removeprefix("$")
    return usd_to_atomic(parse_usd_text(text))


def signed_values(state: Any) -> list[int]:
    with state.lock:
        return [int(p["payload"]["authorization"]["value"]) for p in state.payments_seen]


def recording(answer: ElicitResult = YES) -> Any:
    async def callback(context: Any, params: Any) -> ElicitResult:
        callback.asked.append(params.message)  # type: ignore[attr-defined]
        return answer

    callback.asked = []  # type: ignore[attr-defined]
    return callback


async def call_round(h: Any, arguments: dict[str, Any], **kw: Any) -> Any:
    return await h.client.session.call_tool("ask_model", arguments, allow_input_required=True, **kw)


def the_question(result: Any) -> tuple[str, str]:
    """The one question of an input_required result: its key and its message."""
    assert isinstance(result, InputRequiredResult), result
    ((key, request),) = result.input_requests.items()
    assert request.method == "elicitation/create"
    return key, request.params.message


async def test_a_quote_that_rose_after_the_yes_is_asked_about_again(sandbox, tmp_path):
    callback = recording()
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        if not is_sessionless():
            # One call, one question: the quote it names is the one signed.
            await h.ok("ask_model", ASK)
            (question,) = callback.asked
            assert signed_values(sandbox.state) == [asked_amount(question)]
            return
        first = await call_round(h, ASK)
        key, question = the_question(first)
        assert not sandbox.state.payments_seen  # nothing signed in a round that asks
        # Between the yes and the retry, the gateway's price rises by half.
        sandbox.state.set_faults(quote_percent=150, quote_models=[CHEAP_MODEL])
        second = await call_round(
            h, ASK, input_responses={key: YES}, request_state=first.request_state
        )
        key, higher = the_question(second)
        assert asked_amount(higher) > asked_amount(question)
        assert not sandbox.state.payments_seen  # the first yes does not cover the new price
        third = await call_round(
            h, ASK, input_responses={key: YES}, request_state=second.request_state
        )
        assert isinstance(third, CallToolResult) and not third.is_error, third
        assert signed_values(sandbox.state) == [asked_amount(higher)]
        assert not callback.asked  # every round was driven by hand
    assert_every_payment_valid(sandbox.state)


async def test_a_lower_quote_on_the_retry_is_paid_within_the_yes(sandbox, tmp_path):
    callback = recording()
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        if not is_sessionless():
            sandbox.state.set_faults(quote_percent=150, quote_models=[CHEAP_MODEL])
            await h.ok("ask_model", ASK)
            (question,) = callback.asked
            assert signed_values(sandbox.state) == [asked_amount(question)]
            return
        sandbox.state.set_faults(quote_percent=150, quote_models=[CHEAP_MODEL])
        first = await call_round(h, ASK)
        key, question = the_question(first)
        sandbox.state.set_faults(quote_percent=100, quote_models=[CHEAP_MODEL])
        done = await call_round(
            h, ASK, input_responses={key: YES}, request_state=first.request_state
        )
        assert isinstance(done, CallToolResult) and not done.is_error
        (value,) = signed_values(sandbox.state)
        assert value < asked_amount(question)
    assert_every_payment_valid(sandbox.state)


async def test_a_yes_without_the_servers_sealed_question_pays_nothing(sandbox, tmp_path):
    """A client that answers "yes" to a question never asked (no request_state) is asked."""
    callback = recording(ElicitResult(action="decline"))
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        if not is_sessionless():
            # The handshake era has no rounds: the forged answer is not even read; the person
            # is asked, says no, and nothing is signed.
            result = await h.client.session.call_tool(
                "ask_model", ASK, input_responses={"blockrun_approve_payment": YES}
            )
            assert result.is_error and "declined" in result.content[0].text
            assert len(callback.asked) == 1
        else:
            result = await call_round(h, ASK, input_responses={"blockrun_approve_payment": YES})
            the_question(result)
        assert not sandbox.state.payments_seen


async def test_a_tampered_or_transplanted_state_pays_nothing(sandbox, tmp_path):
    """The sealed state is bound to its tool and arguments: flipping a byte, or bringing a yes
    for a cheap call to an expensive one, is refused by the SDK's boundary, unsigned."""
    callback = recording()
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        if not is_sessionless():
            await h.ok("ask_model", ASK)
            assert len(signed_values(sandbox.state)) == 1 and len(callback.asked) == 1
            return
        first = await call_round(h, ASK)
        key, _ = the_question(first)
        state = first.request_state
        assert state is not None
        tampered = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
        with pytest.raises(MCPError, match="requestState"):
            await call_round(h, ASK, input_responses={key: YES}, request_state=tampered)
        pricier = {"prompt": "approve me", "model": OPUS, "max_tokens": 4000}
        with pytest.raises(MCPError, match="requestState"):
            await call_round(h, pricier, input_responses={key: YES}, request_state=state)
        assert not sandbox.state.payments_seen


@pytest.mark.parametrize("answer", ["decline", "cancel", "accept-no"])
async def test_a_no_on_the_retry_is_final(sandbox, tmp_path, answer):
    reply = {
        "decline": ElicitResult(action="decline"),
        "cancel": ElicitResult(action="cancel"),
        "accept-no": ElicitResult(action="accept", content={"approve": False}),
    }[answer]
    callback = recording(reply)
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        text = await h.fail("ask_model", ASK)
    # A cancelled question is said to be that (headless hosts cancel every one), not a no.
    assert ("was cancelled, not answered" if answer == "cancel" else "declined") in text
    assert "othing was signed" in text
    assert len(callback.asked) == 1
    assert not sandbox.state.payments_seen


async def test_a_consult_is_approved_as_one_sum_and_paid_on_the_retry(sandbox, tmp_path):
    callback = recording()
    arguments = {"prompt": "two views", "models": [CHEAP_MODEL, OPUS]}
    async with open_server(tmp_path, sandbox, env=THRESHOLD, elicitation=callback) as h:
        result = await h.ok("ask_models", arguments)
    (question,) = callback.asked
    values = signed_values(sandbox.state)
    assert len(values) == 2 and sum(values) <= asked_amount(question)
    assert result["cost_usd"] == sum(values) / 1e6
    assert_every_payment_valid(sandbox.state)
