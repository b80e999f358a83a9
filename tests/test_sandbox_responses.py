"""The sandbox's POST /v1/responses, as BlockRun's Responses page describes it.

Driven over real HTTP with a plain httpx2 client paying through our X402Payer, so nothing here
depends on the gateway client or the shared test helpers: streamed (native Responses SSE events)
and not, the documented stateless refusals (400 before any 402), reasoning effort and its
reasoning_tokens, the input forms, and one settlement with a receipt per paid request.
"""

from __future__ import annotations

import base64
import importlib
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from blockrun_mcp.money import usd_to_atomic
from blockrun_mcp.sandbox import SandboxServer
from blockrun_mcp.x402.networks import BASE
from blockrun_mcp.x402.payer import PaidResponse, X402Payer
from blockrun_mcp.x402.policy import SigningPolicy

pytestmark = pytest.mark.anyio

RESPONSES = "/v1/responses"
SANDBOX_PATH = "/api/v1/responses"
MODEL = "openai/gpt-5.2"  # $1.75 in, $14 out per million tokens
BASIC = {
    "model": MODEL,
    "input": "Summarise x402",
    "instructions": "Be brief.",
    "max_output_tokens": 2000,
}
# Its quote by the documented formula: "Be brief." 9 chars -> 3 + 4, "Summarise x402" 14 chars
# -> 4 + 4 = 15 input tokens; (15 * 1.75 + 0.1 * 2000 * 14) / 1e6 * 1.05 = 0.00296756 -> 2968.
BASIC_ATOMIC = 2968
USAGE_KEYS = {
    "input_tokens",
    "input_tokens_details",
    "output_tokens",
    "output_tokens_details",
    "total_tokens",
}
EFFORTS = ("minimal", "low", "medium", "high")
STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    # response.output_text.delta, one or more
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _judge() -> Callable[[str, dict[str, Any]], tuple[bool, str | None]] | None:
    """The x402 SDK's offline verifier from the test helpers, wherever they are right now."""
    for module in ("tests.support.judge", "tests.support.x402_judge", "tests.x402_judge"):
        try:
            return importlib.import_module(module).verify_header
        except ImportError:
            continue
    return None


# helpers


def make_payer(account: Any) -> X402Payer:
    policy = SigningPolicy(network=BASE, max_atomic=usd_to_atomic(0.50))
    return X402Payer(lambda: account, policy, retry_delay_seconds=0.05)


@asynccontextmanager
async def http_client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=15.0, follow_redirects=False) as client:
        yield client


async def pay(sandbox: SandboxServer, account: Any, body: dict[str, Any]) -> PaidResponse:
    """POST body to /v1/responses, paying the 402 with our payer; the body is read in full."""
    async with http_client() as client:
        request = client.build_request("POST", sandbox.base_url + RESPONSES, json=body)
        return await make_payer(account).send(client, request)


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event; the name must agree with data.type."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        assert set(fields) == {"event", "data"}, block
        data = json.loads(fields["data"])
        assert data["type"] == fields["event"]
        events.append((fields["event"], data))
    return events


async def pay_streamed(
    sandbox: SandboxServer, account: Any, body: dict[str, Any]
) -> tuple[PaidResponse, list[tuple[str, dict[str, Any]]]]:
    paid = await pay(sandbox, account, {**body, "stream": True})
    response = paid.response
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return paid, events_of(response.text)


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


def final_response(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    name, data = events[-1]
    assert name in ("response.completed", "response.incomplete")
    return data["response"]


def decode(header_value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(header_value))


def assert_settled_with_receipt(sandbox: SandboxServer, paid: PaidResponse, count: int) -> None:
    """`count` settlements so far, the latest one this request's, named by its receipt header."""
    settlements = sandbox.state.settlements
    assert len(settlements) == count
    latest = settlements[-1]
    assert latest.endpoint == SANDBOX_PATH
    assert paid.payment is not None and latest.amount_atomic == paid.payment.amount_atomic
    receipt = decode(paid.response.headers["PAYMENT-RESPONSE"])
    assert receipt["success"] is True and receipt["transaction"] == latest.tx_hash
    assert paid.response.headers["X-Payment-Receipt"] == latest.tx_hash
    assert paid.receipt is not None and paid.receipt.transaction == latest.tx_hash


def visible_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def refusal(response: httpx2.Response) -> str:
    """The message of a 400 in the sandbox's error shape."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == body["error"]["code"] == "INVALID_REQUEST"
    assert body["message"] == body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    return body["message"]


def assert_nothing_quoted_or_paid(sandbox: SandboxServer) -> None:
    state = sandbox.state
    assert state.issued_terms == [] and state.payments_seen == [] and state.settlements == []


# unstreamed and streamed answers


async def test_unstreamed_answer_is_paid_once_with_a_receipt(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    paid = await pay(sandbox, funded_account, BASIC)
    assert paid.response.status_code == 200, paid.response.text
    assert paid.cost_atomic == BASIC_ATOMIC
    assert_settled_with_receipt(sandbox, paid, 1)
    # One 402 without payment, one paid request: nothing else reached the gateway.
    assert sandbox.state.requests_seen == [
        ("POST", SANDBOX_PATH, False),
        ("POST", SANDBOX_PATH, True),
    ]

    result = paid.response.json()
    assert result["object"] == "response" and result["id"].startswith("resp_")
    assert result["status"] == "completed" and result["incomplete_details"] is None
    assert result["store"] is False and result["previous_response_id"] is None
    assert result["instructions"] == "Be brief." and result["max_output_tokens"] == 2000
    [message] = result["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    text = message["content"][0]["text"]
    assert message["content"][0]["type"] == "output_text"
    assert text == result["output_text"] and '"Summarise x402"' in text
    usage = result["usage"]
    assert set(usage) == USAGE_KEYS
    assert usage["input_tokens"] == 15
    assert usage["output_tokens"] == visible_tokens(text)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}


async def test_streamed_answer_is_native_responses_events(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    paid, events = await pay_streamed(sandbox, funded_account, BASIC)
    assert paid.cost_atomic == BASIC_ATOMIC  # streaming changes nothing about the quote
    assert_settled_with_receipt(sandbox, paid, 1)
    assert paid.response.headers["cache-control"] == "no-cache"

    deltas = [data for name, data in events if name == "response.output_text.delta"]
    assert len(deltas) >= 2
    without_deltas = [name for name in names(events) if name != "response.output_text.delta"]
    assert without_deltas == STREAM_ORDER
    first_delta = names(events).index("response.output_text.delta")
    assert names(events)[first_delta - 1] == "response.content_part.added"
    assert names(events)[first_delta + len(deltas)] == "response.output_text.done"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))

    created = events[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["id"].startswith("resp_")
    text = "".join(delta["delta"] for delta in deltas)
    item_id = events[2][1]["item"]["id"]
    assert all(delta["item_id"] == item_id for delta in deltas)
    done = dict(events)["response.output_text.done"]
    assert done["text"] == text and done["item_id"] == item_id

    completed = final_response(events)
    assert completed["id"] == created["id"] and completed["status"] == "completed"
    assert completed["output"][0]["id"] == item_id
    assert completed["output"][0]["content"][0]["text"] == text
    assert set(completed["usage"]) == USAGE_KEYS
    assert completed["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}

    # The same request unstreamed is the same answer, paid again.
    plain = await pay(sandbox, funded_account, BASIC)
    assert_settled_with_receipt(sandbox, plain, 2)
    result = plain.response.json()
    assert result["output_text"] == text and result["usage"] == completed["usage"]


async def test_a_stream_cut_short_by_max_output_tokens_ends_incomplete(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    body = {**BASIC, "max_output_tokens": 5}
    paid, events = await pay_streamed(sandbox, funded_account, body)
    assert_settled_with_receipt(sandbox, paid, 1)
    assert names(events)[-1] == "response.incomplete"
    final = final_response(events)
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    text = dict(events)["response.output_text.done"]["text"]
    assert 0 < len(text) <= 5 * 4
    assert final["usage"]["output_tokens"] == 5

    plain = (await pay(sandbox, funded_account, body)).response.json()
    assert plain["status"] == "incomplete" and plain["output_text"] == text


# reasoning effort


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_reasoning_tokens_rise_with_effort_and_the_quote_does_not(
    sandbox: SandboxServer, funded_account: Any, stream: bool
) -> None:
    reasoning_tokens, amounts = [], []
    for effort in (None, *EFFORTS):
        body = dict(BASIC, **({"reasoning": {"effort": effort}} if effort else {}))
        if stream:
            paid, events = await pay_streamed(sandbox, funded_account, body)
            result = final_response(events)
            if effort:  # the reasoning item streams as an item of its own, before the message
                assert names(events)[2:4] == [
                    "response.output_item.added",
                    "response.output_item.done",
                ]
                assert events[2][1]["item"]["type"] == "reasoning"
        else:
            paid = await pay(sandbox, funded_account, body)
            result = paid.response.json()
        assert paid.response.status_code == 200
        amounts.append(paid.cost_atomic)
        assert_settled_with_receipt(sandbox, paid, len(amounts))

        usage = result["usage"]
        reasoning = usage["output_tokens_details"]["reasoning_tokens"]
        message = next(item for item in result["output"] if item["type"] == "message")
        text = message["content"][0]["text"]
        # output_tokens counts the reasoning as well as the visible answer.
        assert usage["output_tokens"] == reasoning + visible_tokens(text)
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert result["reasoning"]["effort"] == effort
        kinds = [item["type"] for item in result["output"]]
        assert kinds == (["reasoning", "message"] if effort else ["message"])
        reasoning_tokens.append(reasoning)

    assert reasoning_tokens[0] == 0
    assert all(a < b for a, b in itertools.pairwise(reasoning_tokens))
    assert amounts == [BASIC_ATOMIC] * len(amounts)  # effort never changes what is signed


async def test_reasoning_is_deterministic_and_grows_with_the_request(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    def tokens_of(result: dict[str, Any]) -> int:
        return result["usage"]["output_tokens_details"]["reasoning_tokens"]

    high = {**BASIC, "reasoning": {"effort": "high"}}
    first = (await pay(sandbox, funded_account, high)).response.json()
    again = (await pay(sandbox, funded_account, high)).response.json()
    longer = {**high, "input": "Summarise x402 " * 40}
    bigger = (await pay(sandbox, funded_account, longer)).response.json()
    assert tokens_of(first) == tokens_of(again) > 0
    assert tokens_of(bigger) > tokens_of(first)


async def test_reasoning_spends_max_output_tokens_first(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    body = {**BASIC, "max_output_tokens": 40, "reasoning": {"effort": "high"}}
    result = (await pay(sandbox, funded_account, body)).response.json()
    assert result["status"] == "incomplete"
    assert result["incomplete_details"] == {"reason": "max_output_tokens"}
    assert result["usage"]["output_tokens"] == 40
    assert result["usage"]["output_tokens_details"]["reasoning_tokens"] == 40
    assert [item["type"] for item in result["output"]] == ["reasoning"]  # no answer left

    _, events = await pay_streamed(sandbox, funded_account, body)
    assert "response.output_text.delta" not in names(events)
    assert names(events)[-1] == "response.incomplete"


async def test_encrypted_reasoning_is_included_on_request(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    body = {
        **BASIC,
        "store": False,
        "reasoning": {"effort": "low"},
        "include": ["reasoning.encrypted_content"],
    }
    result = (await pay(sandbox, funded_account, body)).response.json()
    reasoning = result["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["encrypted_content"]
    plain = (await pay(sandbox, funded_account, {**body, "include": []})).response.json()
    assert "encrypted_content" not in plain["output"][0]
    # The replay goes back in as an input item: accepted, and not quoted as a message.
    follow_up = {**BASIC, "input": [reasoning, {"role": "user", "content": "Summarise x402"}]}
    paid = await pay(sandbox, funded_account, follow_up)
    assert paid.response.status_code == 200 and paid.cost_atomic == BASIC_ATOMIC


@pytest.mark.parametrize(
    "reasoning",
    [{"effort": "extreme"}, {"effort": ""}, {"effort": "HIGH"}, {"effort": 3}, "high", [1]],
)
async def test_unknown_efforts_are_refused_before_any_quote(
    sandbox: SandboxServer, reasoning: Any
) -> None:
    async with http_client() as client:
        body = {**BASIC, "reasoning": reasoning}
        response = await client.post(sandbox.base_url + RESPONSES, json=body)
    message = refusal(response)
    assert "reasoning" in message
    if isinstance(reasoning, dict):
        assert "minimal, low, medium, high" in message
    assert_nothing_quoted_or_paid(sandbox)


# the documented refusals


STATEFUL = [
    ("store", True, "never retained"),
    ("previous_response_id", "resp_abc123", "resend the full context"),
    ("conversation", "conv_abc123", "conversation state"),
    ("conversation", {"id": "conv_abc123"}, "conversation state"),
    ("prompt", {"id": "pmpt_abc123", "version": "2"}, "prompt templates"),
    ("background", True, "nothing to bill against"),
]


@pytest.mark.parametrize(("field", "value", "why"), STATEFUL)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_stateful_parameters_are_refused_before_any_402(
    sandbox: SandboxServer, funded_account: Any, field: str, value: Any, why: str, stream: bool
) -> None:
    body = {**BASIC, field: value, "stream": stream}
    async with http_client() as client:
        request = client.build_request("POST", sandbox.base_url + RESPONSES, json=body)
        paid = await make_payer(funded_account).send(client, request)
    assert paid.payment is None  # no 402 came, so nothing was signed
    message = refusal(paid.response)
    assert field in message and why in message
    assert_nothing_quoted_or_paid(sandbox)
    assert sandbox.state.requests_seen == [("POST", SANDBOX_PATH, False)]


async def test_stateless_values_of_those_parameters_are_served(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    body = {
        **BASIC,
        "store": False,
        "background": False,
        "previous_response_id": None,
        "conversation": None,
        "prompt": None,
    }
    paid = await pay(sandbox, funded_account, body)
    assert paid.response.status_code == 200 and paid.cost_atomic == BASIC_ATOMIC
    assert paid.response.json()["store"] is False


async def test_other_providers_are_sent_to_chat_completions(sandbox: SandboxServer) -> None:
    async with http_client() as client:
        body = {**BASIC, "model": "anthropic/claude-haiku-4.5"}
        response = await client.post(sandbox.base_url + RESPONSES, json=body)
    assert "/v1/chat/completions" in refusal(response)
    assert_nothing_quoted_or_paid(sandbox)


async def test_the_openai_prefix_is_optional(sandbox: SandboxServer, funded_account: Any) -> None:
    paid = await pay(sandbox, funded_account, {**BASIC, "model": "gpt-5.2"})
    assert paid.response.status_code == 200 and paid.cost_atomic == BASIC_ATOMIC
    assert paid.response.json()["model"] == MODEL


# input forms


async def test_input_items_and_instructions_arrive_and_are_quoted(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    file_text = "File notes.txt:\nThe launch code is ALPHA-42."
    items = [
        {"role": "user", "content": "What is in my notes?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Send the file."}]},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": file_text},
                {"type": "input_text", "text": " Which code?"},
            ],
        },
    ]
    body = {"model": MODEL, "instructions": "Answer tersely.", "input": items}
    paid = await pay(sandbox, funded_account, body)
    result = paid.response.json()
    # The reply quotes the last user turn, parts joined, as chat replies quote theirs.
    assert "ALPHA-42" in result["output_text"] and "Which code?" in result["output_text"]
    # The exact body the gateway received, for checking earlier turns and files arrived.
    bodies = [seen for path, seen in sandbox.state.bodies_seen if path == SANDBOX_PATH]
    assert bodies == [body, body]  # the unpaid request, then the paid one
    # Quoted as instructions + three messages, ceil(chars / 4) + 4 each: 15, 20, 14 and 56
    # chars -> 8 + 9 + 8 + 18 = 43 input tokens, with the default max_output_tokens 1024.
    assert result["usage"]["input_tokens"] == 43
    expected = (43 * Decimal("1.75") + Decimal("102.4") * 14) / 10**6 * Decimal("1.05")
    assert paid.cost_atomic == math.ceil(expected * 10**6)
    assert result["instructions"] == "Answer tersely."


async def test_function_call_outputs_count_as_input(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    items = [
        {"role": "user", "content": "Weather in SF?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny, 18C"},
    ]
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    body = {"model": MODEL, "input": items, "tools": tools, "tool_choice": "none"}
    paid = await pay(sandbox, funded_account, body)
    result = paid.response.json()
    assert paid.response.status_code == 200 and '"Weather in SF?"' in result["output_text"]
    # user 8 + "get_weather{}" 8 + tool output 7 + the tools' text (28 characters) 11 = 34.
    assert result["usage"]["input_tokens"] == 34
    assert result["tools"] == tools


@pytest.mark.parametrize(
    ("input_value", "fragment"),
    [
        ([], "no messages"),
        ([{"role": "robot", "content": "hi"}], "input.0.role"),
        ([{"role": "user", "content": 5}], "input.0.content"),
        ([{"role": "user", "content": ["bare string part"]}], "input.0.content.0"),
        ([42], "input.0"),
        (None, "input"),
    ],
)
async def test_malformed_input_is_refused_before_any_quote(
    sandbox: SandboxServer, input_value: Any, fragment: str
) -> None:
    async with http_client() as client:
        body = {"model": MODEL, "input": input_value}
        response = await client.post(sandbox.base_url + RESPONSES, json=body)
    assert fragment in refusal(response)
    assert_nothing_quoted_or_paid(sandbox)


async def test_max_output_tokens_beyond_the_model_is_refused(sandbox: SandboxServer) -> None:
    async with http_client() as client:
        body = {**BASIC, "max_output_tokens": 10_000_000}
        response = await client.post(sandbox.base_url + RESPONSES, json=body)
    assert "max_output_tokens 10000000 exceeds" in refusal(response)
    assert_nothing_quoted_or_paid(sandbox)


# the fault switches chat streaming honours


async def test_model_latency_delays_the_stream_after_its_first_events(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    latency = 0.4
    sandbox.state.set_faults(model_latency_seconds=latency)
    arrivals: list[tuple[str, float]] = []
    async with http_client() as client:
        body = {**BASIC, "stream": True}
        request = client.build_request("POST", sandbox.base_url + RESPONSES, json=body)
        paid = await make_payer(funded_account).send(client, request, stream=True)
        try:
            async for line in paid.response.aiter_lines():
                if line.startswith("event: "):
                    arrivals.append((line.removeprefix("event: "), time.monotonic()))
        finally:
            await paid.response.aclose()
    assert arrivals[0][0] == "response.created" and arrivals[-1][0] == "response.completed"
    at = dict(arrivals)
    assert at["response.output_item.added"] - at["response.created"] >= latency * 0.9
    assert_settled_with_receipt(sandbox, paid, 1)


async def test_a_cut_stream_was_still_paid_and_receipted(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    sandbox.state.set_faults(stream_cut_after_chunks=3, times=1)
    received = ""
    async with http_client() as client:
        body = {**BASIC, "stream": True}
        request = client.build_request("POST", sandbox.base_url + RESPONSES, json=body)
        paid = await make_payer(funded_account).send(client, request, stream=True)
        assert paid.response.status_code == 200
        assert_settled_with_receipt(sandbox, paid, 1)
        with pytest.raises(httpx2.TransportError):
            try:
                async for chunk in paid.response.aiter_text():
                    received += chunk
            finally:
                await paid.response.aclose()
    assert names(events_of(received)) == STREAM_ORDER[:3]
    # `times=1` is used up: the next stream is whole.
    _, events = await pay_streamed(sandbox, funded_account, BASIC)
    assert names(events)[-1] == "response.completed"


async def test_a_cut_unstreamed_answer_is_the_proxy_timeout(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    sandbox.state.set_faults(stream_cut_after_chunks=0, times=1)
    paid = await pay(sandbox, funded_account, BASIC)
    assert paid.response.status_code == 524
    assert len(sandbox.state.settlements) == 1  # paid, and the answer never came


# an independent check of the payments


async def test_every_payment_passes_the_x402_sdk(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    verify_header = _judge()
    if verify_header is None:
        pytest.skip("the x402 SDK judge (tests/support/judge.py) is not importable")
    await pay(sandbox, funded_account, BASIC)
    await pay_streamed(sandbox, funded_account, {**BASIC, "reasoning": {"effort": "high"}})
    state = sandbox.state
    assert len(state.payments_seen) == len(state.settlements) == 2
    for payment in state.payments_seen:
        assert payment["accepted"] in state.issued_terms
        header = base64.b64encode(json.dumps(payment).encode()).decode()
        ok, reason = verify_header(header, payment["accepted"])
        assert ok, f"x402 SDK rejected a payment: {reason}"
