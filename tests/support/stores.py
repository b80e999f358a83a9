"""Ledgers on either store, so that one suite holds for both (issue 15: one interface, two
implementations, the same tests).

`ledger_store` (registered in tests/conftest.py) is parametrized over STORES: a test that takes it
runs once on a SQLite file in its tmp_path (`[sqlite]`) and once on a PostgreSQL database of its
own on the test server (`[postgresql]`, see tests/support/postgres.py). It is a factory:

    ledger = ledger_store()             # a Ledger on the test's store, opened as Ledger.open does
    again = ledger_store()              # another instance on the same store
    other = ledger_store("other")       # a store of its own (another file, another database)
    ledger_store.abandon(ledger, payment_id)  # its reserver now looks dead (a gone process/instance)

Every ledger it opened is closed after the test.

A PostgreSQL database is new, or one an earlier test had, emptied (`LedgerDatabases`): migrated,
every table empty, ids from 1 again, which is what a new database is once a ledger has opened it.
Creating a database copies a whole template (most of a second on a busy machine); emptying one
takes milliseconds. Migrations of new databases are test_ledger_postgres.py's.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from blockrun_mcp.ledger import Ledger, StoreUnavailable
from tests.support.postgres import new_database

STORES = ("sqlite", "postgresql")
# An instance id no instance has (no heartbeat row): what a dead instance's rows look like to the
# others once its row is gone.
GONE_INSTANCE = "gone-host-0-00000000"


def reserve(ledger: Ledger, amount_atomic: int, session: str = "s", **limits: int | None) -> int:
    """A reservation with no limits but those given (the ledger suites' shorthand)."""
    limits = {"session_limit_atomic": None, "daily_limit_atomic": None, **limits}
    return ledger.reserve(
        session=session,
        tool="ask_model",
        model="m",
        amount_atomic=amount_atomic,
        network="eip155:8453",
        **limits,
    )


class LedgerDatabases:
    """Databases for ledgers, each lent to one test at a time and emptied when it is given back;
    all dropped at the end of the session."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.free: list[str] = []
        self._stack = ExitStack()

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        return self._stack.enter_context(new_database(self.server_url))

    def give_back(self, url: str) -> None:
        """Empties `url` for the next test; one that cannot be emptied is not lent again."""
        try:
            empty_database(url)
        except psycopg.Error:
            return
        self.free.append(url)

    def close(self) -> None:
        self._stack.close()


def empty_database(url: str) -> None:
    """Every row of every table but the migrations' gone, every sequence back to 1."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '5s'")  # a lock still held: not lent again
        conn.execute("SET LOCAL session_replication_role = replica")  # any order, despite FKs
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        sequences = conn.execute(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences"
            " WHERE schemaname = 'public'"
        ).fetchall()
        for (sequence,) in sequences:
            conn.execute("SELECT setval(%s::regclass, 1, false)", (sequence,))


class LedgerStores:
    """Opens ledgers on one kind of store; see the module's docstring."""

    def __init__(self, kind: str, tmp_path: Path, databases: LedgerDatabases | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.databases = databases
        self.opened: list[Ledger] = []
        self._urls: dict[str, str] = {}
        self._dead_pid: int | None = None

    def __call__(self, name: str = "ledger", *, read_only: bool = False) -> Ledger:
        if self.kind == "sqlite":
            ledger = Ledger.open(None, self.tmp_path / name, read_only=read_only)
        else:
            ledger = Ledger.open(self.url(name), self.tmp_path, read_only=read_only)
        self.opened.append(ledger)
        return ledger

    def url(self, name: str = "ledger") -> str:
        """The URL of the PostgreSQL database called `name` in this test (taken on first use)."""
        assert self.databases is not None, "only the postgresql stores have URLs"
        if name not in self._urls:
            self._urls[name] = self.databases.take()
        return self._urls[name]

    def abandon(self, ledger: Ledger, payment_id: int) -> None:
        """Make `payment_id` look reserved by a process (SQLite: its pid) or an instance
        (PostgreSQL: its id, with no heartbeat row) that is gone."""
        if self.kind == "sqlite":
            ledger.store.run(
                "UPDATE payments SET pid = ? WHERE id = ?", (self.dead_pid(), payment_id)
            )
        else:
            ledger.store.run(
                "UPDATE payments SET instance = ? WHERE id = ?", (GONE_INSTANCE, payment_id)
            )

    def dead_pid(self) -> int:
        """The pid of a process that has ended (a real one, not a made-up number)."""
        if self._dead_pid is None:
            done = subprocess.run(
                [sys.executable, "-c", "import os; print(os.getpid())"],
                capture_output=True,
                text=True,
                check=True,
            )
            self._dead_pid = int(done.stdout)
        return self._dead_pid

    def close(self) -> None:
        for ledger in reversed(self.opened):
            ledger.close()  # (twice is harmless on both stores)
        if self.databases is not None:
            for url in self._urls.values():
                self.databases.give_back(url)


@pytest.fixture(scope="session")
def ledger_databases(postgres_url: str) -> Iterator[LedgerDatabases]:
    databases = LedgerDatabases(postgres_url)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(params=STORES)
def ledger_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerStores]:
    """A factory of ledgers on a SQLite file, then on a PostgreSQL database of the test's own."""
    databases = None
    if request.param == "postgresql":  # (a run of only the SQLite cases needs no server)
        databases = request.getfixturevalue("ledger_databases")
    stores = LedgerStores(request.param, tmp_path, databases)
    try:
        yield stores
    finally:
        stores.close()


class FailingStore:
    """A real store whose statements containing `fragment` fail `times` times, as a database
    that is down for a moment fails them (StoreUnavailable, what the PostgreSQL store raises).

    It wraps the ledger's own store: everything else runs on the real database, so what the
    ledger holds afterwards is what a real outage would have left.
    """

    def __init__(
        self, store: Any, fragment: str, *, times: int = 1, payment_id: int | None = None
    ) -> None:
        self.store = store
        self.fragment = fragment
        self.left = times
        self.failed = 0
        # Only statements about this payment (its id among the arguments): calls running at
        # once, in the ledger's worker threads, must not take each other's failures.
        self.payment_id = payment_id
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _check(self, sql: str, args: Sequence[object] = ()) -> None:
        if self.fragment not in sql or (
            self.payment_id is not None and self.payment_id not in args
        ):
            return
        with self._lock:
            if self.left <= 0:
                return
            self.left -= 1
            self.failed += 1
        raise StoreUnavailable("The ledger's store cannot be used (a test's outage).")

    def run(self, sql: str, args: Sequence[object] = ()) -> Any:
        self._check(sql, args)
        return self.store.run(sql, args)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.store.transaction() as tx:
            yield _FailingTx(self, tx)


class _FailingTx:
    def __init__(self, store: FailingStore, tx: Any) -> None:
        self.store, self.tx = store, tx

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        self.store._check(sql, args)
        return self.tx.execute(sql, args)


def fail_statements(
    ledger: Ledger, fragment: str, *, times: int = 1, payment_id: int | None = None
) -> FailingStore:
    """Make `ledger`'s statements containing `fragment` fail `times` times (see FailingStore)."""
    failing = FailingStore(ledger.store, fragment, times=times, payment_id=payment_id)
    ledger.store = failing
    return failing


def run_together(count: int, work: Callable[[int], object], *, timeout: float = 60) -> list[object]:
    """`work(0..count-1)` on as many threads, started at once; their results (or exceptions)."""
    start = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except BaseException as error:  # returned: the test says what it expects
            results[index] = error

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=timeout)
    assert not any(worker.is_alive() for worker in workers), f"still running: {results}"
    return results
