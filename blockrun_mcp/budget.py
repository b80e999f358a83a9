"""Budgets: per call, per session and per UTC day, enforced before anything is signed.

The budget plugs into the payer's approval hook. It refuses a quote over a limit or far above
our own estimate, reserves the quote atomically in the ledger, and learns from the payer how
the payment ended. It does no I/O except through the ledger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockrun_mcp.x402.errors import PaymentRefused, ReservationLost
from blockrun_mcp.x402.networks import atomic_to_usd, parse_atomic, usd_to_atomic

if TYPE_CHECKING:
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.x402.models import SettlementReceipt
    from blockrun_mcp.x402.payer import PaymentHold, Quote
    from blockrun_mcp.x402.signer import SignedPayment

log = logging.getLogger("blockrun_mcp")

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
        """The agent may lower its own session limit, never raise it: not above the configured
        one, and not back above a limit it lowered before (a lowered limit is a promise)."""
        if new_limit_usd < 0:
            raise ValueError("A session limit cannot be negative.")
        if new_limit_usd > self.session_limit_usd:
            raise ValueError(
                f"The session limit can only be lowered: it is ${self.session_limit_usd:.6f} "
                f"now (configured ${self.configured.session_usd:.2f}). The user sets it with "
                "BLOCKRUN_SESSION_BUDGET_USD; a new session starts at that."
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

    def approver(self, *, tool: str, model: str, estimate_usd: float | None) -> CallApproval:
        """An approval hook for one tool call: check the quote, then reserve it."""
        return CallApproval(self, tool=tool, model=model, estimate_usd=estimate_usd)

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


class CallApproval:
    """The payer's approval hook for one tool call, remembering the holds it made: when a call
    ends abnormally (cut by a deadline, cancelled), they say whether money was signed."""

    def __init__(
        self, budget: SessionBudget, *, tool: str, model: str, estimate_usd: float | None
    ) -> None:
        self.budget = budget
        self.tool = tool
        self.model = model
        self.estimate_usd = estimate_usd
        self.holds: list[LedgerHold] = []

    async def __call__(self, quote: Quote) -> PaymentHold:
        self.budget.check_quote(quote.amount_atomic, self.estimate_usd)
        hold = self.budget.reserve(quote.amount_atomic, tool=self.tool, model=self.model)
        self.holds.append(hold)
        return hold

    @property
    def signed(self) -> list[LedgerHold]:
        """Holds whose payment was signed and may have left (settled or still open)."""
        return [hold for hold in self.holds if hold.nonce is not None and not hold.released]

    def record(self, note: str) -> None:
        """Note on every signed, unsettled payment of this call why it ended as it did."""
        for hold in self.signed:
            if hold.settled_atomic is None:
                hold.ledger.add_note(hold.payment_id, note)


class LedgerHold:
    """One reservation in the ledger, moved along by the payer (implements PaymentHold).

    Once signed, it counts its full signed amount until settled (still the full amount: under
    `exact` the transfer is exactly the authorization's value) or until the reconciler finds it
    expired and unused on chain. Only a payment that never left the process is released here.
    """

    def __init__(self, ledger: Ledger, payment_id: int, amount_atomic: int) -> None:
        self.ledger = ledger
        self.payment_id = payment_id
        self.amount_atomic = amount_atomic
        self.settled_atomic: int | None = None
        self.tx_hash: str | None = None
        self.nonce: str | None = None
        self.released = False

    async def signed(self, payment: SignedPayment) -> None:
        if not self.ledger.mark_signed(
            self.payment_id,
            payment.nonce,
            payer=payment.authorization.from_,
            pay_to=payment.authorization.to,
            valid_before=payment.valid_before,
        ):
            # Released under us (a server on another PID namespace took our pid for dead):
            # sent now, this payment would be spent and counted nowhere.
            raise ReservationLost()
        self.nonce = payment.nonce

    async def settle(self, receipt: SettlementReceipt | None) -> None:
        # The signed amount, whatever the receipt claims: `exact` moves exactly that much, and a
        # receipt for less (or more) is the gateway's word, not the chain's.
        claimed = parse_atomic(receipt.amount) if receipt is not None else None
        note = ""
        if receipt is not None and receipt.amount is not None and claimed != self.amount_atomic:
            note = (
                f"the receipt claimed {receipt.amount[:40]!r} atomic units; booked the signed "
                f"{self.amount_atomic}"
            )
            log.warning("payment %s: %s", self.payment_id, note)
        self.settled_atomic = self.amount_atomic
        self.tx_hash = receipt.transaction if receipt else None
        self.ledger.mark_settled(self.payment_id, self.amount_atomic, self.tx_hash, note=note)

    async def record_claim(self, claim: str) -> None:
        self.ledger.add_note(self.payment_id, claim)

    async def release(self, reason: str) -> None:
        self.released = True
        self.ledger.mark_released(self.payment_id, reason)

    @property
    def cost_usd(self) -> float:
        """What this call paid: the signed amount, settled or still unknown; 0 if released."""
        return 0.0 if self.released else usd(self.amount_atomic)
