"""The 402 dance: request, read the terms, ask the policy and the caller, sign once, resend.

A signature is a payment, so after a paid request fails in transit the SAME header is resent;
a new nonce would be a second charge. A signed authorization is a bearer instrument: whoever
holds it can submit it until its validBefore, so nothing the gateway *says* afterwards
(PAYMENT_INVALID, PAYMENT_UNFUNDED, a receipt for less) makes it count for less. The caller's
hold learns how each payment went: settled (the gateway answered a paid request with
success), claimed (the gateway says it failed: recorded, still counted), or released, which
happens here only for a payment that provably never left this process.

Not an httpx2.Auth: httpx does not hand transport errors back to an auth flow, and resending the
same header after a dropped connection is the point of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio
import httpx2

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
from blockrun_mcp.x402.networks import atomic_to_usd, parse_atomic
from blockrun_mcp.x402.policy import SigningPolicy
from blockrun_mcp.x402.signer import SignedPayment, sign_payment

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

log = logging.getLogger("blockrun_mcp")

# Statuses after which a paid request is resent with the same header (the nonce settles once).
RETRYABLE_PAID_STATUSES = frozenset({502, 503})
# A chat answer, image list or catalog is kilobytes: more than this from a gateway is hostile.
MAX_BODY_BYTES = 8 * 1024 * 1024
# A 402 is a few hundred bytes sent at once; reading its terms takes milliseconds.
TERMS_TIMEOUT_SECONDS = 30.0


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
        """Called after signing, before the payment leaves: record it (crash safety)."""

    async def settle(self, receipt: SettlementReceipt | None) -> None:
        """The gateway answered a paid request with success; the receipt, if any, says how."""

    async def record_claim(self, claim: str) -> None:
        """The gateway says the signed payment failed. Record it; it still counts in full."""

    async def release(self, reason: str) -> None:
        """The payment was never signed, or its signature never left this process."""


ApproveHook = Callable[[Quote], Awaitable[PaymentHold]]


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
    """Default hook: the policy's checks only."""
    return _NoHold()


@dataclass
class PaidResponse:
    """A gateway answer, with the payment that bought it (None when it was free)."""

    response: httpx2.Response
    payment: SignedPayment | None = None
    hold: PaymentHold = field(default_factory=_NoHold)
    receipt: SettlementReceipt | None = None

    @property
    def cost_atomic(self) -> int:
        return self.payment.amount_atomic if self.payment else 0


class X402Payer:
    """Pays x402 challenges for any request sent through `send`."""

    def __init__(
        self,
        account: Callable[[], LocalAccount],
        policy: SigningPolicy,
        *,
        paid_attempts: int = 3,
        retry_delay_seconds: float = 0.5,
        max_body_bytes: int = MAX_BODY_BYTES,
        terms_timeout_seconds: float = TERMS_TIMEOUT_SECONDS,
    ) -> None:
        self._account = account
        self.policy = policy
        self.paid_attempts = max(1, paid_attempts)
        self.retry_delay_seconds = retry_delay_seconds
        self.max_body_bytes = max_body_bytes
        self.terms_timeout_seconds = terms_timeout_seconds
        # Every payee this process was asked to pay, in the order first seen: a gateway's payTo
        # does not change from one request to the next, so a second one is worth a warning.
        self.payees: dict[str, int] = {}

    def _watch_payee(self, pay_to: str) -> None:
        payee = pay_to.lower()
        if payee not in self.payees and self.payees:
            log.warning(
                "the gateway's payTo changed to %s (seen before: %s); set BLOCKRUN_PAY_TO to pin "
                "the payee if this is unexpected",
                pay_to,
                ", ".join(self.payees),
            )
        self.payees[payee] = self.payees.get(payee, 0) + 1

    async def send(
        self,
        client: httpx2.AsyncClient,
        request: httpx2.Request,
        *,
        approve: ApproveHook = approve_everything,
        stream: bool = False,
    ) -> PaidResponse:
        """Send `request`; if it answers 402, pay within policy and resend. Returns the answer.

        With `stream=True` the caller must close `response` (streams stay open for reading);
        otherwise the body is read here, at most `max_body_bytes` of it.
        """
        response = await client.send(request, stream=True)
        if response.status_code != 402:
            if not stream:
                await read_body(response, self.max_body_bytes, charged=False)
            return PaidResponse(response)
        terms = await self._read_terms(response)
        requirement = self.policy.choose(terms)
        amount = requirement.amount_atomic
        assert amount is not None  # the policy refuses anything else
        self._watch_payee(requirement.payTo)
        quote = Quote(amount, requirement, request.method, str(request.url))
        hold = await approve(quote)
        try:
            payment = sign_payment(self._account(), terms, requirement, self.policy.network)
            await hold.signed(payment)
        except BaseException:
            await hold.release("the payment was not signed")
            raise
        paid_request = with_payment(request, payment)
        return await self._send_paid(client, paid_request, payment, hold, stream=stream)

    async def _read_terms(self, response: httpx2.Response) -> PaymentRequired:
        """The 402's terms, read within `terms_timeout_seconds`: a body trickling a byte at a
        time must not hold a call open before anything is even signed."""
        with anyio.move_on_after(self.terms_timeout_seconds) as scope:
            body = await _read_capped(response)
        if scope.cancelled_caught:
            await response.aclose()
            raise TermsTimeout(self.terms_timeout_seconds)
        return parse_payment_required(response.headers, body)

    async def resend(
        self,
        client: httpx2.AsyncClient,
        request: httpx2.Request,
        payment: SignedPayment,
        hold: PaymentHold,
        *,
        stream: bool = False,
    ) -> PaidResponse:
        """Send another request under an existing payment (video polls), same header.

        A 200 here does not settle the hold: only the caller knows whether the job completed.
        """
        return await self._send_paid(
            client, with_payment(request, payment), payment, hold, stream=stream, settle=False
        )

    async def _send_paid(
        self,
        client: httpx2.AsyncClient,
        request: httpx2.Request,
        payment: SignedPayment,
        hold: PaymentHold,
        *,
        stream: bool,
        settle: bool = True,
    ) -> PaidResponse:
        may_have_arrived = False
        last_failure = ""
        for attempt in range(self.paid_attempts):
            if attempt:
                await anyio.sleep(self.retry_delay_seconds * attempt)
            try:
                response = await client.send(request, stream=True)
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                last_failure = f"could not connect ({type(exc).__name__})"
                continue
            except httpx2.TransportError as exc:
                may_have_arrived = True
                last_failure = f"the connection failed ({type(exc).__name__})"
                continue
            may_have_arrived = True
            if response.status_code in RETRYABLE_PAID_STATUSES and attempt + 1 < self.paid_attempts:
                await response.aclose()
                last_failure = f"the gateway answered HTTP {response.status_code}"
                continue
            if response.status_code == 402:
                await self._raise_rejection(response, payment, hold, retried=attempt > 0)
            receipt = read_receipt(response.headers)
            settles = settle and response.status_code == 200
            if not stream:
                try:
                    await read_body(response, self.max_body_bytes, charged=None)
                except httpx2.TransportError as exc:
                    # The answer was cut while arriving: resend the same header, as above.
                    last_failure = f"the connection failed ({type(exc).__name__})"
                    continue
                except AnswerTooLarge:
                    if settles:  # a 200 is the gateway's word that it settled
                        await hold.settle(receipt)
                    raise
            if settles:
                await hold.settle(receipt)
            return PaidResponse(response, payment, hold, receipt)
        if not may_have_arrived:
            await hold.release("the signed payment never reached the gateway")
            raise PaidRequestFailed(f"{last_failure}; the payment never left this machine")
        raise PaidRequestFailed(f"{last_failure} after {self.paid_attempts} attempts")

    async def _raise_rejection(
        self, response: httpx2.Response, payment: SignedPayment, hold: PaymentHold, *, retried: bool
    ) -> None:
        body = await _read_capped(response)
        await response.aclose()
        code = rejection_code(body)
        # The gateway holds the signature whatever it says about it: its word is recorded, and
        # the payment keeps counting until it expires unused on chain (see reconcile.py).
        if code == "PAYMENT_UNFUNDED":
            await hold.record_claim("the gateway said PAYMENT_UNFUNDED")
            raise PaymentUnfunded(payment.authorization.from_, self.policy.network.name)
        if code == "PAYMENT_INVALID":
            await hold.record_claim("the gateway said PAYMENT_INVALID")
            raise PaymentInvalid(_message_of(body))
        if code == "PAYMENT_REPLAY":
            raise PaymentReplay()  # an earlier send of this header may have settled: keep it held
        # A 402 without a code proves nothing about an earlier send, so the hold stays.
        raise PaidRequestFailed(
            "the gateway answered the paid request with 402 and no reason"
            + (" after a retry" if retried else "")
        )


def with_payment(request: httpx2.Request, payment: SignedPayment) -> httpx2.Request:
    """`request` with the payment header set (in place: every request here is built for one send,
    and copying one cost a tenth of the payer's own time per paid call)."""
    request.headers[payment.header_name] = payment.header_value
    return request


MAX_ERROR_BODY_BYTES = 64 * 1024


async def read_body(response: httpx2.Response, limit: int, *, charged: bool | None) -> bytes:
    """Read a streamed response's body, never more than `limit` bytes (AnswerTooLarge beyond).

    The body is then kept where `Response.aread()` keeps it, so `.content` and `.json()` work.
    """
    declared = response.headers.get("content-length", "")
    chunks: list[bytes] = []
    size = 0
    try:
        length = parse_atomic(declared)
        if length is not None and length > limit:
            raise AnswerTooLarge(limit, charged=charged)
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(limit, charged=charged)
            chunks.append(chunk)
    finally:
        await response.aclose()
    response._content = b"".join(chunks)
    return response._content


async def _read_capped(response: httpx2.Response) -> bytes:
    """Read at most MAX_ERROR_BODY_BYTES of a 402 or error body; more is hostile."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ERROR_BODY_BYTES:
            break
    await response.aclose()
    return b"".join(chunks)[: MAX_ERROR_BODY_BYTES + 1]


def _message_of(body: bytes) -> str:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if isinstance(data, dict):
        message = data.get("message") or data.get("error")
        if isinstance(message, str):
            return message[:300]
    return ""


__all__ = [
    "MAX_BODY_BYTES",
    "AnswerTooLarge",
    "ApproveHook",
    "PaidResponse",
    "PaymentHold",
    "PaymentRefused",
    "Quote",
    "X402Payer",
    "approve_everything",
    "read_body",
    "with_payment",
]
