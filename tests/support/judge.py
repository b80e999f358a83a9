"""An independent judge of the payments we sign: the official x402 SDK's exact-EVM verifier.

It runs offline with a stand-in facilitator signer that reports the payer as an EOA (no code),
the USDC contract as deployed, and lets the simulated transfer succeed. Everything else
(domain, chain id, recipient, amount, validity window, signature) is the SDK's own check.
"""

from __future__ import annotations

from typing import Any

from x402.http.utils import decode_payment_signature_header
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme
from x402.schemas import PaymentRequirements

from blockrun_mcp.x402.networks import NETWORKS


class _OfflineChain:
    def __init__(self, payer: str | None = None) -> None:
        self._payer = payer
        self._contracts = {spec.usdc.lower() for spec in NETWORKS.values()}

    def get_addresses(self) -> list[str]:
        return ["0x000000000000000000000000000000000000dEaD"]

    def get_code(self, address: str) -> bytes:
        return b"\x60\x80" if address.lower() in self._contracts else b""

    def read_contract(self, address: str, abi: Any, function_name: str, *args: Any) -> Any:
        return None

    def verify_typed_data(self, *args: Any, **kwargs: Any) -> bool:  # only for smart wallets
        return False


def verify_header(header_value: str, requirements: dict[str, Any]) -> tuple[bool, str | None]:
    """(is_valid, invalid_reason) for a PAYMENT-SIGNATURE header against the terms issued."""
    payload = decode_payment_signature_header(header_value)
    result = ExactEvmFacilitatorScheme(_OfflineChain()).verify(
        payload, PaymentRequirements.model_validate(requirements)
    )
    return bool(result.is_valid), result.invalid_reason


def assert_valid(header_value: str, requirements: dict[str, Any]) -> None:
    ok, reason = verify_header(header_value, requirements)
    assert ok, f"x402 SDK rejected our payment: {reason}"


def verify_v1_header(header_value: str, requirements: dict[str, Any]) -> tuple[bool, str | None]:
    """The same judgement for a version-1 X-PAYMENT header against v1 terms."""
    import base64
    import json

    from x402.mechanisms.evm.exact.v1.facilitator import ExactEvmSchemeV1
    from x402.schemas.v1 import PaymentPayloadV1, PaymentRequirementsV1

    payload = PaymentPayloadV1.model_validate(json.loads(base64.b64decode(header_value)))
    result = ExactEvmSchemeV1(_OfflineChain()).verify(
        payload, PaymentRequirementsV1.model_validate(requirements)
    )
    return bool(result.is_valid), result.invalid_reason
