"""What `blockrun-mcp spend` and `blockrun-mcp models` print: built as data, then rendered.

The spend report reads the ledger read-only: running it never releases, settles or rewrites
anything, even while servers are using the same ledger.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from blockrun_mcp.catalog import filter_models as catalog_filter
from blockrun_mcp.catalog import model_view
from blockrun_mcp.gateway_models import CatalogEntry
from blockrun_mcp.ledger import Ledger, PaymentRow
from blockrun_mcp.money import atomic_to_usd, usd_text
from blockrun_mcp.tables import money, render

LEDGER_NAME = "ledger.sqlite3"
PENDING = ("reserved", "signed")

# --- spend ----------------------------------------------------------------------------------


def ledger_path(data_dir: Path, *, sandbox: bool = False) -> Path:
    return (data_dir / "sandbox" if sandbox else data_dir) / LEDGER_NAME


def since_day(days: int | None, today: datetime | None = None) -> str | None:
    """The first UTC day of the last `days` days (today included), or None for all time."""
    if days is None:
        return None
    today = today or datetime.now(UTC)
    return (today - timedelta(days=max(days, 1) - 1)).strftime("%Y-%m-%d")


def read_payments(path: Path, since: str | None = None) -> list[PaymentRow]:
    """Every payment in the ledger (newest first), opened read-only. Empty if there is none yet."""
    return read_ledger(path, since)[0]


def read_ledger(
    source: Path | Ledger, since: str | None = None
) -> tuple[list[PaymentRow], dict[int, str]]:
    """The payments (newest first) and the video jobs still running (payment id -> job id).
    A path is opened read-only (and closed); empty if there is no ledger there yet."""
    from blockrun_mcp.ledger import Ledger

    if isinstance(source, Ledger):
        return source.payments(since_day=since), source.running_jobs_by_payment()
    if not source.exists():
        return [], {}
    ledger = Ledger(source, read_only=True)
    try:
        return ledger.payments(since_day=since), ledger.running_jobs_by_payment()
    finally:
        ledger.close()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pending_atomic(row: PaymentRow) -> int:
    return row.amount_atomic if row.status in PENDING else 0


def _spent_atomic(row: PaymentRow) -> int:
    return row.counted_atomic if row.status == "settled" else 0


def _group(payments: list[PaymentRow], key: str) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in payments:
        name = getattr(row, key)
        group = groups.setdefault(name, {key: name, "payments": 0, "spent": 0, "pending": 0})
        group["payments"] += 1
        group["spent"] += _spent_atomic(row)
        group["pending"] += _pending_atomic(row)
    rows = [
        {
            key: g[key],
            "payments": g["payments"],
            "spent_usd": atomic_to_usd(g["spent"]),
            "pending_usd": atomic_to_usd(g["pending"]),
            "total_usd": atomic_to_usd(g["spent"] + g["pending"]),
        }
        for g in groups.values()
    ]
    if key == "day":
        return sorted(rows, key=lambda r: r["day"], reverse=True)
    return sorted(rows, key=lambda r: (-r["total_usd"], r[key]))


def pending_reason(row: PaymentRow, now: float | None = None) -> str:
    """Why a payment still counts as spent, in one line."""
    now = time.time() if now is None else now
    if row.status == "reserved":
        return "reserved, not signed: a call in progress (released if its process ended)"
    if row.valid_before is None:
        return "signed by an older version that did not record its expiry; stays counted"
    if row.valid_before > now:
        return f"signed, outcome unknown; it may still settle until {_when(row.valid_before)} UTC"
    return (
        f"signed, expired {_when(row.valid_before)} UTC; released once the chain confirms it "
        "unused (`blockrun-mcp spend --reconcile`, or a running server by itself)"
    )


def spend_summary(
    payments: list[PaymentRow],
    ledger: Path | str,
    since: str | None,
    running_jobs: dict[int, str] | None = None,
) -> dict[str, Any]:
    """The whole report as JSON-ready data: totals, groupings, pending payments and receipts."""
    spent = sum(_spent_atomic(r) for r in payments)
    pending = sum(_pending_atomic(r) for r in payments)
    return {
        "ledger": str(ledger),
        "since_day": since,
        "totals": {
            "spent_usd": atomic_to_usd(spent),
            "pending_usd": atomic_to_usd(pending),
            "total_usd": atomic_to_usd(spent + pending),
            "payments": len(payments),
            "settled": sum(r.status == "settled" for r in payments),
            "pending": sum(r.status in PENDING for r in payments),
            "released": sum(r.status == "released" for r in payments),
        },
        "by_day": _group(payments, "day"),
        "by_session": _group(payments, "session"),
        "by_identity": _group(payments, "identity"),
        "by_tool": _group(payments, "tool"),
        "by_model": _group(payments, "model"),
        "pending": [
            {
                "id": r.id,
                "created_at": _when(r.created_at),
                "session": r.session,
                "tool": r.tool,
                "model": r.model,
                "amount_usd": atomic_to_usd(r.amount_atomic),
                "status": r.status,
                "valid_before": None if r.valid_before is None else _when(r.valid_before),
                "why": pending_reason(r),
                "note": r.note,
                "job_id": (running_jobs or {}).get(r.id),
            }
            for r in payments
            if r.status in PENDING
        ],
        "receipts": [
            {
                "id": r.id,
                "created_at": _when(r.created_at),
                "tool": r.tool,
                "model": r.model,
                "amount_usd": atomic_to_usd(r.counted_atomic),
                "network": r.network,
                "tx_hash": r.tx_hash,
            }
            for r in payments
            if r.status == "settled"
        ],
    }


CSV_FIELDS = (
    "id",
    "created_at",
    "day",
    "session",
    "tool",
    "model",
    "status",
    "amount_usd",
    "settled_usd",
    "network",
    "tx_hash",
    "note",
    "identity",
)


def _with_job(pending: dict[str, Any]) -> str:
    """A pending row's notes, and for a running video the call that claims it."""
    if not pending["job_id"]:
        return pending["note"]
    resume = (
        f"video job {pending['job_id']}: resume with generate_video(job_id={pending['job_id']!r})"
    )
    return f"{resume}; {pending['note']}" if pending["note"] else resume


def spend_csv(payments: Iterable[PaymentRow]) -> str:
    """One line per payment, oldest first, for spreadsheets."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in sorted(payments, key=lambda r: r.id):
        writer.writerow(
            [
                r.id,
                _when(r.created_at),
                r.day,
                r.session,
                r.tool,
                r.model,
                r.status,
                usd_text(r.amount_atomic, sign=False),
                "" if r.settled_atomic is None else usd_text(r.settled_atomic, sign=False),
                r.network,
                r.tx_hash or "",
                r.note,
                r.identity,
            ]
        )
    return out.getvalue()


def spend_text(summary: dict[str, Any], *, sandbox: bool = False) -> str:
    totals = summary["totals"]
    scope = f"since {summary['since_day']}" if summary["since_day"] else "all time"
    title = "Sandbox spend (pretend USDC)" if sandbox else "Spend"
    lines = [f"{title}, {scope}, from {summary['ledger']}", ""]
    if not totals["payments"]:
        lines.append("  No payments recorded yet: nothing has been spent.")
        return "\n".join(lines)
    lines.append(
        f"  spent {money(totals['spent_usd'])} in {totals['settled']} settled payment(s); "
        f"pending {money(totals['pending_usd'])} in {totals['pending']}; "
        f"{totals['released']} released (not charged); total {money(totals['total_usd'])}"
    )
    groups = [("day", "By day (UTC)"), ("session", "By session")]
    # Identities are a team server's (BLOCKRUN_HTTP_TOKENS_FILE); one person alone is no news.
    if [r["identity"] for r in summary["by_identity"]] not in ([], ["default"]):
        groups.append(("identity", "By identity"))
    for key, heading in [*groups, ("tool", "By tool"), ("model", "By model")]:
        rows = summary[f"by_{key}"]
        lines += ["", heading]
        lines.append(
            render(
                [key, "payments", "spent", "pending", "total"],
                [
                    [
                        r[key],
                        r["payments"],
                        money(r["spent_usd"]),
                        money(r["pending_usd"]),
                        money(r["total_usd"]),
                    ]
                    for r in rows
                ],
                right=(1, 2, 3, 4),
            )
        )
    if summary["pending"]:
        lines += [
            "",
            "Pending: signed or reserved, outcome unknown (counted as spent until it settles, or "
            "expires unused on chain)",
            render(
                ["id", "created (UTC)", "tool", "model", "amount", "why", "gateway / notes"],
                [
                    [
                        p["id"],
                        p["created_at"],
                        p["tool"],
                        p["model"],
                        money(p["amount_usd"]),
                        p["why"],
                        _with_job(p),
                    ]
                    for p in summary["pending"]
                ],
                right=(0, 4),
            ),
        ]
    if summary["receipts"]:
        lines += [
            "",
            "Receipts",
            render(
                ["id", "created (UTC)", "tool", "model", "amount", "transaction"],
                [
                    [
                        r["id"],
                        r["created_at"],
                        r["tool"],
                        r["model"],
                        money(r["amount_usd"]),
                        r["tx_hash"] or "(no hash)",
                    ]
                    for r in summary["receipts"]
                ],
                right=(0, 4),
            ),
        ]
    return "\n".join(lines)


# --- models ---------------------------------------------------------------------------------


def model_price(entry: CatalogEntry) -> tuple[str, float | None]:
    """The price a user compares on: per 1M output tokens, per image, or per video second."""
    view = model_view(entry)
    return view.kind, view.headline_price


def filter_models(
    entries: list[CatalogEntry],
    *,
    category: str | None = None,
    provider: str | None = None,
    max_price: float | None = None,
) -> list[CatalogEntry]:
    entries = catalog_filter(entries, category=category, provider=provider)
    if max_price is not None:
        entries = [e for e in entries if (model_price(e)[1] or 0.0) <= max_price]
    return entries


def models_json(entries: list[CatalogEntry]) -> list[dict[str, Any]]:
    return [asdict(model_view(e)) for e in entries]


def models_text(entries: list[CatalogEntry], source: str) -> str:
    if not entries:
        return f"No model matches those filters ({source})."
    rows = []
    for e in entries:
        kind, price = model_price(e)
        if kind == "chat":
            unit_price = (
                "free" if e.is_free else f"{money(e.input_price)} / {money(e.output_price)}"
            )
            unit = "1M tokens in/out"
        else:
            unit_price = money(price)
            unit = "image" if kind == "image" else "video second"
        context = f"{e.context_window // 1000}k" if e.context_window else ""
        rows.append([e.id, kind, unit_price, unit, context, ",".join(e.categories)])
        if not e.available:
            rows[-1].append("unavailable")
    headers = ["model", "kind", "price (USD)", "per", "context", "categories"]
    if any(not e.available for e in entries):
        headers.append("status")
        for row in rows:
            row += [""] * (len(headers) - len(row))
    table = render(headers, rows, right=(2, 4))
    return (
        f"{len(entries)} model(s) from {source}; token prices are before the platform fee\n{table}"
    )


# --- threads ----------------------------------------------------------------------------------


def threads_text(recent: list[Any]) -> str:
    if not recent:
        return "No threads yet: ask_model keeps one for every question it answers."
    rows = [
        [
            t.id,
            _when(t.updated_at),
            t.turns,
            money(atomic_to_usd(t.cost_atomic)),
            ",".join(t.models),
            t.title[:50],
        ]
        for t in recent
    ]
    table = render(
        ["thread", "last used (UTC)", "turns", "cost", "models", "title"], rows, right=(2, 3)
    )
    return f"{len(recent)} thread(s), most recent first; continue one with ask_model's thread_id\n{table}"


def turns_text(thread_id: str, turns: list[Any]) -> str:
    lines = [f"Thread {thread_id}: {len(turns)} turn(s)"]
    for turn in turns:
        files = ", ".join(f.label for f in turn.files) or "none"
        lines += [
            "",
            f"[{turn.seq}] {_when(turn.created_at)} UTC, {turn.model}"
            + (f" (effort {turn.effort})" if turn.effort else "")
            + f", {money(atomic_to_usd(turn.cost_atomic))}; files: {files}",
            f"  asked: {turn.prompt}",
            f"  answer: {turn.answer}",
        ]
    return "\n".join(lines)
