"""The ledger's SQLite store: one file in the data dir, the zero-set-up default.

Several servers on one machine may share it (two hosts open at once): a transaction begins
IMMEDIATE, so SQLite itself serializes every check-and-reserve. A process that dies with a
reservation open is found by its pid by the next process that opens the file.

One connection serves every thread of the process (so `synchronous=FULL`, a per-connection
pragma, covers every commit): a re-entrant lock is held for each whole transaction and each
statement run on its own, so two threads' statements never mix in one transaction. Waiting for
that lock, or for another process's write transaction (SQLite's busy timeout), lasts at most
`busy_timeout_seconds`; then the call fails with LedgerBusy, having changed nothing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from blockrun_mcp.ledger import COUNTED_SQL, LedgerBusy, Result

# How long a call waits for the database (another process's write transaction, or another
# thread of this one) before it fails closed. A transaction here lasts milliseconds (an fsync):
# waiting this long means something else holds the file.
BUSY_TIMEOUT_SECONDS = 5.0
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

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
    valid_before INTEGER,
    identity TEXT NOT NULL DEFAULT 'default'
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
CREATE TABLE IF NOT EXISTS totals (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    counted_atomic INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS threads_owner ON threads(owner, updated_at);
CREATE TABLE IF NOT EXISTS turns (
    thread_id TEXT NOT NULL REFERENCES threads(id),
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    model TEXT NOT NULL,
    effort TEXT,
    system TEXT,
    files TEXT NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    finish_reason TEXT,
    cost_atomic INTEGER NOT NULL,
    payment_id INTEGER,
    PRIMARY KEY (thread_id, seq)
);
CREATE TABLE IF NOT EXISTS file_texts (
    sha256 TEXT PRIMARY KEY,
    text TEXT NOT NULL
);
"""
# Columns added after the first release: added in place to older ledgers.
ADDED_COLUMNS = {
    "payer": "TEXT",
    "pay_to": "TEXT",
    "valid_before": "INTEGER",
    "identity": "TEXT NOT NULL DEFAULT 'default'",
}
# 2: running totals; 3: payer, payee, validBefore; 4: identities (and their totals), threads.
SCHEMA_VERSION = 4
TOTALS_FROM_PAYMENTS = {
    "session": "session",
    "day": "day",
    "identity-day": "identity || '|' || day",
}


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, args: Sequence[object] = ()) -> Result:
        cursor = self.db.execute(sql, tuple(args))
        rows = cursor.fetchall()
        return Result(rows, cursor.rowcount)


class SQLiteBackend:
    kind = "sqlite"

    def __init__(
        self, path: Path, *, read_only: bool = False, busy_timeout_seconds: float | None = None
    ) -> None:
        self.path = path
        self.where = str(path)
        self.read_only = read_only
        self.busy_timeout_seconds = (
            BUSY_TIMEOUT_SECONDS if busy_timeout_seconds is None else busy_timeout_seconds
        )
        # Held for each whole transaction (re-entrant: a statement run inside one joins it).
        self._lock = threading.RLock()
        timeout = self.busy_timeout_seconds
        if read_only:
            # For reports (`blockrun-mcp spend`): no schema, no chmod, no releasing of abandoned
            # reservations; SQLite itself refuses any write. The file must already exist.
            uri = f"{path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is on disk before it returns (the WAL is synced at each commit).
        # NORMAL in WAL mode survives a killed process but not a power loss or an OS crash: the
        # last commits can roll back, and a payment marked signed (its authorization may have
        # left the machine) would come back "reserved", which the abandoned-reservation pass
        # then releases, uncounting money that may be spent. The pragma is per connection and
        # this one connection serves every ledger call (any thread's), so it is set once, for
        # every commit: switched around mark_signed, it would also cover, or miss, whatever else
        # commits in between. Its cost, an fsync per commit, is measured in bench/README.md
        # ("SQLite synchronous").
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _held(self) -> Iterator[None]:
        """This process's one connection, for this thread, waited for at most the busy
        timeout (another thread's transaction waiting on another process's, say)."""
        if not self._lock.acquire(timeout=self.busy_timeout_seconds):
            raise self._busy("another thread of this process held its connection")
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self._held():
            with self._busy_as_ledger_busy():
                self._db.execute("BEGIN IMMEDIATE")
            try:
                with self._busy_as_ledger_busy():
                    yield _Tx(self._db)
            except BaseException:
                self._rollback()
                raise
            try:
                with self._busy_as_ledger_busy():
                    self._db.execute("COMMIT")
            except BaseException:
                self._rollback()  # (a COMMIT that failed leaves the transaction open)
                raise

    def run(self, sql: str, args: Sequence[object] = ()) -> Result:
        with self._held(), self._busy_as_ledger_busy():
            return _Tx(self._db).execute(sql, args)

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @contextmanager
    def _busy_as_ledger_busy(self) -> Iterator[None]:
        """SQLite's "database is locked" (its busy timeout passed) as LedgerBusy."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            raise self._busy(f"another process held its database lock ({exc})") from None

    def _busy(self, who: str) -> LedgerBusy:
        return LedgerBusy(
            f"The ledger at {self.where} is busy: {who} for longer than "
            f"{self.busy_timeout_seconds:g} s, so the call stopped waiting and changed nothing."
        )

    def lock_totals(self, tx: _Tx, keys: list[tuple[str, str]]) -> None:
        return None  # BEGIN IMMEDIATE holds the whole database already

    def owner(self) -> dict[str, object]:
        return {"pid": os.getpid()}

    def abandoned_reservations(self, tx: _Tx) -> list[int]:
        rows = tx.execute("SELECT id, pid FROM payments WHERE status = 'reserved'").rows
        return [row["id"] for row in rows if row["pid"] != os.getpid() and not _alive(row["pid"])]

    def _migrate(self) -> None:
        """Today's tables, and an older ledger brought up to them in place (idempotent)."""
        self._db.executescript(SCHEMA)
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(payments)")}
        with self.transaction() as tx:
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    tx.execute(f"ALTER TABLE payments ADD COLUMN {name} {kind}")
            tx.execute("CREATE INDEX IF NOT EXISTS payments_status ON payments(status)")
            if tx.execute("PRAGMA user_version").rows[0][0] < SCHEMA_VERSION:
                # Totals from the payments, for a ledger written before (some of) them existed.
                tx.execute("DELETE FROM totals")
                for scope, key in TOTALS_FROM_PAYMENTS.items():
                    tx.execute(
                        f"INSERT INTO totals (scope, key, counted_atomic) SELECT ?, {key},"
                        f" SUM({COUNTED_SQL}) FROM payments GROUP BY {key}",
                        (scope,),
                    )
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in _BUSY_CODES


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
