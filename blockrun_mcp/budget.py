"""Budgets: per call, per session and per UTC day, enforced before anything is signed.

The budget plugs into the payer's approval hook. It refuses a quote over a limit or far above
our own estimate, reserves the quote atomically in the ledger, and learns from the payer how
the payment ended. It does no I/O except through the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockrun_mcp.x402.errors import PaymentRefused, ReservationLost
from blockrun_mcp.x402.networks import atomic_to_usd, usd_to_atomic

if TYPE_CHECKING:
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.x402.models import SettlementReceipt
    from blockrun_mcp.x402.payer import ApproveHook, PaymentHold, Quote
    from blockrun_mcp.x402.signer import SignedPayment

# A quote this many times our estimate, and this much above it, is refused as suspicious.
SUSPICIOUS_RATIO = 1.5
SUSPICIOUS_MARGIN_USD = 0.02


@dataclass(frozen=True)
class Limits:
    session_usd: float
    per_call_usd: float
    daily_usd: float | None


@dataclass(frozen=True)
class BudgetStatus:
    session_limit_usd: float
    session_spent_usd: float
    budget_remaining_usd: float
    per_call_cap_usd: float
    daily_limit_usd: float | None
    daily_spent_usd: float | None


def usd(amount_atomic: int) -> float:
    return round(atomic_to_usd(amount_atomic), 6)


class SessionBudget:
    """The budget of one MCP session, over the ledger shared by every session."""

    def __init__(self, ledger: Ledger, session: str, limits: Limits, network: str) -> None:
        self.ledger = ledger
        self.session = session
        self.configured = limits
        self.session_limit_usd = limits.session_usd
        self.network = network

    # --- limits --------------------------------------------------------------------------

    def lower_session_limit(self, new_limit_usd: float) -> float:
        """The agent may lower its own session limit, never raise it above the configured one."""
        if new_limit_usd < 0:
            raise ValueError("A session limit cannot be negative.")
        if new_limit_usd > self.configured.session_usd:
            raise ValueError(
                f"The session limit cannot be raised above the configured "
                f"${self.configured.session_usd:.2f}; the user sets it with "
                "BLOCKRUN_SESSION_BUDGET_USD."
            )
        self.session_limit_usd = new_limit_usd
        return new_limit_usd

    def status(self) -> BudgetStatus:
        spent = self.ledger.session_spent_atomic(self.session)
        limit_atomic = usd_to_atomic(self.session_limit_usd)
        remaining = max(0, limit_atomic - spent)
        daily_spent = None
        if self.configured.daily_usd is not None:
            daily_spent_atomic = self.ledger.day_spent_atomic()
            daily_spent = usd(daily_spent_atomic)
            remaining = min(
                remaining, max(0, usd_to_atomic(self.configured.daily_usd) - daily_spent_atomic)
            )
        return BudgetStatus(
            session_limit_usd=self.session_limit_usd,
            session_spent_usd=usd(spent),
            budget_remaining_usd=usd(remaining),
            per_call_cap_usd=self.configured.per_call_usd,
            daily_limit_usd=self.configured.daily_usd,
            daily_spent_usd=daily_spent,
        )

    def remaining_usd(self) -> float:
        return self.status().budget_remaining_usd

    # --- the payer's hook ----------------------------------------------------------------

    def approver(self, *, tool: str, model: str, estimate_usd: float | None) -> ApproveHook:
        """An approval hook for one tool call: check the quote, then reserve it."""

        async def approve(quote: Quote) -> PaymentHold:
            self.check_quote(quote.amount_atomic, estimate_usd)
            return self.reserve(quote.amount_atomic, tool=tool, model=model)

        return approve

    def check_quote(self, amount_atomic: int, estimate_usd: float | None) -> None:
        amount_usd = atomic_to_usd(amount_atomic)
        if amount_atomic > usd_to_atomic(self.configured.per_call_usd):
            raise PaymentRefused(
                f"the quote ${amount_usd:.6f} is above the per-call cap "
                f"${self.configured.per_call_usd:.2f} (raise BLOCKRUN_MAX_PER_CALL_USD to allow it)",
                limit="per-call cap",
            )
        if (
            estimate_usd is not None
            and amount_usd > estimate_usd * SUSPICIOUS_RATIO
            and amount_usd - estimate_usd > SUSPICIOUS_MARGIN_USD
        ):
            raise PaymentRefused(
                f"the gateway quoted ${amount_usd:.6f}, more than {SUSPICIOUS_RATIO}x the local "
                f"estimate ${estimate_usd:.6f}; refused as suspicious (check BLOCKRUN_API_URL)",
                limit="suspicious quote",
            )

    def reserve(self, amount_atomic: int, *, tool: str, model: str) -> LedgerHold:
        from blockrun_mcp.ledger import LimitExceeded

        try:
            payment_id = self.ledger.reserve(
                session=self.session,
                tool=tool,
                model=model,
                amount_atomic=amount_atomic,
                network=self.network,
                session_limit_atomic=usd_to_atomic(self.session_limit_usd),
                daily_limit_atomic=(
                    None
                    if self.configured.daily_usd is None
                    else usd_to_atomic(self.configured.daily_usd)
                ),
            )
        except LimitExceeded as exc:
            raise PaymentRefused(
                _limit_message(exc.limit, amount_atomic, exc.remaining_atomic), limit=exc.limit
            ) from None
        return LedgerHold(self.ledger, payment_id, amount_atomic)


def _limit_message(limit: str, amount_atomic: int, remaining_atomic: int) -> str:
    how = (
        "raise BLOCKRUN_DAILY_BUDGET_USD or wait for the next UTC day"
        if limit == "daily budget"
        else "raise BLOCKRUN_SESSION_BUDGET_USD and restart the server, or start a new session"
    )
    return (
        f"this call's quote ${atomic_to_usd(amount_atomic):.6f} would exceed the {limit}: "
        f"${atomic_to_usd(remaining_atomic):.6f} is left; {how}"
    )


class LedgerHold:
    """One reservation in the ledger, moved along by the payer (implements PaymentHold)."""

    def __init__(self, ledger: Ledger, payment_id: int, amount_atomic: int) -> None:
        self.ledger = ledger
        self.payment_id = payment_id
        self.amount_atomic = amount_atomic
        self.settled_atomic: int | None = None
        self.tx_hash: str | None = None
        self.released = False

    async def signed(self, payment: SignedPayment) -> None:
        if not self.ledger.mark_signed(self.payment_id, payment.nonce):
            # Released under us (a server on another PID namespace took our pid for dead):
            # sent now, this payment would be spent and counted nowhere.
            raise ReservationLost()

    async def settle(self, receipt: SettlementReceipt | None) -> None:
        amount = self.amount_atomic
        # A receipt may report a smaller settled amount; never book more than was signed.
        if receipt is not None and receipt.amount and receipt.amount.isdigit():
            amount = min(amount, int(receipt.amount))
        self.settled_atomic = amount
        self.tx_hash = receipt.transaction if receipt else None
        self.ledger.mark_settled(self.payment_id, amount, self.tx_hash)

    async def release(self, reason: str) -> None:
        self.released = True
        self.ledger.mark_released(self.payment_id, reason)

    @property
    def cost_usd(self) -> float:
        """What this call paid: settled amount, or the signed amount while unknown, 0 if released."""
        if self.released:
            return 0.0
        return usd(self.settled_atomic if self.settled_atomic is not None else self.amount_atomic)
