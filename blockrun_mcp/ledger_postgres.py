"""The ledger's PostgreSQL store (BLOCKRUN_LEDGER_URL): one ledger for a team's instances.

Through psycopg 3 and a connection pool. What differs from SQLite, and why:
- A check-and-reserve locks the totals rows it checks (`lock_totals`, SELECT ... FOR UPDATE in
  a fixed order): reservations on one budget are serialized across every instance, and the
  daily cap and each person's budget hold however many instances reserve at once.
- Which instance reserved a payment is its `instance` id; each instance keeps a heartbeat row
  fresh, and a reservation whose instance has gone quiet (it died) is released by any other
  instance, once (the release is a single conditional UPDATE). Heartbeats are written and
  judged by the database server's clock alone: instances whose clocks disagree still agree on
  who is alive.
- Every pooled connection has a lock_timeout, a statement_timeout and an
  idle_in_transaction_session_timeout: a row locked too long by another transaction ends the
  call in LedgerBusy (rolled back, nothing half done) instead of a wait without end.
- Schema changes are numbered migrations, applied at start (and by `blockrun-mcp migrate`)
  under an advisory lock, so several instances starting at once apply each exactly once.
- When the server cannot be reached, every call fails closed with a clear error: nothing is
  signed without a reservation, and the pool gets fresh connections once it is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.ledger import LedgerBusy, Result, StoreUnavailable

log = logging.getLogger("blockrun_mcp")

HEARTBEAT_SECONDS = 5.0
# An instance silent this long (by the database's clock) is taken for dead: its reservations
# never reached signing.
STALE_INSTANCE_SECONDS = 60.0
# A paid call waits on the ledger: while the database is down each call waits this long at
# most, then fails closed, so these stay short.
CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 3.0
# Each pooled connection's session settings (the defaults of PostgresBackend's parameters):
# - lock_timeout: how long a statement waits for a row another transaction holds (a budget's
#   totals row, locked by a reservation that checks it; those last milliseconds);
# - statement_timeout: how long one statement may run, lock waits included;
# - idle_in_transaction_session_timeout: a transaction left open this long without a statement
#   (its thread stuck) is ended by the server, and the row locks it held go with it.
LOCK_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 15.0
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 30.0
MIGRATION_LOCK = 0x626C6B72756E  # pg_advisory_xact_lock key: "blkrun"
# The database server's clock, in seconds since the epoch (heartbeats are kept in it).
DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"

MIGRATIONS: list[str] = [
    # 1: payments, video jobs, running totals, threads, instances.
    """
    CREATE TABLE payments (
        id BIGSERIAL PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        session TEXT NOT NULL,
        pid INTEGER NOT NULL,
        instance TEXT NOT NULL,
        tool TEXT NOT NULL,
        model TEXT NOT NULL,
        amount_atomic BIGINT NOT NULL,
        settled_atomic BIGINT,
        status TEXT NOT NULL,
        nonce TEXT,
        tx_hash TEXT,
        network TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        payer TEXT,
        pay_to TEXT,
        valid_before BIGINT,
        identity TEXT NOT NULL DEFAULT 'default'
    );
    CREATE INDEX payments_day ON payments(day);
    CREATE INDEX payments_session ON payments(session);
    CREATE INDEX payments_status ON payments(status);
    CREATE INDEX payments_identity ON payments(identity, day);
    CREATE TABLE video_jobs (
        job_id TEXT PRIMARY KEY,
        payment_id BIGINT NOT NULL REFERENCES payments(id),
        session TEXT NOT NULL,
        model TEXT NOT NULL,
        poll_url TEXT NOT NULL,
        header_name TEXT NOT NULL,
        header_value TEXT NOT NULL,
        valid_before BIGINT NOT NULL,
        status TEXT NOT NULL,
        path TEXT,
        url TEXT,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE totals (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        counted_atomic BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE TABLE threads (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        title TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX threads_owner ON threads(owner, updated_at);
    CREATE TABLE turns (
        thread_id TEXT NOT NULL REFERENCES threads(id),
        seq INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        model TEXT NOT NULL,
        effort TEXT,
        system TEXT,
        files TEXT NOT NULL,
        prompt TEXT NOT NULL,
        answer TEXT NOT NULL,
        finish_reason TEXT,
        cost_atomic BIGINT NOT NULL,
        payment_id BIGINT,
        PRIMARY KEY (thread_id, seq)
    );
    CREATE TABLE file_texts (
        sha256 TEXT PRIMARY KEY,
        text TEXT NOT NULL
    );
    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: secrets the instances share, made once by whichever starts first (the key that seals
    # a 2026-07-28 client's request_state, so a retry may reach any instance).
    """
    CREATE TABLE shared_secrets (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def shown(url: str) -> str:
    """The URL without its password, as messages and `doctor` show it."""
    parts = urlsplit(url)
    # The hosts as written: parsing them (`parts.port`) would raise on libpq's several-host
    # form (h1:5432,h2:5432) and lose an IPv6 address's brackets.
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{hosts}" if user else hosts
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Tx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[object] = ()) -> Result:
        cursor = self.conn.execute(sql.replace("?", "%s"), tuple(args))
        rows = cursor.fetchall() if cursor.description else []
        return Result(rows, cursor.rowcount)


class PostgresBackend:
    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        migrate: bool = True,
        pool_size: int = 16,
        lock_timeout_seconds: float | None = None,
        statement_timeout_seconds: float | None = None,
        idle_in_transaction_timeout_seconds: float | None = None,
    ) -> None:
        """`*_timeout_seconds`: the pooled connections' session settings; None takes the module's
        LOCK_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS, IDLE_IN_TRANSACTION_TIMEOUT_SECONDS
        (0 turns one off, as in PostgreSQL)."""
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url = url
        self.where = shown(url)
        self.read_only = read_only
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lock_timeout_seconds = _or(lock_timeout_seconds, LOCK_TIMEOUT_SECONDS)
        self.statement_timeout_seconds = _or(statement_timeout_seconds, STATEMENT_TIMEOUT_SECONDS)
        self.idle_in_transaction_timeout_seconds = _or(
            idle_in_transaction_timeout_seconds, IDLE_IN_TRANSACTION_TIMEOUT_SECONDS
        )
        self._closing = threading.Lock()
        self._closed = False
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                # A read-only ledger (reports, doctor) is read-only in the database too.
                **({"options": "-c default_transaction_read_only=on"} if read_only else {}),
            },
            timeout=POOL_TIMEOUT_SECONDS,
            check=ConnectionPool.check_connection,  # a restarted server: fresh connections
            configure=self._configure,
            open=False,
            name="blockrun-ledger",
        )
        try:
            # One plain connection first: a server that is down or refuses us is said at once,
            # with its own reason (the pool would retry until its timeout, and then say less).
            import psycopg

            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
            self.pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
        except Exception as exc:
            self.pool.close()
            raise self._unavailable(exc) from None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        try:
            self.migrations_applied = self.migrate() if migrate and not read_only else 0
            if not read_only:
                self.beat()
        except BaseException:
            self.pool.close()
            raise
        if not read_only:
            self._heartbeat = threading.Thread(
                target=self._keep_beating, name="blockrun-ledger-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _configure(self, conn: Any) -> None:
        """Each new pooled connection's timeouts (in its session: set once, kept; the pool's
        connections are autocommit, so this leaves no transaction open)."""
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false),"
            " set_config('statement_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (
                _milliseconds(self.lock_timeout_seconds),
                _milliseconds(self.statement_timeout_seconds),
                _milliseconds(self.idle_in_transaction_timeout_seconds),
            ),
        )

    # --- what the ledger asks of a store ----------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        import psycopg
        from psycopg import errors

        try:
            with self.pool.connection() as conn, conn.transaction():
                yield _Tx(conn)
        except errors.LockNotAvailable:
            raise self._busy(
                "a row this call needs (a budget's running total, say) was locked by another "
                f"transaction for longer than {self.lock_timeout_seconds:g} s (lock_timeout)"
            ) from None
        except errors.QueryCanceled:
            raise self._busy(
                f"a statement ran longer than {self.statement_timeout_seconds:g} s "
                "(statement_timeout), or was cancelled"
            ) from None
        except errors.DeadlockDetected:
            raise self._busy(
                "this call and another transaction waited on each other's rows, and PostgreSQL "
                "ended this one (a deadlock)"
            ) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self._unavailable(exc) from None
        except Exception as exc:
            from psycopg_pool import PoolTimeout

            if isinstance(exc, PoolTimeout):
                raise self._unavailable(exc) from None
            raise

    def run(self, sql: str, args: Sequence[object] = ()) -> Result:
        with self.transaction() as tx:
            return tx.execute(sql, args)

    def lock_totals(self, tx: _Tx, keys: list[tuple[str, str]]) -> None:
        if not keys:
            return
        pairs = [value for pair in keys for value in pair]
        # Missing rows first, in one statement, in the keys' order. (ON CONFLICT DO NOTHING does
        # not wait on an existing row another transaction has locked; it waits only on one
        # another transaction is inserting, until that one ends.)
        tx.execute(
            "INSERT INTO totals (scope, key, counted_atomic) VALUES "
            + ", ".join("(?, ?, 0)" for _ in keys)
            + " ON CONFLICT DO NOTHING",
            pairs,
        )
        # Locked in the order given (total_keys'): FOR UPDATE locks the rows as the sort
        # returns them.
        conditions = " OR ".join("(scope = ? AND key = ?)" for _ in keys)
        order = " ".join(f"WHEN scope = ? AND key = ? THEN {i}" for i in range(len(keys)))
        tx.execute(
            f"SELECT scope, key FROM totals WHERE {conditions}"
            f" ORDER BY CASE {order} END FOR UPDATE",
            pairs + pairs,
        )

    def owner(self) -> dict[str, object]:
        return {"pid": os.getpid(), "instance": self.instance}

    def abandoned_reservations(self, tx: _Tx) -> list[int]:
        # Heartbeats are the database's clock (`beat`), and so is what they are compared with:
        # an instance whose own clock runs fast or slow is judged neither dead nor alive by it.
        rows = tx.execute(
            "SELECT p.id FROM payments p LEFT JOIN instances i ON i.id = p.instance"
            " WHERE p.status = 'reserved' AND p.instance <> ?"
            f" AND (i.id IS NULL OR i.heartbeat_at < {DB_NOW} - ?)",
            (self.instance, STALE_INSTANCE_SECONDS),
        ).rows
        return [row["id"] for row in rows]

    def close(self) -> None:
        """Stop beating, remove this instance's row, close the pool; a second call does nothing
        (from any thread)."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=HEARTBEAT_SECONDS + 1)
        if not self.read_only:
            # (When the server is gone, the heartbeat going stale says the same.)
            with contextlib.suppress(BlockrunError):
                self.run("DELETE FROM instances WHERE id = ?", (self.instance,))
        self.pool.close()

    # --- migrations, heartbeats, health -----------------------------------------------------

    def migrate(self) -> int:
        """Apply the migrations this database lacks, each exactly once however many instances
        start together (they queue on an advisory lock); returns how many were applied."""
        with self.transaction() as tx:
            # Not the calls' timeouts: instances starting together wait here, in turn, for as
            # long as the first takes to migrate (an index on a large table can take minutes).
            tx.execute("SET LOCAL lock_timeout = 0")
            tx.execute("SET LOCAL statement_timeout = 0")
            tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            row = tx.execute(
                "SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations"
            ).one()
            current = int(row["version"]) if row else 0
            for version in range(current + 1, SCHEMA_VERSION + 1):
                tx.conn.execute(MIGRATIONS[version - 1])
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
            return SCHEMA_VERSION - current

    def shared_secret(self, name: str) -> bytes:
        """The instances' one secret called `name`: 32 random bytes, made by the first to ask."""
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO shared_secrets (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, os.urandom(32)),
            )
            row = tx.execute("SELECT value FROM shared_secrets WHERE name = ?", (name,)).one()
        assert row is not None
        return bytes(row["value"])

    def schema_version(self) -> int:
        """The newest migration applied here; 0 for a database no instance has migrated."""
        with self.transaction() as tx:
            found = tx.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS found").one()
            if not (found and found["found"]):
                return 0
            row = tx.execute(
                "SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations"
            ).one()
            return int(row["version"]) if row else 0

    def clock_skew_seconds(self) -> float:
        """The database server's clock minus ours (`doctor` shows it). Heartbeats and which
        instance is alive use the database's clock alone, so a skew does not touch them; the
        UTC day a payment is counted in, and its created_at, are still this host's."""
        before = time.time()
        row = self.run("SELECT EXTRACT(EPOCH FROM clock_timestamp()) AS now").one()
        after = time.time()
        assert row is not None
        return float(row["now"]) - (before + after) / 2

    def beat(self) -> None:
        """This instance is alive, as of the database's clock (every instance's heartbeat is
        written, and compared, in the one clock: see `abandoned_reservations`)."""
        self.run(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at)"
            f" VALUES (?, ?, ?, {DB_NOW}, {DB_NOW})"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            (self.instance, socket.gethostname(), os.getpid()),
        )

    def _keep_beating(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except BlockrunError as exc:  # the server is down: say so, keep trying
                log.warning("ledger heartbeat failed: %s", exc.message)

    def _busy(self, what: str) -> LedgerBusy:
        return LedgerBusy(
            f"The ledger's PostgreSQL at {self.where} is busy: {what}, so the call stopped "
            "waiting and changed nothing."
        )

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        # psycopg's messages can quote the connection string; never its password.
        if urlsplit(self.url).password:
            detail = detail.replace(urlsplit(self.url).password or "", "***")
        return StoreUnavailable(
            f"The ledger's PostgreSQL at {self.where} cannot be used ({detail}). Check that the "
            "database is up and BLOCKRUN_LEDGER_URL is right; the server recovers by itself "
            "when it is back."
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _milliseconds(seconds: float) -> str:
    """A timeout setting's value: whole milliseconds (0 is off; a positive one is at least 1)."""
    if seconds <= 0:
        return "0"
    return str(max(1, round(seconds * 1000)))
