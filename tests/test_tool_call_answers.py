"""Function calls in a gateway's answer, as a hostile gateway might send them: assembled from
stream chunks in any order and any split, bounded in number and size, never an error for a
malformed entry (it becomes a call the workspace tools refuse)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from blockrun_mcp.gateway import (
    MAX_ANSWER_BYTES,
    MAX_TOOL_CALLS,
    GatewayError,
    assemble_stream,
    chat_answer_from,
)

pytestmark = pytest.mark.anyio


def streamed(*deltas: dict[str, Any], finish: str = "tool_calls") -> httpx2.Response:
    events = [{"choices": [{"index": 0, "delta": delta}]} for delta in deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return httpx2.Response(
        200, headers={"content-type": "text/event-stream"}, content=body.encode()
    )


def call_delta(index: Any, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


async def test_calls_split_and_interleaved_are_put_together_by_index():
    answer = await assemble_stream(
        streamed(
            call_delta(
                0, id="call_a", type="function", function={"name": "read_", "arguments": ""}
            ),
            call_delta(1, id="call_b", function={"name": "search", "arguments": '{"qu'}),
            call_delta(0, function={"name": "file", "arguments": '{"path":'}),
            call_delta(1, function={"arguments": 'ery": "x"}'}),
            call_delta(0, function={"arguments": ' "a.py"}'}),
        ),
        "m",
    )
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        ("call_a", "read_file", '{"path": "a.py"}'),
        ("call_b", "search", '{"query": "x"}'),
    ]
    assert answer.finish_reason == "tool_calls" and answer.complete


async def test_malformed_entries_become_calls_to_refuse_not_errors():
    answer = await assemble_stream(
        streamed(
            {"tool_calls": ["junk", None, 5]},
            call_delta("zero", function={"name": 7, "arguments": {"not": "a string"}}),
            call_delta(3, id=["not", "a", "string"], function="nope"),
        ),
        "m",
    )
    # No usable index continues the last call; a missing id gets one of ours.
    assert all(call.id.startswith("call_") for call in answer.tool_calls)
    assert all(
        isinstance(call.name, str) and isinstance(call.arguments, str) for call in answer.tool_calls
    )


async def test_more_calls_than_the_cap_are_dropped():
    deltas = [call_delta(i, id=f"c{i}", function={"name": "list_files"}) for i in range(100)]
    answer = await assemble_stream(streamed(*deltas), "m")
    assert len(answer.tool_calls) == MAX_TOOL_CALLS
    data = {
        "choices": [
            {
                "message": {
                    "tool_calls": [
                        {"id": f"c{i}", "function": {"name": "x", "arguments": "{}"}}
                        for i in range(100)
                    ]
                }
            }
        ]
    }
    assert len(chat_answer_from(data, "m").tool_calls) == MAX_TOOL_CALLS


async def test_arguments_past_the_answer_limit_stop_the_read():
    piece = "x" * (1024 * 512)
    deltas = [
        call_delta(0, function={"arguments": piece})
        for _ in range(MAX_ANSWER_BYTES // len(piece) + 2)
    ]
    with pytest.raises(GatewayError, match="size limit"):
        await assemble_stream(streamed(*deltas), "m")


async def test_an_index_far_out_of_range_opens_no_call():
    answer = await assemble_stream(
        streamed(call_delta(10**9, id="c", function={"name": "list_files"})), "m"
    )
    assert answer.tool_calls == []
