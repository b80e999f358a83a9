"""Which payment requirements we are willing to sign. Everything else is refused, unsigned."""

from __future__ import annotations

from dataclasses import dataclass

from blockrun_mcp.money import usd_text
from blockrun_mcp.x402.errors import PaymentRefused
from blockrun_mcp.x402.models import PaymentRequired, PaymentRequirement
from blockrun_mcp.x402.networks import NetworkSpec, network_for_id

MAX_TIMEOUT_SECONDS = 3600
# (limit name, the words its problem says): see `choose`.
LIMITS = (
    ("per-call cap", "per-call cap"),
    ("network", "is not the configured"),
    ("payee", "pinned payee"),
)


@dataclass(frozen=True)
class SigningPolicy:
    """Only "exact", only on `network`, only its pinned USDC and domain, only up to `max_atomic`,
    and only to `pay_to` when one is pinned."""

    network: NetworkSpec
    max_atomic: int
    max_timeout_seconds: int = MAX_TIMEOUT_SECONDS
    pay_to: str | None = None

    def problem_with(self, requirement: PaymentRequirement) -> str | None:
        """Why this requirement must not be signed, or None when it may be."""
        if requirement.scheme != "exact":
            return f'scheme "{requirement.scheme}" is not "exact" (only exact payments are signed)'
        spec = network_for_id(requirement.network)
        if spec is None or spec.name != self.network.name:
            return (
                f'network "{requirement.network}" is not the configured {self.network.name} '
                f"({self.network.caip2})"
            )
        if requirement.asset.lower() != self.network.usdc.lower():
            return f"asset {requirement.asset} is not USDC on {self.network.name}"
        extra = requirement.extra or {}
        if extra.get("name") != self.network.domain_name:
            return (
                f"EIP-712 domain name {extra.get('name')!r} is not {self.network.domain_name!r} "
                f"(USDC on {self.network.name})"
            )
        if str(extra.get("version")) != self.network.domain_version:
            return (
                f"EIP-712 domain version {extra.get('version')!r} is not "
                f"{self.network.domain_version!r}"
            )
        amount = requirement.amount_atomic
        if amount is None:
            return f"amount {requirement.amount[:40]!r} is not a whole number of atomic units"
        if amount <= 0:
            return "amount is zero"
        if amount > self.max_atomic:
            return (
                f"amount {usd_text(amount)} is above the per-call cap {usd_text(self.max_atomic)}"
            )
        if not 0 < requirement.maxTimeoutSeconds <= self.max_timeout_seconds:
            return (
                f"maxTimeoutSeconds {requirement.maxTimeoutSeconds} is outside 1..."
                f"{self.max_timeout_seconds}"
            )
        if not _is_address(requirement.payTo):
            return f"payTo {requirement.payTo[:60]!r} is not an address"
        if self.pay_to is not None and requirement.payTo.lower() != self.pay_to.lower():
            return f"payTo {requirement.payTo} is not the pinned payee {self.pay_to}"
        return None

    def choose(self, terms: PaymentRequired) -> PaymentRequirement:
        """The cheapest acceptable requirement (the first of equals); PaymentRefused naming every
        reason otherwise. Cheapest, not first: a gateway listing a dearer option first for the
        same request must not be paid more than it also accepts."""
        problems: list[str] = list(terms.unreadable)
        acceptable: list[tuple[int, PaymentRequirement]] = []
        for requirement in terms.accepts:
            problem = self.problem_with(requirement)
            if problem is None:
                acceptable.append((requirement.amount_atomic or 0, requirement))
            else:
                problems.append(problem)
        if acceptable:
            return min(acceptable, key=lambda pair: pair[0])[1]
        # When every option failed the same way, the refusal names that limit for the caller.
        limit = next((name for name, marker in LIMITS if all(marker in p for p in problems)), None)
        raise PaymentRefused("; ".join(dict.fromkeys(problems)), limit=limit)


def _is_address(value: str) -> bool:
    body = value.removeprefix("0x")
    return (
        value.startswith("0x")
        and len(body) == 40
        and all(c in "0123456789abcdefABCDEF" for c in body)
    )
