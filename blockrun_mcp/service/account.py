"""budget and wallet: the limits, what was spent and is pending, and the paying address."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.money import atomic_to_usd, funding_hint
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.results import (
    BudgetResult,
    Receipt,
    ThreadInfo,
    ThreadsResult,
    TurnInfo,
    WalletResult,
)
from blockrun_mcp.service.failures import Failures, ToolFailure

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.service.core import BlockrunService

RECENT_RECEIPTS = 10
RECENT_THREADS = 20
SHOWN_CHARS = 2000  # of each prompt and answer in a thread's turns: the whole is in the ledger


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " […]"


class Account:
    def __init__(self, service: BlockrunService) -> None:
        self.service = service

    def budget(
        self, budget: SessionBudget, set_session_limit_usd: float | None = None
    ) -> BudgetResult:
        if set_session_limit_usd is not None:
            if not math.isfinite(set_session_limit_usd):
                raise ToolFailure("set_session_limit_usd must be a finite number of dollars.")
            try:
                budget.lower_session_limit(set_session_limit_usd)
            except ValueError as exc:
                raise ToolFailure(str(exc)) from None
        status = budget.status()
        ledger = self.service.ledger
        if budget.per_session:
            rows = ledger.payments(
                session=budget.session, identity=budget.identity_name, limit=RECENT_RECEIPTS
            )
        else:  # a team server: no sessions, so the caller's own payments (never another's)
            rows = ledger.payments(identity=budget.identity_name, limit=RECENT_RECEIPTS)
        jobs = ledger.running_jobs_by_payment([row.id for row in rows])
        recent = [
            Receipt(
                time=datetime.fromtimestamp(row.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                tool=row.tool,
                model=row.model,
                cost_usd=atomic_to_usd(row.counted_atomic),
                status="pending" if row.status in ("reserved", "signed") else row.status,
                transaction=row.tx_hash,
                job_id=jobs.get(row.id),
            )
            for row in rows
        ]
        return BudgetResult(
            session_limit_usd=status.session_limit_usd,
            session_spent_usd=status.session_spent_usd,
            budget_remaining_usd=status.budget_remaining_usd,
            per_call_cap_usd=status.per_call_cap_usd,
            daily_limit_usd=status.daily_limit_usd,
            daily_spent_usd=status.daily_spent_usd,
            recent=recent,
        )

    def wallet(self) -> WalletResult:
        service = self.service
        try:
            wallet = service.wallet()
        except BlockrunError as exc:
            raise ToolFailure(exc.message) from None
        funding = service.options.funding_hint or funding_hint(service.network, wallet.address)
        return WalletResult(address=wallet.address, network=service.network.name, funding=funding)

    async def threads(self, thread_id: str | None = None, owner: str = "default") -> ThreadsResult:
        async with Failures():
            service = self.service
            store = await service.thread_store()
            if thread_id is not None:
                turns = await off_loop(store.turns, thread_id, owner)
                return ThreadsResult(
                    turns=[
                        TurnInfo(
                            model=turn.model,
                            prompt=_shown(turn.prompt),
                            answer=_shown(turn.answer),
                            files=[file.label for file in turn.files],
                            cost_usd=atomic_to_usd(turn.cost_atomic),
                            time=_utc(turn.created_at),
                        )
                        for turn in turns
                    ]
                )
            recent = await off_loop(store.recent, owner, RECENT_THREADS)
            return ThreadsResult(
                threads=[
                    ThreadInfo(
                        thread_id=summary.id,
                        title=summary.title,
                        models=summary.models,
                        turns=summary.turns,
                        cost_usd=atomic_to_usd(summary.cost_atomic),
                        last_used=_utc(summary.updated_at),
                    )
                    for summary in recent
                ]
            )
