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
- Round trips are what a paid call waits for, so a transaction sends its statements in batches
  (`_Tx`), in pipeline mode: a batch, BEGIN with the first, COMMIT with the last, is sent when
  a result in it is read, and ends in one Sync. The same statements run in the same order in
  the same transaction; only the waits between them go. A statement on its own (`run`) is one
  autocommit round trip, and the pool's round-trip check of a connection is made only where
  it pays (`_check`): a dead connection found by a transaction's first round trip, before
  anything could be committed, costs a resend on another connection, not the call.
- Schema changes are numbered migrations, applied at start (and by `blockrun-mcp migrate`)
  under an advisory lock, so several instances starting at once apply each exactly once.
- When the server cannot be reached, every call fails closed with a clear error: nothing is
  signed without a reservation, and the pool gets fresh connections once it is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import uuid
import weakref
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
# A pooled connection handed out within this long of its last use, whose socket has nothing to
# read, is handed out without the pool's round-trip check (`_check`).
CHECK_AFTER_IDLE_SECONDS = 1.0
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


_Batch = list[tuple[str, "tuple[object, ...] | None", "_Pending | None"]]


class _Pending(Result):
    """A statement's result, waited for when it is first read: until then the statement waits,
    unsent, for the next one whose result is read, or for the COMMIT, and goes with it."""

    def __init__(self, tx: _Tx) -> None:  # (no dataclass fields: rows and rowcount are read)
        self._tx = tx
        self.answer: Result | None = None  # once answered
        self.status = ""  # the server's command tag ("COMMIT", "INSERT 0 1", ...)

    def _result(self) -> Result:
        if self.answer is None:
            self._tx.flush()
        if self.answer is None:  # (read after its transaction failed: a caller's mistake)
            raise RuntimeError("the result of a statement that was never answered")
        return self.answer

    @property
    def rows(self) -> list[Any]:
        return self._result().rows

    @property
    def rowcount(self) -> int:
        return self._result().rowcount


class _Tx:
    """One transaction on one pooled connection, its statements sent in batches.

    `execute` queues a statement; `flush` sends everything queued and waits once for all of
    it. A flush happens when a result is read (`_Pending`), and at the commit: BEGIN goes with
    the first batch, COMMIT with the last. So a reservation is three round trips (its locks and
    totals; its payment row, whose id is held before the commit; its increments and COMMIT), a
    settlement two, a thread's turn one.

    The statements are what they were, with the same protocol messages (Parse, Bind, Execute,
    values bound on the server, prepared statements as psycopg prepares them): the connection
    is in pipeline mode for the transaction, and a batch ends in one Sync instead of one per
    statement. The server runs them in order, each with its own snapshot, each under
    lock_timeout and statement_timeout; the first that fails skips the rest of its batch
    (COMMIT with it) and is raised, and the transaction is rolled back. Each batch but the last
    ends in a Sync and nothing after it, so between batches the server waits "idle in
    transaction" under idle_in_transaction_session_timeout. (Only the last batch leaves the
    pipeline: psycopg follows the Sync of a pipeline it leaves with a Flush when answers are
    still to come, and a Flush after the Sync disarms the server's idle-in-transaction timer;
    after COMMIT there is no transaction left to time.)

    The first batch's connection may turn out dead (a server restart's FATAL not yet on its
    socket, a connection a middlebox dropped): before its answer nothing has been read, and
    without its COMMIT nothing can have been committed (the server rolls back the transaction
    of a connection that is gone). So that batch alone is sent again, once, on another
    connection: a reservation is not refused, nor a settlement left unbooked, for a connection
    the pool's check was spared on. A later batch is never sent again: the caller acted on what
    the earlier ones answered.

    `deferred=False` (migrations, which run scripts on the connection itself) sends every
    statement at once, each its own round trip, outside pipeline mode.
    """

    def __init__(self, backend: PostgresBackend, *, deferred: bool = True) -> None:
        self.backend = backend
        self.deferred = deferred
        self.conn: Any = None  # taken from the pool by the first batch
        self._queued: _Batch = [("BEGIN", None, None)]
        self._began = False  # the first batch (with BEGIN) was sent
        self._ended = False
        self._pipeline: contextlib.ExitStack | None = None  # while the connection is in one
        self._sync: Any = None  # that pipeline's sync()

    def execute(self, sql: str, args: Sequence[object] = ()) -> Result:
        if self._ended:
            raise RuntimeError("a statement after the transaction ended")
        pending = _Pending(self)
        self._queued.append((sql.replace("?", "%s"), tuple(args), pending))
        if not self.deferred:
            self.flush()
        return pending

    def flush(self) -> None:
        """Send every statement queued, in one batch, and wait for their answers."""
        import psycopg

        batch, self._queued = self._queued, []
        if not batch:
            return
        first = not self._began
        self._began = True
        if self.conn is None:
            self.conn = self.backend._checkout()
        try:
            self._send(batch)
        except psycopg.OperationalError:
            # (A server's refusal, a lock timeout say, comes on a working connection: raised.)
            if not (first and self.conn.closed and batch[-1][0] != "COMMIT"):
                raise
            self._leave_pipeline()
            self.backend._give_back(self.conn)
            self.conn = None
            self.conn = self.backend._checkout()
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        conn = self.conn
        if self.deferred and self._pipeline is None:  # pipeline mode, for the transaction
            self._pipeline = contextlib.ExitStack()
            self._sync = self._pipeline.enter_context(conn.pipeline()).sync
        cursors = [conn.execute(sql, args) for sql, args, _ in batch]
        if not self.deferred:
            pass  # (each was answered as it went)
        elif batch[-1][0] == "COMMIT":
            self._leave_pipeline(quietly=False)  # its Sync: the last answers, or the error
        else:
            self._sync()  # a Sync, and nothing after it (see above)
        for (_, _, pending), cursor in zip(batch, cursors, strict=True):
            if pending is not None:
                pending.answer, pending.status = _answer(cursor), cursor.statusmessage or ""

    def _leave_pipeline(self, *, quietly: bool = True) -> None:
        """Out of pipeline mode: a Sync, and every answer still to come read (its first error
        raised, unless `quietly`)."""
        import psycopg

        pipeline, self._pipeline, self._sync = self._pipeline, None, None
        if pipeline is None:
            return
        if not quietly:
            pipeline.close()
            return
        with contextlib.suppress(psycopg.Error):
            pipeline.close()

    def commit(self) -> None:
        if not self._began and len(self._queued) == 1:  # nothing but BEGIN: nothing to do
            self._ended = True
            return
        done = _Pending(self)
        self._queued.append(("COMMIT", None, done))
        self.flush()
        self._ended = True
        if done.status != "COMMIT":
            # A transaction that failed earlier ends in ROLLBACK at its COMMIT, without an error.
            raise self.backend._unavailable(
                RuntimeError(f"its COMMIT was answered {done.status!r}")
            )

    def abandon(self) -> None:
        """Rolled back: what was never sent is dropped; what the server holds, rolled back."""
        import psycopg
        from psycopg.pq import TransactionStatus

        self._queued = []
        self._ended = True
        conn = self.conn
        if conn is None:
            return  # nothing was sent
        self._leave_pipeline()  # (what it still had to say is dropped)
        if conn.closed:
            return  # the connection is gone, and its transaction with it
        if conn.info.transaction_status != TransactionStatus.IDLE:
            # rollback(), not a ROLLBACK statement: psycopg then also forgets the statements it
            # takes for prepared (a Parse skipped in a failed pipeline never was). (Failing, the
            # pool rolls it back when it is given back, or closes it.)
            with contextlib.suppress(psycopg.Error):
                conn.rollback()

    def give_back(self) -> None:
        if self.conn is not None:
            self.backend._give_back(self.conn)
            self.conn = None


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
        import psycopg
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
        # When each pooled connection was last given back, and when one was last found dead:
        # what `_check` judges by (monotonic clock).
        self._used_at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lost_at = float("-inf")
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
            check=self._check,  # a restarted server: fresh connections
            configure=self._configure,
            open=False,
            name="blockrun-ledger",
        )
        try:
            # One plain connection first: a server that is down or refuses us is said at once,
            # with its own reason (the pool would retry until its timeout, and then say less).
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
        self._used_at[conn] = time.monotonic()  # (it answered just now)

    def _check(self, conn: Any) -> None:
        """The pool's check of a connection before it hands it out, with a round trip
        (`ConnectionPool.check_connection`) only where that pays: for a connection idle for
        CHECK_AFTER_IDLE_SECONDS or longer (a middlebox may have dropped it without a word), one
        last used before another was found dead (a restart ends them all), or one whose socket
        has anything to read (a server that ends a connection sends its FATAL message and
        closes it; nothing else arrives on an idle one). A connection used a moment ago, its
        socket quiet, is handed out as it is: should it still be dead, a transaction's first
        round trip finds it, and sends again on another (`_Tx.flush`); a read does the same
        (`run`). A write on its own (`run`) fails closed: mark_signed's caller then sends
        nothing (the payment is released), so no signed payment goes unrecorded."""
        from psycopg_pool import ConnectionPool

        used = self._used_at.get(conn)
        if (
            used is None
            or used <= self._lost_at
            or time.monotonic() - used >= CHECK_AFTER_IDLE_SECONDS
            or not _quiet(conn)
        ):
            ConnectionPool.check_connection(conn)

    def _checkout(self) -> Any:
        return self.pool.getconn()

    def _give_back(self, conn: Any) -> None:
        if conn.closed:
            self._lost_at = time.monotonic()  # the others may be as dead: checked before use
        else:
            self._used_at[conn] = time.monotonic()
        self.pool.putconn(conn)

    # --- what the ledger asks of a store ----------------------------------------------------

    @contextmanager
    def transaction(self, *, deferred: bool = True) -> Iterator[_Tx]:
        """One transaction, its statements sent in batches (`_Tx`); `deferred=False` sends each
        statement at once (its own round trip)."""
        with self._failures():
            tx = _Tx(self, deferred=deferred)
            try:
                yield tx
                tx.commit()
            except BaseException:
                tx.abandon()
                raise
            finally:
                tx.give_back()

    def run(self, sql: str, args: Sequence[object] = ()) -> Result:
        """One statement, committed on its own: one autocommit round trip, no BEGIN or COMMIT.
        A read whose connection turns out dead is read again on another (reading changes
        nothing); a write is not sent twice (the first may have committed)."""
        import psycopg

        reading = sql.lstrip()[:7].upper() == "SELECT "
        statement, values = sql.replace("?", "%s"), tuple(args)
        with self._failures():
            conn = self._checkout()
            try:
                try:
                    return _answer(conn.execute(statement, values))
                except psycopg.OperationalError:
                    if not (reading and conn.closed):
                        raise
                self._give_back(conn)
                conn = None
                conn = self._checkout()
                return _answer(conn.execute(statement, values))
            finally:
                if conn is not None:
                    self._give_back(conn)

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """psycopg's and the pool's failures as the ledger's: LedgerBusy, StoreUnavailable."""
        import psycopg
        from psycopg import errors
        from psycopg_pool import PoolTimeout

        try:
            yield
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
        except errors.IdleInTransactionSessionTimeout:
            raise self._busy(
                "this call's transaction waited between its statements for longer than "
                f"{self.idle_in_transaction_timeout_seconds:g} s "
                "(idle_in_transaction_session_timeout), and PostgreSQL ended it"
            ) from None
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise self._unavailable(exc) from None

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
        with self.transaction(deferred=False) as tx:  # (it runs scripts on tx.conn itself)
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


def _answer(cursor: Any) -> Result:
    return Result(cursor.fetchall() if cursor.description else [], cursor.rowcount)


def _quiet(conn: Any) -> bool:
    """Nothing to read on an idle connection's socket, seen without a round trip (select with
    no wait); a connection already known to be broken, or a socket that cannot be asked, is
    not quiet."""
    import psycopg

    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _milliseconds(seconds: float) -> str:
    """A timeout setting's value: whole milliseconds (0 is off; a positive one is at least 1)."""
    if seconds <= 0:
        return "0"
    return str(max(1, round(seconds * 1000)))
