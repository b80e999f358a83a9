"""The money rule applied to signed payments whose outcome is unknown, by asking the chain.

A signed EIP-3009 authorization is a bearer instrument: whoever holds it can submit it until its
validBefore. So a signed payment counts in full until one of two things is known:
- the chain says its nonce was used (USDC `authorizationState` is true): it settled, for exactly
  the signed value (that is what `exact` transfers);
- its validBefore has passed, by the chain's clock and ours, with a margin for reorgs, and the
  chain says the nonce was never used: it can never settle now, so it is released.
Anything else (the chain unreachable, an answer we cannot read, a row without the authorizer)
leaves it counted. What the gateway said about the payment is never consulted here.

Run by the server periodically and by `blockrun-mcp spend --reconcile`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from blockrun_mcp.chain import ChainReader
    from blockrun_mcp.ledger import Ledger, PaymentRow

log = logging.getLogger("blockrun_mcp")

# Chain time past validBefore before "unused" counts as final: a block near the end of the window
# could still be reorganised away, so wait out a few of them.
FINALITY_MARGIN_SECONDS = 120
# How often the server looks at its open payments.
RECONCILE_INTERVAL_SECONDS = 300.0
# The server's first look, after start-up has settled (the host is waiting for `initialize`).
FIRST_RECONCILE_DELAY_SECONDS = 20.0

Result = Literal["settled", "released", "pending"]


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
        if self.chain_error:
            text += f" The chain could not be read ({self.chain_error})."
        return text


def when(timestamp: int | float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def reconcile(
    ledger: Ledger, chain: ChainReader, network: str, *, local_now: float | None = None
) -> Reconciliation:
    """Settle or release what the chain has decided among the ledger's open signed payments.

    "Expired" needs both clocks to agree, the chain's latest block and ours (`local_now`): a
    node that lies about the time alone cannot get a payment released that could still settle.
    """
    from blockrun_mcp.chain import ChainUnavailable

    rows = ledger.open_signed()
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
        result.outcomes.append(_apply(ledger, row, used=used, now=now))
    for outcome in result.outcomes:
        if outcome.result != "pending":
            log.info("payment %s %s: %s", outcome.payment_id, outcome.result, outcome.reason)
    return result


def _apply(ledger: Ledger, row: PaymentRow, *, used: bool, now: int) -> Outcome:
    assert row.valid_before is not None
    if used:
        reason = f"the chain reports the authorization used (checked {when(now)})"
        ledger.mark_settled(row.id, row.amount_atomic, row.tx_hash, note=reason)
        return Outcome(row.id, row.amount_atomic, "settled", reason)
    if now < row.valid_before + FINALITY_MARGIN_SECONDS:
        return _pending(row, f"may still settle: valid until {when(row.valid_before)}")
    reason = (
        f"expired unused: valid until {when(row.valid_before)}, and the chain reports the "
        f"authorization unused at {when(now)}"
    )
    ledger.mark_released(row.id, reason)
    ledger.end_video_jobs_of(row.id, "failed")
    return Outcome(row.id, row.amount_atomic, "released", reason)


def _pending(row: PaymentRow, reason: str) -> Outcome:
    return Outcome(row.id, row.amount_atomic, "pending", reason)
