"""generate_video: a paid job that renders for minutes, polled with its payment header until it
completes, fails, or the wait ends; resumable by its id without paying again.

Its jobs live in the ledger beside the payment that bought them (VideoJobs), so a job can be
resumed after a restart, and `budget` and `spend` can show what is still running. Images that
the gateway answers with 202 are followed the same way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from blockrun_mcp import pricing
from blockrun_mcp.budget import UNKNOWN_REMAINING
from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.gateway import GatewayError, VideoJob
from blockrun_mcp.gateway_models import ImageData, VideoRequest, VideoStatus
from blockrun_mcp.ledger import PaymentRow, VideoJobRow
from blockrun_mcp.money import usd_text
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.payments import PaidCall, when
from blockrun_mcp.results import VideoResult
from blockrun_mcp.service import arguments
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR, Caller, ProgressCallback
from blockrun_mcp.service.failures import Failures, ToolFailure
from blockrun_mcp.x402.signer import payment_from_header

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.service.core import BlockrunService


class JobInterrupted(BlockrunError):
    """Following a paid job failed; the job may still finish at the gateway."""

    money_moved = None

    def __init__(self, detail: str, job_id: str) -> None:
        super().__init__(
            f"{detail} Video job {job_id} may still finish: call generate_video with "
            f"job_id={job_id!r} to check it again; that never pays again."
        )


class VideoJobs:
    """The ledger's rows of paid jobs: what each paid with, how to poll it, how it ended."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def started(self, job: VideoJob, call: PaidCall, budget: SessionBudget, model: str) -> None:
        (hold,) = call.holds
        self.ledger.save_video_job(
            VideoJobRow(
                job_id=job.id,
                payment_id=hold.payment_id,
                session=budget.session,
                model=model,
                poll_url=job.poll_url,
                header_name=job.payment.header_name,
                header_value=job.payment.header_value,
                valid_before=job.payment.valid_before,
                status="running",
                path=None,
                url=None,
            )
        )

    def ended(
        self, job_id: str, status: str, *, path: str | None = None, url: str | None = None
    ) -> None:
        self.ledger.update_video_job(job_id, status=status, path=path, url=url)

    def find(self, job_id: str, identity: str) -> tuple[VideoJobRow, PaymentRow | None]:
        """The job and its payment, if `identity` paid for it. Another identity's job is as
        unknown as a made-up id: same sentence, and nothing is asked of the gateway."""
        row = self.ledger.video_job(arguments.job_id(job_id))
        payment = self.ledger.payment(row.payment_id) if row is not None else None
        if row is None or (payment is not None and payment.identity != identity):
            raise ToolFailure(
                f"No video job {job_id} is known here; start a new one with a prompt."
            )
        return row, payment


class Video:
    def __init__(self, service: BlockrunService) -> None:
        self.service = service

    @property
    def jobs(self) -> VideoJobs:
        return VideoJobs(self.service.ledger)

    async def generate(
        self,
        budget: SessionBudget,
        prompt: str | None = None,
        model: str | None = None,
        duration_seconds: float | None = None,
        image_url: str | None = None,
        job_id: str | None = None,
        caller: Caller = NOBODY_IN_PARTICULAR,
    ) -> VideoResult:
        service = self.service
        async with Failures(budget) as failures:
            progress = caller.progress
            if job_id is not None:
                return await self._resume(budget, job_id, progress, failures)
            text = arguments.require_text(prompt, "prompt")
            entry = await service.model(model, "video")
            seconds = arguments.duration_for(duration_seconds, entry)
            arguments.image_url(image_url)
            failures.call = call = service.paid_call(
                budget,
                caller,
                tool="generate_video",
                model=entry.id,
                estimate_atomic=pricing.video_cost_atomic(entry, seconds),
            )
            async with call:
                async with call.deadline(service.config.call_timeout_s, "BLOCKRUN_CALL_TIMEOUT_S"):
                    job = await service.gateway.paid_by(call).submit_video(
                        VideoRequest(
                            model=entry.id,
                            prompt=text,
                            duration_seconds=seconds,
                            image_url=image_url,
                        )
                    )
                await off_loop(self.jobs.started, job, call, budget, entry.id)
                return await self._wait(budget, job, call, text, progress)

    async def _resume(
        self,
        budget: SessionBudget,
        job_id: str,
        progress: ProgressCallback | None,
        failures: Failures,
    ) -> VideoResult:
        row, payment = await off_loop(self.jobs.find, job_id, budget.identity_name)
        if row.status in ("completed", "failed"):
            return VideoResult(
                status=row.status,
                job_id=row.job_id,
                path=row.path,
                url=row.url,
                cost_usd=0.0,
                budget_remaining_usd=await budget.aremaining_usd(),
                note="This job had already ended; nothing was paid again.",
            )
        if payment is None:
            raise ToolFailure(f"Video job {job_id} has lost its payment record; start a new job.")
        failures.call = call = PaidCall.resumed(budget, payment, tool="generate_video")
        job = VideoJob(
            id=row.job_id,
            poll_url=row.poll_url,
            payment=payment_from_header(row.header_name, row.header_value),
        )
        async with call:
            return await self._wait(budget, job, call, row.model, progress)

    async def follow(
        self,
        job: VideoJob,
        call: PaidCall,
        *,
        deadline: float,
        on_poll: Callable[[VideoStatus, int], Awaitable[None]] | None = None,
    ) -> VideoStatus:
        """Poll `job` until it ends or `deadline`, and book its payment as the status says: the
        poll that says completed is where the gateway settled; "failed" is its word only."""
        options = self.service.options
        status = await self.service.gateway.wait_for_job(
            job,
            deadline=deadline,
            on_poll=on_poll,
            interval=options.video_poll_interval,
            poll_timeout=options.video_poll_timeout,
            # The job's one payment: a claim a poll makes about it is recorded there (rule 5).
            hold=call.open[0] if call.open else None,
        )
        if status.status == "completed":
            await call.job_completed(status.receipt)
        elif status.status == "failed":
            await call.job_claimed("the gateway said the job failed")
        return status

    async def follow_image_job(self, job: VideoJob, call: PaidCall) -> list[ImageData]:
        """An image answered with 202: its job followed to the end, its one image returned."""
        status = await self.follow(job, call, deadline=job.poll_deadline)
        if status.status != "completed":
            raise GatewayError(
                f"The image job {job.id} ended as {status.status}: "
                f"{status.error or 'no reason given'}."
            )
        return [ImageData(url=url) for url in status.urls[:1]]

    async def _wait(
        self,
        budget: SessionBudget,
        job: VideoJob,
        call: PaidCall,
        prompt: str,
        progress: ProgressCallback | None,
    ) -> VideoResult:
        options = self.service.options
        started = time.time()

        async def on_poll(status: VideoStatus, polls: int) -> None:
            if progress is not None:
                await progress(
                    time.time() - started,
                    options.video_wait_seconds,
                    f"video {job.id}: {status.status}",
                )

        try:
            # At least one poll, even past the deadline: only the gateway's answer can show that
            # the job completed (and settled) while nobody was polling.
            status = await self.follow(
                job,
                call,
                deadline=min(started + options.video_wait_seconds, job.poll_deadline),
                on_poll=on_poll,
            )
        except BlockrunError as exc:
            raise JobInterrupted(exc.message, job.id) from None
        result = VideoResult(
            status="running", job_id=job.id, cost_usd=0.0, budget_remaining_usd=0.0
        )
        if status.status == "completed":
            result = await self._completed(job, call, status, prompt, budget.identity_name)
        elif status.status == "failed":
            await off_loop(self.jobs.ended, job.id, "failed")
            result.status = "failed"
            result.note = (
                f"The gateway says the video job failed: {status.error or 'no reason given'}. "
                f"Its signed payment ({_amount(call)}) is not known to be charged, but it stays "
                f"counted until it expires unused on chain (at {when(job.payment.valid_before)}); "
                "then it is released by itself."
            )
        elif time.time() >= job.poll_deadline and status.error is not None:
            # The last poll went unanswered: the job may have completed and settled meanwhile.
            result.note = (
                f"The last poll of video job {job.id} failed ({status.error}), so whether it "
                "completed and was paid is unknown; its payment counts as spent. Call "
                f"generate_video with job_id={job.id!r} to check again; it will not pay again."
            )
        elif time.time() >= job.poll_deadline:
            # The row stays running: a gateway that settles by itself in the last seconds of the
            # authorization has delivered what was paid for, and a resume must still find it.
            await call.record("the job had not completed when polling had to stop")
            result.status = "failed"
            result.note = (
                "The job did not finish before its payment authorization ran out (at "
                f"{when(job.payment.valid_before)}), so polling cannot pay for it any more; start "
                f"a new job. Its signed payment ({_amount(call)}) stays counted until the chain "
                "shows it expired unused; then it is released by itself. (If the gateway finished "
                f"it anyway, generate_video with job_id={job.id!r} fetches it, paying nothing.)"
            )
        else:
            result.note = (
                f"Still rendering. Call generate_video with job_id={job.id!r} to resume; it will "
                "not pay again. Its payment counts as spent until it settles or fails."
            )
        result.budget_remaining_usd = await budget.remaining_after_paying()
        if result.budget_remaining_usd is None:
            result.note = " ".join(filter(None, [result.note, UNKNOWN_REMAINING]))
        return result

    async def _completed(
        self, job: VideoJob, call: PaidCall, status: VideoStatus, prompt: str, identity: str
    ) -> VideoResult:
        if not status.urls:
            raise ToolFailure(f"Video job {job.id} completed without a video URL.")
        service = self.service
        url = status.urls[0]
        path: str | None = None
        note = None
        seconds = service.config.call_timeout_s
        try:
            # The download is part of the call, so BLOCKRUN_CALL_TIMEOUT_S bounds it too.
            with anyio.fail_after(seconds):
                saved = await service.media.for_identity(identity).save_download(
                    url, prompt, service.gateway.stream_bytes, kind="video"
                )
            path = str(saved)
        except BlockrunError as exc:
            note = f"Saving failed: {exc.message} The URL may still work for a while."
        except TimeoutError:
            note = (
                f"Saving took longer than BLOCKRUN_CALL_TIMEOUT_S ({seconds:g} s) and was "
                "stopped. The URL may still work for a while."
            )
        await off_loop(self.jobs.ended, job.id, "completed", path=path, url=url)
        return VideoResult(
            status="completed",
            job_id=job.id,
            path=path,
            url=url,
            cost_usd=call.settled_usd,
            budget_remaining_usd=0.0,
            transaction=call.tx_hash,
            note=note,
        )


def _amount(call: PaidCall) -> str:
    amounts = [hold.amount_atomic for hold in call.holds if hold.nonce]
    return usd_text(sum(amounts)) if amounts else "its amount"
