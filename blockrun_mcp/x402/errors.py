"""Payment errors: protocol facts, each a sentence, none carrying key material.

They say what happened in x402 terms and nothing about any one application's settings or
bookkeeping; an application adds its own advice (which setting to change, what its budget now
counts) where it shows them. `money_moved` (from the error root) says whether the payment may
have left: False before anything was signed, None once a signed payment was sent.
"""

from __future__ import annotations

from types import EllipsisType

from blockrun_mcp.errors import BlockrunError


class PaymentError(BlockrunError):
    """Every error of the 402 dance."""


class MalformedTerms(PaymentError):
    """The 402 terms could not be read. Nothing was signed."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"The gateway's payment terms could not be read: {detail}. Nothing was signed."
        )
        self.detail = detail


class TermsTimeout(PaymentError):
    """The 402's terms did not arrive in time. Nothing was signed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The gateway did not finish sending its payment terms within {seconds:g} s, so "
            "nothing was signed. Try again; if it repeats, the gateway is unwell."
        )


class PaymentRefused(PaymentError):
    """The signing policy or the caller's approval refused to sign. Nothing was signed.

    `limit` names the limit that refused it, when one did ("per-call cap", "budget", ...).
    """

    def __init__(self, reason: str, *, limit: str | None = None) -> None:
        super().__init__(f"Payment refused before signing: {reason}. Nothing was signed.")
        self.reason = reason
        self.limit = limit


class PaymentRejected(PaymentError):
    """The gateway rejected a signed payment. It was sent, so the gateway holds the signature."""

    money_moved = None
    code = "PAYMENT_REJECTED"


class PaymentInvalid(PaymentRejected):
    code = "PAYMENT_INVALID"

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "The gateway rejected the signed payment as invalid (PAYMENT_INVALID); check that "
            "the network signed for is the gateway's."
            + (f" Gateway said: {detail}" if detail else "")
        )


class PaymentUnfunded(PaymentRejected):
    code = "PAYMENT_UNFUNDED"

    def __init__(self, address: str, network: str) -> None:
        super().__init__(
            f"The gateway says the wallet {address} has too little USDC on {network} for this "
            f"payment (PAYMENT_UNFUNDED). Send USDC on {network} to {address}, then try again."
        )
        self.address = address
        self.network = network


class PaymentReplay(PaymentRejected):
    """The nonce was already used: an earlier send of this same payment may have settled."""

    code = "PAYMENT_REPLAY"

    def __init__(self) -> None:
        super().__init__(
            "The gateway says this payment was already used (PAYMENT_REPLAY): an earlier send "
            "of the same authorization may have been charged while its answer was lost. Check "
            "the receipts before trying again."
        )


class AnswerTooLarge(PaymentError):
    """The answer is larger than we are willing to read; reading stopped at the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The gateway's answer is larger than {limit} bytes, so it was not read.")
        self.limit = limit


class PaidRequestFailed(PaymentError):
    """A signed request got no usable answer: resent with the same header, never re-signed."""

    money_moved = None

    def __init__(self, detail: str, *, money_moved: bool | EllipsisType | None = ...) -> None:
        super().__init__(
            f"The paid request failed after the payment was signed: {detail}. The same payment "
            "was resent, never signed again.",
            money_moved=money_moved,
        )
        self.detail = detail
