"""An x402 v2 client for httpx and httpx2: pay HTTP 402 challenges with EIP-3009 USDC on Base.

    payer = X402Payer(lambda: account, SigningPolicy(BASE, max_atomic=100_000))  # $0.10 cap
    paid = await payer.send(client, client.build_request("POST", url, json=body))

Only the `exact` scheme is signed, only on the policy's network, for USDC's pinned contract and
EIP-712 domain, up to `max_atomic`. A signed request that fails in transit is resent with the
SAME signature, never a new one. Pass `approve=` to check each quote and keep your own record
of each payment (a `PaymentHold`). Nothing here imports MCP or reads environment variables.
"""

from blockrun_mcp.x402.codec import parse_payment_required, read_receipt
from blockrun_mcp.x402.errors import (
    AnswerTooLarge,
    MalformedTerms,
    PaidRequestFailed,
    PaymentError,
    PaymentInvalid,
    PaymentRefused,
    PaymentRejected,
    PaymentReplay,
    PaymentUnfunded,
    TermsTimeout,
)
from blockrun_mcp.x402.models import PaymentRequired, PaymentRequirement, SettlementReceipt
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA, NetworkSpec, network_by_name
from blockrun_mcp.x402.payer import (
    Approve,
    PaidResponse,
    PaymentHold,
    Quote,
    X402Payer,
    approve_everything,
    refuse_payment,
)
from blockrun_mcp.x402.policy import SigningPolicy
from blockrun_mcp.x402.signer import SignedPayment, sign_payment

__all__ = [
    "BASE",
    "BASE_SEPOLIA",
    "AnswerTooLarge",
    "Approve",
    "MalformedTerms",
    "NetworkSpec",
    "PaidRequestFailed",
    "PaidResponse",
    "PaymentError",
    "PaymentHold",
    "PaymentInvalid",
    "PaymentRefused",
    "PaymentRejected",
    "PaymentReplay",
    "PaymentRequired",
    "PaymentRequirement",
    "PaymentUnfunded",
    "Quote",
    "SettlementReceipt",
    "SignedPayment",
    "SigningPolicy",
    "TermsTimeout",
    "X402Payer",
    "approve_everything",
    "network_by_name",
    "parse_payment_required",
    "read_receipt",
    "refuse_payment",
    "sign_payment",
]
