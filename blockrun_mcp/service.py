"""What the tools do: validate, estimate, pay within budget, call the gateway, save media.

The MCP layer calls one method per tool and turns ToolFailure into a tool error. Every failure
here becomes a sentence that says what happened and what to do next; none carries a traceback.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from blockrun_mcp import pricing
from blockrun_mcp.budget import Limits, SessionBudget
from blockrun_mcp.catalog import Catalog, UnknownModel, filter_models, kind_of
from blockrun_mcp.gateway import POLL_TIMEOUT_SECONDS, GatewayClient, GatewayError, VideoJob
from blockrun_mcp.gateway_models import (
    CatalogEntry,
    ChatMessage,
    ChatRequest,
    ImageData,
    ImageRequest,
    VideoRequest,
    VideoStatus,
)
from blockrun_mcp.media import MediaError, MediaStore
from blockrun_mcp.results import (
    AskResult,
    BudgetResult,
    Estimate,
    ImageFile,
    ImageResult,
    ModelInfo,
    ModelList,
    Receipt,
    Usage,
    VideoResult,
    WalletResult,
)
from blockrun_mcp.wallet import Wallet, WalletError, find_wallet
from blockrun_mcp.x402.errors import STILL_COUNTED, PaymentError
from blockrun_mcp.x402.networks import network_by_name, usd_to_atomic
from blockrun_mcp.x402.payer import X402Payer
from blockrun_mcp.x402.policy import SigningPolicy

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from blockrun_mcp.budget import CallApproval, LedgerHold
    from blockrun_mcp.config import Config
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.reconcile import Reconciliation

log = logging.getLogger("blockrun_mcp")

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
IMAGE_SIZE = re.compile(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")
MAX_PROMPT_CHARS = 4_000_000
DEFAULT_MAX_VIDEO_SECONDS = 60.0

ProgressCallback = Callable[[float, float | None, str], Awaitable[None]]


class ToolFailure(Exception):
    """A tool call failed; the message is what the agent reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class ServiceOptions:
    video_wait_seconds: float = 120.0
    video_poll_interval: float = 3.0
    video_poll_timeout: float = POLL_TIMEOUT_SECONDS  # one poll, first byte to last
    funding_hint: str | None = None  # replaces the funding text (the sandbox's throwaway wallet)
    # This machine's clock, as the reconciler reads it (a sandbox whose chain runs ahead, in
    # tests, needs ours to agree before anything expired is released).
    clock: Callable[[], float] = time.time


class BlockrunService:
    def __init__(
        self,
        config: Config,
        *,
        wallet: Wallet | None = None,
        options: ServiceOptions | None = None,
        gateway: GatewayClient | None = None,
    ) -> None:
        self.config = config
        self.options = options or ServiceOptions()
        self.network = network_by_name(config.network)
        self.limits = Limits(
            config.session_budget_usd, config.max_per_call_usd, config.daily_budget_usd
        )
        self._wallet = wallet
        self.payer = X402Payer(
            self._account,
            SigningPolicy(
                self.network, usd_to_atomic(config.max_per_call_usd), pay_to=config.pay_to
            ),
        )
        self.gateway = gateway or GatewayClient(config.api_url, self.payer)
        self.catalog = Catalog(self.gateway.list_models)
        self.media = MediaStore(config.output_dir, config.api_url)
        self._ledger: Ledger | None = None
        self._sessions: dict[str, SessionBudget] = {}
        self._reconciling = anyio.Lock()

    # --- wiring --------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from blockrun_mcp.ledger import Ledger  # sqlite: imported on first use

            try:
                self.config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._ledger = Ledger(self.config.data_dir / "ledger.sqlite3")
            except OSError as exc:
                raise ToolFailure(
                    f"The ledger in {self.config.data_dir} could not be opened ({exc}); set "
                    "BLOCKRUN_DATA_DIR to a writable folder. Nothing was signed."
                ) from None
        return self._ledger

    def session(self, key: str) -> SessionBudget:
        budget = self._sessions.get(key)
        if budget is None:
            budget = SessionBudget(self.ledger, key, self.limits, self.network.name)
            self._sessions[key] = budget
        return budget

    def forget_session(self, session_id: str) -> None:
        """An HTTP session ended: its budget object goes (its spend stays in the ledger)."""
        self._sessions.pop(f"http-{session_id}", None)

    @staticmethod
    def new_session_key(prefix: str = "stdio") -> str:
        return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"

    def wallet(self) -> Wallet:
        if self._wallet is None:
            wallet = find_wallet(self.config)
            if wallet is None:
                raise WalletError(
                    "No wallet is configured, so paid models cannot be used (free nvidia/* models "
                    "still work). Run `blockrun-mcp wallet create`, or set BLOCKRUN_WALLET_KEY."
                )
            self._wallet = wallet
        return self._wallet

    def _account(self) -> LocalAccount:
        return self.wallet().account

    # --- the money rule over time -------------------------------------------------------

    async def reconcile(self) -> Reconciliation:
        """Settle or release, as the chain says, the signed payments whose outcome is unknown."""
        from blockrun_mcp.chain import ChainReader
        from blockrun_mcp.reconcile import reconcile

        async with self._reconciling, ChainReader(self.config.rpc_url, self.network.usdc) as chain:
            return await reconcile(
                self.ledger, chain, self.network.name, local_now=self.options.clock()
            )

    async def reconcile_periodically(self) -> None:
        """The server's own pass over open payments, for as long as it runs. Never raises: a
        chain that cannot be read only leaves the payments counted, as the rule says."""
        from blockrun_mcp.reconcile import (
            FIRST_RECONCILE_DELAY_SECONDS,
            RECONCILE_INTERVAL_SECONDS,
        )

        await anyio.sleep(FIRST_RECONCILE_DELAY_SECONDS)
        while True:
            try:
                outcome = await self.reconcile()
                if outcome.chain_error:
                    log.warning("reconciling payments: %s", outcome.chain_error)
            except Exception:
                log.exception("reconciling payments failed")
            await anyio.sleep(RECONCILE_INTERVAL_SECONDS)

    @asynccontextmanager
    async def _deadline(self, approval: CallApproval | None) -> AsyncIterator[None]:
        """BLOCKRUN_CALL_TIMEOUT_S over one call, first request to last byte. A call cut after
        paying keeps its payment counted and says so."""
        seconds = self.config.call_timeout_s
        try:
            with anyio.fail_after(seconds):
                yield
        except TimeoutError:
            signed = approval.signed if approval is not None else []
            text = (
                f"The call took longer than BLOCKRUN_CALL_TIMEOUT_S ({seconds:g} s) from first "
                "request to last byte, so it was cut"
            )
            if not signed:
                raise ToolFailure(f"{text} before anything was signed; nothing was paid.") from None
            assert approval is not None
            approval.record(f"cut by BLOCKRUN_CALL_TIMEOUT_S ({seconds:g} s) after signing")
            paid = sum(hold.amount_atomic for hold in signed) / 1e6
            remaining = approval.budget.remaining_usd()
            raise ToolFailure(
                f"{text} after its payment of ${paid:.6f} was signed. {STILL_COUNTED} "
                f"Budget remaining: ${remaining:.6f}."
            ) from None

    async def aclose(self) -> None:
        await self.gateway.aclose()
        if self._ledger is not None:
            self._ledger.close()

    # --- ask_model -----------------------------------------------------------------------

    async def ask(
        self,
        budget: SessionBudget,
        prompt: str,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AskResult:
        async with self._failures(budget):
            _require_text(prompt, "prompt")
            if system is not None and len(system) > MAX_PROMPT_CHARS:
                raise ToolFailure("system is too long.")
            _require_unicode(system, "system")
            entry = await self._model(model, "chat")
            tokens = _check_max_tokens(max_tokens, entry)
            if temperature is not None and not (0 <= temperature <= 2):
                raise ToolFailure(f"temperature must be between 0 and 2, got {temperature}.")
            messages = ([ChatMessage(role="system", content=system)] if system else []) + [
                ChatMessage(role="user", content=prompt)
            ]
            texts = [m.content for m in messages]
            if (
                entry.context_window
                and pricing.estimate_input_tokens(texts) + tokens > entry.context_window
            ):
                raise ToolFailure(
                    f"The prompt (about {pricing.estimate_input_tokens(texts)} tokens) plus max_tokens "
                    f"{tokens} exceeds {entry.id}'s context window of {entry.context_window} tokens. "
                    "Shorten it or pick a model with a larger context_window."
                )
            estimate = pricing.chat_cost_usd(entry, texts, tokens)
            request = ChatRequest(
                model=entry.id, messages=messages, max_tokens=tokens, temperature=temperature
            )
            approve = budget.approver(tool="ask_model", model=entry.id, estimate_usd=estimate)
            async with self._deadline(approve):
                answer, paid = await self.gateway.chat(request, approve=approve, stream=True)
            hold = _ledger_hold(paid.hold)
            refused = answer.finish_reason == "content_filter"
            note = None
            if refused:
                note = (
                    "The model refused to answer (content_filter). Rephrase, or ask another model."
                )
            elif not answer.complete:
                note = "The answer was cut off before the model finished; what arrived is shown."
            return AskResult(
                model=answer.model,
                content=answer.content,
                finish_reason=answer.finish_reason,
                refused=refused,
                usage=Usage(
                    prompt_tokens=answer.usage.prompt_tokens,
                    completion_tokens=answer.usage.completion_tokens,
                    total_tokens=answer.usage.total_tokens,
                ),
                cost_usd=hold.cost_usd if hold else 0.0,
                budget_remaining_usd=budget.remaining_usd(),
                transaction=hold.tx_hash if hold else None,
                note=note,
            )

    # --- list_models ---------------------------------------------------------------------

    async def list_models(
        self, category: str | None = None, provider: str | None = None
    ) -> ModelList:
        async with self._failures(None):
            snapshot = await self.catalog.snapshot()
            entries = filter_models(snapshot.entries, category=category, provider=provider)
            return ModelList(
                models=[_model_info(e) for e in entries],
                stale=snapshot.stale,
                note=snapshot.note or (None if entries else "No model matches those filters."),
            )

    # --- estimate_cost -------------------------------------------------------------------

    async def estimate(
        self,
        model: str,
        prompt: str | None = None,
        max_tokens: int | None = None,
        size: str | None = None,
        duration_seconds: float | None = None,
    ) -> Estimate:
        async with self._failures(None):
            entry = await self._any_model(model)
            kind = kind_of(entry)
            if kind == "image":
                _check_size(size)
                cost = pricing.image_cost_usd(entry, size)
                if cost is None:
                    raise ToolFailure(f"No price is known for {entry.id}.")
                return Estimate(
                    model=entry.id,
                    estimated_usd=round(cost, 6),
                    basis=f"per image at {size or pricing.DEFAULT_IMAGE_SIZE}",
                )
            if kind == "video":
                seconds = _check_duration(duration_seconds, entry)
                cost = pricing.video_cost_usd(entry, seconds)
                if cost is None:
                    raise ToolFailure(f"No price is known for {entry.id}.")
                return Estimate(
                    model=entry.id, estimated_usd=round(cost, 6), basis=f"{seconds:g} s of video"
                )
            tokens = _check_max_tokens(max_tokens, entry)
            cost = pricing.chat_cost_usd(entry, [prompt or ""], tokens)
            return Estimate(
                model=entry.id,
                estimated_usd=round(cost, 6),
                basis=(
                    "free model"
                    if entry.is_free
                    else f"gateway quote formula: prompt tokens + 10% of max_tokens={tokens}, +5% fee"
                ),
            )

    # --- generate_image ------------------------------------------------------------------

    async def generate_image(
        self, budget: SessionBudget, prompt: str, model: str | None = None, size: str | None = None
    ) -> ImageResult:
        async with self._failures(budget):
            _require_text(prompt, "prompt")
            _check_size(size)
            entry = await self._model(model, "image")
            estimate = pricing.image_cost_usd(entry, size)
            approve = budget.approver(tool="generate_image", model=entry.id, estimate_usd=estimate)
            async with self._deadline(approve):
                images, paid = await self.gateway.generate_images(
                    ImageRequest(model=entry.id, prompt=prompt, size=size), approve=approve
                )
                files, problems = await self._save_images(images, prompt)
            hold = _ledger_hold(paid.hold)
            return ImageResult(
                images=files,
                model=entry.id,
                cost_usd=hold.cost_usd if hold else 0.0,
                budget_remaining_usd=budget.remaining_usd(),
                transaction=hold.tx_hash if hold else None,
                note=("Saving failed: " + " ".join(problems)) if problems else None,
            )

    async def _save_images(
        self, images: list[ImageData], prompt: str
    ) -> tuple[list[ImageFile], list[str]]:
        files: list[ImageFile] = []
        problems: list[str] = []
        for image in images:
            try:
                if image.url.startswith("data:"):
                    path = self.media.save_data_uri(image.url, prompt, "image")
                    files.append(ImageFile(path=str(path), url=None))
                else:
                    path = await self.media.save_download(
                        image.url, prompt, self.gateway.stream_bytes
                    )
                    files.append(ImageFile(path=str(path), url=image.url))
            except (MediaError, GatewayError) as exc:
                problems.append(getattr(exc, "message", str(exc)))
                files.append(
                    ImageFile(path=None, url=None if image.url.startswith("data:") else image.url)
                )
        return files, problems

    # --- generate_video ------------------------------------------------------------------

    async def generate_video(
        self,
        budget: SessionBudget,
        prompt: str | None = None,
        model: str | None = None,
        duration_seconds: float | None = None,
        image_url: str | None = None,
        job_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> VideoResult:
        async with self._failures(budget):
            if job_id is not None:
                return await self._resume_video(budget, job_id, progress)
            _require_text(prompt, "prompt")
            assert prompt is not None
            entry = await self._model(model, "video")
            seconds = _check_duration(duration_seconds, entry)
            if image_url is not None and not re.match(r"^(https?://|data:image/)", image_url):
                raise ToolFailure("image_url must be an http(s) URL or a data:image URI.")
            _require_unicode(image_url, "image_url")
            approve = budget.approver(
                tool="generate_video",
                model=entry.id,
                estimate_usd=pricing.video_cost_usd(entry, seconds),
            )
            async with self._deadline(approve):
                job = await self.gateway.submit_video(
                    VideoRequest(
                        model=entry.id, prompt=prompt, duration_seconds=seconds, image_url=image_url
                    ),
                    approve=approve,
                )
            hold = _ledger_hold(job.paid.hold)
            if hold is not None:
                from blockrun_mcp.ledger import VideoJobRow

                self.ledger.save_video_job(
                    VideoJobRow(
                        job_id=job.id,
                        payment_id=hold.payment_id,
                        session=budget.session,
                        model=entry.id,
                        poll_url=job.poll_url,
                        header_name=job.payment.header_name,
                        header_value=job.payment.header_value,
                        valid_before=job.payment.valid_before,
                        status="running",
                        path=None,
                        url=None,
                    )
                )
            return await self._wait_video(budget, job, prompt, progress)

    async def _resume_video(
        self, budget: SessionBudget, job_id: str, progress: ProgressCallback | None
    ) -> VideoResult:
        if not JOB_ID.match(job_id):
            raise ToolFailure(
                "job_id is malformed; use the job_id an earlier generate_video returned."
            )
        row = self.ledger.video_job(job_id)
        if row is None:
            raise ToolFailure(
                f"No video job {job_id} is known here; start a new one with a prompt."
            )
        if row.status in ("completed", "failed"):
            return VideoResult(
                status=row.status,
                job_id=job_id,
                path=row.path,
                url=row.url,
                cost_usd=0.0,
                budget_remaining_usd=budget.remaining_usd(),
                note="This job had already ended; nothing was paid again.",
            )
        from blockrun_mcp.budget import LedgerHold
        from blockrun_mcp.x402.payer import PaidResponse
        from blockrun_mcp.x402.signer import payment_from_header

        payment = payment_from_header(row.header_name, row.header_value)
        stored = self.ledger.payment(row.payment_id)
        hold = LedgerHold(
            self.ledger, row.payment_id, stored.amount_atomic if stored else payment.amount_atomic
        )
        import httpx2

        paid = PaidResponse(httpx2.Response(202), payment, hold)
        job = VideoJob(id=row.job_id, poll_url=row.poll_url, payment=payment, paid=paid)
        return await self._wait_video(budget, job, row.model, progress)

    async def _wait_video(
        self, budget: SessionBudget, job: VideoJob, prompt: str, progress: ProgressCallback | None
    ) -> VideoResult:
        hold = _ledger_hold(job.paid.hold)
        started = time.time()
        deadline = min(started + self.options.video_wait_seconds, job.poll_deadline)

        async def on_poll(status: VideoStatus, polls: int) -> None:
            if progress is not None:
                elapsed = time.time() - started
                await progress(
                    elapsed, self.options.video_wait_seconds, f"video {job.id}: {status.status}"
                )

        try:
            # At least one poll, even past the deadline: only the gateway's answer can show that
            # the job completed (and settled) while nobody was polling.
            status = await self.gateway.wait_for_job(
                job,
                deadline=deadline,
                on_poll=on_poll,
                interval=self.options.video_poll_interval,
                poll_timeout=self.options.video_poll_timeout,
            )
        except (GatewayError, PaymentError) as exc:
            text = getattr(exc, "message", str(exc))
            if hold is not None and hold.released:
                self.ledger.update_video_job(job.id, status="failed")
                raise ToolFailure(text) from None
            raise ToolFailure(
                f"{text} Video job {job.id} may still finish: call generate_video with "
                f"job_id={job.id!r} to check it again; that never pays again. "
                f"Budget remaining: ${budget.remaining_usd():.6f}."
            ) from None
        remaining = budget.remaining_usd
        if status.status == "completed":
            if not status.urls:
                raise ToolFailure(f"Video job {job.id} completed without a video URL.")
            url = status.urls[0]
            path: str | None = None
            note = None
            try:
                path = str(
                    await self.media.save_download(
                        url, prompt, self.gateway.stream_bytes, kind="video"
                    )
                )
            except (MediaError, GatewayError) as exc:
                note = f"Saving failed: {getattr(exc, 'message', exc)} The URL may still work for a while."
            self.ledger.update_video_job(job.id, status="completed", path=path, url=url)
            return VideoResult(
                status="completed",
                job_id=job.id,
                path=path,
                url=url,
                cost_usd=hold.cost_usd if hold and hold.settled_atomic is not None else 0.0,
                budget_remaining_usd=remaining(),
                transaction=hold.tx_hash if hold else None,
                note=note,
            )
        pending = f"${hold.amount_atomic / 1e6:.6f}" if hold is not None else "Its payment"
        if status.status == "failed":
            self.ledger.update_video_job(job.id, status="failed")
            return VideoResult(
                status="failed",
                job_id=job.id,
                cost_usd=0.0,
                budget_remaining_usd=remaining(),
                note=f"The gateway says the video job failed: {status.error or 'no reason given'}. "
                f"Its signed payment ({pending}) is not known to be charged, but it stays counted "
                f"until it expires unused on chain (at {_utc(job.payment.valid_before)}); then it "
                "is released by itself.",
            )
        if time.time() >= job.poll_deadline and status.error is not None:
            # The last poll went unanswered: the job may have completed and settled meanwhile.
            return VideoResult(
                status="running",
                job_id=job.id,
                cost_usd=0.0,
                budget_remaining_usd=remaining(),
                note=f"The last poll of video job {job.id} failed ({status.error}), so whether it "
                "completed and was paid is unknown; its payment counts as spent. Call "
                f"generate_video with job_id={job.id!r} to check again; it will not pay again.",
            )
        if time.time() >= job.poll_deadline:
            if hold is not None:
                await hold.record_claim("the job had not completed when polling had to stop")
            self.ledger.update_video_job(job.id, status="failed")
            return VideoResult(
                status="failed",
                job_id=job.id,
                cost_usd=0.0,
                budget_remaining_usd=remaining(),
                note="The job did not finish before its payment authorization ran out (at "
                f"{_utc(job.payment.valid_before)}), so it can no longer be claimed; start a new "
                f"job. Its signed payment ({pending}) stays counted until the chain shows it "
                "expired unused; then it is released by itself.",
            )
        return VideoResult(
            status="running",
            job_id=job.id,
            cost_usd=0.0,
            budget_remaining_usd=remaining(),
            note=f"Still rendering. Call generate_video with job_id={job.id!r} to resume; it will not "
            "pay again. Its payment counts as spent until it settles or fails.",
        )

    # --- budget and wallet ---------------------------------------------------------------

    def budget_status(
        self, budget: SessionBudget, set_session_limit_usd: float | None = None
    ) -> BudgetResult:
        if set_session_limit_usd is not None:
            if not math.isfinite(set_session_limit_usd):
                raise ToolFailure("set_session_limit_usd must be a finite number of dollars.")
            try:
                budget.lower_session_limit(set_session_limit_usd)
            except ValueError as exc:
                raise ToolFailure(str(exc)) from None
        status = budget.status()
        recent = [
            Receipt(
                time=datetime.fromtimestamp(row.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                tool=row.tool,
                model=row.model,
                cost_usd=round(row.counted_atomic / 1e6, 6),
                status="pending" if row.status in ("reserved", "signed") else row.status,
                transaction=row.tx_hash,
            )
            for row in self.ledger.payments(session=budget.session, limit=10)
        ]
        return BudgetResult(
            session_limit_usd=status.session_limit_usd,
            session_spent_usd=status.session_spent_usd,
            budget_remaining_usd=status.budget_remaining_usd,
            per_call_cap_usd=status.per_call_cap_usd,
            daily_limit_usd=status.daily_limit_usd,
            daily_spent_usd=status.daily_spent_usd,
            recent=recent,
        )

    def wallet_info(self) -> WalletResult:
        try:
            wallet = self.wallet()
        except WalletError as exc:
            raise ToolFailure(str(exc)) from None
        funding = self.options.funding_hint or (
            f"Send USDC on {'Base' if self.network.name == 'base' else 'Base Sepolia'} "
            f"({self.network.caip2}) to {wallet.address}. No ETH is needed: payments are "
            "gasless USDC authorizations."
        )
        return WalletResult(address=wallet.address, network=self.network.name, funding=funding)

    # --- helpers -------------------------------------------------------------------------

    async def _model(self, model: str | None, kind: str) -> CatalogEntry:
        if model is None or not model.strip():
            return await self.catalog.default(kind)
        if len(model) > 200:
            raise ToolFailure("model is not a model id (too long). Call list_models for the ids.")
        return await self.catalog.lookup(model.strip(), kind)

    async def _any_model(self, model: str) -> CatalogEntry:
        if not isinstance(model, str) or not model.strip() or len(model) > 200:
            raise ToolFailure("model must be a model id from list_models.")
        for entry in (await self.catalog.snapshot()).entries:
            if entry.id == model.strip():
                return entry
        return await self.catalog.lookup(model.strip(), "chat")  # raises with suggestions

    def _failures(self, budget: SessionBudget | None) -> _FailureTranslator:
        return _FailureTranslator(budget)


class _FailureTranslator:
    """Turns every exception of a tool call into a ToolFailure with a plain sentence."""

    def __init__(self, budget: SessionBudget | None) -> None:
        self.budget = budget

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        # Returns None, never True: nothing is swallowed, only translated.
        if exc is None or isinstance(exc, ToolFailure) or not isinstance(exc, Exception):
            return
        raise ToolFailure(self.describe(exc)) from None

    def describe(self, exc: Exception) -> str:
        if isinstance(exc, PaymentError | GatewayError):
            text = exc.message
            if self.budget is not None and getattr(exc, "charged", False) is not False:
                text += f" Budget remaining: ${self._remaining():.6f}."
            elif getattr(exc, "limit", None) == "per-call cap" and "BLOCKRUN_MAX" not in text:
                # The signing policy refused it before the budget saw it: say the way out here.
                text += " Choose a cheaper model or fewer max_tokens, or raise BLOCKRUN_MAX_PER_CALL_USD."
                if self.budget is not None:
                    text += f" Budget remaining: ${self._remaining():.6f}."
            return text
        if isinstance(exc, WalletError | UnknownModel | MediaError):
            return str(exc)
        log.exception("unexpected error in a tool call")
        return (
            f"Unexpected internal error ({type(exc).__name__}). No further payment was signed. "
            "Check the budget tool for anything pending, and report this if it repeats."
        )

    def _remaining(self) -> float:
        assert self.budget is not None
        try:
            return self.budget.remaining_usd()
        except Exception:
            return float("nan")


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ledger_hold(hold: object) -> LedgerHold | None:
    from blockrun_mcp.budget import LedgerHold

    return hold if isinstance(hold, LedgerHold) else None


def _require_text(value: str | None, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ToolFailure(f"{name} must be a non-empty string.")
    if len(value) > MAX_PROMPT_CHARS:
        raise ToolFailure(f"{name} is {len(value)} characters, over the {MAX_PROMPT_CHARS} limit.")
    _require_unicode(value, name)


def _require_unicode(value: str | None, name: str) -> None:
    # JSON can carry a lone surrogate ("\ud800"); it has no UTF-8 form, so no gateway can take it.
    if value is not None and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolFailure(
                f"{name} contains a lone surrogate (invalid Unicode); remove it and try again."
            ) from None


def _check_max_tokens(max_tokens: int | None, entry: CatalogEntry) -> int:
    if max_tokens is None:
        tokens = pricing.DEFAULT_MAX_TOKENS
        return min(tokens, entry.max_output) if entry.max_output else tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ToolFailure(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    if entry.max_output and max_tokens > entry.max_output:
        raise ToolFailure(
            f"max_tokens {max_tokens} is above {entry.id}'s maximum output of {entry.max_output}."
        )
    return max_tokens


def _check_size(size: str | None) -> None:
    if size is not None and not IMAGE_SIZE.match(size):
        raise ToolFailure(f"size must look like 1024x1024, got {size[:40]!r}.")


def _check_duration(duration: float | None, entry: CatalogEntry) -> float:
    if duration is None:
        return pricing.DEFAULT_VIDEO_SECONDS
    limit = entry.max_duration_seconds or DEFAULT_MAX_VIDEO_SECONDS
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
    ):
        raise ToolFailure("duration_seconds must be a number of seconds.")
    if not 0 < duration <= limit:
        raise ToolFailure(
            f"duration_seconds must be more than 0 and at most {limit:g} for {entry.id}."
        )
    return float(duration)


def _model_info(entry: CatalogEntry) -> ModelInfo:
    kind = kind_of(entry)
    return ModelInfo(
        id=entry.id,
        name=entry.name,
        provider=entry.provider,
        input_price=entry.input_price,
        output_price=entry.output_price,
        context_window=entry.context_window,
        categories=entry.categories,
        available=entry.available,
        image_price=pricing.image_price_usd(entry, None) if kind == "image" else None,
        price_per_second=pricing.video_price_per_second(entry) if kind == "video" else None,
    )
