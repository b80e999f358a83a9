"""What the dashboard shows, as one JSON document: built from the ledger by the same functions
as `blockrun-mcp spend --json`, so the page and the command cannot disagree.

`reports.spend_summary` makes the totals and the groupings; this module picks what a page needs
from it (no sessions: a dashboard has none), adds the limits with what is left of each today,
the last 30 days zero-filled for the chart, when each pending payment may be released, the
explorer link of each receipt and the video jobs that can be resumed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from blockrun_mcp.money import atomic_to_usd, usd_to_atomic
from blockrun_mcp.payments import FINALITY_MARGIN_SECONDS
from blockrun_mcp.reports import spend_summary
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA

if TYPE_CHECKING:
    from blockrun_mcp.budget import BudgetStatus
    from blockrun_mcp.config import Config
    from blockrun_mcp.identities import Identity
    from blockrun_mcp.ledger import Ledger, PaymentRow

CHART_DAYS = 30
RECENT_RECEIPTS = 50  # the page lists these; the totals count every receipt
# Where a transaction of each network we sign for can be looked up. Only a well-formed hash is
# ever put in a link: the hash came from the gateway.
EXPLORERS = {
    BASE.name: "https://basescan.org/tx/",
    BASE_SEPOLIA.name: "https://sepolia.basescan.org/tx/",
}
TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


# --- the document -----------------------------------------------------------------------------


class Totals(BaseModel):
    spent_usd: float
    pending_usd: float
    total_usd: float
    payments: int
    settled: int
    pending: int
    released: int


class Group(BaseModel):
    """One model's, tool's or identity's payments (spend's by_model, by_tool, by_identity)."""

    name: str
    payments: int
    spent_usd: float
    pending_usd: float
    total_usd: float


class Day(BaseModel):
    day: str  # UTC, YYYY-MM-DD
    spent_usd: float
    pending_usd: float
    total_usd: float


class Limit(BaseModel):
    """A limit and where it stands today. A cap on one call has nothing spent against it, and a
    session budget has none in a process that is no session: those figures are null."""

    key: str  # stable: "daily", "per_call", "session", "identity:alice", "per_call:alice"
    label: str
    limit_usd: float
    spent_usd: float | None = None  # settled, this UTC day (or this session)
    pending_usd: float | None = None  # signed or reserved, outcome unknown: counted as spent
    left_usd: float | None = None
    note: str = ""


class PendingPayment(BaseModel):
    id: int
    created_at: str
    identity: str
    tool: str
    model: str
    amount_usd: float
    status: str
    valid_before: str | None
    why: str  # why it still counts (reports.pending_reason, as `spend` says it)
    release_after: str | None  # the earliest time the chain's word can release it (UTC)
    release: str  # when and how it stops counting, in one sentence
    note: str
    job_id: str | None


class Receipt(BaseModel):
    id: int
    created_at: str
    identity: str
    tool: str
    model: str
    amount_usd: float
    network: str
    tx_hash: str | None
    explorer_url: str | None


class VideoJob(BaseModel):
    job_id: str
    payment_id: int
    identity: str
    model: str
    created_at: str
    amount_usd: float
    payment_status: str
    resume: str


class Dashboard(BaseModel):
    """The JSON of /api/summary (and of the budget tool's MCP App view)."""

    generated_at: str
    ledger: str
    viewer: str  # who is looking: "local", or an identity
    scope: str  # whose payments: "everyone", or one identity's name
    network: str
    sandbox: bool
    today: str
    totals: Totals
    limits: list[Limit]
    days: list[Day]  # CHART_DAYS of them, oldest first, days without payments at zero
    by_model: list[Group]
    by_tool: list[Group]
    by_identity: list[Group]
    pending: list[PendingPayment]
    receipts: list[Receipt]  # the most recent RECENT_RECEIPTS
    receipts_total: int
    video_jobs: list[VideoJob]


# --- what it is built from --------------------------------------------------------------------


@dataclass(frozen=True)
class Budgets:
    """The configured limits a viewer is shown (the wallet's, and the identities' in view)."""

    per_call_usd: float
    daily_usd: float | None
    session_usd: float | None  # None where there are no sessions (a team's shared ledger)
    identities: tuple[Identity, ...] = ()

    @classmethod
    def of(cls, config: Config, identities: Sequence[Identity] = ()) -> Budgets:
        return cls(
            per_call_usd=config.max_per_call_usd,
            daily_usd=config.daily_budget_usd,
            session_usd=None if config.shared_ledger else config.session_budget_usd,
            identities=tuple(identities),
        )


@dataclass(frozen=True)
class View:
    """Whose spending is shown (`identity` None: everyone's), and to whom."""

    viewer: str
    identity: str | None = None
    sandbox: bool = False


def build_dashboard(
    ledger: Ledger | None,
    where: str,
    budgets: Budgets,
    view: View,
    network: str,
    *,
    session: BudgetStatus | None = None,
    now: float | None = None,
) -> Dashboard:
    """The whole document from `ledger` (None: there is no ledger yet, so nothing was spent).

    Blocking (it reads the store): call it off the event loop. `session` adds the limit of the
    MCP session asking (the budget tool's view); a dashboard process has none."""
    now = time.time() if now is None else now
    today = _utc_day(now)
    if ledger is None:
        payments: list[PaymentRow] = []
        running: dict[int, str] = {}
        today_rows: list[PaymentRow] = []
    else:
        payments = ledger.payments(identity=view.identity)
        ids = {row.id for row in payments}
        running = {p: job for p, job in ledger.running_jobs_by_payment().items() if p in ids}
        # The wallet's daily budget counts everyone's day, whoever looks (the budget tool says
        # the same figure to every identity).
        today_rows = ledger.payments(since_day=today)
    summary = spend_summary(payments, where, None, running)
    by_id = {row.id: row for row in payments}
    return Dashboard(
        generated_at=_when(now),
        ledger=where,
        viewer=view.viewer,
        scope=view.identity or "everyone",
        network=network,
        sandbox=view.sandbox,
        today=today,
        totals=Totals(**summary["totals"]),
        limits=_limits(budgets, today_rows, view, session),
        days=_days(summary["by_day"], now),
        by_model=_groups(summary["by_model"], "model"),
        by_tool=_groups(summary["by_tool"], "tool"),
        by_identity=_groups(summary["by_identity"], "identity"),
        pending=[_pending(entry, by_id[entry["id"]]) for entry in summary["pending"]],
        receipts=[_receipt(entry, by_id[entry["id"]], view) for entry in summary["receipts"]][
            :RECENT_RECEIPTS
        ],
        receipts_total=len(summary["receipts"]),
        video_jobs=[_job(job, by_id[payment]) for payment, job in sorted(running.items())],
    )


# --- pieces -----------------------------------------------------------------------------------


def _utc_day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _groups(rows: list[dict[str, Any]], key: str) -> list[Group]:
    return [
        Group(
            name=row[key],
            payments=row["payments"],
            spent_usd=row["spent_usd"],
            pending_usd=row["pending_usd"],
            total_usd=row["total_usd"],
        )
        for row in rows
    ]


def _days(by_day: list[dict[str, Any]], now: float) -> list[Day]:
    known = {row["day"]: row for row in by_day}
    last = datetime.fromtimestamp(now, UTC)
    days = []
    for back in range(CHART_DAYS - 1, -1, -1):
        day = (last - timedelta(days=back)).strftime("%Y-%m-%d")
        row = known.get(day)
        days.append(
            Day(
                day=day,
                spent_usd=row["spent_usd"] if row else 0.0,
                pending_usd=row["pending_usd"] if row else 0.0,
                total_usd=row["total_usd"] if row else 0.0,
            )
        )
    return days


def _day_figures(rows: list[PaymentRow], identity: str | None = None) -> tuple[int, int]:
    """(settled, pending) atomic units of today's `rows` (one identity's, or all), counted as
    `spend` counts them: by the one summary function."""
    mine = [row for row in rows if identity is None or row.identity == identity]
    totals = spend_summary(mine, "", None)["totals"]
    return usd_to_atomic(totals["spent_usd"]), usd_to_atomic(totals["pending_usd"])


def _day_limit(
    key: str, label: str, limit_usd: float, figures: tuple[int, int], note: str
) -> Limit:
    spent, pending = figures
    left = max(0, usd_to_atomic(limit_usd) - spent - pending)
    return Limit(
        key=key,
        label=label,
        limit_usd=limit_usd,
        spent_usd=atomic_to_usd(spent),
        pending_usd=atomic_to_usd(pending),
        left_usd=atomic_to_usd(left),
        note=note,
    )


def _limits(
    budgets: Budgets, today: list[PaymentRow], view: View, session: BudgetStatus | None
) -> list[Limit]:
    limits: list[Limit] = []
    if session is not None:
        limits.append(
            Limit(
                key="session",
                label="this session",
                limit_usd=session.session_limit_usd,
                spent_usd=session.session_spent_usd,  # counted: settled and pending together
                left_usd=atomic_to_usd(
                    max(0, session.session_limit_atomic - session.session_spent_atomic)
                ),
                note="what this MCP session has spent, settled or pending",
            )
        )
    elif budgets.session_usd is not None:
        limits.append(
            Limit(
                key="session",
                label="each session",
                limit_usd=budgets.session_usd,
                note="each MCP session's own (BLOCKRUN_SESSION_BUDGET_USD); the budget tool "
                "shows a session's figures",
            )
        )
    if budgets.daily_usd is not None:
        limits.append(
            _day_limit(
                "daily",
                "daily budget (all callers)",
                budgets.daily_usd,
                _day_figures(today),
                "BLOCKRUN_DAILY_BUDGET_USD, per UTC day, every caller of this wallet together",
            )
        )
    limits.append(
        Limit(
            key="per_call",
            label="per call",
            limit_usd=budgets.per_call_usd,
            note="the most one tool call may sign (BLOCKRUN_MAX_PER_CALL_USD)",
        )
    )
    for identity in budgets.identities:
        if view.identity is not None and identity.name != view.identity:
            continue  # another person's budget is theirs (an admin's view has no identity)
        if identity.daily_budget_usd is not None:
            limits.append(
                _day_limit(
                    f"identity:{identity.name}",
                    f"{identity.name}'s daily budget",
                    identity.daily_budget_usd,
                    _day_figures(today, identity.name),
                    "daily_budget_usd in the tokens file, per UTC day",
                )
            )
        if identity.max_per_call_usd is not None:
            limits.append(
                Limit(
                    key=f"per_call:{identity.name}",
                    label=f"{identity.name}'s per call",
                    limit_usd=identity.max_per_call_usd,
                    note="max_per_call_usd in the tokens file",
                )
            )
    return limits


def _pending(entry: dict[str, Any], row: PaymentRow) -> PendingPayment:
    release_after = None
    if row.status == "reserved":
        release = (
            "released when its call ends without signing; if its process died, by the next "
            "server to look (within about a minute and a half)"
        )
    elif row.valid_before is None:
        release = "stays counted: its expiry was not recorded, so the chain cannot release it"
    else:
        release_after = _when(row.valid_before + FINALITY_MARGIN_SECONDS)
        release = (
            f"settles if the gateway uses it; else released after {release_after} UTC once the "
            "chain shows it unused (a running server checks every five minutes; "
            "`blockrun-mcp spend --reconcile` does it now)"
        )
    return PendingPayment(
        id=entry["id"],
        created_at=entry["created_at"],
        identity=row.identity,
        tool=entry["tool"],
        model=entry["model"],
        amount_usd=entry["amount_usd"],
        status=entry["status"],
        valid_before=entry["valid_before"],
        why=entry["why"],
        release_after=release_after,
        release=release,
        note=entry["note"],
        job_id=entry["job_id"],
    )


def explorer_url(network: str, tx_hash: str | None) -> str | None:
    """The block explorer's page of a transaction, or None (unknown network, odd hash)."""
    base = EXPLORERS.get(network)
    if base is None or tx_hash is None or not TX_HASH.match(tx_hash):
        return None
    return base + tx_hash


def _receipt(entry: dict[str, Any], row: PaymentRow, view: View) -> Receipt:
    return Receipt(
        id=entry["id"],
        created_at=entry["created_at"],
        identity=row.identity,
        tool=entry["tool"],
        model=entry["model"],
        amount_usd=entry["amount_usd"],
        network=entry["network"],
        tx_hash=entry["tx_hash"],
        # The sandbox's transactions are pretend: no explorer knows them.
        explorer_url=None if view.sandbox else explorer_url(entry["network"], entry["tx_hash"]),
    )


def _job(job_id: str, row: PaymentRow) -> VideoJob:
    return VideoJob(
        job_id=job_id,
        payment_id=row.id,
        identity=row.identity,
        model=row.model,
        created_at=_when(row.created_at),
        amount_usd=atomic_to_usd(row.counted_atomic),
        payment_status=row.status,
        resume=f"generate_video(job_id={job_id!r})",
    )
