"""list_models and estimate_cost: the catalog and prices, free and without signing anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockrun_mcp import pricing
from blockrun_mcp.catalog import filter_models, kind_of, model_view
from blockrun_mcp.gateway_models import CatalogEntry
from blockrun_mcp.money import atomic_to_usd
from blockrun_mcp.results import Estimate, ModelInfo, ModelList
from blockrun_mcp.service import arguments
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR, Caller
from blockrun_mcp.service.chat import with_files
from blockrun_mcp.service.failures import Failures, ToolFailure

if TYPE_CHECKING:
    from blockrun_mcp.service.core import BlockrunService


class Models:
    def __init__(self, service: BlockrunService) -> None:
        self.service = service

    async def list(self, category: str | None = None, provider: str | None = None) -> ModelList:
        async with Failures():
            snapshot = await self.service.catalog.snapshot()
            entries = filter_models(snapshot.entries, category=category, provider=provider)
            return ModelList(
                models=[
                    ModelInfo.model_validate(model_view(e), from_attributes=True) for e in entries
                ],
                stale=snapshot.stale,
                note=snapshot.note or (None if entries else "No model matches those filters."),
            )

    async def estimate(
        self,
        model: str,
        prompt: str | None = None,
        max_tokens: int | None = None,
        size: str | None = None,
        duration_seconds: float | None = None,
        files: list[str] | None = None,
        caller: Caller = NOBODY_IN_PARTICULAR,
    ) -> Estimate:
        async with Failures():
            entry = await self._any_kind(model)
            kind = kind_of(entry)
            workspace: list[str] | None = None
            if kind == "image":
                arguments.image_size(size)
                cost = pricing.image_cost_atomic(entry, size)
                basis = f"per image at {size or pricing.DEFAULT_IMAGE_SIZE}"
            elif kind == "video":
                seconds = arguments.duration_for(duration_seconds, entry)
                cost = pricing.video_cost_atomic(entry, seconds)
                basis = f"{seconds:g} s of video"
            else:
                tokens = arguments.max_tokens_for(max_tokens, entry)
                selection = await self.service.select_files(caller, files) if files else None
                sent = selection.files if selection is not None else []
                workspace = selection.roots if selection is not None else None
                cost = pricing.chat_cost_atomic(entry, [with_files(sent, prompt or "")], tokens)
                basis = (
                    "free model"
                    if entry.is_free
                    else f"gateway quote formula: prompt tokens + 10% of max_tokens={tokens}, +5% fee"
                )
                if sent:
                    basis += f"; {len(sent)} file(s), about {sum(f.tokens for f in sent)} tokens"
                    basis += f", read from {', '.join(workspace or [])}"
            if cost is None:
                raise ToolFailure(f"No price is known for {entry.id}.")
            return Estimate(model=entry.id, estimated_usd=atomic_to_usd(cost), basis=basis)

    async def _any_kind(self, model: str) -> CatalogEntry:
        wanted = arguments.model_id(model) if isinstance(model, str) else None
        if wanted is None:
            raise ToolFailure("model must be a model id from list_models.")
        for entry in (await self.service.catalog.snapshot()).entries:
            if entry.id == wanted:
                return entry
        return await self.service.catalog.lookup(wanted, "chat")  # raises with suggestions
