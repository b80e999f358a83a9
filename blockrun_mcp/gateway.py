"""The BlockRun gateway over one pooled httpx2 client: typed calls for each endpoint.

It knows nothing of money: requests go through the x402 payer, which pays with the approval
hook this client is bound to (`paid_by`), and the answers come back as typed data. Whether a
failure cost anything is the caller's to say (payments.py); errors here say what the gateway
did.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlparse

import anyio
import httpx2

from blockrun_mcp import safe_json
from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.gateway_models import (
    CatalogEntry,
    ChatAnswer,
    ChatRequest,
    ImageAnswer,
    ImageData,
    ImageRequest,
    ResponsesRequest,
    ResponsesToolRequest,
    ToolCall,
    ToolChatRequest,
    Usage,
    VideoRequest,
    VideoStatus,
)
from blockrun_mcp.x402.errors import PaidRequestFailed, PaymentError
from blockrun_mcp.x402.payer import (
    MAX_BODY_BYTES,
    Approve,
    PaidResponse,
    PaymentHold,
    X402Payer,
    read_body,
)
from blockrun_mcp.x402.signer import SignedPayment

if TYPE_CHECKING:
    import ssl

# A chat answer or catalog is kilobytes; cap what a hostile gateway can make us hold.
MAX_ANSWER_BYTES = MAX_BODY_BYTES
# A streamed answer is framed in many small events, so the stream as a whole may be larger than
# the answer it carries; one event (one line) never legitimately comes near this.
MAX_STREAM_BYTES = 64 * 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024
# BlockRun lists dozens of models. A catalog of many thousands is broken or hostile, and shown
# whole it would flood the agent's context (list_models returns every entry).
MAX_CATALOG_ENTRIES = 2000
# Function calls one answer may ask for: more are dropped (and never answered or sent back), so
# a hostile answer cannot make one step run without end.
MAX_TOOL_CALLS = 16
VIDEO_POLL_INTERVAL_SECONDS = 3.0
# Stop polling this long before the signed authorization expires: a poll arriving later could
# not settle it in time, so further polls only burn time. (Stopping never releases the money:
# only the chain's word does, see reconcile.py.)
AUTHORIZATION_MARGIN_SECONDS = 15
MAX_POLL_FAILURES = 5  # consecutive failed polls before a job is reported as unreachable
# One poll, first byte to last: a status is a few hundred bytes, so a poll taking longer is a
# gateway trickling its answer, and counts as a failed (transient) poll.
POLL_TIMEOUT_SECONDS = 60.0


class GatewayError(BlockrunError):
    """The gateway answered with an error, or an answer that cannot be used."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GatewayUnreachable(GatewayError):
    def __init__(self, url: str, detail: str) -> None:
        super().__init__(
            f"The BlockRun gateway at {url} could not be reached ({detail}). Check your network "
            "and BLOCKRUN_API_URL, or try `blockrun-mcp serve --sandbox` to work offline."
        )


def new_http_client(
    *, keepalive: bool = True, verify: ssl.SSLContext | bool = True
) -> httpx2.AsyncClient:
    """The process's pooled client. Generous read timeout: models can think for minutes."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=10.0, read=180.0, write=30.0, pool=30.0),
        limits=httpx2.Limits(max_connections=64, max_keepalive_connections=32 if keepalive else 0),
        headers={"User-Agent": "blockrun-mcp"},
        follow_redirects=False,
        verify=verify,
    )


def _proxied() -> bool:
    """Whether the environment sends HTTP through a proxy (as httpx2 reads it)."""
    from urllib.request import getproxies

    return any(scheme in getproxies() for scheme in ("http", "https", "all"))


@dataclass
class VideoJob:
    """A submitted job (video, or an image answered with 202) and the payment header that every
    poll must carry."""

    id: str
    poll_url: str
    payment: SignedPayment

    @property
    def poll_deadline(self) -> float:
        """Unix time after which polling is pointless (the authorization has expired)."""
        return self.payment.valid_before - AUTHORIZATION_MARGIN_SECONDS


class _Clients:
    """The pooled HTTP clients, shared by a GatewayClient and every copy bound to a payment."""

    def __init__(
        self, http: httpx2.AsyncClient | None, media_http: httpx2.AsyncClient | None
    ) -> None:
        self.http = http
        self.media_http = media_http
        self.endpoints: dict[str, httpx2.URL] = {}


class GatewayClient:
    def __init__(
        self,
        api_url: str,
        payer: X402Payer | None,
        http: httpx2.AsyncClient | None = None,
        media_http: httpx2.AsyncClient | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.payer = payer
        self._clients = _Clients(http, media_http)
        self._approve: Approve | None = None  # None: the payer's own hook decides

    def paid_by(self, approve: Approve) -> GatewayClient:
        """This client, with every payment it makes approved (and recorded) by `approve`."""
        bound = copy.copy(self)
        bound._approve = approve
        return bound

    @property
    def http(self) -> httpx2.AsyncClient:
        """The pooled client, made on first use: building its TLS context takes long enough
        (bench/README.md) that start-up, the host waiting for `initialize`, should not pay it."""
        if self._clients.http is None:
            self._clients.http = new_http_client()
        return self._clients.http

    @property
    def media_http(self) -> httpx2.AsyncClient:
        """The client for media downloads, which keeps no connection open. A connection pinned
        to an address was verified for one TLS name, and a pool keys connections by address:
        kept, it could serve another name (or a bare-address URL) without that name's check."""
        if self._clients.media_http is None:
            self._clients.media_http = new_http_client(keepalive=False)
        return self._clients.media_http

    async def aclose(self) -> None:
        for client in (self._clients.http, self._clients.media_http):
            if client is not None:
                await client.aclose()

    def url(self, path: str) -> str:
        return f"{self.api_url}{path}"

    def endpoint(self, path: str) -> httpx2.URL:
        """A fixed endpoint's URL, parsed once: httpx parses a str URL on every request."""
        url = self._clients.endpoints.get(path)
        if url is None:
            url = self._clients.endpoints[path] = httpx2.URL(self.url(path))
        return url

    # --- catalog -----------------------------------------------------------------------

    async def list_models(self) -> list[CatalogEntry]:
        response = await self._send(self.http.build_request("GET", self.endpoint("/v1/models")))
        data = self._json(response, "the model catalog")
        items = data
        if isinstance(data, dict):
            lists = [v for v in (data.get("models"), data.get("data")) if isinstance(v, list)]
            items = lists[0] if lists else None
        if not isinstance(items, list):
            raise GatewayError(
                "The gateway's model catalog has neither a `models` nor a `data` list, so it "
                "is not a BlockRun catalog."
            )
        if len(items) > MAX_CATALOG_ENTRIES:
            raise GatewayError(
                f"The gateway's model catalog lists {len(items)} models, more than the "
                f"{MAX_CATALOG_ENTRIES} a real catalog could have, so it was not used."
            )
        entries = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                try:
                    entries.append(CatalogEntry.from_wire(item))
                except ValueError:
                    continue  # one malformed entry must not hide the rest of the catalog
        return entries

    # --- chat --------------------------------------------------------------------------

    async def chat(
        self, request: ChatRequest | ToolChatRequest, *, stream: bool = True
    ) -> tuple[ChatAnswer, PaidResponse]:
        """Ask a model. Streamed by default, so a proxy timeout cannot lose a paid answer."""
        http_request = self.http.build_request(
            "POST", self.endpoint("/v1/chat/completions"), json=request.wire(stream=stream)
        )
        paid = await self._paid(http_request, stream=stream)
        response = paid.response
        try:
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            if not streamed:
                try:
                    await read_body(response, MAX_ANSWER_BYTES)
                except httpx2.TransportError as exc:
                    raise GatewayError(
                        "The connection dropped while the answer was arriving "
                        f"({type(exc).__name__})."
                    ) from None
            self._raise_for_status(response)
            if streamed:
                answer = await assemble_stream(response, request.model)
            else:
                answer = chat_answer_from(self._json(response, "the chat answer"), request.model)
        finally:
            await response.aclose()
        return answer, paid

    async def respond(
        self, request: ResponsesRequest | ResponsesToolRequest, *, stream: bool = True
    ) -> tuple[ChatAnswer, PaidResponse]:
        """Ask an OpenAI model through the Responses API (reasoning effort), streamed."""
        http_request = self.http.build_request(
            "POST", self.endpoint("/v1/responses"), json=request.wire(stream=stream)
        )
        paid = await self._paid(http_request, stream=stream)
        response = paid.response
        try:
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            if not streamed:
                await read_body(response, MAX_ANSWER_BYTES)
            self._raise_for_status(response)
            if streamed:
                answer = await assemble_responses_stream(response, request.model)
            else:
                answer = answer_from_response(self._json(response, "the answer"), request.model)
        finally:
            await response.aclose()
        return answer, paid

    # --- images ------------------------------------------------------------------------

    async def generate_images(self, request: ImageRequest) -> ImageAnswer:
        """Images, or the job to poll for them when the gateway answers 202."""
        http_request = self.http.build_request(
            "POST", self.endpoint("/v1/images/generations"), json=request.wire()
        )
        paid = await self._paid(http_request)
        self._raise_for_status(paid.response)
        data = self._json(paid.response, "the image answer")
        if paid.response.status_code == 202 and isinstance(data, dict) and paid.payment:
            return ImageAnswer(images=[], paid=paid, job=self._job(data, paid))
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise GatewayError("The image answer has no `data` list.")
        # Only as many as were asked for: every URL would be a download and a file, and a
        # hostile answer listing a hundred must not make one call write a hundred files.
        images = [
            ImageData.model_validate(i)
            for i in items
            if isinstance(i, dict) and isinstance(i.get("url"), str)
        ][: request.n]
        if not images:
            raise GatewayError("The image answer contained no images.")
        return ImageAnswer(images=images, paid=paid)

    # --- video -------------------------------------------------------------------------

    async def submit_video(self, request: VideoRequest) -> VideoJob:
        http_request = self.http.build_request(
            "POST", self.endpoint("/v1/videos/generations"), json=request.wire()
        )
        paid = await self._paid(http_request)
        self._raise_for_status(paid.response)
        data = self._json(paid.response, "the video job")
        if paid.payment is None:
            raise GatewayError(
                "The gateway accepted a video job without payment; refusing to poll it."
            )
        if not isinstance(data, dict):
            raise GatewayError("The video answer is not a JSON object.")
        return self._job(data, paid)

    def _job(self, data: dict[str, Any], paid: PaidResponse) -> VideoJob:
        job_id = data.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise GatewayError("The gateway's job answer has no id.")
        poll_url = data.get("poll_url")
        assert paid.payment is not None
        return VideoJob(
            id=job_id[:200],
            poll_url=poll_url_for(
                self.api_url, job_id, poll_url if isinstance(poll_url, str) else None
            ),
            payment=paid.payment,
        )

    async def poll_video(self, job: VideoJob, hold: PaymentHold | None = None) -> VideoStatus:
        """One poll, carrying the job's payment header. 504 answers as still in progress.

        The status carries the poll's receipt: the first completed poll is where the gateway
        settles, which the caller books. What the gateway claims about the payment on a poll
        (PAYMENT_INVALID, PAYMENT_UNFUNDED) is recorded on `hold`, the job's payment.
        """
        if self.payer is None:
            raise GatewayError("No wallet is configured, so a paid job cannot be polled.")
        request = self.http.build_request("GET", job.poll_url)
        paid = await self.payer.resend(self.http, request, job.payment, hold)
        response = paid.response
        if response.status_code == 504:
            return VideoStatus(id=job.id, status="in_progress")
        if response.status_code >= 400:
            raise GatewayError(
                f"Polling job {job.id} failed with HTTP {response.status_code}: "
                f"{error_text(response)}",
                status=response.status_code,
            )
        data = self._json(response, "the job status")
        if not isinstance(data, dict):
            raise GatewayError("The job status is not a JSON object.")
        default = "completed" if response.status_code == 200 else "in_progress"
        status = str(data.get("status") or default)
        urls = [
            item["url"]
            for item in data.get("data") or []
            if isinstance(item, dict) and isinstance(item.get("url"), str)
        ]
        return VideoStatus(
            id=job.id,
            status=status,
            urls=urls,
            error=_str_or_none(data.get("error")),
            receipt=paid.receipt,
        )

    async def wait_for_job(
        self,
        job: VideoJob,
        *,
        deadline: float,
        on_poll: Callable[[VideoStatus, int], Awaitable[None]] | None = None,
        interval: float = VIDEO_POLL_INTERVAL_SECONDS,
        poll_timeout: float = POLL_TIMEOUT_SECONDS,
        hold: PaymentHold | None = None,
    ) -> VideoStatus:
        """Poll until completed, failed, or `deadline` (unix time) passes; returns the last status.

        Transient poll failures (5xx, dropped connections) count as "still in progress": the job
        and its payment live on at the gateway, so giving up early would only strand them.
        """
        polls = 0
        failures = 0
        while True:
            try:
                with anyio.fail_after(poll_timeout):
                    status = await self.poll_video(job, hold)
                failures = 0
            except (GatewayError, PaidRequestFailed, TimeoutError) as exc:
                transient = not isinstance(exc, GatewayError) or (exc.status or 0) >= 500
                failure: Exception = exc
                if isinstance(exc, TimeoutError):
                    failure = GatewayError(
                        f"A poll of job {job.id} took longer than {poll_timeout:g} s."
                    )
                failures += 1
                if not transient or failures >= MAX_POLL_FAILURES:
                    raise failure from None
                status = VideoStatus(id=job.id, status="in_progress", error=str(failure)[:200])
            polls += 1
            if on_poll is not None:
                await on_poll(status, polls)
            if status.status in ("completed", "failed"):
                return status
            if time.time() + interval >= min(deadline, job.poll_deadline):
                return status
            await anyio.sleep(interval)

    # --- media -------------------------------------------------------------------------

    async def stream_bytes(
        self, url: str, connect_to: Sequence[str] | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a media file (no payment involved).

        With `connect_to`, the connection goes to those addresses (the next one when one cannot
        be reached, as a dual-stack host without an IPv6 route needs) while the Host header and
        the TLS name (SNI and certificate check) stay the URL's: the addresses the media check
        approved are the ones connected to, whatever the name resolves to a moment later.
        Through a proxy from the environment the URL goes as it is: the proxy resolves the name,
        and its NO_PROXY rules are written for names.
        """
        response = await self._send_media_request(url, connect_to)
        try:
            if response.status_code != 200:
                raise GatewayError(f"Downloading {url} failed with HTTP {response.status_code}.")
            async for chunk in response.aiter_bytes():
                yield chunk
        finally:
            await response.aclose()

    async def _send_media_request(
        self, url: str, connect_to: Sequence[str] | None
    ) -> httpx2.Response:
        http = self.media_http
        if connect_to is None or _proxied():
            return await http.send(http.build_request("GET", url), stream=True)
        if not connect_to:
            raise GatewayError(f"No checked address to download {url} from.")
        *earlier, last = connect_to
        for address in earlier:
            with suppress(httpx2.ConnectError, httpx2.ConnectTimeout):
                return await http.send(self._pinned(url, address), stream=True)
        return await http.send(self._pinned(url, last), stream=True)

    def _pinned(self, url: str, address: str) -> httpx2.Request:
        request = self.media_http.build_request("GET", url)  # the Host header is the URL's
        # The ASCII (IDNA 2008) form, as the Host header has it. (anyio encodes a Unicode name
        # the same way; Python's ssl alone would use IDNA 2003: "straße" -> "strasse".)
        request.extensions["sni_hostname"] = request.url.raw_host.decode("ascii")
        request.url = request.url.copy_with(host=address)
        return request

    # --- plumbing ----------------------------------------------------------------------

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        """A free request (the catalog): read whole, within the answer cap."""
        try:
            response = await self.http.send(request, stream=True)
            await read_body(response, MAX_ANSWER_BYTES)
        except httpx2.TransportError as exc:
            raise GatewayUnreachable(self.api_url, type(exc).__name__) from None
        except httpx2.DecodingError:
            raise GatewayError(
                "The gateway's answer could not be decoded: its body does not match the "
                "Content-Encoding it declared."
            ) from None
        if response.status_code >= 400:
            raise GatewayError(
                f"The gateway answered HTTP {response.status_code}: {error_text(response)}",
                status=response.status_code,
            )
        return response

    async def _paid(self, request: httpx2.Request, *, stream: bool = False) -> PaidResponse:
        if self.payer is None:
            raise GatewayError("No wallet is configured, so paid requests are impossible.")
        try:
            return await self.payer.send(self.http, request, approve=self._approve, stream=stream)
        except PaymentError:
            raise
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            raise GatewayUnreachable(self.api_url, type(exc).__name__) from None
        except httpx2.TransportError as exc:
            raise GatewayError(
                f"The gateway dropped the request before asking for payment ({type(exc).__name__}); "
                "nothing was signed. Try again."
            ) from None

    def _raise_for_status(self, response: httpx2.Response) -> None:
        if response.status_code < 400:
            return
        text = error_text(response)
        if response.status_code == 524:
            text = "a proxy cut the connection while the model was still answering (HTTP 524)"
        raise GatewayError(
            f"The gateway answered HTTP {response.status_code}" + (f": {text}." if text else "."),
            status=response.status_code,
        )

    def _json(self, response: httpx2.Response, what: str) -> Any:
        if len(response.content) > MAX_ANSWER_BYTES:
            raise GatewayError(f"{what.capitalize()} is larger than {MAX_ANSWER_BYTES} bytes.")
        status = response.status_code
        try:
            return safe_json.loads(response.content)
        except safe_json.JsonTooDeep as exc:
            raise GatewayError(
                f"The gateway sent {what} nested more than {exc.limit} levels deep, as no real "
                f"answer is (HTTP {status}), so it was not read.",
                status=status,
            ) from None
        except ValueError as exc:
            kind = response.headers.get("content-type", "").split(";")[0].strip()[:60]
            if kind and "json" not in kind:
                detail = f"it is {kind}"  # a web page, most often: the URL is not the gateway's
            elif isinstance(exc, safe_json.JsonUnbalanced):
                detail = str(exc)
            elif isinstance(exc, UnicodeDecodeError):
                detail = "it is not UTF-8 text"
            else:
                detail = "it does not parse"
        raise GatewayError(
            f"The gateway sent {what} in a form that is not JSON ({detail}; HTTP {status}).",
            status=status,
        )


def poll_url_for(api_url: str, job_id: str, poll_url: str | None) -> str:
    """Where to poll a job: the answer's poll_url resolved against the gateway, or the default.

    The poll carries the payment header, so it must stay on the gateway's host, port and scheme:
    never another host, nor this one over plain http where the gateway speaks https.
    """
    api_url = api_url.rstrip("/")
    url = urljoin(api_url + "/", poll_url or f"{api_url}/v1/videos/generations/{job_id}")
    poll, gateway = urlparse(url), urlparse(api_url)
    if poll.netloc != gateway.netloc or poll.scheme != gateway.scheme:
        raise GatewayError(
            f"The job's poll URL points away from the gateway ({url[:200]}), so it was not polled."
        )
    return url


def error_text(response: httpx2.Response) -> str:
    try:
        content = response.content[:2000]
    except httpx2.ResponseNotRead:
        return ""
    try:
        data = safe_json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace").strip()[:300]
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            value = data.get(key)
            if isinstance(value, str):
                return value[:300]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"][:300]
    return str(data)[:300]


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("message", value)
    return str(value)[:500]


def chat_answer_from(data: Any, requested_model: str) -> ChatAnswer:
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("choices"), list)
        or not data["choices"]
    ):
        raise GatewayError("The chat answer has no choices.")
    choice = data["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    return ChatAnswer(
        model=str(data.get("model") or requested_model),
        content=content if isinstance(content, str) else "",
        finish_reason=_str_or_none(choice.get("finish_reason"))
        if isinstance(choice, dict)
        else None,
        usage=Usage.model_validate(usage),
        tool_calls=_tool_calls(calls if isinstance(calls, list) else []),
    )


class _CallParts:
    """One function call as a stream delivers it: the id and name first, then the arguments
    in pieces, keyed by the call's `index`."""

    def __init__(self) -> None:
        self.id: Any = None
        self.name = ""
        self.arguments: list[str] = []

    def add(self, delta: dict[str, Any]) -> int:
        """Adds a delta's parts; returns the characters it added."""
        if delta.get("id"):
            self.id = delta["id"]
        function = delta.get("function")
        added = 0
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                self.name += function["name"]
                added += len(function["name"])
            if isinstance(function.get("arguments"), str):
                self.arguments.append(function["arguments"])
                added += len(function["arguments"])
        return added

    def as_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "function": {"name": self.name, "arguments": "".join(self.arguments)},
        }


def _tool_calls(calls: list[Any]) -> list[ToolCall]:
    """The function calls of an answer, as far as they can be used: the first MAX_TOOL_CALLS,
    each with an id (its own when it gave a usable one) and string name and arguments (a
    hostile or broken entry becomes a call the workspace tools refuse, never an error)."""
    found: list[ToolCall] = []
    for index, call in enumerate(calls[:MAX_TOOL_CALLS]):
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        name, arguments = function.get("name"), function.get("arguments")
        if isinstance(arguments, dict | list):
            arguments = json.dumps(arguments)
        ident = call.get("id")
        usable = isinstance(ident, str) and 0 < len(ident) <= 200
        found.append(
            ToolCall(
                id=ident if usable else f"call_{index}",
                name=name if isinstance(name, str) else "",
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return found


async def assemble_stream(response: httpx2.Response, model: str) -> ChatAnswer:
    """Assemble OpenAI-style chat.completion.chunk events into one answer."""
    parts: list[str] = []
    size = 0
    finish_reason: str | None = None
    usage: dict[str, Any] = {}
    answered_model = model
    done = False
    calls: dict[int, _CallParts] = {}
    try:
        async for lines in _capped_lines(response):
            for line in lines:
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    # Keep reading to the end of the body (nothing more should come) so the pooled
                    # connection is left clean and is reused rather than torn down.
                    done = True
                    continue
                if done:
                    continue
                try:
                    event = safe_json.loads(payload.encode())
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    raise GatewayError(
                        f"The model stopped with an error: {_str_or_none(event['error'])}."
                    )
                answered_model = str(event.get("model") or answered_model)
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    delta = choice.get("delta") or {}
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(text, str):
                        parts.append(text)
                        size += len(text)
                    if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                        size += _add_call_deltas(calls, delta["tool_calls"])
                    if size > MAX_ANSWER_BYTES:
                        raise GatewayError("The streamed answer exceeded the size limit.")
                    if choice.get("finish_reason"):
                        finish_reason = str(choice["finish_reason"])
    except httpx2.TransportError:
        done = False  # a cut stream: keep what arrived, the payment already settled
    return ChatAnswer(
        model=answered_model,
        content="".join(parts),
        finish_reason=finish_reason,
        usage=Usage.model_validate(usage),
        complete=done or finish_reason is not None,
        tool_calls=_tool_calls([calls[index].as_wire() for index in sorted(calls)]),
    )


def _add_call_deltas(calls: dict[int, _CallParts], deltas: list[Any]) -> int:
    """Adds one chunk's `tool_calls` deltas to the calls being assembled (keyed by `index`;
    an entry without one continues the last call); returns the characters added."""
    added = 0
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = max(calls, default=0)
        if index not in calls:
            if len(calls) >= MAX_TOOL_CALLS or not 0 <= index < 10_000:
                continue
            calls[index] = _CallParts()
        added += calls[index].add(delta)
    return added


def answer_from_response(data: Any, requested_model: str) -> ChatAnswer:
    """A Responses API object (non-streamed, or the one `response.completed` carries)."""
    if not isinstance(data, dict):
        raise GatewayError("The answer is not a Responses object.")
    texts = []
    calls: list[Any] = []
    output = data.get("output")
    for item in output if isinstance(output, list) else []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
        elif isinstance(item, dict) and item.get("type") == "function_call":
            calls.append(_function_call_as_chat(item))
    status = data.get("status")
    details = data.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatAnswer(
        model=str(data.get("model") or requested_model),
        content="".join(texts),
        finish_reason="stop" if status == "completed" else _str_or_none(reason or status),
        usage=Usage.from_responses(usage),
        complete=status == "completed",
        tool_calls=_tool_calls(calls),
    )


def _function_call_as_chat(item: dict[str, Any]) -> dict[str, Any]:
    """A Responses `function_call` item in chat's `tool_calls` shape (its call_id answers it)."""
    return {
        "id": item.get("call_id"),
        "function": {"name": item.get("name"), "arguments": item.get("arguments")},
    }


async def assemble_responses_stream(response: httpx2.Response, model: str) -> ChatAnswer:
    """Assemble Responses API events (`response.output_text.delta` ... `response.completed`)."""
    parts: list[str] = []
    size = 0
    final: ChatAnswer | None = None
    try:
        async for lines in _capped_lines(response):
            for line in lines:
                if not line.startswith("data:"):
                    continue
                try:
                    event = safe_json.loads(line[5:].strip().encode())
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
                    parts.append(event["delta"])
                    size += len(event["delta"])
                    if size > MAX_ANSWER_BYTES:
                        raise GatewayError("The streamed answer exceeded the size limit.")
                elif kind in ("response.completed", "response.incomplete"):
                    final = answer_from_response(event.get("response"), model)
                elif kind in ("response.failed", "error"):
                    inner = event.get("response")
                    source = inner if isinstance(inner, dict) else event
                    detail = source.get("error", event.get("message"))
                    raise GatewayError(f"The model stopped with an error: {_str_or_none(detail)}.")
    except httpx2.TransportError:
        pass  # a cut stream: keep what arrived, the payment already settled
    if final is not None:
        return final if final.content else final.model_copy(update={"content": "".join(parts)})
    return ChatAnswer(model=model, content="".join(parts), finish_reason=None, complete=False)


async def _capped_lines(response: httpx2.Response) -> AsyncIterator[list[str]]:
    """The lines of a streamed answer, a batch per network read, at most MAX_STREAM_BYTES in all
    and MAX_EVENT_BYTES a line: httpx's own line reader would buffer a hostile line without end.
    (Batches, because an async generator step per line costs more than parsing the line.)"""
    buffer = bytearray()
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > MAX_STREAM_BYTES:
            raise GatewayError(
                f"The streamed answer exceeded {MAX_STREAM_BYTES} bytes; reading stopped."
            )
        buffer.extend(chunk)
        cut = buffer.rfind(b"\n") + 1
        if cut:
            text = bytes(buffer[:cut]).decode("utf-8", "replace")
            del buffer[:cut]
            yield [line.rstrip("\r") for line in text.split("\n")[:-1]]
        if len(buffer) > MAX_EVENT_BYTES:
            raise GatewayError(
                f"The streamed answer sent an event larger than {MAX_EVENT_BYTES} bytes; "
                "reading stopped."
            )
    if buffer:
        yield [bytes(buffer).rstrip(b"\r").decode("utf-8", "replace")]
