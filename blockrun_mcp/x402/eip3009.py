"""EIP-3009 TransferWithAuthorization typed data, shared by the signer and the sandbox's verifier."""

from __future__ import annotations

from typing import Any

from blockrun_mcp.x402.networks import NetworkSpec

TRANSFER_WITH_AUTHORIZATION_TYPES: dict[str, list[dict[str, str]]] = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}


def signable_transfer(network: NetworkSpec, authorization: dict[str, str]) -> Any:
    """The EIP-712 message for an authorization whose values are strings, as on the wire."""
    from eth_account.messages import encode_typed_data  # slow import: only when paying

    message = {
        "from": authorization["from"],
        "to": authorization["to"],
        "value": int(authorization["value"]),
        "validAfter": int(authorization["validAfter"]),
        "validBefore": int(authorization["validBefore"]),
        "nonce": bytes.fromhex(authorization["nonce"].removeprefix("0x")),
    }
    return encode_typed_data(
        domain_data=network.eip712_domain(),
        message_types=TRANSFER_WITH_AUTHORIZATION_TYPES,
        message_data=message,
    )
