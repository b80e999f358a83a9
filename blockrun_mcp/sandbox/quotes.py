"""Price quotes by BlockRun's documented formula, in exact decimal arithmetic.

Decimal rather than float because the quote is rounded UP to whole atomic units: a float such as
25685.000000000004 would ceil to one unit more than the formula says, and a client computing the
same formula must be able to land on exactly the signed amount.

Chat input is priced per message, and function calling adds text to price, by one rule a client
can reproduce exactly (`priced_texts`):

- a message's text is `message_text(content)`, followed, for an assistant message with
  `tool_calls`, by each call's `function.name` + `function.arguments` in order, no separators;
- the tools, when present and non-empty, are one more message whose text is, for each tool in
  order, `name` + `description` (or "") + `json.dumps(parameters, sort_keys=True,
  separators=(",", ":"))` (parameters {} when missing or null; Python's default ASCII escaping),
  concatenated. A tool is read in either shape: chat's {"type": "function", "function": {...}}
  or the Responses API's flat {"type": "function", "name", ...};
- input tokens = the sum over those texts of ceil(len(text) / 4) + 4.

A Responses `function_call` input item is priced as an assistant message carrying that one call,
a `function_call_output` as a tool message whose content is its `output`.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from blockrun_mcp.money import price_to_atomic, usd_text
from blockrun_mcp.sandbox.catalog import ModelEntry

DEFAULT_MAX_TOKENS = 1024
DEFAULT_VIDEO_SECONDS = 5
PLATFORM_FEE = Decimal("1.05")
OUTPUT_SHARE = Decimal("0.10")  # the quote prices a tenth of max_tokens as output
MINIMUM_USD = Decimal("0.001")


def message_text(content: Any) -> str:
    """The text of a message: the content string, or its text parts concatenated."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return ""


def tool_calls_text(message: dict[str, Any]) -> str:
    """An assistant message's tool calls as priced text: each name + arguments, in order."""
    if message.get("role") != "assistant":
        return ""
    texts = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.append(str(function.get("name") or "") + str(function.get("arguments") or ""))
    return "".join(texts)


def _function_of(tool: dict[str, Any]) -> dict[str, Any]:
    # Chat nests the definition under "function"; the Responses API spells it flat.
    nested = tool.get("function")
    return nested if isinstance(nested, dict) else tool


def tools_text(tools: list[dict[str, Any]]) -> str:
    """The tool definitions as one priced text: name + description + compact sorted parameters."""
    texts = []
    for tool in tools:
        function = _function_of(tool)
        parameters = function.get("parameters")
        schema = json.dumps(
            parameters if parameters is not None else {}, sort_keys=True, separators=(",", ":")
        )
        texts.append(
            str(function.get("name") or "") + str(function.get("description") or "") + schema
        )
    return "".join(texts)


def priced_texts(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[str]:
    """The texts the input is priced by: one per message, then one for the tools if any."""
    texts = [message_text(m.get("content")) + tool_calls_text(m) for m in messages]
    if tools:
        texts.append(tools_text(tools))
    return texts


def estimate_input_tokens(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> int:
    """ceil(len(text) / 4) + 4 per priced text: four characters a token plus the role framing."""
    return sum(math.ceil(len(text) / 4) + 4 for text in priced_texts(messages, tools))


def chat_quote_usd(
    model: ModelEntry,
    messages: list[dict[str, Any]],
    max_tokens: int,
    tools: list[dict[str, Any]] | None = None,
) -> Decimal:
    """Input at the input price + 10% of max_tokens at the output price, +5%, minimum $0.001."""
    if model.is_free:
        return Decimal(0)
    tokens = estimate_input_tokens(messages, tools)
    per_million = Decimal(tokens) * Decimal(str(model.input_price)) + OUTPUT_SHARE * Decimal(
        max_tokens
    ) * Decimal(str(model.output_price))
    quote = per_million / Decimal(10**6) * PLATFORM_FEE
    return max(quote, MINIMUM_USD)


def image_quote_usd(model: ModelEntry, size: str, n: int) -> Decimal:
    # The published per-image tables are what BlockRun charges, fee included, so no 1.05 here.
    return Decimal(str(model.image_price(size))) * n


def video_quote_usd(
    model: ModelEntry, duration_seconds: float, *, image_input: bool = False
) -> Decimal:
    # Like images: the published per-second price already includes the platform fee. Seedance
    # 2.0 charges less per second when the video starts from an input image.
    per_second = model.video_price_per_second(image_input=image_input)
    return Decimal(str(per_second)) * Decimal(str(duration_seconds))


def to_atomic(usd: Decimal) -> int:
    """Whole USDC atomic units, rounded up so the gateway never undercharges (the rule the
    client's estimates follow too: money.price_to_atomic)."""
    return price_to_atomic(usd)


def atomic_to_usd_text(amount: int) -> str:
    """'0.025685' for 25685: the informational `price.amount` of a 402 body."""
    return usd_text(amount, sign=False)
