"""The 402 dance for any request: send, read the terms, ask the policy and the caller, sign once,
resend the same request, and keep resending that same signed request through transient
failures.

A signature is a payment, so after a paid request fails in transit the SAME header is resent;
a new nonce would be a second charge. The caller's hold is told how each payment goes: signed
(before it leaves), settled (a paid request was answered with success), a claim (the gateway
says it failed: its word only, it still holds the signature), or released, which happens here
only for a signature that provably never left this process.

It works with httpx and httpx2 clients alike: both are the same API, and a transport failure is
recognised by the client's own library's exception classes. (Not an `httpx.Auth`: httpx does not
hand transport errors back to an auth flow, and resending the same header after a dropped
connection is the point of this module.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from blockrun_mcp import safe_json
from blockrun_mcp.money import atomic_to_usd, parse_atomic, usd_text
from blockrun_mcp.x402.codec import parse_payment_required, read_receipt, rejection_code
from blockrun_mcp.x402.errors import (
    AnswerTooLarge,
    PaidRequestFailed,
    PaymentInvalid,
    PaymentRefused,
    PaymentReplay,
    PaymentUnfunded,
    TermsTimeout,
)
from blockrun_mcp.x402.models import PaymentRequired, PaymentRequirement, SettlementReceipt
from blockrun_mcp.x402.policy import SigningPolicy
from blockrun_mcp.x402.signer import SignedPayment, sign_payment

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

log = logging.getLogger("blockrun_mcp.x402")

# Statuses after which a paid request is resent with the same header (the nonce settles once).
RETRYABLE_PAID_STATUSES = frozenset({502, 503})
# A chat answer, image list or catalog is kilobytes: more than this from a gateway is hostile.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
# A 402 is a few hundred bytes sent at once; reading its terms takes milliseconds.
TERMS_TIMEOUT_SECONDS = 30.0

# httpx.Request / httpx2.Request, httpx.Response / httpx2.Response, and their async clients.
Request = Any
Response = Any
Client = Any


@dataclass(frozen=True)
class Quote:
    """What the caller is asked to approve before anything is signed."""

    amount_atomic: int
    requirement: PaymentRequirement
    method: str
    url: str

    @property
    def amount_usd(self) -> float:
        return atomic_to_usd(self.amount_atomic)


class PaymentHold(Protocol):
    """The caller's record of one approved payment (a budget reservation, for instance)."""

    async def signed(self, payment: SignedPayment) -> None:
        """Called after signing, before the payment leaves: record it (crash safety). Raising
        here stops the payment from being sent."""

    async def settle(self, receipt: SettlementReceipt | None) -> None:
        """The gateway answered a paid request with success; the receipt, if any, says how."""

    async def record_claim(self, claim: str) -> None:
        """The gateway says the signed payment failed. It still holds the signature."""

    async def release(self, reason: str) -> None:
        """The payment was never signed, or its signature never left this process."""


Approve = Callable[[Quote], Awaitable[PaymentHold]]


class _NoHold:
    async def signed(self, payment: SignedPayment) -> None:
        return None

    async def settle(self, receipt: SettlementReceipt | None) -> None:
        return None

    async def record_claim(self, claim: str) -> None:
        return None

    async def release(self, reason: str) -> None:
        return None


async def approve_everything(quote: Quote) -> PaymentHold:
    """An approval hook that keeps no record: the policy's checks only."""
    return _NoHold()


async def refuse_payment(quote: Quote) -> PaymentHold:
    """The approval hook of requests that must never pay (a catalog, a media download)."""
    raise PaymentRefused(
        f"{quote.url} asked for a payment of {usd_text(quote.amount_atomic)} on a request that is not "
        "allowed to pay"
    )


@dataclass
class PaidResponse:
    """The answer to a request sent through the payer, and the payment that bought it."""

    response: Response
    payment: SignedPayment | None = None  # None: the request was free
    receipt: SettlementReceipt | None = None

    @property
    def cost_atomic(self) -> int:
        """The signed amount (what `exact` transfers), 0 for a free request."""
        return self.payment.amount_atomic if self.payment else 0


@dataclass(frozen=True)
class _Failures:
    """The transport exception classes of the client's library (httpx or httpx2)."""

    not_sent: tuple[type[Exception], ...]  # the connection was never made: nothing left
    transport: type[Exception]


def _failures_of(client: Client) -> _Failures:
    import importlib

    for cls in type(client).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root in ("httpx", "httpx2"):
            library = importlib.import_module(root)
            return _Failures((library.ConnectError, library.ConnectTimeout), library.TransportError)
    raise TypeError(f"{type(client).__name__} is not an httpx or httpx2 AsyncClient")


class X402Payer:
    """Pays x402 challenges for requests sent through `send`, within a signing policy.

    `approve` is asked about every quote the policy accepts; it returns the hold that records
    the payment, or raises PaymentRefused. Pass one per `send` (a budget per call), or set it
    once here.
    """

    def __init__(
        self,
        account: Callable[[], LocalAccount],
        policy: SigningPolicy,
        *,
        approve: Approve = approve_everything,
        paid_attempts: int = 3,
        retry_delay_seconds: float = 0.5,
        max_body_bytes: int = MAX_BODY_BYTES,
        terms_timeout_seconds: float = TERMS_TIMEOUT_SECONDS,
    ) -> None:
        self._account = account
        self.policy = policy
        self.approve = approve
        self.paid_attempts = max(1, paid_attempts)
        self.retry_delay_seconds = retry_delay_seconds
        self.max_body_bytes = max_body_bytes
        self.terms_timeout_seconds = terms_timeout_seconds
        # Every payee this process was asked to pay: a gateway's payTo does not change from one
        # request to the next, so a second one is worth a warning.
        self.payees: dict[str, int] = {}

    async def send(
        self,
        client: Client,
        request: Request,
        *,
        approve: Approve | None = None,
        stream: bool = False,
    ) -> PaidResponse:
        """Send `request`; if it answers 402, pay within policy and resend. Returns the answer.

        With `stream=True` the caller must close `response` (streams stay open for reading);
        otherwise the body is read here, at most `max_body_bytes` of it.
        """
        response = await client.send(request, stream=True)
        if response.status_code != 402:
            if not stream:
                await read_body(response, self.max_body_bytes)
            return PaidResponse(response)
        terms = await self._read_terms(response)
        requirement = self.policy.choose(terms)
        amount = requirement.amount_atomic
        assert amount is not None  # the policy refuses anything else
        self._watch_payee(requirement.payTo)
        quote = Quote(amount, requirement, request.method, str(request.url))
        hold = await (approve or self.approve)(quote)
        try:
            payment = sign_payment(self._account(), terms, requirement, self.policy.network)
            await hold.signed(payment)
        except BaseException:
            await hold.release("the payment was not signed, or not recorded before sending")
            raise
        return await self._send_paid(
            client, with_payment(request, payment), payment, hold, stream=stream, first=True
        )

    async def resend(
        self,
        client: Client,
        request: Request,
        payment: SignedPayment,
        hold: PaymentHold | None = None,
        *,
        stream: bool = False,
    ) -> PaidResponse:
        """Send another request under a payment already sent (video polls), with its header.

        A 200 here settles nothing: only the caller can read whether the job completed. Nor is
        anything ever released: the payment left with the first request.
        """
        return await self._send_paid(
            client, with_payment(request, payment), payment, hold or _NoHold(), stream=stream
        )

    async def _read_terms(self, response: Response) -> PaymentRequired:
        """The 402's terms, read within `terms_timeout_seconds`: a body trickling a byte at a
        time must not hold a call open before anything is even signed."""
        with anyio.move_on_after(self.terms_timeout_seconds) as scope:
            body = await _read_capped(response)
        if scope.cancelled_caught:
            await response.aclose()
            raise TermsTimeout(self.terms_timeout_seconds)
        return parse_payment_required(response.headers, body)

    def _watch_payee(self, pay_to: str) -> None:
        payee = pay_to.lower()
        if payee not in self.payees and self.payees:
            log.warning(
                "the gateway's payTo changed to %s (seen before: %s); pin the payee if this is "
                "unexpected",
                pay_to,
                ", ".join(self.payees),
            )
        self.payees[payee] = self.payees.get(payee, 0) + 1

    async def _send_paid(
        self,
        client: Client,
        request: Request,
        payment: SignedPayment,
        hold: PaymentHold,
        *,
        stream: bool,
        first: bool = False,
    ) -> PaidResponse:
        failures = _failures_of(client)
        # Whether the signature may be in other hands: always, once it was sent before.
        may_have_left = not first
        last_failure = ""
        for attempt in range(self.paid_attempts):
            if attempt:
                await anyio.sleep(self.retry_delay_seconds * attempt)
            try:
                response = await client.send(request, stream=True)
            except failures.not_sent as exc:
                last_failure = f"could not connect ({type(exc).__name__})"
                continue
            except failures.transport as exc:
                may_have_left = True
                last_failure = f"the connection failed ({type(exc).__name__})"
                continue
            may_have_left = True
            if response.status_code in RETRYABLE_PAID_STATUSES and attempt + 1 < self.paid_attempts:
                await response.aclose()
                last_failure = f"the gateway answered HTTP {response.status_code}"
                continue
            if response.status_code == 402:
                try:
                    body = await _read_capped(response)
                except failures.transport as exc:
                    # Signed and sent: the gateway holds it, whatever its unread body said.
                    raise PaidRequestFailed(
                        "the gateway answered the paid request with 402, and its body could not "
                        f"be read ({type(exc).__name__})"
                    ) from None
                await self._raise_rejection(body, payment, hold, retried=attempt > 0)
            receipt = read_receipt(response.headers)
            settles = first and response.status_code == 200
            if not stream:
                try:
                    await read_body(response, self.max_body_bytes)
                except failures.transport as exc:
                    # The answer was cut while arriving: resend the same header, as above.
                    last_failure = f"the connection failed ({type(exc).__name__})"
                    continue
                except AnswerTooLarge:
                    if settles:  # a 200 is the gateway's word that it settled
                        await hold.settle(receipt)
                    raise
            if settles:
                try:
                    await hold.settle(receipt)
                except BaseException:
                    # A streamed answer the caller will never read: its connection goes back
                    # to the pool now, not never.
                    await response.aclose()
                    raise
            return PaidResponse(response, payment, receipt)
        if not may_have_left:
            await hold.release("the signed payment never left this machine (no connection)")
            raise PaidRequestFailed(
                f"{last_failure}; the signed payment never left this machine", money_moved=False
            )
        raise PaidRequestFailed(f"{last_failure} after {self.paid_attempts} attempts")

    async def _raise_rejection(
        self, body: bytes, payment: SignedPayment, hold: PaymentHold, *, retried: bool
    ) -> None:
        code = rejection_code(body)
        # The gateway holds the signature whatever it says about it: its word is recorded.
        if code == "PAYMENT_UNFUNDED":
            await hold.record_claim("the gateway said PAYMENT_UNFUNDED")
            raise PaymentUnfunded(payment.authorization.from_, self.policy.network.name)
        if code == "PAYMENT_INVALID":
            await hold.record_claim("the gateway said PAYMENT_INVALID")
            raise PaymentInvalid(_message_of(body))
        if code == "PAYMENT_REPLAY":
            await hold.record_claim("the gateway said PAYMENT_REPLAY")
            raise PaymentReplay()
        raise PaidRequestFailed(
            "the gateway answered the paid request with 402 and no reason"
            + (" after a retry" if retried else "")
        )


def with_payment(request: Request, payment: SignedPayment) -> Request:
    """`request` with the payment header set, in place: every request here is built for one send
    (see bench/README.md on copying requests)."""
    request.headers[payment.header_name] = payment.header_value
    return request


async def read_body(response: Response, limit: int) -> bytes:
    """Read a streamed response's body, never more than `limit` bytes (AnswerTooLarge beyond).

    The body is then kept where `Response.aread()` keeps it, so `.content` and `.json()` work.
    """
    length = parse_atomic(response.headers.get("content-length", ""))
    chunks: list[bytes] = []
    size = 0
    try:
        if length is not None and length > limit:
            raise AnswerTooLarge(limit)
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(limit)
            chunks.append(chunk)
    finally:
        await response.aclose()
    response._content = b"".join(chunks)
    return response._content


async def _read_capped(response: Response) -> bytes:
    """Read at most MAX_ERROR_BODY_BYTES of a 402 or error body; more is hostile."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ERROR_BODY_BYTES:
                break
    finally:
        await response.aclose()
    return b"".join(chunks)[: MAX_ERROR_BODY_BYTES + 1]


def _message_of(body: bytes) -> str:
    try:
        data = safe_json.loads(body)
    except (ValueError, RecursionError):
        return ""
    if isinstance(data, dict):
        message = data.get("message") or data.get("error")
        if isinstance(message, str):
            return message[:300]
    return ""
