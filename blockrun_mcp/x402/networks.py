"""The networks we sign for, pinned to the letter.

A requirement's asset and EIP-712 domain must match this table: a wrong domain name yields a
signature that looks valid and never settles, so anything else is refused before signing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkSpec:
    name: str  # the short name ("base"), also the x402 v1 network name
    caip2: str
    chain_id: int
    usdc: str  # the USDC contract, EIP-712 verifyingContract
    domain_name: str
    domain_version: str

    def eip712_domain(self) -> dict[str, object]:
        return {
            "name": self.domain_name,
            "version": self.domain_version,
            "chainId": self.chain_id,
            "verifyingContract": self.usdc,
        }


BASE = NetworkSpec(
    name="base",
    caip2="eip155:8453",
    chain_id=8453,
    usdc="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    domain_name="USD Coin",
    domain_version="2",
)
BASE_SEPOLIA = NetworkSpec(
    name="base-sepolia",
    caip2="eip155:84532",
    chain_id=84532,
    usdc="0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    domain_name="USDC",
    domain_version="2",
)

NETWORKS: dict[str, NetworkSpec] = {spec.name: spec for spec in (BASE, BASE_SEPOLIA)}


def network_by_name(name: str) -> NetworkSpec:
    try:
        return NETWORKS[name]
    except KeyError:
        known = ", ".join(NETWORKS)
        raise ValueError(f"unknown network {name!r}: use one of {known}") from None


def network_for_id(network_id: str) -> NetworkSpec | None:
    """The spec for a CAIP-2 id (v2) or a v1 network name, or None."""
    for spec in NETWORKS.values():
        if network_id in (spec.caip2, spec.name):
            return spec
    return None
