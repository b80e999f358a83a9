"""EIP-3009 TransferWithAuthorization signing: turns one accepted requirement into a payment header."""

from __future__ import annotations

import secrets
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blockrun_mcp.x402.codec import encode_header
from blockrun_mcp.x402.eip3009 import transfer_digest
from blockrun_mcp.x402.models import Authorization, PaymentRequired, PaymentRequirement
from blockrun_mcp.x402.networks import NetworkSpec

if TYPE_CHECKING:
    import coincurve
    from eth_account.signers.local import LocalAccount

# validAfter a little in the past tolerates clock skew between us and the facilitator.
CLOCK_SKEW_SECONDS = 600


@dataclass(frozen=True)
class SignedPayment:
    """A signed payment: the header to send (and resend, never re-sign) and what it authorizes."""

    header_name: str
    header_value: str
    authorization: Authorization
    requirement: PaymentRequirement
    x402_version: int

    @property
    def amount_atomic(self) -> int:
        return int(self.authorization.value)

    @property
    def nonce(self) -> str:
        return self.authorization.nonce

    @property
    def valid_before(self) -> int:
        return int(self.authorization.validBefore)

    def __repr__(self) -> str:
        return f"SignedPayment(amount={self.amount_atomic}, nonce={self.nonce[:10]}…)"


def sign_payment(
    account: LocalAccount,
    terms: PaymentRequired,
    requirement: PaymentRequirement,
    network: NetworkSpec,
    *,
    now: int | None = None,
) -> SignedPayment:
    """Sign `requirement` (already approved by the policy) for `account`."""
    issued_at = int(time.time()) if now is None else now
    amount = requirement.amount_atomic
    if amount is None:  # the policy refuses these; never sign what it did not approve
        raise ValueError("the requirement's amount is not a whole number of atomic units")
    wire = {
        "from": account.address,
        "to": requirement.payTo,
        "value": str(amount),
        "validAfter": str(issued_at - CLOCK_SKEW_SECONDS),
        "validBefore": str(issued_at + requirement.maxTimeoutSeconds),
        "nonce": "0x" + secrets.token_hex(32),
    }
    authorization = Authorization.model_validate(wire)
    signature = sign_digest(account, transfer_digest(network, wire))
    inner = {"signature": signature, "authorization": wire}
    payload: dict[str, Any]
    if terms.x402Version == 1:
        payload = {
            "x402Version": 1,
            "scheme": requirement.scheme,
            "network": requirement.network,
            "payload": inner,
        }
        header_name = "X-PAYMENT"
    else:
        payload = {
            "x402Version": 2,
            "resource": terms.raw_resource or terms.resource.model_dump(),
            "accepted": requirement.raw or requirement.model_dump(exclude={"raw"}),
            "payload": inner,
        }
        if terms.extensions:
            payload["extensions"] = terms.extensions
        header_name = "PAYMENT-SIGNATURE"
    return SignedPayment(
        header_name=header_name,
        header_value=encode_header(payload),
        authorization=authorization,
        requirement=requirement,
        x402_version=terms.x402Version,
    )


# One libsecp256k1 key per account, made on its first signature. The object prints no key
# (coincurve's default repr), unlike an eth-keys PrivateKey, whose repr is the key itself.
_signing_keys: weakref.WeakKeyDictionary[LocalAccount, coincurve.PrivateKey] = (
    weakref.WeakKeyDictionary()
)


def sign_digest(account: LocalAccount, digest: bytes) -> str:
    """`account`'s signature of a 32-byte EIP-712 digest, as 0x r || s || v (v = 27 or 28).

    eth-account signs through this same library (coincurve, RFC 6979 nonces, low s), but
    rebuilds an eth-keys key and derives its public key on every call, several times the cost
    of this on the path of every paid call (bench/README.md). tests/test_eip3009.py checks both
    signatures are equal byte for byte.
    """
    key = _signing_keys.get(account)
    if key is None:
        import coincurve

        key = _signing_keys[account] = coincurve.PrivateKey(bytes(account.key))
    recoverable = key.sign_recoverable(digest, hasher=None)  # r (32) || s (32) || recovery id
    return "0x" + recoverable[:64].hex() + format(recoverable[64] + 27, "02x")


def payment_from_header(header_name: str, header_value: str) -> SignedPayment:
    """Rebuild a v2 SignedPayment from a header we sent before (to resume polling a paid job)."""
    from blockrun_mcp.x402.codec import decode_header
    from blockrun_mcp.x402.errors import MalformedTerms

    data = decode_header(header_value, "stored payment header")
    try:
        return SignedPayment(
            header_name=header_name,
            header_value=header_value,
            authorization=Authorization.model_validate(data["payload"]["authorization"]),
            requirement=PaymentRequirement.from_wire(data["accepted"], version=2),
            x402_version=int(data["x402Version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedTerms("the stored payment header is not a v2 payment") from exc
