"""Money in one place: USDC's atomic units and dollars, both ways, and how amounts are shown.

USDC has six decimals: 1 USD is 1,000,000 atomic units. Every amount that is signed, reserved
or booked is an int of atomic units; dollars (floats) are for limits users write and for what
is shown. Conversions happen here and nowhere else.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blockrun_mcp.x402.networks import NetworkSpec

USDC_DECIMALS = 6
ATOMIC_PER_USD = 10**USDC_DECIMALS

# ASCII digits only: str.isdigit() and int() also take "٣", "３" and "²", which no gateway means
# as an amount, and a uint256 has at most 78 decimal digits.
_ATOMIC = re.compile(r"[0-9]{1,78}")


def usd_to_atomic(usd: float) -> int:
    """An amount a person wrote (a limit, a threshold): exact to the micro-dollar it names."""
    return round(usd * ATOMIC_PER_USD)


def price_to_atomic(usd: Decimal | float) -> int:
    """A price or an estimate, as the gateway turns its formula into a quote: in exact decimal
    arithmetic, rounded UP to whole atomic units (a gateway never undercharges), so a client
    computing the same formula lands on exactly the amount it is asked to sign."""
    exact = usd if isinstance(usd, Decimal) else Decimal(repr(usd))
    return math.ceil(exact * ATOMIC_PER_USD)


def atomic_to_usd(atomic: int) -> float:
    """Dollars, rounded to the micro-dollar an atomic unit is (no float noise in results)."""
    return round(atomic / ATOMIC_PER_USD, USDC_DECIMALS)


def parse_atomic(text: object) -> int | None:
    """A decimal string of atomic units as an int, or None unless it is plain ASCII digits."""
    if not isinstance(text, str) or not _ATOMIC.fullmatch(text):
        return None
    return int(text)


def usd_text(atomic: int, *, sign: bool = True, trim: bool = False) -> str:
    """The one way an amount is written: $0.084000, every decimal as it was signed (exact, from
    the integer: no float in between). `sign=False` for a table's column of numbers;
    `trim=True` drops trailing zeros past the cents, for figures people skim ($0.084, $5.00)."""
    whole, micro = divmod(abs(atomic), ATOMIC_PER_USD)
    decimals = f"{micro:0{USDC_DECIMALS}d}"
    if trim:
        decimals = decimals.rstrip("0").ljust(2, "0")
    text = f"{whole}.{decimals}"
    return ("-" if atomic < 0 else "") + ("$" if sign else "") + text


def dollars(usd: float) -> str:
    """An amount a person wrote (a limit), as they read it: $0.50, $0.005, $5.00."""
    return usd_text(usd_to_atomic(usd), trim=True)


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


def parse_usd_text(text: str) -> float:
    """A dollar amount a person wrote (a budget, a limit), or ValueError saying what is wrong with
    it and what to write instead; the message starts with the text given, for the caller to
    prefix with where it was written.

    Only ASCII digits with at most one decimal point ("5", "0.50", "5.", ".5"), surrounding
    whitespace ignored. float() takes more, and some of it reads as another amount than it
    shows: "0_5" is 5.0, "５" and "٥" are 5.0, "1e3" is 1000, "inf" and "nan" are no limit at
    all; and a sign ("-0", "+1") has no place in a limit of 0 or more.
    """
    amount = text.strip()
    if re.fullmatch(r"[0-9]+\.?[0-9]*|\.[0-9]+", amount):
        value = float(amount)
        if value != float("inf"):
            return value
        problem = "it is too large"
    elif not amount:
        problem = "it is empty"
    elif re.fullmatch(r"[0-9.]+[eE][0-9.+-]+", amount):
        problem = "an exponent is not allowed"
    elif any(char in "+-\u2212" for char in amount):
        problem = "a sign is not allowed: amounts are 0 or more"
    elif "_" in amount:
        problem = "an underscore is not allowed (Python reads 0_5 as 5)"
    elif amount.lower() in ("inf", "infinity", "nan"):
        problem = "infinity and NaN are no amount"
    elif foreign := [c for c in dict.fromkeys(amount) if c.isdigit() and c not in "0123456789"]:
        problem = "only the ASCII digits 0-9 are read, not " + ", ".join(map(repr, foreign))
    elif any(char.isspace() for char in amount):
        problem = "a space inside the amount is not allowed"
    elif "," in amount:
        problem = "a comma is not allowed: no thousands separator, and a point for decimals"
    elif amount.count(".") > 1:
        problem = "there is more than one decimal point"
    elif not any(char in "0123456789" for char in amount):
        problem = "it has no digit"
    else:
        problem = "only the digits 0-9 and one decimal point are allowed"
    raise ValueError(
        f"{amount!r} is not a number of US dollars ({problem}); write a dollar amount of 0 "
        "or more in the digits 0-9 with at most one decimal point, e.g. 1.00 or 0.5"
    )
