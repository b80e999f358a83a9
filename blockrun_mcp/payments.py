"""A payment's life, from the quote to its end: the one place that says when money counts.

The rule. A signed EIP-3009 authorization is a bearer instrument: whoever holds it can submit
it on chain until its validBefore. So:

1. A quote is checked (the per-call cap, our own estimate) and reserved in the ledger within
   the session and daily budgets before anything is signed (budget.py). A reservation counts
   its full amount. One that is never signed is released.
2. Once signed, a payment counts at its full signed value. It is written to the ledger as
   signed (with its authorizer, payee and validBefore) before it leaves the process; a
   reservation lost in between is never sent.
3. A signed payment is released only if its signature provably never left this process (every
   attempt to connect failed): nobody else holds it.
4. A paid request answered with success settles it, at the signed amount: under `exact` the
   transfer is exactly the authorization's value, so a receipt claiming less (or more) is noted
   as a discrepancy, never booked. A video job settles on the poll that says it completed.
5. Whatever the gateway says after a signature (PAYMENT_INVALID, PAYMENT_UNFUNDED, a failed job,
   an answer cut by a deadline or a cancelled call) is recorded on the payment, and it keeps
   counting.
6. Otherwise a signed payment ends only by the chain (`reconcile`): used on chain, it is booked
   as settled; past its validBefore by the chain's clock and ours, plus a margin for reorgs,
   and never used, it is released with that fact recorded. Without an answer from the chain it
   stays counted.

`PaidCall` is one tool call's side of this (the payer's approval hook, and what the call then
reports); `LedgerHold` is one payment's; `reconcile` is the chain's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.money import atomic_to_usd, parse_atomic, usd_text, usd_to_atomic
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.x402.errors import PaymentRefused

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.chain import ChainReader
    from blockrun_mcp.ledger import Ledger, PaymentRow
    from blockrun_mcp.x402.models import SettlementReceipt
    from blockrun_mcp.x402.payer import Quote
    from blockrun_mcp.x402.signer import SignedPayment

log = logging.getLogger("blockrun_mcp")

# What an open signed payment means for the budget, said the same way everywhere.
STILL_COUNTED = (
    "It stays counted as spent until it settles, or until it expires and the chain shows it was "
    "never used; then it is released by itself."
)
# Chain time past validBefore before "unused" counts as final: a block near the end of the
# window could still be reorganised away, so wait out a few of them.
FINALITY_MARGIN_SECONDS = 120
RECONCILE_INTERVAL_SECONDS = 300.0  # how often a running server looks at its open payments
RELEASE_INTERVAL_SECONDS = 30.0  # ... and at reservations no process holds (no chain needed)
# The server's first look, after start-up has settled (the host is waiting for `initialize`).
FIRST_RECONCILE_DELAY_SECONDS = 20.0


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# Asks the person to approve a payment before it is signed: (the question, the total the yes
# covers, what is paid for) -> True to go on, False if declined. On 2026-07-28 it may instead
# raise asking.InputRequired: the question goes back to the client, and the call runs again.
Confirm = Callable[[str, int, str], Awaitable[bool]]
# What is left of the budget, in atomic units, read when a question needs it.
Remaining = Callable[[], Awaitable[int]]


class ApprovalUnavailable(BlockrunError):
    """The user asked to approve big spends, and this client cannot ask. Nothing was signed."""

    def __init__(self, threshold_usd: float, amount_atomic: int) -> None:
        super().__init__(
            f"This call would pay {usd_text(amount_atomic)}, above BLOCKRUN_CONFIRM_ABOVE_USD "
            f"(${threshold_usd:g}), and this MCP client cannot ask you to approve it "
            "(it does not support elicitation). Nothing was signed. To allow such calls, raise "
            f"BLOCKRUN_CONFIRM_ABOVE_USD above {usd_text(amount_atomic)} or unset it."
        )


class Approval:
    """BLOCKRUN_CONFIRM_ABOVE_USD: a quote above `threshold_usd` is shown to the person first."""

    def __init__(self, threshold_usd: float | None, confirm: Confirm | None) -> None:
        self.threshold_usd = threshold_usd
        self.confirm = confirm

    def needed(self, amount_atomic: int) -> bool:
        return self.threshold_usd is not None and amount_atomic > usd_to_atomic(self.threshold_usd)

    async def ask(self, amount_atomic: int, what: str, remaining: Remaining) -> None:
        """Returns when approved; PaymentRefused when declined; never signs without a yes.
        `remaining` is read only when the person is asked (a ledger read per paid call saved)."""
        if not self.needed(amount_atomic):
            return
        assert self.threshold_usd is not None
        if self.confirm is None:
            raise ApprovalUnavailable(self.threshold_usd, self.total(amount_atomic))
        left = await remaining()
        question = f"{self.question(amount_atomic, what)} {usd_text(left)} of the budget "
        if not await self.confirm(question + "is left before it.", self.total(amount_atomic), what):
            raise PaymentRefused(
                f"you declined to pay {usd_text(amount_atomic)} for {what}", limit="declined"
            )

    def total(self, amount_atomic: int) -> int:
        """What the call costs with this payment."""
        return amount_atomic

    def question(self, amount_atomic: int, what: str) -> str:
        return f"Pay {usd_text(amount_atomic)} in USDC for {what}?"


NO_APPROVAL = Approval(None, None)


class FollowUpApproval(Approval):
    """A payment after others that were approved as one sum (a consult's synthesis, after its
    members): the sum the person approved covers it; past that sum, the whole is above what
    they said yes to, so they are asked again (or, with no way to ask, it is refused)."""

    def __init__(self, approval: Approval, *, spent_atomic: int, approved_atomic: int) -> None:
        super().__init__(approval.threshold_usd, approval.confirm)
        self.spent_atomic = spent_atomic  # what the earlier payments cost
        self.approved_atomic = approved_atomic  # what the person (or the threshold) allowed

    def needed(self, amount_atomic: int) -> bool:
        total = self.total(amount_atomic)
        return super().needed(total) and total > self.approved_atomic

    def total(self, amount_atomic: int) -> int:
        return self.spent_atomic + amount_atomic

    def question(self, amount_atomic: int, what: str) -> str:
        return (
            f"Pay {usd_text(amount_atomic)} more in USDC for {what}? With it the call costs "
            f"{usd_text(self.total(amount_atomic))}, above the {usd_text(self.approved_atomic)} "
            "approved."
        )


class ReservationLost(BlockrunError):
    """The ledger's reservation vanished between approval and sending. Nothing was sent."""

    def __init__(self) -> None:
        super().__init__(
            "The ledger no longer holds this call's budget reservation (another blockrun-mcp "
            "process sharing the data dir released it). The signed payment was discarded before "
            "it was sent, so nothing was spent. Try again."
        )


# --- one payment ----------------------------------------------------------------------------


class LedgerHold:
    """One payment's ledger row, moved along by the payer (an x402 PaymentHold)."""

    def __init__(self, ledger: Ledger, payment_id: int, amount_atomic: int) -> None:
        self.ledger = ledger
        self.payment_id = payment_id
        self.amount_atomic = amount_atomic
        self.nonce: str | None = None
        self.valid_before: int | None = None
        self.settled = False
        self.settled_here = False  # settled by this process's call, not found settled
        self.released = False
        self.tx_hash: str | None = None
        # Why the settlement this call received is not in the ledger yet (it is retried).
        self.unbooked: str | None = None

    @classmethod
    def of_row(cls, ledger: Ledger, row: PaymentRow) -> LedgerHold:
        """The hold of a payment made earlier (a video job resumed by its id)."""
        hold = cls(ledger, row.id, row.amount_atomic)
        hold.nonce, hold.valid_before, hold.tx_hash = row.nonce, row.valid_before, row.tx_hash
        hold.settled, hold.released = row.status == "settled", row.status == "released"
        return hold

    async def signed(self, payment: SignedPayment) -> None:
        if not await off_loop(
            self.ledger.mark_signed,
            self.payment_id,
            payment.nonce,
            payer=payment.authorization.from_,
            pay_to=payment.authorization.to,
            valid_before=payment.valid_before,
        ):
            # Released under us (a server on another PID namespace took our pid for dead):
            # sent now, this payment would be spent and counted nowhere.
            raise ReservationLost()
        self.nonce, self.valid_before = payment.nonce, payment.valid_before

    async def settle(self, receipt: SettlementReceipt | None) -> None:
        claimed = parse_atomic(receipt.amount) if receipt is not None else None
        note = ""
        if receipt is not None and receipt.amount is not None and claimed != self.amount_atomic:
            note = (
                f"the receipt claimed {receipt.amount[:40]!r} atomic units; booked the signed "
                f"{self.amount_atomic}"
            )
            log.warning("payment %s: %s", self.payment_id, note)
        if receipt is not None and receipt.transaction:
            self.tx_hash = receipt.transaction[:100]
        await self.book_settled(note)

    async def book_settled(self, note: str = "") -> None:
        """Book the settlement; memory follows the database, never leads it. A store that fails
        (the ledger down for a moment) must not cost the person the answer they paid for: the
        payment stays signed, so still counted in full, and the booking is retried by the
        server's next pass over the ledger (`Ledger.book_unbooked_settlements`)."""
        try:
            booked = await off_loop(
                self.ledger.mark_settled,
                self.payment_id,
                self.amount_atomic,
                self.tx_hash,
                note=note,
            )
        except Exception as exc:  # the store's failure, whatever its kind: the money is safe
            self.unbooked = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.ledger.settle_later(self.payment_id, self.amount_atomic, self.tx_hash, note)
            log.warning("payment %s settled; booking it failed (%s)", self.payment_id, exc)
            return
        self.unbooked = None
        if booked:
            self.settled = self.settled_here = True
        else:  # no longer open: another process (a reconciler, a team's instance) closed it
            await self._read_back()

    async def record_claim(self, claim: str) -> None:
        await off_loop(self.ledger.add_note, self.payment_id, claim)

    async def release(self, reason: str) -> None:
        """Only for a payment never signed, or whose signature never left (rules 1 and 3)."""
        if await off_loop(self.ledger.mark_released, self.payment_id, reason):
            self.released = True
        else:  # no longer open: released (or settled) meanwhile by another pass
            await self._read_back()

    async def _read_back(self) -> None:
        """What the ledger says this payment became, when another process closed it first."""
        row = await off_loop(self.ledger.payment, self.payment_id)
        status = row.status if row is not None else None
        self.settled, self.released = status == "settled", status == "released"

    @property
    def is_open(self) -> bool:
        """Signed, not settled, not released: the outcome is unknown and it counts in full."""
        return self.nonce is not None and not self.settled and not self.released


# --- one tool call --------------------------------------------------------------------------


class PaidCall:
    """The money of one tool call: the payer's approval hook, and what the call reports.

    As the hook it checks each quote and reserves it (rule 1). Afterwards it says what the call
    cost, records why a call ended abnormally, and settles or notes a video job's payment.
    """

    def __init__(
        self,
        budget: SessionBudget,
        *,
        tool: str,
        model: str,
        estimate_atomic: int | None,
        approval: Approval = NO_APPROVAL,
        limit_atomic: int | None = None,
    ) -> None:
        self.budget = budget
        self.tool = tool
        self.model = model
        self.estimate_atomic = estimate_atomic
        self.approval = approval
        self.limit_atomic = limit_atomic  # what is left of a larger approved sum (a consult's)
        self.holds: list[LedgerHold] = []

    @classmethod
    def resumed(cls, budget: SessionBudget, row: PaymentRow, *, tool: str) -> PaidCall:
        """The call that paid for `row`, picked up again (a video job resumed by its id)."""
        call = cls(budget, tool=tool, model=row.model, estimate_atomic=None)
        call.holds.append(LedgerHold.of_row(budget.ledger, row))
        return call

    async def __call__(self, quote: Quote) -> LedgerHold:
        self.budget.check_quote(quote.amount_atomic, self.estimate_atomic)
        if self.limit_atomic is not None and quote.amount_atomic > self.limit_atomic:
            raise PaymentRefused(
                f"the quote {usd_text(quote.amount_atomic)} is more than the "
                f"{usd_text(self.limit_atomic)} left of what this call may spend (max_cost_usd)",
                limit="max_cost_usd",
            )
        await self.approval.ask(
            quote.amount_atomic, f"{self.model} ({self.tool})", self.budget.aremaining_atomic
        )
        return await self.reserve(quote)

    async def reserve(self, quote: Quote) -> LedgerHold:
        """Reserve an approved quote within the session and daily budgets (the ledger's check)."""
        payment_id = await self.budget.areserve(
            quote.amount_atomic, tool=self.tool, model=self.model
        )
        hold = LedgerHold(self.budget.ledger, payment_id, quote.amount_atomic)
        self.holds.append(hold)
        return hold

    # --- what the call reports --------------------------------------------------------------

    @property
    def cost_atomic(self) -> int:
        """What this call paid: every payment signed and not released, settled or still open."""
        return sum(h.amount_atomic for h in self.holds if h.nonce and not h.released)

    @property
    def cost_usd(self) -> float:
        return atomic_to_usd(self.cost_atomic)

    @property
    def settled_usd(self) -> float:
        """What settled during this call (a resumed job's payment settles on its last poll)."""
        return atomic_to_usd(sum(h.amount_atomic for h in self.holds if h.settled_here))

    @property
    def tx_hash(self) -> str | None:
        return next((hold.tx_hash for hold in self.holds if hold.tx_hash), None)

    @property
    def open(self) -> list[LedgerHold]:
        return [hold for hold in self.holds if hold.is_open]

    def money_moved(self) -> bool | None:
        """False: nothing left this process; None: a payment may have moved; True: it settled."""
        if any(hold.is_open for hold in self.holds):
            return None
        return any(hold.settled for hold in self.holds)

    def money_sentence(self) -> str:
        """What became of this call's money, for the end of an error message."""
        moved = self.money_moved()
        if moved is False:
            return "Nothing was paid."
        if moved is True:
            return f"Its payment of {usd_text(self._amount(settled=True))} settled: it is counted as spent."
        return f"Its payment of {usd_text(self._amount(settled=False))} was signed. {STILL_COUNTED}"

    def booking_note(self) -> str | None:
        """For a result: a settlement that arrived but is not in the ledger yet."""
        unbooked = [hold.unbooked for hold in self.holds if hold.unbooked]
        if not unbooked:
            return None
        return (
            f"The payment settled, but the ledger could not book it just now ({unbooked[0]}); "
            "it stays counted as spent and the booking is retried."
        )

    def _amount(self, *, settled: bool) -> int:
        holds = [h for h in self.holds if (h.settled if settled else h.is_open)]
        return sum(hold.amount_atomic for hold in holds)

    async def record(self, note: str) -> None:
        """Note on every open payment of this call why it ended as it did (rule 5)."""
        for hold in self.open:
            await off_loop(hold.ledger.add_note, hold.payment_id, note)

    # --- jobs that settle on a later poll ---------------------------------------------------

    async def job_completed(self, receipt: SettlementReceipt | None) -> None:
        for hold in self.open:
            await hold.settle(receipt)

    async def job_claimed(self, claim: str) -> None:
        for hold in self.open:
            await hold.record_claim(claim)

    # --- the call's end -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, anyio.get_cancelled_exc_class()):
            # Settled or not, the agent got no answer for this money: say so where it is spent.
            for hold in self.holds:
                if hold.nonce is not None and not hold.released:
                    await off_loop(
                        hold.ledger.add_note,
                        hold.payment_id,
                        "the call was cancelled after the payment was signed",
                    )

    @asynccontextmanager
    async def deadline(self, seconds: float, setting: str) -> AsyncIterator[None]:
        """At most `seconds` from first request to last byte; a call cut after paying keeps its
        payment counted (rule 5) and says so."""
        try:
            with anyio.fail_after(seconds):
                yield
        except TimeoutError:
            text = (
                f"The call took longer than {setting} ({seconds:g} s) from first request to last "
                "byte, so it was cut"
            )
            if not any(hold.nonce for hold in self.holds):
                raise CallCut(f"{text} before anything was signed; nothing was paid.") from None
            await self.record(f"cut by {setting} ({seconds:g} s) after signing")
            raise CallCut(f"{text} after its payment was signed.", money_moved=None) from None


class CallCut(BlockrunError):
    """A call cut by its deadline."""


# --- several calls priced together ------------------------------------------------------------


class Consult:
    """The money of one ask_models call: every model's quote gathered before any is signed.

    Each paid member's request goes out as usual; its 402 quote comes to this object and waits.
    Once every member has a quote (or has failed before one), the whole is checked at once: each
    quote against the per-call cap and its own estimate, the total (plus `extra_estimate_atomic`,
    the synthesis to come) against `max_cost_usd` and what is left of the session and daily
    budgets, and against BLOCKRUN_CONFIRM_ABOVE_USD by asking the person. If anything does not
    fit, every member is refused, with the breakdown, and nothing is signed. Otherwise each
    member reserves, signs and sends its request (the same one, no second 402).
    """

    def __init__(
        self,
        budget: SessionBudget,
        *,
        tool: str,
        members: list[tuple[str, int | None]],
        extra_estimate_atomic: int,
        max_cost_atomic: int | None,
        approval: Approval = NO_APPROVAL,
    ) -> None:
        self.budget = budget
        self.extra_estimate_atomic = extra_estimate_atomic
        self.max_cost_atomic = max_cost_atomic
        self.approval = approval
        self.calls = [
            ConsultCall(self, index, budget, tool=tool, model=model, estimate_atomic=estimate)
            for index, (model, estimate) in enumerate(members)
        ]
        self.quotes: dict[int, Quote] = {}
        self.unpayable: dict[int, str] = {}  # members whose quote the signing policy refused
        self._waiting = set(range(len(members)))
        self._decided = anyio.Event()
        self._refusal: BlockrunError | None = None
        self._deciding = False

    @property
    def refusal(self) -> BlockrunError | None:
        """Why the whole was refused before anything was signed, once decided."""
        return self._refusal

    @property
    def approved_atomic(self) -> int:
        """What the person (and the limits) approved: the quotes and the extra's estimate."""
        return sum(q.amount_atomic for q in self.quotes.values()) + self.extra_estimate_atomic

    def breakdown(self) -> str:
        parts = [
            f"{self.calls[i].model} {usd_text(q.amount_atomic)}"
            for i, q in sorted(self.quotes.items())
        ]
        if self.extra_estimate_atomic:
            parts.append(f"synthesis about {usd_text(self.extra_estimate_atomic)}")
        return ", ".join(parts)

    async def quoted(self, index: int, quote: Quote) -> None:
        """A member's quote: wait for the whole, then go on or be refused."""
        self.quotes[index] = quote
        await self._arrived(index)
        await self._decided.wait()
        if self._refusal is not None:
            raise ConsultRefused(self._refusal)

    async def ended_unquoted(self, index: int, unpayable: str | None = None) -> None:
        """A member ended without a quote: it failed first, or its quote was one the signing
        policy refuses (`unpayable` says why), which refuses the whole consult."""
        if unpayable is not None:
            self.unpayable[index] = unpayable
        if index in self._waiting and index not in self.quotes:
            await self._arrived(index)

    async def _arrived(self, index: int) -> None:
        self._waiting.discard(index)
        if self._waiting or self._deciding:
            return
        self._deciding = True
        try:
            await self._decide()
        except BlockrunError as refusal:  # a limit, a person's no, a client that cannot ask
            self._refusal = refusal
        except BaseException:
            self._refusal = PaymentRefused("the consult was stopped before anything was signed")
            raise
        finally:
            self._decided.set()

    async def _decide(self) -> None:
        problems = [f"{self.calls[i].model}: {why}" for i, why in sorted(self.unpayable.items())]
        for index, quote in sorted(self.quotes.items()):
            try:
                self.budget.check_quote(quote.amount_atomic, self.calls[index].estimate_atomic)
            except PaymentRefused as refused:
                problems.append(f"{self.calls[index].model}: {refused.reason}")
        if problems:
            raise PaymentRefused(
                "; ".join(problems) + f" (the quotes: {self.breakdown()}); drop that model and "
                "ask again",
                limit="per-call cap",
            )
        total = self.approved_atomic
        if self.max_cost_atomic is not None and total > self.max_cost_atomic:
            raise PaymentRefused(
                f"the consult would cost {usd_text(total)} ({self.breakdown()}), more than "
                f"max_cost_usd {usd_text(self.max_cost_atomic, trim=True)}",
                limit="max_cost_usd",
            )
        status = await self.budget.astatus()
        left = status.remaining_atomic
        if total > left:
            raise PaymentRefused(
                f"the consult would cost {usd_text(total)} ({self.breakdown()}), more than the "
                f"{usd_text(left)} left of the {status.limit_left}",
                limit=status.limit_left,
            )
        models = ", ".join(self.calls[i].model for i in sorted(self.quotes))
        await self.approval.ask(total, f"a consult of {models}", lambda: _known(left))


async def _known(amount_atomic: int) -> int:
    """A Remaining already read."""
    return amount_atomic


class ConsultRefused(PaymentRefused):
    """A member of a consult refused with the whole: it says what the whole was refused for."""

    def __init__(self, refusal: BlockrunError) -> None:
        limit = refusal.limit if isinstance(refusal, PaymentRefused) else None
        super().__init__("the consult was refused as a whole", limit=limit)
        self.message = refusal.message
        self.refusal = refusal


class ConsultCall(PaidCall):
    """One member of a Consult: its quote is approved with the others', all or none."""

    def __init__(self, consult: Consult, index: int, budget: SessionBudget, **kw: Any) -> None:
        super().__init__(budget, **kw)
        self.consult = consult
        self.index = index

    async def __call__(self, quote: Quote) -> LedgerHold:
        await self.consult.quoted(self.index, quote)
        return await self.reserve(quote)


# --- the chain's word -----------------------------------------------------------------------

# "elsewhere": another process booked it between our read and our update (a team's instances).
Result = Literal["settled", "released", "pending", "elsewhere"]


@dataclass(frozen=True)
class Outcome:
    payment_id: int
    amount_atomic: int
    result: Result
    reason: str


@dataclass
class Reconciliation:
    """What one pass found, payment by payment."""

    outcomes: list[Outcome] = field(default_factory=list)
    chain_error: str | None = None

    def of(self, result: Result) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.result == result]

    def summary(self) -> str:
        if not self.outcomes:
            return "No signed payment is waiting for an outcome."
        settled, released, pending = (self.of(r) for r in ("settled", "released", "pending"))
        text = (
            f"Checked {len(self.outcomes)} signed payment(s) on chain: {len(settled)} settled, "
            f"{len(released)} released (expired unused), {len(pending)} still counted as spent."
        )
        if elsewhere := self.of("elsewhere"):
            text += f" {len(elsewhere)} booked meanwhile by another process."
        if self.chain_error:
            text += f" The chain could not be read ({self.chain_error})."
        return text


async def reconcile(
    ledger: Ledger, chain: ChainReader, network: str, *, local_now: float | None = None
) -> Reconciliation:
    """Rule 6 over the ledger's open signed payments: settle or release what the chain decided.

    "Expired" needs both clocks to agree, the chain's latest block and ours (`local_now`): a
    node that lies about the time alone cannot get a payment released that could still settle.
    """
    from blockrun_mcp.chain import ChainUnavailable

    rows = await off_loop(ledger.open_signed)
    result = Reconciliation()
    if not rows:
        return result
    try:
        chain_now = await chain.block_timestamp()
    except ChainUnavailable as exc:
        result.chain_error = str(exc)[:200]
        result.outcomes = [_pending(row, "the chain could not be read") for row in rows]
        return result
    now = min(chain_now, int(time.time() if local_now is None else local_now))
    for row in rows:
        if result.chain_error is not None:
            result.outcomes.append(_pending(row, "the chain could not be read"))
            continue
        if row.network != network:
            result.outcomes.append(_pending(row, f"signed on {row.network}, not {network}"))
            continue
        if row.payer is None or row.nonce is None or row.valid_before is None:
            result.outcomes.append(
                _pending(row, "signed by an older version that did not record the authorizer")
            )
            continue
        try:
            used = await chain.authorization_used(row.payer, row.nonce)
        except (ChainUnavailable, ValueError) as exc:
            result.chain_error = str(exc)[:200]
            result.outcomes.append(_pending(row, "the chain could not be read"))
            continue
        result.outcomes.append(await off_loop(_apply, ledger, row, used=used, now=now))
    for outcome in result.outcomes:
        if outcome.result in ("settled", "released"):
            log.info("payment %s %s: %s", outcome.payment_id, outcome.result, outcome.reason)
    return result


def _apply(ledger: Ledger, row: PaymentRow, *, used: bool, now: int) -> Outcome:
    assert row.valid_before is not None
    if used:
        reason = f"the chain reports the authorization used (checked {when(now)})"
        if not ledger.mark_settled(row.id, row.amount_atomic, row.tx_hash, note=reason):
            return _booked_elsewhere(ledger, row)
        return Outcome(row.id, row.amount_atomic, "settled", reason)
    if now < row.valid_before + FINALITY_MARGIN_SECONDS:
        return _pending(row, f"may still settle: valid until {when(row.valid_before)}")
    reason = (
        f"expired unused: valid until {when(row.valid_before)}, and the chain reports the "
        f"authorization unused at {when(now)}"
    )
    if not ledger.mark_released(row.id, reason):
        return _booked_elsewhere(ledger, row)
    ledger.end_video_jobs_of(row.id, "failed")
    return Outcome(row.id, row.amount_atomic, "released", reason)


def _booked_elsewhere(ledger: Ledger, row: PaymentRow) -> Outcome:
    """Another process (a team's other instance, or its own call) closed the payment between
    our read and our update: report what it became, not our own verdict twice."""
    now = ledger.payment(row.id)
    status = now.status if now is not None else "unknown"
    return Outcome(row.id, row.amount_atomic, "elsewhere", f"{status} by another process meanwhile")


def _pending(row: PaymentRow, reason: str) -> Outcome:
    return Outcome(row.id, row.amount_atomic, "pending", reason)
