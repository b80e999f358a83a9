"""Local cost estimates by BlockRun's documented quote formula, with no request and no signature.

The gateway's 402 quote is what gets signed; this estimate is how we judge that quote (a quote
far above it is refused as suspicious) and what `estimate_cost` answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from blockrun_mcp.gateway_models import CatalogEntry

PLATFORM_FEE = 1.05
OUTPUT_SHARE = 0.10  # the quote prices a tenth of max_tokens as output
MINIMUM_USD = 0.001
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


def chat_cost_usd(entry: CatalogEntry, texts: Iterable[str], max_tokens: int) -> float:
    """Estimated input at the input price + 10% of max_tokens at the output price, +5% fee."""
    if entry.is_free:
        return 0.0
    per_million = (
        estimate_input_tokens(texts) * entry.input_price
        + OUTPUT_SHARE * max_tokens * entry.output_price
    )
    return max(per_million / 1e6 * PLATFORM_FEE, MINIMUM_USD)


def image_price_usd(entry: CatalogEntry, size: str | None) -> float | None:
    """Per-image price at `size` from the catalog, else the published table; None if unknown."""
    size = size or DEFAULT_IMAGE_SIZE
    if size in entry.size_prices:
        return entry.size_prices[size]
    published = PUBLISHED_IMAGE_PRICES.get(entry.id, {})
    if entry.flat_price is not None and size not in published:
        return entry.flat_price
    return published.get(size, published.get(DEFAULT_IMAGE_SIZE, entry.flat_price))


def image_cost_usd(entry: CatalogEntry, size: str | None, n: int = 1) -> float | None:
    price = image_price_usd(entry, size)
    return None if price is None else price * n


def video_price_per_second(entry: CatalogEntry) -> float | None:
    if entry.price_per_second is not None:
        return entry.price_per_second
    return PUBLISHED_VIDEO_PRICES.get(entry.id)


def video_cost_usd(entry: CatalogEntry, seconds: float | None) -> float | None:
    price = video_price_per_second(entry)
    return None if price is None else price * (seconds or DEFAULT_VIDEO_SECONDS)
