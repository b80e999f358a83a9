"""generate_image: one image, paid within the budget, saved into the output dir."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockrun_mcp import pricing
from blockrun_mcp.budget import UNKNOWN_REMAINING
from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.gateway_models import ImageData, ImageRequest
from blockrun_mcp.results import ImageFile, ImageResult
from blockrun_mcp.service import arguments
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR, Caller
from blockrun_mcp.service.failures import Failures

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.service.core import BlockrunService


class Images:
    def __init__(self, service: BlockrunService) -> None:
        self.service = service

    async def generate(
        self,
        budget: SessionBudget,
        prompt: str,
        model: str | None = None,
        size: str | None = None,
        caller: Caller = NOBODY_IN_PARTICULAR,
    ) -> ImageResult:
        service = self.service
        async with Failures(budget) as failures:
            arguments.require_text(prompt, "prompt")
            arguments.image_size(size)
            entry = await service.model(model, "image")
            failures.call = call = service.paid_call(
                budget,
                caller,
                tool="generate_image",
                model=entry.id,
                estimate_atomic=pricing.image_cost_atomic(entry, size),
            )
            async with (
                call,
                call.deadline(service.config.call_timeout_s, "BLOCKRUN_CALL_TIMEOUT_S"),
            ):
                answer = await service.gateway.paid_by(call).generate_images(
                    ImageRequest(model=entry.id, prompt=prompt, size=size)
                )
                images = answer.images
                if answer.job is not None:  # answered 202: a job to poll, as a video is
                    images = await service.video.follow_image_job(answer.job, call)
                files, problems = await self._save(images, prompt, budget.identity_name)
            remaining = await budget.remaining_after_paying()
            notes = [("Saving failed: " + " ".join(problems)) if problems else None]
            notes.append(UNKNOWN_REMAINING if remaining is None else None)
            return ImageResult(
                images=files,
                model=entry.id,
                cost_usd=call.cost_usd,
                budget_remaining_usd=remaining,
                transaction=call.tx_hash,
                note=" ".join(note for note in notes if note) or None,
            )

    async def _save(
        self, images: list[ImageData], prompt: str, identity: str
    ) -> tuple[list[ImageFile], list[str]]:
        """Each image into the output dir at once (upstream URLs expire); a failure to save one
        is a note, not an error: it was paid for, and its URL may still work."""
        media, gateway = self.service.media.for_identity(identity), self.service.gateway
        files: list[ImageFile] = []
        problems: list[str] = []
        for image in images:
            inline = image.url.startswith("data:")
            try:
                if inline:
                    path = media.save_data_uri(image.url, prompt, "image")
                else:
                    path = await media.save_download(image.url, prompt, gateway.stream_bytes)
                files.append(ImageFile(path=str(path), url=None if inline else image.url))
            except BlockrunError as exc:
                problems.append(exc.message)
                files.append(ImageFile(path=None, url=None if inline else image.url))
        return files, problems
