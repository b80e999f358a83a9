"""The sandbox's "model": deterministic answers in OpenAI's chat, stream and Responses shapes.

Answers quote the last user message, so a test can tell which prompt reached which model, and
they honour max_tokens the way a real model does (cut short, finish_reason "length"). Reasoning
(Responses `reasoning.effort`) spends tokens out of the same max_tokens before the visible answer,
as OpenAI's reasoning models do.

A request with tools is answered by the scripted model (scripted.py), whose answers may carry
tool calls instead of text: the shapes below deliver those too (chat `tool_calls`, Responses
`function_call` items), streamed the way OpenAI streams them.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import secrets
import time
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from blockrun_mcp.sandbox.catalog import ADAPTIVE_THINKING_MODELS
from blockrun_mcp.sandbox.quotes import estimate_input_tokens, message_text

REFUSAL_MARKER = "[[refuse]]"
# The documented refusal: Opus 4.7/4.8 answer 200 with finish_reason "content_filter" and no
# content. A prompt carrying REFUSAL_MARKER asks the sandbox for one.
REFUSING_MODELS = ADAPTIVE_THINKING_MODELS
QUOTE_CHARS = 80
STREAM_PIECES = 4
ARGUMENT_PIECES = 3  # a tool call's arguments stream in this many deltas (fewer if shorter)
# Reasoning tokens = weight of the effort x (REASONING_BASE_TOKENS + the prompt's tokens), capped
# by max_tokens: deterministic, rising with effort, larger for a larger request. No effort asked:
# no reasoning. The efforts are OpenAI's documented reasoning.effort values for these models.
REASONING_WEIGHTS: dict[str, int] = {"minimal": 1, "low": 2, "medium": 4, "high": 8}
REASONING_EFFORTS: tuple[str, ...] = tuple(REASONING_WEIGHTS)
REASONING_BASE_TOKENS = 16


class Answer(BaseModel):
    model: str
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int  # reasoning included, as OpenAI counts it
    reasoning_tokens: int = 0
    # Chat-shaped calls {"id", "type": "function", "function": {"name", "arguments"}}; when
    # present the answer is these calls (finish_reason "tool_calls"), `content` is empty.
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    def responses_usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def reasoning_tokens(effort: str | None, messages: list[dict[str, Any]]) -> int:
    """What a request reasons for at `effort` (before the max_tokens cap); 0 without an effort."""
    if effort is None:
        return 0
    return REASONING_WEIGHTS[effort] * (REASONING_BASE_TOKENS + estimate_input_tokens(messages))


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def refuses(model: str, messages: list[dict[str, Any]]) -> bool:
    """Whether `model` answers `messages` with the documented refusal (see REFUSAL_MARKER)."""
    return model in REFUSING_MODELS and any(
        REFUSAL_MARKER in message_text(m.get("content")) for m in messages
    )


def cut_to_budget(
    model: str, content: str, max_tokens: int, reasoning: int, prompt_tokens: int
) -> Answer:
    """A text answer after `reasoning` tokens, cut short ("length") when max_tokens runs out."""
    reasoning = min(reasoning, max_tokens)
    budget = max_tokens - reasoning
    tokens = math.ceil(len(content) / 4)
    finish_reason = "stop"
    if tokens > budget:
        content, tokens, finish_reason = content[: budget * 4], budget, "length"
    return Answer(
        model=model,
        content=content,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=reasoning + tokens,
        reasoning_tokens=reasoning,
    )


def answer(
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    *,
    reasoning: int = 0,
    tools: list[dict[str, Any]] | None = None,
) -> Answer:
    """The reply to `messages`. `reasoning` tokens are spent first, out of `max_tokens`: what is
    left bounds the visible answer, and none left means an empty, cut-short answer. `tools` only
    count in prompt_tokens: this reply never calls them (scripted.py does)."""
    prompt_tokens = estimate_input_tokens(messages, tools)
    if refuses(model, messages):
        return Answer(
            model=model,
            content="",
            finish_reason="content_filter",
            prompt_tokens=prompt_tokens,
            completion_tokens=0,
        )
    said = " ".join(_last_user_text(messages).split())
    if len(said) > QUOTE_CHARS:
        said = said[: QUOTE_CHARS - 1] + "…"
    digest = hashlib.sha256(
        (model + json.dumps(messages, sort_keys=True, default=str)).encode()
    ).hexdigest()[:8]
    content = f'[sandbox {model}] You said: "{said}". Deterministic sandbox reply {digest}.'
    return cut_to_budget(model, content, max_tokens, reasoning, prompt_tokens)


def _assistant_message(reply: Answer) -> dict[str, Any]:
    # OpenAI's shape: a tool-calling answer has null content beside its calls.
    if reply.tool_calls:
        return {"role": "assistant", "content": None, "tool_calls": reply.tool_calls}
    return {"role": "assistant", "content": reply.content}


def completion_body(reply: Answer) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sbx" + secrets.token_hex(10),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": _assistant_message(reply),
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": reply.usage(),
    }


def _pieces(content: str, count: int = STREAM_PIECES) -> list[str]:
    if not content:
        return []
    size = max(1, math.ceil(len(content) / count))
    return [content[i : i + size] for i in range(0, len(content), size)]


def _tool_call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat stream deltas for `calls`, as OpenAI sends them: per call, one delta naming it with
    empty arguments, then its arguments in pieces under the same index."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        function = call["function"]
        opening = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        deltas.append({"tool_calls": [opening]})
        for piece in _pieces(function["arguments"], ARGUMENT_PIECES):
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


def stream_events(reply: Answer) -> list[dict[str, Any]]:
    """chat.completion.chunk events: the role, the content (or the tool calls) in pieces, then
    finish + usage."""
    base = {
        "id": "chatcmpl-sbx" + secrets.token_hex(10),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    if reply.tool_calls:
        events = [chunk({"role": "assistant", "content": None})]
        events += [chunk(delta) for delta in _tool_call_deltas(reply.tool_calls)]
    else:
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in _pieces(reply.content)]
    events.append(chunk({}, reply.finish_reason, usage=reply.usage()))
    return events


def sse(event: dict[str, Any] | str, name: str | None = None) -> bytes:
    """One server-sent event; `name` adds the `event:` line the Responses stream carries."""
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {data}\n\n".encode()


def _reasoning_item(reply: Answer, encrypted: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": "rs_sbx" + secrets.token_hex(8),
        "summary": [],
    }
    if encrypted:  # include: ["reasoning.encrypted_content"], for replaying in the next input
        opaque = hashlib.sha256(f"{reply.model}|{reply.content}".encode()).digest()
        item["encrypted_content"] = "sbx:" + base64.b64encode(opaque).decode()
    return item


def function_call_item(call: dict[str, Any]) -> dict[str, Any]:
    """A chat-shaped tool call as a Responses `function_call` output item. Its item id derives
    from the call id, so the same answer always has the same items."""
    item_id = "fc_" + hashlib.sha256(call["id"].encode()).hexdigest()[:24]
    function = call["function"]
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call["id"],
        "name": function["name"],
        "arguments": function["arguments"],
        "status": "completed",
    }


def responses_body(reply: Answer, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAI Responses API object for the same answer.

    `request` is the validated request body: the object echoes its settings as OpenAI's does,
    and its `reasoning` / `include` decide the reasoning item. `store` is always false: the
    gateway is stateless. `output_text` is the SDKs' convenience field, served for plain clients.
    """
    request = request or {}
    reasoning = request.get("reasoning") or {}
    complete = reply.finish_reason in ("stop", "tool_calls")
    output: list[dict[str, Any]] = []
    if reasoning.get("effort") is not None:
        encrypted = "reasoning.encrypted_content" in (request.get("include") or [])
        output.append(_reasoning_item(reply, encrypted))
    output += [function_call_item(call) for call in reply.tool_calls]
    # A tool-calling answer carries no message; nor does reasoning that used up
    # max_output_tokens.
    if not reply.tool_calls and (reply.content or complete):
        output.append(
            {
                "type": "message",
                "id": "msg_sbx" + secrets.token_hex(8),
                "status": "completed" if complete else "incomplete",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.content, "annotations": []}],
            }
        )
    return {
        "id": "resp_sbx" + secrets.token_hex(10),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if complete else "incomplete",
        "background": False,
        "error": None,
        "incomplete_details": None if complete else {"reason": "max_output_tokens"},
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": reply.model,
        "output": output,
        "output_text": reply.content,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": reply.responses_usage(),
    }


def responses_stream_events(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The native Responses SSE events that deliver `body` (a `responses_body`), in order.

    response.created, response.in_progress; per output item: output_item.added, and for a
    message content_part.added, output_text.delta pieces, output_text.done, content_part.done,
    for a function call function_call_arguments.delta pieces and function_call_arguments.done;
    output_item.done; then response.completed with the whole object (response.incomplete when
    max_output_tokens cut it short, as OpenAI ends such a stream). Each data carries its `type`
    and a `sequence_number` from 0.
    """
    numbers = itertools.count()
    events: list[tuple[str, dict[str, Any]]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(numbers), **fields}))

    pending = {key: value for key, value in body.items() if key != "output_text"}
    pending.update(status="in_progress", incomplete_details=None, output=[], usage=None)
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    for index, item in enumerate(body["output"]):
        if item["type"] == "function_call":
            events += _function_call_events(item, index, numbers)
            continue
        if item["type"] != "message":
            started = {key: value for key, value in item.items() if key != "encrypted_content"}
            emit("response.output_item.added", output_index=index, item=started)
            emit("response.output_item.done", output_index=index, item=item)
            continue
        where = {"item_id": item["id"], "output_index": index}
        emit(
            "response.output_item.added",
            output_index=index,
            item={**item, "status": "in_progress", "content": []},
        )
        for part_index, part in enumerate(item["content"]):
            at = {**where, "content_index": part_index}
            emit("response.content_part.added", **at, part={**part, "text": ""})
            for piece in _pieces(part["text"]):
                emit("response.output_text.delta", **at, delta=piece, logprobs=[])
            emit("response.output_text.done", **at, text=part["text"], logprobs=[])
            emit("response.content_part.done", **at, part=part)
        emit("response.output_item.done", output_index=index, item=item)
    final = "response.completed" if body["status"] == "completed" else "response.incomplete"
    emit(final, response=body)
    return events


def _function_call_events(
    item: dict[str, Any], index: int, numbers: Iterator[int]
) -> list[tuple[str, dict[str, Any]]]:
    """A function_call output item streamed: added (no arguments yet), the arguments in pieces,
    their done event, the item done. `numbers` continues the stream's sequence numbers."""
    events: list[tuple[str, dict[str, Any]]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(numbers), **fields}))

    where = {"item_id": item["id"], "output_index": index}
    started = {**item, "arguments": "", "status": "in_progress"}
    emit("response.output_item.added", output_index=index, item=started)
    for piece in _pieces(item["arguments"], ARGUMENT_PIECES):
        emit("response.function_call_arguments.delta", **where, delta=piece)
    emit(
        "response.function_call_arguments.done",
        **where,
        name=item["name"],
        arguments=item["arguments"],
    )
    emit("response.output_item.done", output_index=index, item=item)
    return events
