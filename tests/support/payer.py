"""Shared helpers for tests that pay the sandbox with our own payer."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from blockrun_mcp.gateway import GatewayClient, new_http_client
from blockrun_mcp.gateway_models import ChatMessage, ChatRequest
from blockrun_mcp.money import usd_to_atomic
from blockrun_mcp.x402.models import SettlementReceipt
from blockrun_mcp.x402.networks import BASE
from blockrun_mcp.x402.payer import PaymentHold, Quote, X402Payer
from blockrun_mcp.x402.policy import SigningPolicy
from blockrun_mcp.x402.signer import SignedPayment
from tests.support.judge import verify_header, verify_v1_header

CHEAP_MODEL = "openai/gpt-5-mini"
FREE_MODEL = "nvidia/gpt-oss-120b"


def chat_request(text: str = "Say hello", model: str = CHEAP_MODEL, **kw: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=[ChatMessage(role="user", content=text)], **kw)


@dataclass
class RecordingHold:
    """A hold that records what the payer told it, in order."""

    quote: Quote
    events: list[str] = field(default_factory=list)
    payment: SignedPayment | None = None
    receipt: SettlementReceipt | None = None

    async def signed(self, payment: SignedPayment) -> None:
        self.events.append("signed")
        self.payment = payment

    async def settle(self, receipt: SettlementReceipt | None) -> None:
        self.events.append("settle")
        self.receipt = receipt

    async def record_claim(self, claim: str) -> None:
        self.events.append(f"claim:{claim}")

    async def release(self, reason: str) -> None:
        self.events.append(f"release:{reason}")


@dataclass
class HoldRecorder:
    holds: list[RecordingHold] = field(default_factory=list)

    async def __call__(self, quote: Quote) -> PaymentHold:
        hold = RecordingHold(quote)
        self.holds.append(hold)
        return hold


def make_gateway(
    base_url: str, account: Any, *, cap_usd: float = 0.50, **payer_kw: Any
) -> GatewayClient:
    payer = X402Payer(
        lambda: account,
        SigningPolicy(network=BASE, max_atomic=usd_to_atomic(cap_usd)),
        retry_delay_seconds=0.05,
        **payer_kw,
    )
    return GatewayClient(base_url, payer, new_http_client())


def decode(header_value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(header_value))


def assert_every_payment_valid(state: Any) -> None:
    """Every payment the sandbox received passes the x402 SDK's verifier against its own terms."""
    assert state.payments_seen, "no payment reached the sandbox"
    for payment in state.payments_seen:
        header = base64.b64encode(json.dumps(payment).encode()).decode()
        if payment.get("x402Version") == 1:
            continue  # judged separately by verify_v1_header where v1 is tested
        issued = [t for t in state.issued_terms if t == payment["accepted"]]
        assert issued, "a payment echoed terms the sandbox never issued"
        ok, reason = verify_header(header, issued[0])
        assert ok, f"x402 SDK rejected a payment we signed: {reason}"


__all__ = ["assert_every_payment_valid", "verify_header", "verify_v1_header"]
