"""Local cost estimates by BlockRun's documented quote formula, with no request and no signature.

The gateway's 402 quote is what gets signed; this estimate is how we judge that quote (a quote
far above it is refused as suspicious) and what `estimate_cost` answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from blockrun_mcp.gateway_models import CatalogEntry
from blockrun_mcp.money import price_to_atomic

PLATFORM_FEE = Decimal("1.05")
OUTPUT_SHARE = Decimal("0.10")  # the quote prices a tenth of max_tokens as output
MINIMUM_USD = Decimal("0.001")
MILLION = Decimal(10**6)  # catalog prices are per million tokens
DEFAULT_MAX_TOKENS = 1024
DEFAULT_IMAGE_SIZE = "1024x1024"
DEFAULT_VIDEO_SECONDS = 5.0

# Published per-image and per-second prices, for catalog entries that carry none.
PUBLISHED_IMAGE_PRICES: dict[str, dict[str, float]] = {
    "openai/gpt-image-1": {DEFAULT_IMAGE_SIZE: 0.021},
    "openai/gpt-image-2": {DEFAULT_IMAGE_SIZE: 0.063, "1536x1024": 0.126, "1024x1536": 0.126},
    "google/nano-banana": {DEFAULT_IMAGE_SIZE: 0.053},
    "google/nano-banana-pro": {DEFAULT_IMAGE_SIZE: 0.105, "4096x4096": 0.158},
    "openai/dall-e-3": {DEFAULT_IMAGE_SIZE: 0.042, "1792x1024": 0.084},
    "zai/cogview-4": {DEFAULT_IMAGE_SIZE: 0.015, "1440x1440": 0.02},
    "xai/grok-imagine-image": {DEFAULT_IMAGE_SIZE: 0.021},
    "xai/grok-imagine-image-pro": {DEFAULT_IMAGE_SIZE: 0.074},
}
PUBLISHED_VIDEO_PRICES: dict[str, float] = {
    "xai/grok-imagine-video": 0.05,
    "bytedance/seedance-1.5-pro": 0.092,
    "bytedance/seedance-2.0-fast": 0.238,
    "bytedance/seedance-2.0": 0.298,
}


def estimate_input_tokens(texts: Iterable[str]) -> int:
    """About four characters a token, plus the framing of each message."""
    return sum(math.ceil(len(text) / 4) + 4 for text in texts)


def priced_texts(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[str]:
    """What the quote counts of a request that offers functions: each message's text (an
    assistant turn's calls as their names and arguments), and the tools as one more message
    (each one's name, description and parameters as compact sorted JSON). The sandbox quotes
    by the same rule (sandbox/quotes.py); the gateway publishes none for tools, and its quote
    is judged against this estimate like any other."""
    texts = []
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            text += str(function.get("name", "")) + str(function.get("arguments", ""))
        texts.append(text)
    if tools:
        texts.append(
            "".join(
                str(tool["function"].get("name", ""))
                + str(tool["function"].get("description") or "")
                + json.dumps(
                    tool["function"].get("parameters") or {}, sort_keys=True, separators=(",", ":")
                )
                for tool in tools
            )
        )
    return texts


def _exact(price: float) -> Decimal:
    """A catalog price as the decimal it was written as ("0.25", not 0.25000000000000001)."""
    return Decimal(repr(price))


def chat_cost_atomic(entry: CatalogEntry, texts: Iterable[str], max_tokens: int) -> int:
    """Estimated input at the input price + 10% of max_tokens at the output price, +5% fee,
    at least $0.001: the gateway's formula, to the atomic unit it quotes."""
    if entry.is_free:
        return 0
    per_million = Decimal(estimate_input_tokens(texts)) * _exact(
        entry.input_price
    ) + OUTPUT_SHARE * Decimal(max_tokens) * _exact(entry.output_price)
    return price_to_atomic(max(per_million / MILLION * PLATFORM_FEE, MINIMUM_USD))


def image_price_usd(entry: CatalogEntry, size: str | None) -> float | None:
    """Per-image price at `size` from the catalog, else the published table; None if unknown."""
    size = size or DEFAULT_IMAGE_SIZE
    if size in entry.size_prices:
        return entry.size_prices[size]
    published = PUBLISHED_IMAGE_PRICES.get(entry.id, {})
    if entry.flat_price is not None and size not in published:
        return entry.flat_price
    return published.get(size, published.get(DEFAULT_IMAGE_SIZE, entry.flat_price))


def image_cost_atomic(entry: CatalogEntry, size: str | None, n: int = 1) -> int | None:
    price = image_price_usd(entry, size)
    return None if price is None else price_to_atomic(_exact(price) * n)


def video_price_per_second(entry: CatalogEntry) -> float | None:
    if entry.price_per_second is not None:
        return entry.price_per_second
    return PUBLISHED_VIDEO_PRICES.get(entry.id)


def video_cost_atomic(entry: CatalogEntry, seconds: float | None) -> int | None:
    price = video_price_per_second(entry)
    if price is None:
        return None
    return price_to_atomic(_exact(price) * _exact(seconds or DEFAULT_VIDEO_SECONDS))
