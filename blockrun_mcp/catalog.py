"""The live model catalog, cached for a few minutes, with lookup, suggestions and defaults.

When the gateway cannot be reached, the last copy is served and marked stale, so an agent
can still choose a model.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.gateway_models import CatalogEntry

CACHE_SECONDS = 300
# Cheap, capable chat models, in order of preference, for ask_model without a model.
DEFAULT_CHAT_MODELS = ("openai/gpt-5-mini", "google/gemini-2.5-flash", "deepseek/deepseek-chat")
DEFAULT_IMAGE_MODELS = ("openai/gpt-image-1", "google/nano-banana")
DEFAULT_VIDEO_MODELS = ("xai/grok-imagine-video",)


class UnknownModel(BlockrunError):
    def __init__(self, model: str, suggestions: list[str], kind: str) -> None:
        hint = f" Closest: {', '.join(suggestions)}." if suggestions else ""
        super().__init__(
            f"Unknown {kind} model {model[:200]!r}.{hint} Call list_models to see every model "
            "and price."
        )
        self.suggestions = suggestions


@dataclass
class CatalogSnapshot:
    entries: list[CatalogEntry]
    fetched_at: float
    stale: bool = False
    note: str | None = None


def kind_of(entry: CatalogEntry) -> str:
    categories = set(entry.categories)
    if "video" in categories or entry.price_per_second is not None:
        return "video"
    if "image" in categories and not ({"chat", "reasoning", "coding"} & categories):
        return "image"
    if entry.flat_price is not None and not entry.input_price and not entry.output_price:
        return "image"
    return "chat"


@dataclass(frozen=True)
class ModelView:
    """A catalog entry as the tools and the CLI show it: one projection for both."""

    id: str
    name: str
    provider: str
    kind: str
    input_price: float  # USD per million tokens, before the platform fee
    output_price: float
    image_price: float | None  # USD per image at the default size
    price_per_second: float | None  # USD per second of video
    context_window: int | None
    max_output: int | None
    categories: list[str]
    available: bool

    @property
    def headline_price(self) -> float | None:
        """The price a user compares on: per 1M output tokens, per image or per video second."""
        if self.kind == "image":
            return self.image_price
        if self.kind == "video":
            return self.price_per_second
        return self.output_price


def model_view(entry: CatalogEntry) -> ModelView:
    from blockrun_mcp import pricing

    kind = kind_of(entry)
    return ModelView(
        id=entry.id,
        name=entry.name,
        provider=entry.provider,
        kind=kind,
        input_price=entry.input_price,
        output_price=entry.output_price,
        image_price=pricing.image_price_usd(entry, None) if kind == "image" else None,
        price_per_second=pricing.video_price_per_second(entry) if kind == "video" else None,
        context_window=entry.context_window,
        max_output=entry.max_output,
        categories=list(entry.categories),
        available=entry.available,
    )


class Catalog:
    def __init__(self, fetch: Callable[[], Awaitable[list[CatalogEntry]]]) -> None:
        self._fetch = fetch
        self._snapshot: CatalogSnapshot | None = None

    async def snapshot(self, *, refresh: bool = False) -> CatalogSnapshot:
        """The catalog, from cache when fresh; the stale copy with a note when the gateway fails."""
        now = time.time()
        cached = self._snapshot
        if cached and not refresh and not cached.stale and now - cached.fetched_at < CACHE_SECONDS:
            return cached
        try:
            entries = await self._fetch()
        except BlockrunError as exc:  # unreachable, or a catalog we refuse: keep what we had
            if cached is None:
                raise
            age = int(now - cached.fetched_at)
            detail = exc.message
            self._snapshot = CatalogSnapshot(
                cached.entries,
                cached.fetched_at,
                stale=True,
                note=f"The catalog could not be refreshed ({detail}); this list is {age} s old.",
            )
            return self._snapshot
        self._snapshot = CatalogSnapshot(entries, now)
        return self._snapshot

    async def lookup(self, model: str, kind: str) -> CatalogEntry:
        entries = (await self.snapshot()).entries
        for entry in entries:
            if entry.id == model:
                if kind_of(entry) != kind:
                    raise UnknownModel(model, self._closest(model, entries, kind), kind)
                return entry
        raise UnknownModel(model, self._closest(model, entries, kind), kind)

    async def default(self, kind: str) -> CatalogEntry:
        entries = [e for e in (await self.snapshot()).entries if kind_of(e) == kind and e.available]
        preferred = {
            "chat": DEFAULT_CHAT_MODELS,
            "image": DEFAULT_IMAGE_MODELS,
            "video": DEFAULT_VIDEO_MODELS,
        }
        by_id = {e.id: e for e in entries}
        for model in preferred[kind]:
            if model in by_id:
                return by_id[model]
        paid = [e for e in entries if not e.is_free] or entries
        if not paid:
            raise UnknownModel("(default)", [], kind)
        return min(paid, key=lambda e: (e.input_price + e.output_price, e.flat_price or 0, e.id))

    @staticmethod
    def _closest(model: str, entries: list[CatalogEntry], kind: str) -> list[str]:
        ids = [e.id for e in entries if kind_of(e) == kind]
        names = {i.split("/", 1)[-1]: i for i in ids}
        close = difflib.get_close_matches(model, ids, n=3, cutoff=0.4)
        close += [
            names[n]
            for n in difflib.get_close_matches(model.split("/")[-1], list(names), n=3, cutoff=0.4)
        ]
        close += [i for i in ids if model.lower() in i.lower()]
        return list(dict.fromkeys(close))[:3]


def filter_models(
    entries: list[CatalogEntry], *, category: str | None = None, provider: str | None = None
) -> list[CatalogEntry]:
    """Entries of a category (or kind) and provider, chat models first, then by provider and id."""
    if category:
        wanted = category.strip().lower()
        entries = [e for e in entries if wanted in e.categories or kind_of(e) == wanted]
    if provider:
        wanted_provider = provider.strip().lower()
        entries = [e for e in entries if e.provider.lower() == wanted_provider]
    return sorted(entries, key=lambda e: (kind_of(e) != "chat", e.provider, e.id))
