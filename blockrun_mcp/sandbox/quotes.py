"""Price quotes by BlockRun's documented formula, in exact decimal arithmetic.

Decimal rather than float because the quote is rounded UP to whole atomic units: a float such as
25685.000000000004 would ceil to one unit more than the formula says, and a client computing the
same formula must be able to land on exactly the signed amount.
"""

from __future__ import annotations

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


def estimate_input_tokens(messages: list[dict[str, Any]]) -> int:
    """ceil(len(text) / 4) + 4 per message: four characters a token plus the role framing."""
    return sum(math.ceil(len(message_text(m.get("content"))) / 4) + 4 for m in messages)


def chat_quote_usd(model: ModelEntry, messages: list[dict[str, Any]], max_tokens: int) -> Decimal:
    """Input at the input price + 10% of max_tokens at the output price, +5%, minimum $0.001."""
    if model.is_free:
        return Decimal(0)
    tokens = estimate_input_tokens(messages)
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
