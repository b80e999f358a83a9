"""Payment errors. Each says what happened and what to do; none carries key material."""

from __future__ import annotations


class PaymentError(Exception):
    """Base class. `charged` says whether money may have moved: True, False or None (unknown)."""

    charged: bool | None = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedTerms(PaymentError):
    """The 402 terms could not be read. Nothing was signed."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"The gateway's payment terms could not be read: {detail}. Nothing was signed. "
            "Check BLOCKRUN_API_URL points at a BlockRun gateway."
        )
        self.detail = detail


class PaymentRefused(PaymentError):
    """Our policy or the caller's hook refused to sign. Nothing was signed."""

    def __init__(self, reason: str, *, limit: str | None = None) -> None:
        super().__init__(f"Payment refused before signing: {reason}. Nothing was signed.")
        self.reason = reason
        self.limit = limit


class ReservationLost(PaymentError):
    """The budget's reservation vanished between approval and sending. Nothing was sent."""

    def __init__(self) -> None:
        super().__init__(
            "The ledger no longer holds this call's budget reservation (another blockrun-mcp "
            "process sharing the data dir released it). The signed payment was discarded before "
            "it was sent, so nothing was spent. Try again."
        )


class PaymentRejected(PaymentError):
    """The gateway rejected a signed payment. Subclasses say whether it was charged."""

    code = "PAYMENT_REJECTED"


# What a rejected signed payment means for the budget, said the same way everywhere.
STILL_COUNTED = (
    "The signed authorization stays counted as spent until it expires and the chain shows it "
    "was never used; then it is released by itself."
)


class PaymentInvalid(PaymentRejected):
    """The gateway says the signed payment is invalid. It holds the signature all the same."""

    code = "PAYMENT_INVALID"
    charged = None

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "The gateway rejected the signed payment as invalid (PAYMENT_INVALID). "
            f"{STILL_COUNTED} Check that BLOCKRUN_NETWORK matches the gateway (base for "
            "blockrun.ai, base-sepolia for testnet.blockrun.ai)."
            f"{(' Gateway said: ' + detail) if detail else ''}"
        )


class PaymentUnfunded(PaymentRejected):
    """The gateway says the wallet cannot cover the payment. It holds the signature all the same."""

    code = "PAYMENT_UNFUNDED"
    charged = None

    def __init__(self, address: str, network: str) -> None:
        super().__init__(
            f"The gateway says the wallet {address} has too little USDC on {network} for this "
            f"payment (PAYMENT_UNFUNDED). {STILL_COUNTED} Send USDC on {network} to {address}, "
            "then try again."
        )
        self.address = address
        self.network = network


class PaymentReplay(PaymentRejected):
    """The nonce was already used: an earlier send of this same payment may have settled."""

    code = "PAYMENT_REPLAY"
    charged = None

    def __init__(self) -> None:
        super().__init__(
            "The gateway says this payment was already used (PAYMENT_REPLAY): an earlier send "
            "of the same authorization may have been charged while its answer was lost. It is "
            "counted as spent; check the receipts before trying again."
        )


class TermsTimeout(PaymentError):
    """The 402's terms did not arrive in time. Nothing was signed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The gateway did not finish sending its payment terms within {seconds:g} s, so "
            "nothing was signed. Try again; if it repeats, the gateway is unwell."
        )


class AnswerTooLarge(PaymentError):
    """The gateway's answer is larger than we are willing to read; reading stopped at the limit."""

    def __init__(self, limit: int, *, charged: bool | None) -> None:
        super().__init__(
            f"The gateway's answer is larger than {limit} bytes, so it was not read"
            + (
                "; the payment is counted as spent."
                if charged is not False
                else "; nothing was paid."
            )
        )
        self.charged = charged


class PaidRequestFailed(PaymentError):
    """A signed request did not produce an answer; the money may or may not have moved."""

    charged = None

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"The paid request failed after the payment was signed: {detail}. The same payment "
            "was retried, never re-signed; it is counted as spent until a receipt proves "
            "otherwise."
        )
        self.detail = detail
