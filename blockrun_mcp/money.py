"""Money in one place: USDC's atomic units and dollars, both ways, and how amounts are shown.

USDC has six decimals: 1 USD is 1,000,000 atomic units. Every amount that is signed, reserved
or booked is an int of atomic units; dollars (floats) are for limits users write and for what
is shown. Conversions happen here and nowhere else.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blockrun_mcp.x402.networks import NetworkSpec

USDC_DECIMALS = 6
ATOMIC_PER_USD = 10**USDC_DECIMALS

# ASCII digits only: str.isdigit() and int() also take "٣", "３" and "²", which no gateway means
# as an amount, and a uint256 has at most 78 decimal digits.
_ATOMIC = re.compile(r"[0-9]{1,78}")


def usd_to_atomic(usd: float) -> int:
    return round(usd * ATOMIC_PER_USD)


def atomic_to_usd(atomic: int) -> float:
    """Dollars, rounded to the micro-dollar an atomic unit is (no float noise in results)."""
    return round(atomic / ATOMIC_PER_USD, USDC_DECIMALS)


def parse_atomic(text: object) -> int | None:
    """A decimal string of atomic units as an int, or None unless it is plain ASCII digits."""
    if not isinstance(text, str) or not _ATOMIC.fullmatch(text):
        return None
    return int(text)


def usd_text(atomic: int) -> str:
    """An exact amount for sentences: $0.084000 (all six decimals, as it was signed)."""
    return f"${atomic / ATOMIC_PER_USD:.6f}"


def usdc_balance_text(atomic: int) -> str:
    """A balance as people read one: 12.5 USDC, 0 USDC."""
    return f"{atomic / ATOMIC_PER_USD:,.6f}".rstrip("0").rstrip(".") + " USDC"


def funding_hint(network: NetworkSpec, address: str) -> str:
    """How to put USDC into the wallet, the same words in the tools, the CLI and doctor."""
    if network.name == "base":
        return (
            f"Send USDC on Base ({network.caip2}) to {address}, from an exchange or wallet that "
            "withdraws to Base. No ETH is needed: payments are gasless USDC authorizations."
        )
    return (
        f"Get test USDC on Base Sepolia ({network.caip2}) for {address} at "
        "https://faucet.circle.com. No ETH is needed: payments are gasless USDC authorizations."
    )
