"""The spend ledger: every reservation, payment and receipt, in SQLite, surviving restarts.

One row per payment, moving reserved -> signed -> settled | released. A row that stays
`signed` is a payment whose outcome is unknown: it counts as spent, here and after a crash,
until the reconciler (reconcile.py) finds it settled or expired unused on chain. A signed row
records the authorizer, payee and validBefore that the chain check needs.
Several servers may share one data dir (two hosts open at once): every check-and-reserve runs
in an IMMEDIATE transaction, so their reservations are serialized by SQLite itself.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Status = Literal["reserved", "signed", "settled", "released"]
# Statuses whose amount counts against budgets.
COUNTED = ("reserved", "signed", "settled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    day TEXT NOT NULL,
    session TEXT NOT NULL,
    pid INTEGER NOT NULL,
    tool TEXT NOT NULL,
    model TEXT NOT NULL,
    amount_atomic INTEGER NOT NULL,
    settled_atomic INTEGER,
    status TEXT NOT NULL,
    nonce TEXT,
    tx_hash TEXT,
    network TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    payer TEXT,
    pay_to TEXT,
    valid_before INTEGER
);
CREATE INDEX IF NOT EXISTS payments_day ON payments(day);
CREATE INDEX IF NOT EXISTS payments_session ON payments(session);
CREATE TABLE IF NOT EXISTS video_jobs (
    job_id TEXT PRIMARY KEY,
    payment_id INTEGER NOT NULL REFERENCES payments(id),
    session TEXT NOT NULL,
    model TEXT NOT NULL,
    poll_url TEXT NOT NULL,
    header_name TEXT NOT NULL,
    header_value TEXT NOT NULL,
    valid_before INTEGER NOT NULL,
    status TEXT NOT NULL,
    path TEXT,
    url TEXT,
    created_at REAL NOT NULL
);
"""


# Running totals per session and per day, kept in the same transaction as every status change,
# so checking a budget is a lookup instead of a sum over every payment ever made.
TOTALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS totals (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    counted_atomic INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
"""
# Columns added after the first release, with their types: added in place to older ledgers.
ADDED_COLUMNS = {"payer": "TEXT", "pay_to": "TEXT", "valid_before": "INTEGER"}
SCHEMA_VERSION = 3
# `note = note + "; " + new` with the empty cases handled; takes the new text three times.
NOTE_APPENDED = "CASE WHEN ? = '' THEN note WHEN note = '' THEN ? ELSE note || '; ' || ? END"
COUNTED_SQL = (
    "CASE WHEN status='settled' THEN COALESCE(settled_atomic, amount_atomic)"
    " WHEN status IN ('reserved','signed') THEN amount_atomic ELSE 0 END"
)


def counted_atomic(status: str, amount_atomic: int, settled_atomic: int | None) -> int:
    """What a payment counts against budgets: settled amount, the amount while open, else 0."""
    if status == "settled":
        return settled_atomic if settled_atomic is not None else amount_atomic
    return amount_atomic if status in COUNTED else 0


def utc_day(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class PaymentRow:
    id: int
    created_at: float
    day: str
    session: str
    tool: str
    model: str
    amount_atomic: int
    settled_atomic: int | None
    status: Status
    nonce: str | None
    tx_hash: str | None
    network: str
    note: str
    payer: str | None = None  # the authorizer, once signed (None on rows from older versions)
    pay_to: str | None = None
    valid_before: int | None = None

    @property
    def counted_atomic(self) -> int:
        return counted_atomic(self.status, self.amount_atomic, self.settled_atomic)


@dataclass(frozen=True)
class VideoJobRow:
    job_id: str
    payment_id: int
    session: str
    model: str
    poll_url: str
    header_name: str
    header_value: str
    valid_before: int
    status: str
    path: str | None
    url: str | None


class LimitExceeded(Exception):
    """A reservation would pass a limit. `limit` names it: 'budget' or 'daily budget'."""

    def __init__(self, limit: str, remaining_atomic: int) -> None:
        super().__init__(limit)
        self.limit = limit
        self.remaining_atomic = remaining_atomic


class Ledger:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._read_only = read_only
        if read_only:
            # For reports (`blockrun-mcp spend`): no schema, no chmod, no releasing of abandoned
            # reservations; SQLite itself refuses any write. The file must already exist.
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._has_totals = (
                self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION
            )
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL still survives a killed process (the WAL is in the OS's hands at
        # commit); it only gives up an fsync per commit, a cost on every ledger write (measured
        # in bench/README.md).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA + TOTALS_SCHEMA)
        self._add_columns()
        self._build_totals()
        self._has_totals = True
        self._release_abandoned_reservations()

    def close(self) -> None:
        self._db.close()

    @property
    def read_only(self) -> bool:
        return self._read_only

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One IMMEDIATE transaction on the ledger's database, for stores that share its file
        (threads.py): their writes are serialized with the ledger's, across processes too."""
        return self._transaction()

    def read(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _add_columns(self) -> None:
        """Bring a ledger written by an older version up to today's columns (idempotent)."""
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(payments)")}
        with self._transaction() as db:
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    db.execute(f"ALTER TABLE payments ADD COLUMN {name} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS payments_status ON payments(status)")

    def _build_totals(self) -> None:
        """Fill the totals from the payments once, for a ledger written before they existed."""
        with self._transaction() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            db.execute("DELETE FROM totals")
            for scope in ("session", "day"):
                db.execute(
                    f"INSERT INTO totals (scope, key, counted_atomic) SELECT ?, {scope},"
                    f" SUM({COUNTED_SQL}) FROM payments GROUP BY {scope}",
                    (scope,),
                )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _release_abandoned_reservations(self) -> None:
        """Reservations of dead processes never reached signing: nothing can settle them.

        Signed rows stay as they are: their payment may have left, so they remain counted.
        """
        rows = self._db.execute("SELECT id, pid FROM payments WHERE status = 'reserved'").fetchall()
        for row in rows:
            if row["pid"] != os.getpid() and not _alive(row["pid"]):
                self.mark_released(row["id"], "process ended before signing")

    # --- reservations --------------------------------------------------------------------

    def reserve(
        self,
        *,
        session: str,
        tool: str,
        model: str,
        amount_atomic: int,
        network: str,
        session_limit_atomic: int,
        daily_limit_atomic: int | None,
    ) -> int:
        """Atomically check the session and daily limits and record a reservation."""
        now = time.time()
        day = utc_day(now)
        with self._transaction() as db:
            spent = dict(
                db.execute(
                    "SELECT scope, counted_atomic FROM totals"
                    " WHERE (scope = 'session' AND key = ?) OR (scope = 'day' AND key = ?)",
                    (session, day),
                ).fetchall()
            )
            session_spent = int(spent.get("session", 0))
            if session_spent + amount_atomic > session_limit_atomic:
                raise LimitExceeded("budget", max(0, session_limit_atomic - session_spent))
            if daily_limit_atomic is not None:
                daily_spent = int(spent.get("day", 0))
                if daily_spent + amount_atomic > daily_limit_atomic:
                    raise LimitExceeded("daily budget", max(0, daily_limit_atomic - daily_spent))
            cursor = db.execute(
                "INSERT INTO payments (created_at, updated_at, day, session, pid, tool, model,"
                " amount_atomic, status, network) VALUES (?,?,?,?,?,?,?,?, 'reserved', ?)",
                (now, now, day, session, os.getpid(), tool, model, amount_atomic, network),
            )
            self._add(db, session, day, amount_atomic)
            return int(cursor.lastrowid or 0)

    def mark_signed(
        self,
        payment_id: int,
        nonce: str,
        *,
        payer: str | None = None,
        pay_to: str | None = None,
        valid_before: int | None = None,
    ) -> bool:
        """Record the signature before the payment leaves. False when the row is no longer a
        reservation (another process sharing the data dir released it): the caller must not send.

        Reserved and signed count the same amount, so no total moves: one statement, committed
        by SQLite itself (as durable as every commit here: it survives a killed process).
        """
        cursor = self._db.execute(
            "UPDATE payments SET status='signed', nonce=?, payer=?, pay_to=?, valid_before=?,"
            " updated_at=? WHERE id=? AND status='reserved'",
            (nonce, payer, pay_to, valid_before, time.time(), payment_id),
        )
        return cursor.rowcount == 1

    def mark_settled(
        self, payment_id: int, settled_atomic: int, tx_hash: str | None, *, note: str = ""
    ) -> None:
        self._close(
            payment_id,
            f"status='settled', settled_atomic=?, tx_hash=?, note={NOTE_APPENDED}",
            (settled_atomic, tx_hash, note, note, note),
        )

    def mark_released(self, payment_id: int, note: str) -> None:
        self._close(payment_id, f"status='released', note={NOTE_APPENDED}", (note, note, note))

    def add_note(self, payment_id: int, note: str) -> None:
        """Append to a payment's note (what the gateway claimed, why a call ended)."""
        self._db.execute(
            f"UPDATE payments SET note={NOTE_APPENDED}, updated_at=? WHERE id=?",
            (note, note, note, time.time(), payment_id),
        )

    def open_signed(self) -> list[PaymentRow]:
        """Signed payments whose outcome is still unknown, oldest first (for the reconciler)."""
        rows = self._db.execute(
            "SELECT * FROM payments WHERE status = 'signed' ORDER BY id"
        ).fetchall()
        return [_payment(row) for row in rows]

    def _close(self, payment_id: int, assignments: str, values: tuple[object, ...]) -> None:
        """Move an open payment to settled or released, and its totals by what that changes.

        Only an open payment moves (a settled one is never released, nor settled twice), and an
        open one, reserved or signed, counts its full amount: so the change in what it counts is
        known from the updated row alone, without reading it first.
        """
        with self._transaction() as db:
            rows = db.execute(
                f"UPDATE payments SET {assignments}, updated_at=? WHERE id=?"
                " AND status IN ('reserved','signed')"
                " RETURNING status, amount_atomic, settled_atomic, session, day",
                (*values, time.time(), payment_id),
            ).fetchall()
            if not rows:
                return
            after = rows[0]
            delta = (
                counted_atomic(after["status"], after["amount_atomic"], after["settled_atomic"])
                - after["amount_atomic"]
            )
            self._add(db, after["session"], after["day"], delta)

    @staticmethod
    def _add(db: sqlite3.Connection, session: str, day: str, delta: int) -> None:
        if not delta:
            return
        for scope, key in (("session", session), ("day", day)):
            db.execute(
                "INSERT INTO totals (scope, key, counted_atomic) VALUES (?, ?, ?) ON CONFLICT"
                "(scope, key) DO UPDATE SET counted_atomic = counted_atomic + excluded.counted_atomic",
                (scope, key, delta),
            )

    @staticmethod
    def _total(db: sqlite3.Connection, scope: str, key: str) -> int:
        row = db.execute(
            "SELECT counted_atomic FROM totals WHERE scope = ? AND key = ?", (scope, key)
        ).fetchone()
        return int(row[0]) if row else 0

    # --- reading -------------------------------------------------------------------------

    def counted_by_sum(self, where: str, args: tuple[object, ...]) -> int:
        """The slow, obviously right sum over payments (reports on old ledgers, and tests)."""
        row = self._db.execute(
            f"SELECT COALESCE(SUM({COUNTED_SQL}), 0) FROM payments WHERE {where}", args
        ).fetchone()
        return int(row[0])

    def session_spent_atomic(self, session: str) -> int:
        if not self._has_totals:
            return self.counted_by_sum("session = ?", (session,))
        return self._total(self._db, "session", session)

    def day_spent_atomic(self, day: str | None = None) -> int:
        day = day or utc_day()
        if not self._has_totals:
            return self.counted_by_sum("day = ?", (day,))
        return self._total(self._db, "day", day)

    def payments(
        self, *, session: str | None = None, since_day: str | None = None, limit: int | None = None
    ) -> list[PaymentRow]:
        where, args = ["1=1"], []
        if session is not None:
            where.append("session = ?")
            args.append(session)
        if since_day is not None:
            where.append("day >= ?")
            args.append(since_day)
        sql = f"SELECT * FROM payments WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_payment(row) for row in self._db.execute(sql, args).fetchall()]

    def payment(self, payment_id: int) -> PaymentRow | None:
        row = self._db.execute("SELECT * FROM payments WHERE id = ?", (payment_id,)).fetchone()
        return _payment(row) if row else None

    # --- video jobs ----------------------------------------------------------------------

    def save_video_job(self, job: VideoJobRow) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO video_jobs (job_id, payment_id, session, model, poll_url,"
                " header_name, header_value, valid_before, status, path, url, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.job_id,
                    job.payment_id,
                    job.session,
                    job.model,
                    job.poll_url,
                    job.header_name,
                    job.header_value,
                    job.valid_before,
                    job.status,
                    job.path,
                    job.url,
                    time.time(),
                ),
            )

    def update_video_job(
        self, job_id: str, *, status: str, path: str | None = None, url: str | None = None
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE video_jobs SET status=?, path=COALESCE(?, path), url=COALESCE(?, url) WHERE job_id=?",
                (status, path, url, job_id),
            )

    def end_video_jobs_of(self, payment_id: int, status: str) -> None:
        """Mark the still-running jobs a payment paid for as ended (its authorization expired)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE video_jobs SET status=? WHERE payment_id=? AND status='running'",
                (status, payment_id),
            )

    def running_jobs_by_payment(self, payment_ids: list[int] | None = None) -> dict[int, str]:
        """payment id -> job id of the jobs still running (all of them, or of these payments)."""
        sql = "SELECT payment_id, job_id FROM video_jobs WHERE status = 'running'"
        args: list[int] = []
        if payment_ids is not None:
            if not payment_ids:
                return {}
            sql += f" AND payment_id IN ({','.join('?' * len(payment_ids))})"
            args = payment_ids
        return {row[0]: row[1] for row in self._db.execute(sql, args).fetchall()}

    def video_job(self, job_id: str) -> VideoJobRow | None:
        row = self._db.execute("SELECT * FROM video_jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return VideoJobRow(**{k: row[k] for k in VideoJobRow.__dataclass_fields__})


def _payment(row: sqlite3.Row) -> PaymentRow:
    # A ledger from an older version (read-only, not migrated) lacks the newer columns.
    present = set(row.keys())
    return PaymentRow(**{k: row[k] for k in PaymentRow.__dataclass_fields__ if k in present})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
