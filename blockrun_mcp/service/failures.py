"""Every failure of a tool call, turned into the one sentence the agent reads: here and only here.

The sentence is the error's own (what happened), then this server's advice (which setting to
change), then what became of the call's money (payments.py knows), then what is left of the
budget when money or a limit was involved. Errors outside the root (BlockrunError) are bugs:
logged with their traceback, reported as an internal error, never shown raw.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

from blockrun_mcp.asking import InputRequired
from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.ledger import LedgerBusy, StoreUnavailable
from blockrun_mcp.money import usd_text
from blockrun_mcp.x402.errors import MalformedTerms, PaymentInvalid, PaymentRefused

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.payments import PaidCall

log = logging.getLogger("blockrun_mcp")

# Limits named by a refusal, and the setting that moves each (the budget's own refusals say it).
REFUSAL_ADVICE = {
    "per-call cap": "Choose a cheaper model or fewer max_tokens, or raise "
    "BLOCKRUN_MAX_PER_CALL_USD.",
    "network": "Set BLOCKRUN_NETWORK to the gateway's network (base for blockrun.ai, "
    "base-sepolia for testnet.blockrun.ai).",
    "payee": "BLOCKRUN_PAY_TO pins the payee: if BlockRun's payee really changed, update it.",
}


class ToolFailure(BlockrunError):
    """A tool call failed; `message` is everything the agent reads."""


def advice(exc: BlockrunError) -> str:
    """This server's advice for a protocol error that cannot know our settings."""
    if isinstance(exc, MalformedTerms):
        return "Check that BLOCKRUN_API_URL points at a BlockRun gateway."
    if isinstance(exc, PaymentInvalid):
        return REFUSAL_ADVICE["network"]
    # (The budget's own refusals name their setting already.)
    if (
        isinstance(exc, PaymentRefused)
        and exc.limit in REFUSAL_ADVICE
        and "BLOCKRUN_" not in exc.message
    ):
        return REFUSAL_ADVICE[exc.limit]
    return ""


class Failures:
    """Translates whatever ends a tool call abnormally into a ToolFailure; swallows nothing.

    `call` is set once the call may pay, so the sentence can say what became of its money.
    """

    def __init__(self, budget: SessionBudget | None = None) -> None:
        self.budget = budget
        self.call: PaidCall | None = None

    async def __aenter__(self) -> Failures:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, ToolFailure) or not isinstance(exc, Exception):
            return  # success, already translated, or cancellation: let it through
        if isinstance(exc, InputRequired) and not self._signed():
            return  # a question for the client (2026-07-28), asked before anything was signed
        raise ToolFailure(await self.describe(exc), money_moved=self._money_moved(exc)) from None

    def _signed(self) -> bool:
        return self.call is not None and any(hold.nonce for hold in self.call.holds)

    async def describe(self, exc: Exception) -> str:
        if isinstance(exc, InputRequired):
            # Something was already signed in this call (never expected: every call asks before
            # its first signature); the further payment is not made without the person's yes.
            parts = [
                "A further payment needed your approval, which this client can only give on a "
                "new call; it was not made."
            ]
        elif isinstance(exc, BlockrunError):
            parts = [exc.message, advice(exc)]
        else:
            log.error("unexpected error in a tool call", exc_info=exc)
            parts = [
                f"Unexpected internal error ({type(exc).__name__}); please report it if it repeats."
            ]
        call = self.call
        signed = self._signed()
        if call is not None and signed:
            parts.append(call.money_sentence())
        elif isinstance(exc, StoreUnavailable) and not (
            isinstance(exc, LedgerBusy) and exc.nothing_signed  # it says so itself
        ):
            parts.append("Nothing was signed: no payment is made without its reservation.")
        if self.budget is not None and (signed or isinstance(exc, PaymentRefused)):
            parts.append(await self._remaining_sentence())
        return " ".join(part for part in parts if part)

    def _money_moved(self, exc: Exception) -> bool | None:
        if self.call is not None:
            return self.call.money_moved()
        return exc.money_moved if isinstance(exc, BlockrunError) else False

    async def _remaining_sentence(self) -> str:
        assert self.budget is not None
        try:
            remaining = await self.budget.aremaining_atomic()
        except Exception:  # the ledger itself failing: the sentence must still be written
            return "Budget remaining: unknown (the ledger cannot be read right now)."
        return f"Budget remaining: {usd_text(remaining)}."
