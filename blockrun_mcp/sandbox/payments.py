"""Payment verification and settlement, as strict as a facilitator.

`verify` runs every check a facilitator runs before touching the chain (version, terms, scheme,
network, domain, signature, recipient, amount, validity window). `settle` then applies the
spend-time checks (still valid, nonce unused, balance) and moves the money, atomically under the
state lock.

Validity is judged by the sandbox's chain clock (`SandboxState.chain_now`), as a real chain judges
it by block time: once that clock has passed an authorization's validBefore it can never settle,
which is what makes "expired and authorizationState says unused" final for the reconciler.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from blockrun_mcp.sandbox.state import SandboxState, Settlement, VerifiedPayment, checksum
from blockrun_mcp.x402.codec import decode_header, encode_header
from blockrun_mcp.x402.eip3009 import signable_transfer
from blockrun_mcp.x402.errors import MalformedTerms

INVALID = "PAYMENT_INVALID"
UNFUNDED = "PAYMENT_UNFUNDED"
REPLAY = "PAYMENT_REPLAY"

# A signer's clock may run a little ahead of ours; allow this much past now + maxTimeoutSeconds.
CLOCK_SKEW_SECONDS = 60

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_UINT = re.compile(r"^[0-9]{1,78}$")


class PaymentRejection(Exception):
    """A payment the gateway refuses; answered as HTTP 402 with `body()`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": "Payment verification failed", "code": self.code, "message": self.message}


def _invalid(message: str) -> PaymentRejection:
    return PaymentRejection(INVALID, message)


def payment_header(headers: Any, *, v1: bool) -> str | None:
    """The payment header a server of this version reads. A v1 server knows only X-PAYMENT."""
    if v1:
        return headers.get("x-payment")
    return headers.get("payment-signature") or headers.get("x-payment")


def decode_payment(value: str) -> Any:
    try:
        return decode_header(value, "payment header")
    except MalformedTerms as exc:
        raise _invalid(f"the payment header could not be decoded: {exc.detail}") from None


def _authorization(payload: Any) -> tuple[str, dict[str, str]]:
    """The signature and authorization of a payload, every field checked for shape."""
    if not isinstance(payload, dict):
        raise _invalid("the payment has no 'payload' object")
    signature = payload.get("signature")
    authorization = payload.get("authorization")
    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        raise _invalid("payload.signature is not a 65-byte 0x-prefixed hex signature")
    if not isinstance(authorization, dict):
        raise _invalid("payload.authorization is missing")
    fields = ("from", "to", "value", "validAfter", "validBefore", "nonce")
    for name in fields:
        if not isinstance(authorization.get(name), str):
            raise _invalid(f"authorization.{name} is missing or not a string")
    for name in ("from", "to"):
        if not _ADDRESS.match(authorization[name]):
            raise _invalid(f"authorization.{name} is not an address")
    for name in ("value", "validAfter", "validBefore"):
        if not _UINT.match(authorization[name]):
            raise _invalid(f"authorization.{name} is not a decimal integer string")
    if not _NONCE.match(authorization["nonce"]):
        raise _invalid("authorization.nonce is not 32 bytes of 0x-prefixed hex")
    return signature, {name: authorization[name] for name in fields}


def _check_signer(state: SandboxState, signature: str, authorization: dict[str, str]) -> None:
    # Always the pinned domain of this gateway's network: a signature made over any other
    # domain (wrong name, chain or contract) would never settle on chain, so it fails here too.
    from eth_account import Account  # slow import: only when a payment arrives

    signable = signable_transfer(state.network_spec, authorization)
    try:
        signer = Account.recover_message(signable, signature=signature)
    except Exception as exc:  # eth_account raises several types for malformed signatures
        raise _invalid(f"the signature could not be recovered ({type(exc).__name__})") from None
    if signer.lower() != authorization["from"].lower():
        raise _invalid(
            "the signature does not recover to authorization.from under this gateway's "
            f"EIP-712 domain ({state.network_spec.domain_name!r}, chain "
            f"{state.network_spec.chain_id})"
        )


def _check_window(authorization: dict[str, str], timeout: int, now: int) -> None:
    valid_after = int(authorization["validAfter"])
    valid_before = int(authorization["validBefore"])
    if valid_after > now:
        raise _invalid(f"authorization.validAfter {valid_after} is in the future (now {now})")
    if valid_before <= now:
        raise _invalid(f"the authorization expired: validBefore {valid_before} <= now {now}")
    if valid_before > now + timeout + CLOCK_SKEW_SECONDS:
        raise _invalid(
            f"authorization.validBefore {valid_before} is later than now + maxTimeoutSeconds "
            f"({timeout})"
        )


def _matching_issued_v2(state: SandboxState, accepted: dict[str, Any], key: str) -> None:
    issued = state.issued_for(accepted, 2, key)
    if issued is None:
        raise _invalid("'accepted' does not match any payment requirement this gateway issued")
    if not issued:
        raise _invalid("'accepted' was issued for a different request (endpoint or body)")


def _verify_v2(state: SandboxState, decoded: dict[str, Any], key: str, now: int) -> VerifiedPayment:
    spec = state.network_spec
    accepted = decoded.get("accepted")
    if not isinstance(accepted, dict):
        raise _invalid("the payment has no 'accepted' requirement")
    signature, authorization = _authorization(decoded.get("payload"))
    _matching_issued_v2(state, accepted, key)
    if accepted.get("scheme") != "exact":
        raise _invalid(f"scheme {accepted.get('scheme')!r} is not 'exact'")
    if accepted.get("network") != spec.caip2:
        raise _invalid(f"network {accepted.get('network')!r} is not this gateway's {spec.caip2}")
    if str(accepted.get("asset", "")).lower() != spec.usdc.lower():
        raise _invalid(f"asset {accepted.get('asset')!r} is not USDC on {spec.caip2}")
    extra = accepted.get("extra") or {}
    if extra.get("name") != spec.domain_name or extra.get("version") != spec.domain_version:
        raise _invalid(
            f"extra {extra!r} is not USDC's EIP-712 domain on {spec.caip2} "
            f"(name {spec.domain_name!r}, version {spec.domain_version!r})"
        )
    _check_signer(state, signature, authorization)
    pay_to = str(accepted.get("payTo", ""))
    if authorization["to"].lower() != pay_to.lower():
        raise _invalid(f"authorization.to {authorization['to']} is not payTo {pay_to}")
    if authorization["value"] != str(accepted.get("amount")):
        raise _invalid(
            f"authorization.value {authorization['value']} is not the amount "
            f"{accepted.get('amount')}"
        )
    _check_window(authorization, int(accepted.get("maxTimeoutSeconds", 0)), now)
    return VerifiedPayment(
        version=2,
        payer=checksum(authorization["from"]),
        pay_to=checksum(pay_to),
        amount_atomic=int(authorization["value"]),
        nonce=authorization["nonce"].lower(),
        network=spec.caip2,
        valid_before=int(authorization["validBefore"]),
        payload=decoded,
    )


def _verify_v1(state: SandboxState, decoded: dict[str, Any], key: str, now: int) -> VerifiedPayment:
    spec = state.network_spec
    if decoded.get("scheme") != "exact":
        raise _invalid(f"scheme {decoded.get('scheme')!r} is not 'exact'")
    if decoded.get("network") != spec.name:
        raise _invalid(f"network {decoded.get('network')!r} is not this gateway's {spec.name!r}")
    signature, authorization = _authorization(decoded.get("payload"))
    with state.lock:
        issued = [i.requirement for i in state.issued if i.version == 1 and i.request_key == key]
    if not issued:
        raise _invalid("no x402 v1 payment requirement was issued for this request")
    matching = [
        r
        for r in issued
        if r["payTo"].lower() == authorization["to"].lower()
        and r["maxAmountRequired"] == authorization["value"]
    ]
    if not matching:
        latest = issued[-1]
        if latest["payTo"].lower() != authorization["to"].lower():
            raise _invalid(f"authorization.to {authorization['to']} is not payTo {latest['payTo']}")
        raise _invalid(
            f"authorization.value {authorization['value']} is not maxAmountRequired "
            f"{latest['maxAmountRequired']}"
        )
    requirement = matching[-1]
    _check_signer(state, signature, authorization)
    _check_window(authorization, int(requirement["maxTimeoutSeconds"]), now)
    return VerifiedPayment(
        version=1,
        payer=checksum(authorization["from"]),
        pay_to=checksum(requirement["payTo"]),
        amount_atomic=int(authorization["value"]),
        nonce=authorization["nonce"].lower(),
        network=spec.name,
        valid_before=int(authorization["validBefore"]),
        payload=decoded,
    )


def verify(
    state: SandboxState, decoded: Any, key: str, *, v1: bool, now: int | None = None
) -> VerifiedPayment:
    """Check a decoded payment against the terms issued for request `key`; raise if it fails."""
    now = state.chain_now() if now is None else now
    if not isinstance(decoded, dict):
        raise _invalid("the payment header is not a JSON object")
    expected = 1 if v1 else 2
    if decoded.get("x402Version") != expected:
        raise _invalid(f"x402Version must be {expected}, got {decoded.get('x402Version')!r}")
    if v1:
        return _verify_v1(state, decoded, key, now)
    return _verify_v2(state, decoded, key, now)


def tx_hash_for(nonce: str) -> str:
    """A deterministic stand-in transaction hash, so the same nonce always names the same tx."""
    return (
        "0x" + hashlib.sha256(f"blockrun-sandbox-settlement:{nonce.lower()}".encode()).hexdigest()
    )


def _check_spendable_locked(
    state: SandboxState, payment: VerifiedPayment, job_id: str | None
) -> None:
    # Keyed by authorizer and nonce, as USDC's authorizationState is: a nonce is unique only
    # per authorizer, and /rpc must answer exactly what this check enforced.
    if (payment.payer.lower(), payment.nonce) in state.settled_authorizations:
        raise PaymentRejection(REPLAY, f"nonce {payment.nonce} was already used by a settlement")
    for job in state.jobs.values():
        if job.id != job_id and same_authorization(job.payment, payment) and job.status != "failed":
            raise PaymentRejection(
                REPLAY, f"nonce {payment.nonce} already pays for video job {job.id}"
            )
    balance = state.balances.get(payment.payer, state.starting_balance_atomic)
    if balance < payment.amount_atomic:
        raise PaymentRejection(
            UNFUNDED,
            f"{payment.payer} holds {balance} atomic USDC, less than the {payment.amount_atomic} "
            "this payment needs",
        )


def same_authorization(one: VerifiedPayment, other: VerifiedPayment) -> bool:
    return one.nonce == other.nonce and one.payer.lower() == other.payer.lower()


def check_spendable(
    state: SandboxState, payment: VerifiedPayment, *, job_id: str | None = None
) -> None:
    """The spend-time checks without spending: used when a video job is submitted."""
    with state.lock:
        _check_spendable_locked(state, payment, job_id)


def settle(
    state: SandboxState,
    payment: VerifiedPayment,
    endpoint: str,
    *,
    job_id: str | None = None,
    now: float | None = None,
) -> Settlement:
    """Spend the authorization: at most once per authorizer and nonce, only if funded and still
    valid.

    `now` (tests only) stands for both clocks; by default expiry is judged by the chain clock,
    read under the same lock as the spend, so no settlement can slip past a clock change.
    """
    with state.lock:
        chain_now = state.chain_now_locked() if now is None else int(now)
        if payment.valid_before <= chain_now:
            raise _invalid(
                f"the authorization expired before it could be settled: validBefore "
                f"{payment.valid_before} <= chain time {chain_now}"
            )
        _check_spendable_locked(state, payment, job_id)
        balance = state.balances.get(payment.payer, state.starting_balance_atomic)
        state.balances[payment.payer] = balance - payment.amount_atomic
        state.settled_nonces.add(payment.nonce)
        state.settled_authorizations.add((payment.payer.lower(), payment.nonce))
        settlement = Settlement(
            nonce=payment.nonce,
            payer=payment.payer,
            amount_atomic=payment.amount_atomic,
            tx_hash=tx_hash_for(payment.nonce),
            endpoint=endpoint,
            time=time.time() if now is None else now,
            network=payment.network,
            pay_to=payment.pay_to,
        )
        state.settlements.append(settlement)
        return settlement


def receipt_headers(
    settlement: Settlement, *, version: int, claimed_amount: str | None = None
) -> dict[str, str]:
    """PAYMENT-RESPONSE + X-Payment-Receipt for v2; the legacy X-PAYMENT-RESPONSE for v1.

    `claimed_amount` (the receipt_amount fault) is what a lying v2 receipt says was charged.
    """
    receipt = {
        "success": True,
        "transaction": settlement.tx_hash,
        "network": settlement.network,
        "payer": settlement.payer,
    }
    if version == 1:
        return {"X-PAYMENT-RESPONSE": encode_header(receipt)}
    receipt["amount"] = str(settlement.amount_atomic) if claimed_amount is None else claimed_amount
    return {"PAYMENT-RESPONSE": encode_header(receipt), "X-Payment-Receipt": settlement.tx_hash}
