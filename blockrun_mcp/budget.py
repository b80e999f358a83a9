"""Budgets: per call, per session and per UTC day, enforced before anything is signed.

The limits and their arithmetic: a quote over the per-call cap or far above our own estimate is
refused, and a reservation that would pass the session or daily budget is refused by the
ledger in the same transaction that records it. What happens to a payment after that is
payments.py's. It does no I/O except through the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockrun_mcp.ledger import DEFAULT_IDENTITY, StoreUnavailable
from blockrun_mcp.money import atomic_to_usd, dollars, usd_text, usd_to_atomic
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.x402.errors import PaymentRefused

if TYPE_CHECKING:
    from blockrun_mcp.identities import Identity
    from blockrun_mcp.ledger import Ledger

UNKNOWN_REMAINING = (
    "Budget remaining: unknown (the ledger cannot be read right now); this call's cost is "
    "counted all the same."
)
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
    """Where a budget stands, in atomic units; dollars only for the results people read."""

    session_limit_atomic: int
    session_spent_atomic: int
    remaining_atomic: int
    per_call_cap_atomic: int
    daily_limit_atomic: int | None
    daily_spent_atomic: int | None

    @property
    def session_limit_usd(self) -> float:
        return atomic_to_usd(self.session_limit_atomic)

    @property
    def session_spent_usd(self) -> float:
        return atomic_to_usd(self.session_spent_atomic)

    @property
    def budget_remaining_usd(self) -> float:
        return atomic_to_usd(self.remaining_atomic)

    @property
    def per_call_cap_usd(self) -> float:
        return atomic_to_usd(self.per_call_cap_atomic)

    @property
    def daily_limit_usd(self) -> float | None:
        return None if self.daily_limit_atomic is None else atomic_to_usd(self.daily_limit_atomic)

    @property
    def daily_spent_usd(self) -> float | None:
        return None if self.daily_spent_atomic is None else atomic_to_usd(self.daily_spent_atomic)

    @property
    def limit_left(self) -> str:
        """Which limit leaves the least: 'daily budget' or 'budget' (the session's)."""
        session_left = self.session_limit_atomic - self.session_spent_atomic
        if self.daily_limit_atomic is None:
            return "budget"
        daily_left = self.daily_limit_atomic - (self.daily_spent_atomic or 0)
        return "daily budget" if daily_left < session_left else "budget"


class SessionBudget:
    """The budget of one MCP session (and of the identity calling), over the shared ledger.

    With `per_session=False` (a team's instances on one PostgreSQL ledger, serving stateless
    HTTP) there is no session to budget: the identity's daily budget and the wallet's apply, and
    the session figures report the identity's day instead.
    """

    def __init__(
        self,
        ledger: Ledger,
        session: str,
        limits: Limits,
        network: str,
        *,
        identity: Identity | None = None,
        per_session: bool = True,
    ) -> None:
        self.ledger = ledger
        self.session = session
        self.configured = limits
        self.session_limit_usd = limits.session_usd
        self.network = network
        self.identity = identity
        self.per_session = per_session

    @property
    def identity_name(self) -> str:
        return self.identity.name if self.identity is not None else DEFAULT_IDENTITY

    @property
    def per_call_usd(self) -> float:
        """The identity's own per-call cap, else the wallet's."""
        if self.identity is not None and self.identity.max_per_call_usd is not None:
            return self.identity.max_per_call_usd
        return self.configured.per_call_usd

    @property
    def identity_daily_usd(self) -> float | None:
        return self.identity.daily_budget_usd if self.identity is not None else None

    # --- limits --------------------------------------------------------------------------

    def lower_session_limit(self, new_limit_usd: float) -> float:
        """The agent may lower its own session limit, never raise it: not above the configured
        one, and not back above a limit it lowered before (a lowered limit is a promise)."""
        if new_limit_usd < 0:
            raise ValueError("A session limit cannot be negative.")
        if not self.per_session:
            raise ValueError(
                "This server keeps no session budget (its instances share one ledger and serve "
                "stateless HTTP): budgets are per identity and per day, set in the tokens file."
            )
        if new_limit_usd > self.session_limit_usd:
            raise ValueError(
                f"The session limit can only be lowered: it is "
                f"{usd_text(usd_to_atomic(self.session_limit_usd))} now (configured "
                f"{dollars(self.configured.session_usd)}). The user sets it with "
                "BLOCKRUN_SESSION_BUDGET_USD; a new session starts at that."
            )
        self.session_limit_usd = new_limit_usd
        return new_limit_usd

    def status(self) -> BudgetStatus:
        if self.per_session:
            limit_usd = self.session_limit_usd
            spent = self.ledger.session_spent_atomic(self.session)
        else:  # no session: the identity's day stands in for it
            limit_usd = self.identity_daily_usd
            if limit_usd is None:
                limit_usd = self.configured.daily_usd or self.configured.session_usd
            spent = self.ledger.identity_spent_atomic(self.identity_name)
        limit = usd_to_atomic(limit_usd)
        remaining = max(0, limit - spent)
        if self.per_session and self.identity_daily_usd is not None:
            used = self.ledger.identity_spent_atomic(self.identity_name)
            remaining = min(remaining, max(0, usd_to_atomic(self.identity_daily_usd) - used))
        daily_limit = daily_spent = None
        if self.configured.daily_usd is not None:
            daily_limit = usd_to_atomic(self.configured.daily_usd)
            daily_spent = self.ledger.day_spent_atomic()
            remaining = min(remaining, max(0, daily_limit - daily_spent))
        return BudgetStatus(
            session_limit_atomic=limit,
            session_spent_atomic=spent,
            remaining_atomic=remaining,
            per_call_cap_atomic=usd_to_atomic(self.per_call_usd),
            daily_limit_atomic=daily_limit,
            daily_spent_atomic=daily_spent,
        )

    def remaining_usd(self) -> float:
        return self.status().budget_remaining_usd

    # Off the event loop (off_loop.py): what tool calls use, so a database that waits holds only
    # the call that asked, never the loop.
    async def astatus(self) -> BudgetStatus:
        return await off_loop(self.status)

    async def aremaining_usd(self) -> float:
        return (await self.astatus()).budget_remaining_usd

    async def remaining_after_paying(self) -> float | None:
        """What a paid result reports as left: None (with UNKNOWN_REMAINING in its note) when
        the ledger cannot be read just now; a paid answer is never lost for this figure."""
        try:
            return await self.aremaining_usd()
        except StoreUnavailable:
            return None

    async def aremaining_atomic(self) -> int:
        return (await self.astatus()).remaining_atomic

    async def areserve(self, amount_atomic: int, *, tool: str, model: str) -> int:
        return await off_loop(self.reserve, amount_atomic, tool=tool, model=model)

    def remaining_atomic(self) -> int:
        return self.status().remaining_atomic

    # --- checks and reservations ----------------------------------------------------------

    def check_quote(self, amount_atomic: int, estimate_atomic: int | None) -> None:
        """Refuse a quote over the per-call cap, or suspiciously far above our own estimate.
        Compared in atomic units, so each boundary is exact (floats make $0.05 - $0.03 more
        than $0.02)."""
        cap = usd_to_atomic(self.per_call_usd)
        if amount_atomic > cap:
            own = self.identity is not None and self.identity.max_per_call_usd is not None
            where = (
                f"{self.identity_name}'s max_per_call_usd in the tokens file"
                if own
                else "BLOCKRUN_MAX_PER_CALL_USD"
            )
            raise PaymentRefused(
                f"the quote {usd_text(amount_atomic)} is above the per-call cap "
                f"{usd_text(cap)} (raise {where} to allow it)",
                limit="per-call cap",
            )
        if estimate_atomic is None:
            return
        estimate = estimate_atomic
        ratio_num, ratio_den = SUSPICIOUS_RATIO.as_integer_ratio()
        if (
            amount_atomic * ratio_den > estimate * ratio_num
            and amount_atomic - estimate > usd_to_atomic(SUSPICIOUS_MARGIN_USD)
        ):
            raise PaymentRefused(
                f"the gateway quoted {usd_text(amount_atomic)}, more than {SUSPICIOUS_RATIO}x the "
                f"local estimate {usd_text(estimate)}; refused as suspicious (check "
                "BLOCKRUN_API_URL)",
                limit="suspicious quote",
            )

    def reserve(self, amount_atomic: int, *, tool: str, model: str) -> int:
        """Reserve `amount_atomic` within the session and daily budgets; the ledger row's id."""
        from blockrun_mcp.ledger import LimitExceeded

        try:
            payment_id = self.ledger.reserve(
                session=self.session,
                tool=tool,
                model=model,
                amount_atomic=amount_atomic,
                network=self.network,
                session_limit_atomic=(
                    usd_to_atomic(self.session_limit_usd) if self.per_session else None
                ),
                daily_limit_atomic=(
                    None
                    if self.configured.daily_usd is None
                    else usd_to_atomic(self.configured.daily_usd)
                ),
                identity=self.identity_name,
                identity_daily_limit_atomic=(
                    None
                    if self.identity_daily_usd is None
                    else usd_to_atomic(self.identity_daily_usd)
                ),
                # Lock only the totals a limit is checked on: instances of a team must not all
                # queue on the shared session row or the day's when no limit uses them.
                lock_all_totals=False,
            )
        except LimitExceeded as exc:
            raise PaymentRefused(
                _limit_message(exc.limit, amount_atomic, exc.remaining_atomic, self.identity_name),
                limit=exc.limit,
            ) from None
        return payment_id


def _limit_message(limit: str, amount_atomic: int, remaining_atomic: int, identity: str) -> str:
    how = {
        "daily budget": "raise BLOCKRUN_DAILY_BUDGET_USD or wait for the next UTC day",
        "identity budget": f"{identity}'s daily_budget_usd is set in the tokens file; raise it or "
        "wait for the next UTC day",
    }.get(limit, "raise BLOCKRUN_SESSION_BUDGET_USD and restart the server, or start a new session")
    return (
        f"this call's quote {usd_text(amount_atomic)} would exceed the {limit}: "
        f"{usd_text(remaining_atomic)} is left; {how}"
    )
