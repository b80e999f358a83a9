"""The sandbox's "model": deterministic answers in OpenAI's chat, stream and Responses shapes.

Answers quote the last user message, so a test can tell which prompt reached which model, and
they honour max_tokens the way a real model does (cut short, finish_reason "length").
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from typing import Any

from pydantic import BaseModel

from blockrun_mcp.sandbox.catalog import ADAPTIVE_THINKING_MODELS
from blockrun_mcp.sandbox.quotes import estimate_input_tokens, message_text

REFUSAL_MARKER = "[[refuse]]"
# The documented refusal: Opus 4.7/4.8 answer 200 with finish_reason "content_filter" and no
# content. A prompt carrying REFUSAL_MARKER asks the sandbox for one.
REFUSING_MODELS = ADAPTIVE_THINKING_MODELS
QUOTE_CHARS = 80
STREAM_PIECES = 4


class Answer(BaseModel):
    model: str
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def answer(model: str, messages: list[dict[str, Any]], max_tokens: int) -> Answer:
    prompt_tokens = estimate_input_tokens(messages)
    if model in REFUSING_MODELS and any(
        REFUSAL_MARKER in message_text(m.get("content")) for m in messages
    ):
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
    tokens = math.ceil(len(content) / 4)
    finish_reason = "stop"
    if tokens > max_tokens:
        content, tokens, finish_reason = content[: max_tokens * 4], max_tokens, "length"
    return Answer(
        model=model,
        content=content,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=tokens,
    )


def completion_body(reply: Answer) -> dict[str, Any]:
    return {
        "id": "chatcmpl-sbx" + secrets.token_hex(10),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": reply.usage(),
    }


def _pieces(content: str) -> list[str]:
    if not content:
        return []
    size = max(1, math.ceil(len(content) / STREAM_PIECES))
    return [content[i : i + size] for i in range(0, len(content), size)]


def stream_events(reply: Answer) -> list[dict[str, Any]]:
    """chat.completion.chunk events: the role, the content in pieces, then finish + usage."""
    base = {
        "id": "chatcmpl-sbx" + secrets.token_hex(10),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {**base, "choices": [choice], **extra}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in _pieces(reply.content)]
    events.append(chunk({}, reply.finish_reason, usage=reply.usage()))
    return events


def sse(event: dict[str, Any] | str) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def responses_body(reply: Answer) -> dict[str, Any]:
    """The OpenAI Responses API object for the same answer."""
    complete = reply.finish_reason == "stop"
    return {
        "id": "resp_sbx" + secrets.token_hex(10),
        "object": "response",
        "created_at": int(time.time()),
        "model": reply.model,
        "status": "completed" if complete else "incomplete",
        "incomplete_details": None if complete else {"reason": "max_output_tokens"},
        "output": [
            {
                "type": "message",
                "id": "msg_sbx" + secrets.token_hex(8),
                "status": "completed" if complete else "incomplete",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.content, "annotations": []}],
            }
        ],
        "output_text": reply.content,
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
