"""The ledger under threads and held locks: bounded waits, the rows a reservation locks, and
liveness by one clock.

The server calls the ledger from worker threads, several at once, and a team's instances share
its rows. So: a row (SQLite: the database) held by someone else too long ends a call in
LedgerBusy within about the store's timeout, with nothing written, and the same call succeeds
once it is free (a); a reservation holds only the rows its limits need while it checks and
records, so another person's reservation does not queue behind it (b); eight threads on one
Ledger keep every total exact and never pass a limit (c); and whether an instance is alive is
judged by the database's clock, however wrong its own (d).

Each test runs on SQLite and on PostgreSQL (tests/support/stores.py) unless what it tests is
PostgreSQL's alone (row locks, heartbeats).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from blockrun_mcp import ledger_postgres
from blockrun_mcp.ledger import (
    ABANDONED_NOTE,
    Ledger,
    LedgerBusy,
    LimitExceeded,
    StoreUnavailable,
    total_keys,
    utc_day,
)
from blockrun_mcp.ledger_postgres import STALE_INSTANCE_SECONDS, PostgresBackend
from blockrun_mcp.ledger_sqlite import SQLiteBackend
from tests.support.stores import LedgerDatabases, LedgerStores, reserve, run_together

TIMEOUT = 1.0  # the lock (busy) timeout these tests' ledgers wait, in seconds
THREADS = 8
CONCURRENT_SECONDS = 120  # how long 8 threads of reservations may take on a busy machine


def open_ledger(stores: LedgerStores, *, timeout: float = TIMEOUT) -> Ledger:
    """A ledger on the test's store (the file or database `stores()` opens) that waits at most
    `timeout` for a lock; closed after the test."""
    if stores.kind == "sqlite":
        store: Any = SQLiteBackend(
            stores.tmp_path / "ledger" / "ledger.sqlite3", busy_timeout_seconds=timeout
        )
    else:
        store = PostgresBackend(stores.url(), lock_timeout_seconds=timeout)
    ledger = Ledger(store)
    stores.opened.append(ledger)
    return ledger


@contextmanager
def held(stores: LedgerStores, ledger: Ledger, scope: str) -> Iterator[None]:
    """Another connection holds the `scope` totals rows (PostgreSQL: BEGIN; SELECT ... FOR
    UPDATE) or SQLite's write lock (BEGIN IMMEDIATE) until the block ends."""
    if stores.kind == "sqlite":
        holder = sqlite3.connect(ledger.store.where, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        return
    with psycopg.connect(stores.url()) as holder:
        rows = holder.execute(
            "SELECT key FROM totals WHERE scope = %s FOR UPDATE", (scope,)
        ).fetchall()
        assert rows, f"no {scope} row to hold"
        yield
        holder.rollback()


def timed(call: Callable[[], object], limit: float = TIMEOUT + 5) -> tuple[object, float]:
    """What `call()` returned or raised, and how long it took; a call still waiting after
    `limit` seconds fails the test (rather than hang it: the lock it waits for is let go as the
    failure unwinds the test)."""
    outcome: list[object] = []
    start = time.monotonic()

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as error:  # returned: the test says what it expects
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        pytest.fail(f"the call was still waiting after {limit:g} s: its wait is not bounded")
    return outcome[0], time.monotonic() - start


def assert_totals_exact(ledger: Ledger, sessions: Sequence[str], identities: Sequence[str]) -> None:
    """Every running total equals the slow sum over the payments it counts."""
    day = utc_day()
    assert ledger.day_spent_atomic(day) == ledger.counted_by_sum("day = ?", (day,))
    for session in sessions:
        assert ledger.session_spent_atomic(session) == ledger.counted_by_sum(
            "session = ?", (session,)
        ), session
    for identity in identities:
        assert ledger.identity_spent_atomic(identity, day) == ledger.counted_by_sum(
            "identity = ? AND day = ?", (identity, day)
        ), identity


# --- (a) a held row: LedgerBusy within about the timeout, nothing written -------------------


@pytest.mark.parametrize(
    ("scope", "limit"),
    [("day", "daily_limit_atomic"), ("session", "session_limit_atomic")],
)
def test_a_reservation_on_a_row_held_too_long_fails_closed_then_succeeds_once_it_is_free(
    ledger_store, scope, limit, within_one_utc_day
):
    ledger = open_ledger(ledger_store)
    first = reserve(ledger, 100, lock_all_totals=False, **{limit: 10_000})

    with held(ledger_store, ledger, scope):
        refused, waited = timed(
            lambda: reserve(ledger, 200, lock_all_totals=False, **{limit: 10_000})
        )
        assert isinstance(refused, LedgerBusy) and isinstance(refused, StoreUnavailable), refused
        assert TIMEOUT * 0.8 <= waited < TIMEOUT + 2.0, waited
        message = refused.message
        assert "is busy" in message and "for longer than 1 s" in message, message
        assert "Nothing was signed (no reservation was recorded); try again" in message
        if ledger_store.kind == "postgresql":
            assert "lock_timeout" in message and "locked by another transaction" in message
        # Nothing of it was written, and no call of this process holds anything of it.
        assert [p.id for p in ledger.payments()] == [first]
        assert ledger.day_spent_atomic() == ledger.session_spent_atomic("s") == 100

        # Closing a payment moves the same rows: busy too, said without a word about signing
        # (that one's money is its caller's to describe), and rolled back whole.
        closing, waited = timed(lambda: ledger.mark_released(first, "not signed"))
        assert isinstance(closing, LedgerBusy), closing
        assert waited < TIMEOUT + 2.0
        assert "Nothing was signed" not in closing.message
        assert closing.message.endswith("Try again in a moment.")
        assert ledger.payment(first).status == "reserved"
        assert ledger.day_spent_atomic() == 100

    # Free again: the same reservation goes through, once.
    second = reserve(ledger, 200, lock_all_totals=False, **{limit: 10_000})
    assert [p.id for p in ledger.payments()] == [second, first]
    assert ledger.day_spent_atomic() == ledger.counted_by_sum("1=1", ()) == 300
    assert ledger.mark_signed(second, "0x" + "11" * 32) is True
    # The release that was busy let go of `first` (no call holds it): the next pass releases it.
    assert ledger.release_abandoned_reservations() == 1
    assert ledger.payment(first).status == "released"
    assert ledger.day_spent_atomic() == 200


def test_sqlite_threads_wait_for_one_another_at_most_the_busy_timeout(tmp_path):
    """One connection serves every thread: one that holds it (a transaction that waits on
    another process, say) keeps the others out, for at most the busy timeout each."""
    ledger = Ledger(SQLiteBackend(tmp_path / "ledger.sqlite3", busy_timeout_seconds=0.5))
    try:
        inside, leave = threading.Event(), threading.Event()

        def hold() -> None:
            with ledger.transaction() as tx:
                tx.execute("SELECT 1")
                inside.set()
                leave.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert inside.wait(10)
        refused, waited = timed(lambda: reserve(ledger, 100))
        leave.set()
        holder.join(10)
        assert isinstance(refused, LedgerBusy), refused
        assert 0.4 <= waited < 2.5, waited
        assert "another thread of this process held its connection" in refused.message
        assert "Nothing was signed" in refused.message
        assert ledger.payments() == []
        payment = reserve(ledger, 100)  # and once it is let go, the same call works
        assert [p.id for p in ledger.payments()] == [payment]
    finally:
        ledger.close()


# --- (b) a reservation holds only the rows its limits need ----------------------------------


class PausingStore:
    """The ledger's real store, with `at_insert()` called inside a reservation's transaction
    right after its payment row is inserted: after its checks, before its increments."""

    def __init__(self, store: Any, at_insert: Callable[[], None]) -> None:
        self.store = store
        self.at_insert = at_insert

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.store.transaction() as tx:
            yield _PausingTx(self, tx)


class _PausingTx:
    def __init__(self, store: PausingStore, tx: Any) -> None:
        self.store, self.tx = store, tx

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        result = self.tx.execute(sql, args)
        if sql.startswith("INSERT INTO payments"):
            self.store.at_insert()
        return result


def locked_scopes(url: str, keys: list[tuple[str, str]]) -> set[str]:
    """Which of these totals rows another transaction holds now (FOR UPDATE NOWAIT fails)."""
    locked = set()
    with psycopg.connect(url) as probe:
        for scope, key in keys:
            try:
                with probe.transaction():
                    found = probe.execute(
                        "SELECT 1 FROM totals WHERE scope = %s AND key = %s FOR UPDATE NOWAIT",
                        (scope, key),
                    ).fetchall()
                    assert found, f"no {scope} row"
            except psycopg.errors.LockNotAvailable:
                locked.add(scope)
    return locked


ALL = {"identity-day", "day", "session"}


@pytest.mark.parametrize(
    ("limits", "lock_all_totals", "expected"),
    [
        ({"identity_daily_limit_atomic": 10_000}, True, ALL),  # as before: all three
        ({"identity_daily_limit_atomic": 10_000}, False, {"identity-day"}),
        ({"daily_limit_atomic": 10_000}, False, {"identity-day", "day"}),
        (
            {"identity_daily_limit_atomic": 10_000, "daily_limit_atomic": 10_000},
            False,
            {"identity-day", "day"},
        ),
        ({"session_limit_atomic": 10_000}, False, ALL),
        ({}, False, set()),
    ],
    ids=["identity-all", "identity", "day", "identity+day", "session", "none"],
)
def test_a_reservation_locks_only_the_rows_its_limits_need_while_it_checks(
    ledger_databases: LedgerDatabases, limits, lock_all_totals, expected, within_one_utc_day
):
    """A team's shape: one session for every request, budgets per person and perhaps for the
    wallet's day. Between its checks and its increments a reservation holds the rows of its
    limits (and those before them in the one order), not the shared rows nobody limits; and
    every total is still moved."""
    url = ledger_databases.take()
    ledger = Ledger(PostgresBackend(url, lock_timeout_seconds=TIMEOUT))
    try:
        keys = total_keys("team", utc_day(), "alice")
        reserve(ledger, 10, "team", identity="alice")  # the rows exist
        seen: list[set[str]] = []
        ledger.store = PausingStore(ledger.store, lambda: seen.append(locked_scopes(url, keys)))
        reserve(ledger, 30, "team", identity="alice", lock_all_totals=lock_all_totals, **limits)
        assert seen == [expected]
        assert locked_scopes(url, keys) == set()  # all let go at the commit
        assert ledger.identity_spent_atomic("alice") == 40
        assert ledger.session_spent_atomic("team") == ledger.day_spent_atomic() == 40
    finally:
        ledger.close()
        ledger_databases.give_back(url)


@pytest.mark.parametrize("lock_all_totals", [False, True])
def test_one_persons_reservation_does_not_queue_behind_anothers(
    ledger_databases: LedgerDatabases, lock_all_totals, within_one_utc_day
):
    """Alice's reservation is held in the middle of its transaction (checked, recorded, not yet
    committed). Bob's, on another instance, with only his own budget, does not wait for it: it
    completes while hers holds her row. (Locking all three rows, as before, he waits on the
    day's row she holds, and gives up after the lock timeout: nothing signed.)"""
    url = ledger_databases.take()
    alice_side = Ledger(PostgresBackend(url, lock_timeout_seconds=TIMEOUT))
    bob_side = Ledger(PostgresBackend(url, lock_timeout_seconds=TIMEOUT))
    try:
        reserve(alice_side, 10, "team", identity="alice")  # the shared rows exist
        bobs: list[tuple[object, float]] = []

        def bob_reserves() -> None:
            bobs.append(
                timed(
                    lambda: reserve(
                        bob_side,
                        20,
                        "team",
                        identity="bob",
                        identity_daily_limit_atomic=1_000,
                        lock_all_totals=False,
                    )
                )
            )

        alice_side.store = PausingStore(alice_side.store, bob_reserves)
        alice = reserve(
            alice_side,
            30,
            "team",
            identity="alice",
            identity_daily_limit_atomic=1_000,
            lock_all_totals=lock_all_totals,
        )
        [(bob, waited)] = bobs
        if lock_all_totals:
            assert isinstance(bob, LedgerBusy) and "Nothing was signed" in bob.message, bob
            assert TIMEOUT * 0.8 <= waited < TIMEOUT + 2.0
            assert bob_side.payments(identity="bob") == []
            assert bob_side.day_spent_atomic() == 40
        else:
            assert isinstance(bob, int), bob
            assert waited < TIMEOUT * 0.8, waited  # it never waited out a lock
            assert [p.id for p in bob_side.payments(identity="bob")] == [bob]
            assert bob_side.day_spent_atomic() == 60
        assert alice_side.payment(alice).status == "reserved"
        assert_totals_exact(alice_side, ["team"], ["alice", "bob"])
    finally:
        alice_side.close()
        bob_side.close()
        ledger_databases.give_back(url)


def test_a_reservation_takes_its_rows_in_the_one_order(
    ledger_databases: LedgerDatabases, within_one_utc_day
):
    """Every transaction takes the totals rows in total_keys' order (a person's, the day's, the
    session's), so none waits on another in a cycle. Another transaction holds the day's row: a
    reservation that locks all three holds the person's row by then, and not yet the session's.
    (Taken in any other order, it would hold the session's while it waits.)"""
    url = ledger_databases.take()
    ledger = Ledger(PostgresBackend(url, lock_timeout_seconds=30.0))
    try:
        keys = total_keys("team", utc_day(), "alice")
        reserve(ledger, 10, "team", identity="alice")  # the rows exist
        with psycopg.connect(url) as holder:
            holder.execute("SELECT 1 FROM totals WHERE scope = 'day' FOR UPDATE")
            waiting = threading.Thread(
                target=reserve, args=(ledger, 20, "team"), kwargs={"identity": "alice"}
            )
            waiting.start()
            deadline = time.monotonic() + 20
            with psycopg.connect(url, autocommit=True) as watcher:
                while not watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ).fetchall():
                    assert time.monotonic() < deadline, "the reservation never waited"
                    time.sleep(0.02)
            assert locked_scopes(url, keys) == {"identity-day", "day"}
            holder.rollback()
        waiting.join(20)
        assert ledger.identity_spent_atomic("alice") == ledger.session_spent_atomic("team") == 30
    finally:
        ledger.close()
        ledger_databases.give_back(url)


# --- (c) eight threads on one Ledger ---------------------------------------------------------


@pytest.mark.parametrize("lock_all_totals", [True, False])
def test_eight_threads_on_one_ledger_keep_the_totals_exact_and_never_pass_a_limit(
    ledger_store, lock_all_totals, within_one_utc_day
):
    ledger = open_ledger(ledger_store, timeout=30.0)  # (queueing is not what is tested here)
    amount, daily, alice_daily, session_limit = 70, 1_000, 500, 350

    def attempt(**kwargs: Any) -> int | LimitExceeded:
        try:
            return reserve(ledger, amount, lock_all_totals=lock_all_totals, **kwargs)
        except LimitExceeded as refused:
            return refused

    # The day: 8 threads x 4 reservations of 70 against 1000: exactly 14 fit.
    outcomes = run_together(
        THREADS,
        lambda i: [attempt(session=f"s{i}", daily_limit_atomic=daily) for _ in range(4)],
        timeout=CONCURRENT_SECONDS,
    )
    assert all(isinstance(result, list) for result in outcomes), outcomes
    flat = [o for result in outcomes for o in result]  # type: ignore[attr-defined]
    reserved = [o for o in flat if isinstance(o, int)]
    refused = [o for o in flat if isinstance(o, LimitExceeded)]
    assert len(reserved) == daily // amount == 14 and len(refused) == 32 - 14, flat
    assert all(r.limit == "daily budget" and r.remaining_atomic < amount for r in refused)
    assert len(set(reserved)) == 14
    assert ledger.day_spent_atomic() == 980

    # One person's budget and one shared session's, on a new day's worth of room.
    ledger.store.run("UPDATE payments SET status = 'released'")  # (a clean slate for totals:)
    ledger.store.run("DELETE FROM totals")
    outcomes = run_together(
        THREADS,
        lambda i: [
            attempt(session="shared", identity="alice", identity_daily_limit_atomic=alice_daily)
            if n % 2
            else attempt(session="shared", identity=f"p{i}", session_limit_atomic=session_limit)
            for n in range(4)
        ],
        timeout=CONCURRENT_SECONDS,
    )
    assert all(isinstance(result, list) for result in outcomes), outcomes
    flat = [o for result in outcomes for o in result]  # type: ignore[attr-defined]
    alice = ledger.payments(identity="alice")
    assert len(alice) == alice_daily // amount == 7
    assert ledger.identity_spent_atomic("alice") == 490
    # The session's limit counts alice's payments in it too: never more than 350 in all.
    assert ledger.session_spent_atomic("shared") <= session_limit + 490
    others = [p for p in ledger.payments(session="shared") if p.identity != "alice"]
    assert sum(p.amount_atomic for p in others) <= session_limit
    assert all(isinstance(o, int | LimitExceeded) for o in flat), flat
    assert_totals_exact(ledger, ["shared"], ["alice"] + [f"p{i}" for i in range(THREADS)])


def test_threads_signing_settling_releasing_and_booking_at_once_keep_the_totals_exact(
    ledger_store, within_one_utc_day
):
    """Every kind of call at once, from eight threads: reservations, signatures, settlements
    (some kept for later and booked by passes running at the same time), releases, and passes
    over abandoned reservations. None is lost or counted twice."""
    ledger = open_ledger(ledger_store, timeout=30.0)
    daily = 5_000

    def work(index: int) -> list[int]:
        mine = []
        for n in range(12):
            try:
                payment = reserve(
                    ledger, 50 + index, f"s{index}", daily_limit_atomic=daily, identity=f"p{index}"
                )
            except LimitExceeded:
                continue
            mine.append(payment)
            kind = (index + n) % 4
            if kind == 0:
                assert ledger.mark_released(payment, "not signed")
                continue
            assert ledger.mark_signed(payment, f"0x{payment:064x}") is True
            if kind == 1:
                assert ledger.mark_settled(payment, 40, "0xfeed")
            elif kind == 2:
                ledger.settle_later(payment, 30, "0xbeef", "booked later")
                ledger.book_unbooked_settlements()
            # kind 3: stays signed (outcome unknown)
            if n % 3 == 0:
                assert ledger.release_abandoned_reservations() == 0  # nobody died
        return mine

    results = run_together(THREADS, work, timeout=CONCURRENT_SECONDS)
    assert all(isinstance(r, list) for r in results), results
    ledger.book_unbooked_settlements()
    assert ledger.unbooked_settlements == 0
    payments = {p.id: p for p in ledger.payments()}
    assert sorted(payments) == sorted(p for r in results for p in r)  # type: ignore[union-attr]
    statuses = {p.status for p in payments.values()}
    assert statuses <= {"released", "settled", "signed"}
    booked_later = [p for p in payments.values() if "booked later" in p.note]
    assert booked_later and all(p.status == "settled" for p in booked_later)
    assert all(p.note.count("booked later") == 1 for p in booked_later)
    assert ledger.day_spent_atomic() <= daily
    assert_totals_exact(
        ledger, [f"s{i}" for i in range(THREADS)], [f"p{i}" for i in range(THREADS)]
    )


def test_a_pass_over_stranded_reservations_never_releases_one_a_thread_still_holds(
    ledger_store,
):
    """A reservation is held from before its commit: a pass in another thread that sees the
    committed row never takes it for stranded (and releases it) before its call signs."""
    ledger = open_ledger(ledger_store, timeout=30.0)
    sweepers, reservers = 2, THREADS - 2
    reservers_done = threading.Barrier(reservers + 1)  # the reservers, and the stopper
    done = threading.Event()
    released: list[int] = []

    def work(index: int) -> list[int]:
        if index < sweepers:
            while not done.is_set():
                released.append(ledger.release_abandoned_reservations())
            return []
        try:
            return [reserve(ledger, 1, f"s{index}") for _ in range(25)]
        finally:
            reservers_done.wait(60)

    def stop_the_sweepers() -> None:
        reservers_done.wait(60)
        done.set()

    stopper = threading.Thread(target=stop_the_sweepers, daemon=True)
    stopper.start()
    results = run_together(THREADS, work, timeout=CONCURRENT_SECONDS)
    stopper.join(10)
    assert all(isinstance(r, list) for r in results), results
    held = [p for r in results[sweepers:] for p in r]  # type: ignore[union-attr]
    assert len(held) == reservers * 25
    assert released and sum(released) == 0
    assert {p.status for p in ledger.payments()} == {"reserved"}
    assert all(ledger.mark_signed(p, f"0x{p:064x}") for p in held)


# --- (d) liveness by the database's clock ----------------------------------------------------

SKEW = 3600.0  # this host's clock, an hour off


def skew_local_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """ledger_postgres reads this host's clock `seconds` off (the rest of the process is not)."""
    real = time.time
    monkeypatch.setattr(
        ledger_postgres,
        "time",
        SimpleNamespace(**{**vars(time), "time": lambda: real() + seconds}),
    )


def heartbeat_age(url: str, instance: str) -> float:
    """How old `instance`'s heartbeat is by the database's clock."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp()) - heartbeat_at FROM instances"
            " WHERE id = %s",
            (instance,),
        ).fetchone()
    assert row is not None, f"no heartbeat row for {instance}"
    return float(row[0])


def test_liveness_is_judged_by_the_database_clock_whatever_ours_says(
    ledger_databases: LedgerDatabases, monkeypatch, within_one_utc_day
):
    url = ledger_databases.take()
    live, observer = (Ledger(PostgresBackend(url)) for _ in range(2))
    try:
        payment = reserve(live, 100, "live")
        live.store._stop.set()  # it beats only when told to, from here on
        live.store._heartbeat.join()

        # Its clock an hour slow: its heartbeat is still now, by the database's clock.
        skew_local_clock(monkeypatch, -SKEW)
        live.store.beat()
        assert abs(heartbeat_age(url, live.store.instance)) < 2.0
        assert abs(live.store.clock_skew_seconds() - SKEW) < 2.0  # (doctor still sees it)

        # The observer's clock an hour fast: a heartbeat seconds old is not an hour stale.
        skew_local_clock(monkeypatch, +SKEW)
        assert observer.release_abandoned_reservations() == 0
        assert live.payment(payment).status == "reserved"

        # Silent for longer than STALE_INSTANCE_SECONDS by the database's clock: dead, even to
        # an observer whose clock is an hour slow (by which it would have beaten in the future).
        live.store.run(
            "UPDATE instances SET heartbeat_at = EXTRACT(EPOCH FROM clock_timestamp()) - ?"
            " WHERE id = ?",
            (STALE_INSTANCE_SECONDS + 1, live.store.instance),
        )
        skew_local_clock(monkeypatch, -SKEW)
        assert observer.release_abandoned_reservations() == 1
        row = observer.payment(payment)
        assert row.status == "released" and row.note == ABANDONED_NOTE
        assert observer.day_spent_atomic() == 0

        # A fresh heartbeat (written with a clock an hour fast) makes it alive again, to a
        # correct clock: its next reservation stays.
        skew_local_clock(monkeypatch, +SKEW)
        live.store.beat()
        monkeypatch.undo()
        assert abs(heartbeat_age(url, live.store.instance)) < 2.0
        again = reserve(live, 50, "live")
        assert observer.release_abandoned_reservations() == 0
        assert observer.payment(again).status == "reserved"
    finally:
        monkeypatch.undo()
        live.close()
        observer.close()
        ledger_databases.give_back(url)


def test_a_new_instance_row_is_started_and_beaten_on_the_database_clock(
    ledger_databases: LedgerDatabases, monkeypatch
):
    url = ledger_databases.take()
    skew_local_clock(monkeypatch, -SKEW)
    ledger = Ledger(PostgresBackend(url))
    try:
        with psycopg.connect(url) as conn:
            started, beaten, now = conn.execute(
                "SELECT started_at, heartbeat_at,"
                " EXTRACT(EPOCH FROM clock_timestamp())::double precision"
                " FROM instances WHERE id = %s",
                (ledger.store.instance,),
            ).fetchone()
        assert abs(now - started) < 2.0 and abs(now - beaten) < 2.0
    finally:
        monkeypatch.undo()
        ledger.close()
        ledger_databases.give_back(url)
