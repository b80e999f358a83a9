"""The sandbox gateway's routes: BlockRun's endpoints under /api, test controls under /_sandbox.

A paid request goes: validate the body (400) -> free model? answer -> no payment header? 402 ->
decode, verify, settle -> answer with receipt. Each fault switch cuts in at the step it names.

POST /rpc is the stand-in chain's JSON-RPC node (see rpc.py), outside /api like the controls.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from blockrun_mcp.sandbox import bodies, media, payments, replies, rpc, scripted, terms
from blockrun_mcp.sandbox.bodies import BadRequest, PricedRequest, ResponsesBody, VideoBody
from blockrun_mcp.sandbox.catalog import catalog_body
from blockrun_mcp.sandbox.drops import DroppedResponse, cut_stream
from blockrun_mcp.sandbox.faults import CountOnce, Faults
from blockrun_mcp.sandbox.payments import PaymentRejection
from blockrun_mcp.sandbox.state import SandboxState, VerifiedPayment, VideoJob

Receipt = dict[str, str] | None  # None: a free request, nothing was paid
Deliver = Callable[["PaidCall", Receipt], Awaitable[Response]]
Answer = Callable[[dict[str, str]], Awaitable[Response]]  # a settled answer, given its receipt
FillerHead = tuple[bytes, str]  # how a never-ending answer starts, and its media type
Parse = Callable[[Any], PricedRequest]

PROXY_TIMEOUT_STATUS = 524  # what the proxy in front of BlockRun answers when it cuts a request
# A streamed Responses answer "thinks" (model_latency_seconds) after response.created and
# response.in_progress, before its first output item, as chat thinks after its role chunk.
RESPONSES_THINK_AFTER_EVENTS = 2
VIDEO_FAILURE = "The upstream provider failed to render the video (sandbox fault). Not charged."


@dataclass
class PaidCall:
    """One request to a paid endpoint, with the faults as they stood when it arrived."""

    request: Request
    state: SandboxState
    faults: Faults
    priced: PricedRequest
    fault_hit: CountOnce = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.fault_hit = CountOnce(self.state.fault_hit)

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def base_url(self) -> str:
        return str(self.request.base_url).rstrip("/")

    @property
    def streaming(self) -> bool:
        return bool(getattr(self.priced.body, "stream", False))


def _error_type(status: int) -> str:
    return "invalid_request_error" if status < 500 else "server_error"


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    """An error body in the gateway's OpenAI-compatible shape, readable by every client.

    `error` is an object {message, type, code} and `message` and `code` sit at the top as well,
    the shape blockrun-llm documents for the gateway's errors (its validation.py). Each reader
    then finds the sentence: blockrun-llm takes error.message, @blockrun/llm takes the top-level
    `message` as the detail (with only `error` and `code`, it showed just "API error: 400"), and
    our client reads `message` first. The 402 bodies keep their documented flat shape.
    """
    detail: dict[str, Any] = {"message": message, "type": _error_type(status)}
    body: dict[str, Any] = {"error": detail, "message": message}
    if code:
        detail["code"] = body["code"] = code
    return JSONResponse(body, status_code=status)


def _fault_status(status: int) -> JSONResponse:
    return _error(status, f"Simulated gateway failure (HTTP {status})", "SANDBOX_FAULT")


def _rejection(rejection: PaymentRejection) -> JSONResponse:
    return JSONResponse(rejection.body(), status_code=402)


def _had_payment_header(request: Request) -> bool:
    return "payment-signature" in request.headers or "x-payment" in request.headers


async def _read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None


class Gateway:
    """Route handlers bound to one SandboxState."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def _log(self, request: Request) -> None:
        self.state.log_request(request.method, request.url.path, _had_payment_header(request))

    # catalog and media (free)
    async def models(self, request: Request) -> Response:
        self._log(request)
        shape = request.query_params.get("shape") or self.state.catalog_shape
        return JSONResponse(catalog_body(shape))

    async def media_file(self, request: Request) -> Response:
        self._log(request)
        with self.state.lock:
            found = self.state.media.get(request.path_params["name"])
        if found is None:
            return _error(404, "Not Found")
        data, content_type = found
        return Response(data, media_type=content_type)

    # paid endpoints
    async def chat(self, request: Request) -> Response:
        return await self._paid(request, bodies.parse_chat, self._deliver_chat)

    async def responses(self, request: Request) -> Response:
        return await self._paid(request, bodies.parse_responses, self._deliver_responses)

    async def images(self, request: Request) -> Response:
        return await self._paid(request, bodies.parse_image, self._deliver_images)

    async def image_edits(self, request: Request) -> Response:
        return await self._paid(request, bodies.parse_image_edit, self._deliver_images)

    async def videos(self, request: Request) -> Response:
        return await self._paid(request, bodies.parse_video, self._deliver_free_video, video=True)

    async def _paid(
        self, request: Request, parse: Parse, deliver: Deliver, *, video: bool = False
    ) -> Response:
        state = self.state
        self._log(request)
        faults = state.faults_for(request.url.path)
        try:
            raw = await _read_json(request)
            state.log_body(request.url.path, raw)
            priced = parse(raw)
        except BadRequest as exc:
            return _error(400, exc.message, "INVALID_REQUEST")
        call = PaidCall(request=request, state=state, faults=faults, priced=priced)
        if priced.is_free:
            return await deliver(call, None)
        v1 = faults.hostile_terms == "v1"
        key = terms.request_key(call.path, raw)
        header = payments.payment_header(request.headers, v1=v1)
        if header is None:
            return self._unpaid(call, key, video=video)
        if faults.delay_seconds:
            await anyio.sleep(faults.delay_seconds)
        try:
            decoded = payments.decode_payment(header)
            state.log_payment(decoded)
            paid_402_trickle = faults.trickle_seconds if faults.trickle_at == "paid_402" else None
            if faults.requote_after_payment:
                again = self._terms(call, key, video=video)  # "pay again", with new terms
                return self._trickled(again, paid_402_trickle) if paid_402_trickle else again
            if faults.force_payment_code:
                call.fault_hit()
                rejected = _rejection(
                    PaymentRejection(
                        faults.force_payment_code,
                        "rejected by the sandbox's force_payment_code fault",
                    )
                )
                return self._trickled(rejected, paid_402_trickle) if paid_402_trickle else rejected
            verified = payments.verify(state, decoded, key, v1=v1)
            if faults.status_after_payment:
                call.fault_hit()  # verified, deliberately not settled: the same header can retry
                return _fault_status(faults.status_after_payment)
            if video:
                accepted = self._submit_video(call, verified)
                if faults.drop_after_settlement:
                    call.fault_hit()  # the job exists and holds the payment; its 202 is lost
                    return DroppedResponse()
                return accepted
            settlement = payments.settle(state, verified, call.path)
        except PaymentRejection as rejection:
            return _rejection(rejection)
        receipt = payments.receipt_headers(
            settlement, version=verified.version, claimed_amount=faults.receipt_amount
        )
        return await self._after_settlement(
            faults,
            call.fault_hit,
            receipt,
            partial(deliver, call),
            streaming=call.streaming,
            filler_head=self._filler_head(call),
        )

    def _unpaid(self, call: PaidCall, key: str, *, video: bool) -> Response:
        faults = call.faults
        if faults.status_before_payment:
            call.fault_hit()
            return _fault_status(faults.status_before_payment)
        if faults.malformed_402:
            call.fault_hit()
        response = self._terms(call, key, video=video)
        if faults.trickle_seconds and faults.trickle_at == "402":
            # The terms header goes out whole; only the body never ends.
            return self._trickled(response, faults.trickle_seconds)
        return response

    def _terms(self, call: PaidCall, key: str, *, video: bool) -> Response:
        entry = call.priced.entry
        faults = call.faults
        amount = call.priced.amount_atomic
        if faults.quote_models is None or entry.id in faults.quote_models:
            amount = -(-amount * faults.quote_percent // 100)  # rounded up, as every quote
        return terms.payment_required(
            self.state,
            call.faults,
            key=key,
            amount=amount,
            url=str(call.request.url),
            description=f"BlockRun {entry.name} ({entry.id}) via {call.path}",
            video=video,
        )

    async def _after_settlement(
        self,
        faults: Faults,
        fault_hit: CountOnce,
        receipt: dict[str, str],
        answer: Answer,
        *,
        streaming: bool,
        filler_head: FillerHead | None,
    ) -> Response:
        """The answer to the request that settled a payment, as the after-settlement faults make it.

        That request is a paid chat or image call, or the video poll that settled its job (later
        polls get the clean answer, as a retry would). `answer` builds the normal answer with the
        receipt it is given. A stream is cut in its delivery, so `streaming` spares it the 524.
        `filler_head` starts the filler answers (trickle_at="answer", huge bodies); a video poll
        has none, as trickle_at="poll" dribbles every poll answer whole (see video_poll).
        """
        if faults.status_after_settlement:
            fault_hit()  # paid, answer lost: a retry of the same header meets PAYMENT_REPLAY
            return _fault_status(faults.status_after_settlement)
        if faults.drop_after_settlement:
            fault_hit()
            return DroppedResponse()
        if faults.stream_cut_after_chunks is not None and not streaming:
            fault_hit()  # the proxy gave up on a silent connection; its 524 has no receipt
            return _error(PROXY_TIMEOUT_STATUS, "A timeout occurred", "ORIGIN_TIMEOUT")
        if faults.omit_receipt:
            fault_hit()
            receipt = {}
        if filler_head and faults.trickle_seconds and faults.trickle_at == "answer":
            head, media_type = filler_head
            return self._trickle(200, receipt, media_type, head, b"A", faults.trickle_seconds)
        if filler_head and faults.huge_success_body_bytes:
            return self._huge_body(filler_head, faults.huge_success_body_bytes, receipt)
        if faults.malformed_success_body:
            fault_hit()
            return Response(
                "<html><body>upstream returned garbage</body></html>",
                media_type="text/html",
                headers=receipt,
            )
        return await answer(receipt)

    # deliveries
    async def _model_latency(self, call: PaidCall) -> None:
        if call.faults.model_latency_seconds:
            await anyio.sleep(call.faults.model_latency_seconds)

    @staticmethod
    def _reply(priced: PricedRequest, reasoning: int = 0) -> replies.Answer:
        """The model's answer: scripted tool calls when the request offers tools (scripted.py)."""
        return scripted.reply(
            priced.entry.id,
            priced.messages,
            priced.max_tokens,
            tools=priced.tools,
            choice=priced.tool_choice,
            reasoning=reasoning,
        )

    async def _deliver_chat(self, call: PaidCall, receipt: Receipt) -> Response:
        priced = call.priced
        reply = self._reply(priced)
        if not call.streaming:
            await self._model_latency(call)
            return JSONResponse(replies.completion_body(reply), headers=receipt)
        events = [replies.sse(event) for event in replies.stream_events(reply)]
        events.append(replies.sse("[DONE]"))
        headers = {"Cache-Control": "no-cache", **(receipt or {})}
        keep = call.faults.stream_cut_after_chunks
        if keep is not None and receipt is not None:
            call.fault_hit()
            return cut_stream(events, keep, headers)
        latency = call.faults.model_latency_seconds

        async def stream() -> AsyncIterator[bytes]:
            for index, event in enumerate(events):
                if index == 1 and latency:
                    await anyio.sleep(latency)  # the model "thinks" after the role chunk
                yield event

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def _deliver_responses(self, call: PaidCall, receipt: Receipt) -> Response:
        """A Responses object, or its native SSE stream (`event:` + `data:`, no [DONE]), paid
        as chat is: the same receipt headers, the same latency and stream-cut faults."""
        priced = call.priced
        body = priced.body
        assert isinstance(body, ResponsesBody)
        reasoning = replies.reasoning_tokens(body.effort, priced.messages)
        reply = self._reply(priced, reasoning)
        result = replies.responses_body(reply, body.model_dump(exclude_none=True))
        if not call.streaming:
            await self._model_latency(call)
            return JSONResponse(result, headers=receipt)
        events = [replies.sse(data, name) for name, data in replies.responses_stream_events(result)]
        headers = {"Cache-Control": "no-cache", **(receipt or {})}
        keep = call.faults.stream_cut_after_chunks
        if keep is not None and receipt is not None:
            call.fault_hit()
            return cut_stream(events, keep, headers)
        latency = call.faults.model_latency_seconds

        async def stream() -> AsyncIterator[bytes]:
            for index, event in enumerate(events):
                if index == RESPONSES_THINK_AFTER_EVENTS and latency:
                    await anyio.sleep(latency)
                yield event

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @staticmethod
    def _filler_head(call: PaidCall) -> FillerHead:
        """The start of an answer that filler can continue without ever completing it."""
        if call.streaming and call.path.endswith("/v1/responses"):
            delta = b"response.output_text.delta"
            head = b"event: " + delta + b'\ndata: {"type":"' + delta + b'","delta":"'
            return head, "text/event-stream"
        if call.streaming:
            return b'data: {"choices":[{"delta":{"content":"', "text/event-stream"
        return b'{"data":[{"url":"data:image/png;base64,', "application/json"

    def _huge_body(self, filler_head: FillerHead, size: int, receipt: Receipt) -> Response:
        """An answer of `size` bytes, streamed: what a client reads of it is counted."""
        state = self.state
        head, media_type = filler_head
        filler = b"A" * 65536

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            while sent < size:
                piece = head if sent == 0 else filler[: size - sent]
                sent += len(piece)
                with state.lock:
                    state.huge_bytes_sent += len(piece)
                yield piece
                await anyio.sleep(0)  # lets a client's disconnect cancel the stream

        return StreamingResponse(body(), media_type=media_type, headers=receipt)

    def _trickled(self, response: Response, seconds: float) -> Response:
        """`response` with its status and headers, its body dribbled (then spaces, forever)."""
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "content-type")
        }
        media_type = response.headers.get("content-type", "application/json")
        return self._trickle(
            response.status_code, headers, media_type, bytes(response.body), b" ", seconds
        )

    def _trickle(
        self,
        status: int,
        headers: dict[str, str],
        media_type: str,
        head: bytes,
        filler: bytes,
        seconds: float,
    ) -> Response:
        """Headers at once, then `head` and `filler` one byte every `seconds`, never ending.

        The sleep between bytes is where a client's disconnect cancels the stream; the bytes
        sent are counted so a test can see that it did.
        """
        state = self.state

        async def body() -> AsyncIterator[bytes]:
            index = 0
            while True:
                yield head[index : index + 1] if index < len(head) else filler
                index += 1
                with state.lock:
                    state.trickle_bytes_sent += 1
                await anyio.sleep(seconds)

        return StreamingResponse(body(), status_code=status, media_type=media_type, headers=headers)

    async def _deliver_images(self, call: PaidCall, receipt: Receipt) -> Response:
        results = media.image_results(
            self.state, call.priced, call.base_url, count=call.faults.image_count
        )
        if call.faults.media_url is not None:
            for result in results:
                result["url"] = call.faults.media_url
        return JSONResponse({"created": int(time.time()), "data": results}, headers=receipt)

    async def _deliver_free_video(self, call: PaidCall, receipt: Receipt) -> Response:
        # No video model is free; reaching this means the catalog priced one at zero.
        return _error(500, f"{call.priced.entry.id} has no price in the sandbox catalog")

    # video jobs: verified at submit, settled on the first completed poll
    def _submit_video(self, call: PaidCall, payment: VerifiedPayment) -> Response:
        state = self.state
        with state.lock:
            pending = [
                job
                for job in state.jobs.values()
                if payments.same_authorization(job.payment, payment)
                and job.status in ("queued", "in_progress")
            ]
        if pending:  # the same payment resent (a lost 202): the same job, not a second one
            return self._job_accepted(call, pending[0])
        payments.check_spendable(state, payment)
        body = call.priced.body
        assert isinstance(body, VideoBody)
        job = VideoJob(
            id="vid_" + secrets.token_hex(12),
            model=call.priced.entry.id,
            prompt=body.prompt,
            duration_seconds=body.duration_seconds,
            endpoint=call.path,
            payment=payment,
        )
        with state.lock:
            state.jobs[job.id] = job
        return self._job_accepted(call, job)

    def _job_accepted(self, call: PaidCall, job: VideoJob) -> Response:
        poll_url = call.faults.poll_url or f"{call.base_url}/api/v1/videos/generations/{job.id}"
        return JSONResponse(
            {"id": job.id, "poll_url": poll_url, "status": "queued"}, status_code=202
        )

    async def video_poll(self, request: Request) -> Response:
        state = self.state
        self._log(request)
        job_id = request.path_params["job_id"]
        with state.lock:
            job = state.jobs.get(job_id)
        if job is None:
            return _error(404, f"No video job {job_id}", "JOB_NOT_FOUND")
        header = payments.payment_header(request.headers, v1=job.payment.version == 1)
        try:
            if header is None:
                raise PaymentRejection(
                    payments.INVALID,
                    "a poll must carry the same PAYMENT-SIGNATURE header as the job's submit",
                )
            decoded = payments.decode_payment(header)
            state.log_payment(decoded)
            forced = state.faults_for(request.url.path).force_payment_code
            if forced:  # the gateway's word on a poll, as on a first request
                state.fault_hit()
                raise PaymentRejection(forced, "rejected by the sandbox's force_payment_code fault")
            if decoded != job.payment.payload:
                raise PaymentRejection(
                    payments.INVALID, "this is not the payment that submitted the job"
                )
        except PaymentRejection as rejection:
            return _rejection(rejection)
        faults = state.faults_for(request.url.path)
        response = await self._advance_job(request, job, faults)
        # A dropped connection has no body to dribble.
        seconds = faults.trickle_seconds if faults.trickle_at == "poll" else None
        if seconds and not isinstance(response, DroppedResponse | StreamingResponse):
            return self._trickled(response, seconds)
        return response

    async def _advance_job(self, request: Request, job: VideoJob, faults: Faults) -> Response:
        state = self.state
        if job.status == "completed" and job.settlement is not None:
            return await self._job_completed(job, self._job_receipt(job, faults))
        if job.status == "failed":
            return JSONResponse({"id": job.id, "status": "failed", "error": job.error})
        with state.lock:
            job.polls += 1
            polls = job.polls
        if faults.video_fail_mid_poll and polls > 1:
            with state.lock:
                job.status, job.error = "failed", VIDEO_FAILURE
            return JSONResponse({"id": job.id, "status": "failed", "error": job.error})
        if faults.video_fail_mid_poll or polls <= faults.video_polls_before_done:
            queued = polls == 1 and faults.video_polls_before_done > 1
            status = "queued" if queued and not faults.video_fail_mid_poll else "in_progress"
            with state.lock:
                job.status = status
            return JSONResponse({"id": job.id, "status": status}, status_code=202)
        try:
            settlement = payments.settle(state, job.payment, job.endpoint, job_id=job.id)
        except PaymentRejection as rejection:
            return _rejection(rejection)
        base_url = str(request.base_url).rstrip("/")
        url = media.store_video(state, job.id, f"{job.model}|{job.prompt}", base_url)
        with state.lock:
            job.status, job.url, job.settlement = "completed", faults.media_url or url, settlement
        return await self._after_settlement(
            faults,
            CountOnce(state.fault_hit),
            self._job_receipt(job, faults),
            partial(self._job_completed, job),
            streaming=False,
            filler_head=None,  # trickle_at="poll" dribbles it in video_poll, like every poll
        )

    @staticmethod
    def _job_receipt(job: VideoJob, faults: Faults) -> dict[str, str]:
        assert job.settlement is not None
        return payments.receipt_headers(
            job.settlement, version=job.payment.version, claimed_amount=faults.receipt_amount
        )

    @staticmethod
    async def _job_completed(job: VideoJob, receipt: Receipt) -> Response:
        body = {"id": job.id, "status": "completed", "model": job.model, "data": [{"url": job.url}]}
        return JSONResponse(body, headers=receipt)

    # the stand-in chain
    async def json_rpc(self, request: Request) -> Response:
        """POST /rpc: one JSON-RPC request, answered from what the sandbox settled."""
        state = self.state
        parsed, error = rpc.parse(await request.body())
        method = parsed["method"][:64] if parsed else ""
        state.log_rpc(method, rpc.selector_of(parsed) if parsed else "")
        faults = state.faults_for(request.url.path)
        if faults.rpc_down:
            return _error(503, "The RPC node is unavailable (sandbox fault)", "SANDBOX_FAULT")
        if parsed is None:
            return JSONResponse(error)
        return JSONResponse(rpc.answer(state, parsed, garbage=faults.rpc_garbage))

    # test controls
    async def admin_state(self, request: Request) -> Response:
        return JSONResponse(self.state.snapshot())

    async def admin_faults(self, request: Request) -> Response:
        try:
            raw = await _read_json(request)
            if not isinstance(raw, dict):
                raise BadRequest("send a JSON object of fault switches")
            faults = self.state.set_faults(**raw)
        except BadRequest as exc:
            return _error(400, exc.message)
        except ValidationError as exc:
            return _error(400, f"invalid faults: {exc.errors()[0]['msg']}")
        return JSONResponse(faults.model_dump())

    async def admin_redirect(self, request: Request) -> Response:
        """A redirect from the gateway's own origin to `?to=`: what a client must not follow."""
        return Response(status_code=302, headers={"Location": request.query_params.get("to", "/")})

    async def admin_reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({"reset": True})

    async def admin_balance(self, request: Request) -> Response:
        try:
            raw = await _read_json(request)
            address, usd = raw["address"], float(raw["usd"])
            self.state.set_balance(address, usd)
        except (BadRequest, KeyError, TypeError, ValueError) as exc:
            return _error(400, f"send {{address, usd}}: {exc}")
        return JSONResponse({"address": address, "balance_usd": self.state.balance_usd(address)})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail)


def create_app(state: SandboxState) -> Starlette:
    """The sandbox gateway as an ASGI app. Its base URL is http://HOST:PORT/api."""
    gw = Gateway(state)
    routes = [
        Route("/api/v1/models", gw.models, methods=["GET"]),
        Route("/api/pricing", gw.models, methods=["GET"]),
        Route("/api/v1/chat/completions", gw.chat, methods=["POST"]),
        Route("/api/v1/responses", gw.responses, methods=["POST"]),
        Route("/api/v1/images/generations", gw.images, methods=["POST"]),
        Route("/api/v1/images/image2image", gw.image_edits, methods=["POST"]),
        Route("/api/v1/videos/generations", gw.videos, methods=["POST"]),
        Route("/api/v1/videos/generations/{job_id}", gw.video_poll, methods=["GET"]),
        Route("/api/media/{name}", gw.media_file, methods=["GET"]),
        Route("/rpc", gw.json_rpc, methods=["POST"]),
        Route("/_sandbox/state", gw.admin_state, methods=["GET"]),
        Route("/_sandbox/faults", gw.admin_faults, methods=["POST"]),
        Route("/_sandbox/reset", gw.admin_reset, methods=["POST"]),
        Route("/_sandbox/redirect", gw.admin_redirect, methods=["GET"]),
        Route("/_sandbox/balance", gw.admin_balance, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sandbox = state
    return app
