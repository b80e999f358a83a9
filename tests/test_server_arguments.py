"""Argument mistakes: refused before anything is requested or signed, in sentences that say the fix.

Through a real MCP client and server over the sandbox; what the sandbox saw and the ledger file are
the evidence that nothing was sent or paid.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from blockrun_mcp.tool_arguments import ToolParameters
from tests.support.payer import assert_every_payment_valid
from tests.support.security import MASKED_PREFIX, error_text
from tests.support.server import CHEAP_MODEL, open_server

pytestmark = pytest.mark.anyio

ASK_ARGUMENTS = (
    "ask_model's arguments: prompt (required), model, system, max_tokens, temperature, files, "
    "thread_id, effort."
)


def assert_nothing_sent(sandbox: Any, requests_before: list[Any], h: Any) -> None:
    state = sandbox.state
    assert state.requests_seen == requests_before
    assert not state.payments_seen and not state.issued_terms and not state.settlements
    assert h.ledger.payments() == []


@pytest.mark.parametrize(
    "tool, arguments, says",
    [
        ("ask_model", {}, "ask_model: prompt is required."),
        ("ask_model", {"prompt": 5}, "prompt must be text, not 5."),
        (
            "ask_model",
            {"prompt": "hi", "max_tokens": "abc"},
            "must be a whole number, not the text 'abc'.",
        ),
        (
            "ask_model",
            {"prompt": "hi", "max_tokens": 1.5},
            "max_tokens must be a whole number, not 1.5.",
        ),
        (
            "ask_model",
            {"prompt": "hi", "max_tokens": [1]},
            "max_tokens must be a whole number, not a list.",
        ),
        (
            "ask_model",
            {"prompt": "hi", "temperature": {"a": 1}},
            "temperature must be a number, not an object.",
        ),
        (
            "ask_model",
            {"prompt": "hi", "temperature": True},
            "temperature: expected a number, not true or false.",
        ),
        ("ask_model", {"prompt": None}, "prompt must be text, not null."),
        ("budget", {"set_session_limit_usd": "lots"}, "set_session_limit_usd must be a number"),
        (
            "generate_video",
            {"duration_seconds": [5]},
            "duration_seconds must be a number, not a list.",
        ),
        (
            "estimate_cost",
            {"model": CHEAP_MODEL, "max_tokens": False},
            "max_tokens: expected a number",
        ),
    ],
)
async def test_a_bad_argument_is_a_plain_sentence_and_costs_nothing(
    sandbox, tmp_path, tool, arguments, says
):
    async with open_server(tmp_path, sandbox) as h:
        requests_before = list(sandbox.state.requests_seen)
        result = await h.call(tool, arguments)
        text = error_text(result, tool)
        assert says in text
        assert "Nothing was sent or paid; fix the arguments and call again." in text
        assert f"{tool}'s arguments: " in text  # the fix: what the tool does take
        assert "pydantic" not in text and "validation error" not in text
        assert not text.startswith(MASKED_PREFIX)
        assert_nothing_sent(sandbox, requests_before, h)


async def test_a_misspelled_argument_is_refused_not_dropped(sandbox, tmp_path):
    """Dropped, `max_token` would leave max_tokens at 1024 and the call would pay for them."""
    async with open_server(tmp_path, sandbox) as h:
        await h.ok("list_models")
        requests_before = list(sandbox.state.requests_seen)
        text = error_text(
            await h.call("ask_model", {"prompt": "hi", "model": CHEAP_MODEL, "max_token": 50}),
            "ask_model",
        )
        assert text == (
            "ask_model has no argument 'max_token' (did you mean max_tokens?); nothing was sent "
            f"or paid. {ASK_ARGUMENTS}"
        )
        assert_nothing_sent(sandbox, requests_before, h)
        text = error_text(await h.call("wallet", {"verbose": True}), "wallet")
        assert text == (
            "wallet has no argument 'verbose'; nothing was sent or paid. wallet takes no arguments."
        )
        # Spelled right, the same call goes through and pays once.
        answer = await h.ok("ask_model", {"prompt": "hi", "model": CHEAP_MODEL, "max_tokens": 50})
        assert answer["cost_usd"] > 0
        assert len(sandbox.state.settlements) == 1
        assert_every_payment_valid(sandbox.state)


async def test_many_or_huge_argument_mistakes_are_not_echoed_back(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        requests_before = list(sandbox.state.requests_seen)
        noise = {f"{'x' * 5000}{i}": i for i in range(200)}
        text = error_text(await h.call("ask_model", {"prompt": "hi", **noise}), "ask_model")
        assert "arguments 'xxx" in text and "and 195 more" in text
        assert len(text) < 600
        text = error_text(
            await h.call("ask_model", {"prompt": "hi", "max_tokens": "9" * 100_000}), "ask_model"
        )
        assert len(text) < 400 and "…" in text
        text = error_text(
            await h.call("ask_model", {"prompt": "hi", "temperature": 10**400}), "ask_model"
        )
        assert len(text) < 400
        assert_nothing_sent(sandbox, requests_before, h)


def test_parameters_from_an_odd_schema_and_every_problem_kind():
    assert ToolParameters.from_schema("t", {"properties": [], "required": "x"}).listing() == (
        "t takes no arguments."
    )

    class Arguments(BaseModel):
        count: int
        ratio: float = 0.5

    parameters = ToolParameters.from_schema("t", Arguments.model_json_schema())
    assert parameters.names == ("count", "ratio") and parameters.required == {"count"}
    assert parameters.unknown({"count": 1}) is None
    with pytest.raises(ValidationError) as raised:
        Arguments.model_validate({"ratio": float("nan")})
    text = parameters.invalid(raised.value)
    assert text.startswith("t: count is required.")
    assert text.endswith("t's arguments: count (required), ratio.")
