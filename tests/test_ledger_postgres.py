"""What only the PostgreSQL ledger has, against the real test server (tests/support/postgres.py):
numbered migrations applied once however many instances start together, reservations that hold
their limits across instances, reservations of a dead instance released once, failing closed
while the database is away and recovering by itself, and a password never shown.

What both stores share is tested on both (test_ledger.py, test_budget.py, test_thread_store.py).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from blockrun_mcp import ledger_postgres
from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.ledger import ABANDONED_NOTE, Ledger, LimitExceeded, utc_day
from blockrun_mcp.ledger_postgres import (
    SCHEMA_VERSION,
    STALE_INSTANCE_SECONDS,
    PostgresBackend,
    StoreUnavailable,
    shown,
)
from tests.support.stores import reserve, run_together

PASSWORD = "hunter2-Ledger-Secret"


def with_password(url: str, password: str = PASSWORD) -> str:
    """`url` with a password (the test server trusts loopback, so it is sent and ignored)."""
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [row[0] for row in rows]


# --- migrations ------------------------------------------------------------------------------


def test_a_new_database_is_migrated_once_and_a_read_only_open_changes_nothing(
    fresh_database, tmp_path
):
    report = PostgresBackend(fresh_database, read_only=True)  # `spend`, `doctor`: no migration
    try:
        assert report.schema_version() == 0
        assert abs(report.clock_skew_seconds()) < 2.0  # one machine, one clock
    finally:
        report.close()
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT to_regclass('payments')").fetchone() == (None,)

    ledger = Ledger.open(fresh_database, tmp_path)
    try:
        assert ledger.store.schema_version() == SCHEMA_VERSION
        assert versions(fresh_database) == list(range(1, SCHEMA_VERSION + 1))
        assert ledger.store.migrate() == 0  # up to date: nothing applied again
        again = Ledger.open(fresh_database, tmp_path)  # a second instance starting
        again.close()
        assert versions(fresh_database) == list(range(1, SCHEMA_VERSION + 1))
        instances = ledger.read("SELECT id, heartbeat_at FROM instances")
        assert [row["id"] for row in instances] == [ledger.store.instance]  # closed: row gone
        assert time.time() - instances[0]["heartbeat_at"] < STALE_INSTANCE_SECONDS
    finally:
        ledger.close()


# Each child connects, says "ready", waits for "go" on stdin (so all six migrate at once), then
# migrates with two more migrations than the real ones: the second has no IF NOT EXISTS and both
# record which connection ran them, so a migration applied twice shows (or fails).
MIGRATING_CHILD = """
import json, sys
from blockrun_mcp import ledger_postgres as pg
pg.MIGRATIONS = pg.MIGRATIONS + [
    "CREATE TABLE probe (version int, pid int DEFAULT pg_backend_pid());"
    f" INSERT INTO probe (version) VALUES ({len(pg.MIGRATIONS) + 1})",
    f"ALTER TABLE probe ADD COLUMN later text; INSERT INTO probe VALUES ({len(pg.MIGRATIONS) + 2})",
]
pg.SCHEMA_VERSION = len(pg.MIGRATIONS)
pg.PostgresBackend.beat = lambda self: None  # (its table comes with the migrations)
store = pg.PostgresBackend(sys.argv[1], migrate=False, pool_size=1)
print("ready", flush=True)
sys.stdin.readline()
applied = store.migrate()
print(json.dumps({"applied": applied, "version": store.schema_version()}), flush=True)
store.close()
"""


def test_six_instances_starting_at_once_apply_each_migration_exactly_once(fresh_database):
    children = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATING_CHILD, fresh_database],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:  # all connected: go
            child.stdin.write("go\n")
            child.stdin.flush()
        outcomes = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert [child.returncode for child in children] == [0] * 6, [err for _, err in outcomes]
    answers = [json.loads(out) for out, _ in outcomes]
    every = SCHEMA_VERSION + 2
    # One of them applied every migration; the others, waiting on the lock, found nothing to do.
    assert sorted(answer["applied"] for answer in answers) == [0] * 5 + [every]
    assert {answer["version"] for answer in answers} == {every}
    assert versions(fresh_database) == list(range(1, every + 1))
    with psycopg.connect(fresh_database) as conn:
        probes = conn.execute("SELECT version, pid FROM probe ORDER BY version").fetchall()
    assert [version for version, _ in probes] == [every - 1, every]
    assert probes[0][1] == probes[1][1]  # in one transaction, by one of them


# --- reservations across instances -----------------------------------------------------------


def test_instances_reserving_at_once_never_pass_the_daily_or_an_identity_budget(fresh_database):
    """Eight instances (each its own pool of connections) reserve at once: however the requests
    interleave, exactly as many fit as the budget holds, never one more."""
    instances = [Ledger(PostgresBackend(fresh_database, pool_size=2)) for _ in range(8)]
    try:
        amount, daily, alice_daily = 70, 1000, 500

        def daily_race(index: int) -> list[object]:
            outcomes: list[object] = []
            for _ in range(4):
                try:
                    outcomes.append(
                        reserve(instances[index], amount, f"s{index}", daily_limit_atomic=daily)
                    )
                except LimitExceeded as refused:
                    outcomes.append(refused)
            return outcomes

        outcomes = [o for result in run_together(8, daily_race) for o in result]
        reserved = [o for o in outcomes if isinstance(o, int)]
        refused = [o for o in outcomes if isinstance(o, LimitExceeded)]
        assert len(reserved) == daily // amount == 14 and len(refused) == 32 - 14
        assert all(r.limit == "daily budget" and r.remaining_atomic < amount for r in refused)
        ledger = instances[0]
        assert ledger.day_spent_atomic() == ledger.counted_by_sum("day = ?", (utc_day(),)) == 980

        def identity_race(index: int) -> list[object]:
            outcomes: list[object] = []
            for _ in range(3):
                try:
                    outcomes.append(
                        reserve(
                            instances[index],
                            amount,
                            f"a{index}",
                            identity="alice",
                            identity_daily_limit_atomic=alice_daily,
                        )
                    )
                except LimitExceeded as refused:
                    outcomes.append(refused)
                # Bob, with no budget of his own, is never held back by hers.
                outcomes.append(reserve(instances[index], amount, f"b{index}", identity="bob"))
            return outcomes

        outcomes = [o for result in run_together(8, identity_race) for o in result]
        refused = [o for o in outcomes if isinstance(o, LimitExceeded)]
        assert len(refused) == 24 - alice_daily // amount
        assert all(r.limit == "identity budget" and r.remaining_atomic < amount for r in refused)
        alice = ledger.payments(identity="alice")
        assert len(alice) == alice_daily // amount == 7
        assert ledger.identity_spent_atomic("alice") == 490
        assert len(ledger.payments(identity="bob")) == 24
        assert ledger.identity_spent_atomic("bob") == 24 * amount
        assert ledger.day_spent_atomic() == ledger.counted_by_sum("1=1", ()) == 980 + 490 + 1680
    finally:
        for instance in instances:
            instance.close()


def test_settling_and_reserving_at_once_on_one_session_do_not_deadlock(fresh_database):
    """A settlement moves the same totals rows a reservation locks: both take them in one order,
    so neither waits on the other in a cycle (PostgreSQL would abort one as a deadlock: a
    reservation failing, or a paid call's settlement)."""
    reserving, settling = (Ledger(PostgresBackend(fresh_database)) for _ in range(2))
    try:
        count = 120
        ids: list[int] = []
        ready = threading.Semaphore(0)

        def work(index: int) -> int:
            if index == 0:
                for _ in range(count):
                    ids.append(reserve(reserving, 10, identity="alice"))
                    ready.release()
            else:
                for n in range(count):
                    assert ready.acquire(timeout=20), "the reservations stopped"
                    settling.mark_settled(ids[n], 4, "0xfeed")
            return count

        assert run_together(2, work) == [count, count]
        assert reserving.session_spent_atomic("s") == reserving.day_spent_atomic() == 4 * count
        assert reserving.identity_spent_atomic("alice") == 4 * count
    finally:
        reserving.close()
        settling.close()


# --- abandoned reservations ------------------------------------------------------------------


def test_a_dead_instances_reservations_are_released_once_by_whichever_sees_them(fresh_database):
    dead, gone, live, first, second = (Ledger(PostgresBackend(fresh_database)) for _ in range(5))
    try:
        dead_ids = [reserve(dead, 10, "dead") for _ in range(20)]
        signed = dead_ids[-5:]  # their payments may have left: never released
        for payment in signed:
            assert dead.mark_signed(payment, f"0x{payment:064x}")
        gone_ids = [reserve(gone, 10, "gone") for _ in range(2)]
        gone.close()  # its instance row goes with it: its reservations have no instance
        live_ids = [reserve(live, 10, "live") for _ in range(3)]

        # Only the instance that is gone: `dead` still beats, `live` too.
        assert first.release_abandoned_reservations() == 2
        assert {first.payment(p).status for p in gone_ids} == {"released"}

        # `dead` stops beating; a minute later its heartbeat is stale.
        dead.store._stop.set()
        dead.store._heartbeat.join()
        dead.store.run(
            "UPDATE instances SET heartbeat_at = heartbeat_at - ? WHERE id = ?",
            (STALE_INSTANCE_SECONDS + 1, dead.store.instance),
        )
        counts = run_together(2, lambda i: (first, second)[i].release_abandoned_reservations())
        assert all(isinstance(count, int) for count in counts), counts
        assert sum(counts) == 15  # the 20 minus the 5 signed, each by one of the two

        statuses = {p.id: p.status for p in first.payments()}
        assert [statuses[p] for p in dead_ids] == ["released"] * 15 + ["signed"] * 5
        assert [statuses[p] for p in live_ids] == ["reserved"] * 3
        notes = {p.id: p.note for p in first.payments(session="dead")}
        assert all(notes[p] == ABANDONED_NOTE for p in dead_ids[:15])  # released once, not twice
        assert first.session_spent_atomic("dead") == 50 and first.session_spent_atomic("gone") == 0
        assert first.day_spent_atomic() == first.counted_by_sum("1=1", ()) == 50 + 30
        # The instance taken for dead must not sign what was released; the live one still signs.
        assert dead.mark_signed(dead_ids[0], "0x" + "22" * 32) is False
        assert first.payment(dead_ids[0]).status == "released"
        assert live.mark_signed(live_ids[0], "0x" + "33" * 32) is True
        assert second.release_abandoned_reservations() == 0
    finally:
        for ledger in (dead, live, first, second):
            ledger.close()


# --- the database away -----------------------------------------------------------------------


def wait_for_a_lock_wait(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.02)
    raise TimeoutError("the reservation never waited for the totals lock")


def assert_unavailable(error: object, ledger: Ledger) -> None:
    assert isinstance(error, StoreUnavailable) and isinstance(error, BlockrunError), error
    message = error.message
    assert f"The ledger's PostgreSQL at {ledger.store.where} cannot be used" in message
    assert "recovers by itself" in message  # (what became of money is the caller's to say)
    assert PASSWORD not in message and PASSWORD not in str(error) and PASSWORD not in repr(error)


def lock_waiters(url: str) -> set[int]:
    """The backends of `url`'s database waiting on a lock now."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchall()
    return {pid for (pid,) in rows}


def cut_the_waiting_reservation(url: str) -> None:
    """End the connection of the reservation waiting on a lock, and wait until it waits again:
    sent again, once, on another connection (nothing of it was answered, so nothing of it could
    have been committed)."""
    [cut] = lock_waiters(url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (cut,))
    deadline = time.monotonic() + 30
    while not (waiting := lock_waiters(url)) or cut in waiting:
        assert time.monotonic() < deadline, "the reservation was not sent again"
        time.sleep(0.02)


def reserving_while_held(ledger: Ledger, url: str) -> tuple[threading.Thread, list[object]]:
    """A reservation, in a thread, waiting on the day's total (another connection holds it)."""
    outcome: list[object] = []

    def reserve_while_held() -> None:
        try:
            outcome.append(reserve(ledger, 200, daily_limit_atomic=10_000))
        except BaseException as error:  # checked by the test
            outcome.append(error)

    thread = threading.Thread(target=reserve_while_held)
    thread.start()
    wait_for_a_lock_wait(url)
    return thread, outcome


def test_a_reservation_cut_off_before_its_first_answer_is_sent_again_once(fresh_database, tmp_path):
    """Its connection cut while it waits on a lock (its first round trip: nothing answered, no
    COMMIT sent): the reservation is sent again on another connection, waits again, and goes
    through once the lock is free, recorded once."""
    ledger = Ledger.open(fresh_database, tmp_path)
    try:
        first = reserve(ledger, 100, daily_limit_atomic=10_000)
        with psycopg.connect(fresh_database) as holder:
            holder.execute("SELECT * FROM totals WHERE scope = 'day' FOR UPDATE")
            thread, outcome = reserving_while_held(ledger, fresh_database)
            cut_the_waiting_reservation(fresh_database)
            holder.rollback()
        thread.join(timeout=60)
        [second] = outcome
        assert isinstance(second, int), second
        assert [(p.id, p.amount_atomic) for p in ledger.payments()] == [(second, 200), (first, 100)]
        assert ledger.day_spent_atomic() == ledger.counted_by_sum("1=1", ()) == 300
    finally:
        ledger.close()


def test_a_reservation_cut_off_by_a_restart_fails_closed_and_the_same_ledger_recovers(
    fresh_database, restart_postgres, tmp_path
):
    """Cut once and sent again, then cut again by the restart (which also ends the holder, in
    no set order: the second cut comes before its answer, or after its first answer and before
    its next round trip): it is not sent a third time, and fails closed. Nothing of it was
    recorded; the same ledger works again, on fresh connections."""
    url = with_password(fresh_database)
    ledger = Ledger.open(url, tmp_path)
    try:
        assert PASSWORD not in ledger.store.where and ledger.store.where == shown(url)
        first = reserve(ledger, 100, daily_limit_atomic=10_000)
        holder = psycopg.connect(fresh_database)
        holder.execute("SELECT * FROM totals WHERE scope = 'day' FOR UPDATE")
        thread, outcome = reserving_while_held(ledger, fresh_database)
        cut_the_waiting_reservation(fresh_database)
        restart_postgres()
        thread.join(timeout=60)
        holder.close()
        [refused] = outcome  # it did not get through
        assert_unavailable(refused, ledger)
        assert [p.id for p in ledger.payments()] == [first]
        assert ledger.day_spent_atomic() == 100
        second = reserve(ledger, 200, daily_limit_atomic=10_000)
        assert ledger.mark_signed(second, "0x" + "11" * 32)
        assert ledger.day_spent_atomic() == ledger.counted_by_sum("1=1", ()) == 300
        ledger.store.beat()  # and so does its heartbeat
    finally:
        ledger.close()


def test_a_reservation_cut_off_while_the_database_refuses_connections_fails_closed(
    fresh_database, postgres_url, tmp_path, monkeypatch
):
    """The same cut, with no connection to be had for sending it again: it fails closed
    (nothing signed, nothing recorded), and the same ledger recovers once the database is back."""
    monkeypatch.setattr(ledger_postgres, "POOL_TIMEOUT_SECONDS", 0.5)
    url = with_password(fresh_database)
    database = urlsplit(fresh_database).path.lstrip("/")
    name = sql.Identifier(database)
    ledger = Ledger.open(url, tmp_path)
    try:
        first = reserve(ledger, 100, daily_limit_atomic=10_000)
        holder = psycopg.connect(fresh_database)
        holder.execute("SELECT * FROM totals WHERE scope = 'day' FOR UPDATE")
        outcome: list[object] = []

        def reserve_while_held() -> None:
            try:
                outcome.append(reserve(ledger, 200, daily_limit_atomic=10_000))
            except BaseException as error:  # checked below
                outcome.append(error)

        cut = threading.Thread(target=reserve_while_held)
        cut.start()
        wait_for_a_lock_wait(fresh_database)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
            cut.join(timeout=60)
            [refused] = outcome
            assert_unavailable(refused, ledger)
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
        holder.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                payments = ledger.payments()
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the ledger never recovered"
        assert [p.id for p in payments] == [first]  # nothing of the cut one
        assert ledger.day_spent_atomic() == ledger.counted_by_sum("1=1", ()) == 100
    finally:
        ledger.close()


def test_while_the_database_refuses_connections_every_call_fails_closed(
    fresh_database, postgres_url, tmp_path, monkeypatch
):
    monkeypatch.setattr(ledger_postgres, "POOL_TIMEOUT_SECONDS", 0.5)  # how long a call waits
    url = with_password(fresh_database)
    ledger = Ledger.open(url, tmp_path)
    name = sql.Identifier(urlsplit(fresh_database).path.lstrip("/"))
    try:
        first = reserve(ledger, 100)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (urlsplit(fresh_database).path.lstrip("/"),),
            )
            for call in (
                lambda: reserve(ledger, 200),
                lambda: ledger.mark_settled(first, 100, "0xfeed"),
                lambda: ledger.mark_signed(first, "0x" + "11" * 32),
                ledger.day_spent_atomic,
            ):
                with pytest.raises(StoreUnavailable) as refused:
                    call()
                assert_unavailable(refused.value, ledger)
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
        # Back: the pool reconnects by itself (its retries back off, so give it a while).
        deadline = time.monotonic() + 30
        while True:
            try:
                second = reserve(ledger, 200)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the ledger never recovered"
        assert [(p.id, p.status) for p in ledger.payments()] == [
            (second, "reserved"),
            (first, "reserved"),
        ]
        assert ledger.day_spent_atomic() == 300
    finally:
        ledger.close()


# --- round trips, and the pool's check only where it pays -------------------------------------


@pytest.fixture
def quiet_ledger(fresh_database, tmp_path):
    """A ledger whose heartbeat is stopped: no statement but the test's own goes to the
    database (nor does the heartbeat find a dead connection before the test's call does)."""
    ledger = Ledger.open(fresh_database, tmp_path)
    ledger.store._stop.set()
    ledger.store._heartbeat.join()
    try:
        yield ledger
    finally:
        ledger.close()


def count_round_trips(monkeypatch) -> tuple[list[str], list[object]]:
    """What the ledger waits for, as it happens: each batch a transaction sends (its
    statements' first words), each statement sent on its own ("alone ..."), and each round-trip
    check of a pooled connection."""
    from psycopg_pool import ConnectionPool

    trips: list[str] = []
    checks: list[object] = []
    send, run, check = (
        ledger_postgres._Tx._send,
        PostgresBackend.run,
        ConnectionPool.check_connection,
    )

    def counted_send(tx, batch):
        trips.append(" ".join(statement.split()[0] for statement, _, _ in batch))
        return send(tx, batch)

    def counted_run(store, statement, args=()):
        trips.append("alone " + statement.split()[0])
        return run(store, statement, args)

    def counted_check(conn):
        checks.append(conn)
        return check(conn)

    monkeypatch.setattr(ledger_postgres._Tx, "_send", counted_send)
    monkeypatch.setattr(PostgresBackend, "run", counted_run)
    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted_check))
    return trips, checks


def test_a_paid_calls_ledger_work_takes_eight_round_trips(quiet_ledger, monkeypatch):
    """Reserve (checked against a session budget: every totals row locked), sign, settle, store
    the turn, read what is left: 8 round trips (each statement its own, with BEGIN, COMMIT and
    the pool's check each time, was 27). The same statements, in the same order."""
    ledger = quiet_ledger
    monkeypatch.setattr(ledger_postgres, "CHECK_AFTER_IDLE_SECONDS", 60.0)  # (a slow machine)
    reserve(ledger, 10, session_limit_atomic=1_000)  # the totals rows exist, as on any day
    trips, checks = count_round_trips(monkeypatch)

    payment = reserve(ledger, 100, session_limit_atomic=1_000)
    assert trips == [
        "BEGIN INSERT SELECT SELECT",  # the missing totals rows, their locks, their counts
        "INSERT",  # the payment (its id is held before the commit)
        "INSERT INSERT INSERT COMMIT",  # the three totals, and the commit
    ]
    trips.clear()
    assert ledger.mark_signed(payment, "0x" + "11" * 32)
    assert trips == ["alone UPDATE"]  # one autocommit statement: no BEGIN, no COMMIT
    trips.clear()
    assert ledger.mark_settled(payment, 100, "0xfeed")
    assert trips == ["BEGIN UPDATE", "COMMIT"]  # (the totals do not move: settled in full)
    trips.clear()
    with ledger.transaction() as tx:  # a thread's turn: written, nothing read back
        for thread in ("t1", "t2"):
            tx.execute(
                "INSERT INTO threads (id, owner, title, created_at, updated_at)"
                " VALUES (?, 'o', 'x', 0, 0)",
                (thread,),
            )
    assert trips == ["BEGIN INSERT INSERT COMMIT"]
    trips.clear()
    assert ledger.session_spent_atomic("s") == 110
    assert trips == ["alone SELECT"]
    assert checks == []  # every connection used a moment ago, its socket quiet

    # A connection idle for longer is checked first (one round trip), once per transaction.
    monkeypatch.setattr(ledger_postgres, "CHECK_AFTER_IDLE_SECONDS", 0.0)
    reserve(ledger, 100, session_limit_atomic=1_000)
    assert len(checks) == 1
    # So is one whose socket has something to say (a server's goodbye).
    monkeypatch.setattr(ledger_postgres, "CHECK_AFTER_IDLE_SECONDS", 60.0)
    monkeypatch.setattr(ledger_postgres, "_quiet", lambda conn: False)
    assert ledger.day_spent_atomic() == 210
    assert len(checks) == 2
    assert ledger.counted_by_sum("1=1", ()) == 210


def end_the_pools_connections(ledger: Ledger, url: str) -> None:
    """pg_terminate_backend on every connection of the ledger's pool (once it has the ones it
    is making: `wait`), and wait until they are gone: the pool does not know yet."""
    ledger.store.pool.wait(timeout=20)
    with psycopg.connect(url, autocommit=True) as admin:
        pids = {
            pid
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        }
        assert pids, "the pool has no connection to end"
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (list(pids),)
        )
        deadline = time.monotonic() + 20
        while admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
        ).fetchall():
            assert time.monotonic() < deadline, "the connections did not end"
            time.sleep(0.02)


def test_a_dead_connection_the_check_was_spared_on_costs_no_reservation_nor_booking(
    fresh_database, monkeypatch
):
    """A pooled connection that died a moment after its last use, its socket not telling yet
    (`_quiet` made to miss it, as in that race), so the pool does not check it. A transaction's
    first round trip finds it dead: nothing was answered or committed, so it is sent again, once,
    on another connection (a reservation, a settlement's booking). A read is read again. A write
    on its own (mark_signed) is not sent twice: it fails closed, and its caller sends nothing.
    (A pool of one connection: the one each call gets is the one that died.)"""
    ledger = Ledger(PostgresBackend(fresh_database, pool_size=1))
    try:
        ledger.store._stop.set()
        ledger.store._heartbeat.join()
        monkeypatch.setattr(ledger_postgres, "_quiet", lambda conn: True)
        monkeypatch.setattr(ledger_postgres, "CHECK_AFTER_IDLE_SECONDS", 3600.0)
        trips, _ = count_round_trips(monkeypatch)

        end_the_pools_connections(ledger, fresh_database)
        payment = reserve(ledger, 100, session_limit_atomic=1_000)
        assert trips[:2] == ["BEGIN INSERT SELECT SELECT"] * 2  # on the dead one, then again
        assert [(p.id, p.status) for p in ledger.payments()] == [(payment, "reserved")]
        assert ledger.session_spent_atomic("s") == ledger.counted_by_sum("1=1", ()) == 100

        end_the_pools_connections(ledger, fresh_database)
        with pytest.raises(StoreUnavailable) as refused:
            ledger.mark_signed(payment, "0x" + "11" * 32)
        assert_unavailable(refused.value, ledger)
        assert ledger.payment(payment).status == "reserved"  # (then released by its caller)

        end_the_pools_connections(ledger, fresh_database)
        assert ledger.session_spent_atomic("s") == 100  # a read, read again
        assert ledger.mark_signed(payment, "0x" + "11" * 32)

        end_the_pools_connections(ledger, fresh_database)
        trips.clear()
        assert ledger.mark_settled(payment, 100, "0xfeed")  # the signed payment's booking
        assert trips == ["BEGIN UPDATE", "BEGIN UPDATE", "COMMIT"]
        row = ledger.payment(payment)
        assert (row.status, row.settled_atomic, row.tx_hash) == ("settled", 100, "0xfeed")
        assert ledger.session_spent_atomic("s") == ledger.counted_by_sum("1=1", ()) == 100
    finally:
        ledger.close()


def end_the_connection_of(tx) -> None:
    """End the backend of a transaction's connection, and wait until it is gone."""
    pid = tx.conn.info.backend_pid
    with psycopg.connect(tx.backend.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 20
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall():
            assert time.monotonic() < deadline, "the connection did not end"
            time.sleep(0.02)


def test_a_connection_lost_after_an_answer_is_never_sent_again(quiet_ledger, monkeypatch):
    """The reservation's first batch was answered (its totals read, its limit checked): its
    connection lost then, nothing of it is sent again (the rest alone, on another connection,
    would run outside the transaction and its locks). It fails closed: nothing recorded."""
    ledger = quiet_ledger
    first = reserve(ledger, 100, session_limit_atomic=1_000)
    send = ledger_postgres._Tx._send
    batches: list[int] = []

    def cut_before_the_second(tx, batch):
        batches.append(len(batch))
        if len(batches) == 2:
            end_the_connection_of(tx)
        return send(tx, batch)

    monkeypatch.setattr(ledger_postgres._Tx, "_send", cut_before_the_second)
    trips, _ = count_round_trips(monkeypatch)
    with pytest.raises(StoreUnavailable) as refused:
        reserve(ledger, 200, session_limit_atomic=1_000)
    assert_unavailable(refused.value, ledger)  # (its caller says: nothing was signed)
    assert trips == ["BEGIN INSERT SELECT SELECT", "INSERT"]  # the INSERT not sent again
    assert [p.id for p in ledger.payments()] == [first]
    assert ledger.session_spent_atomic("s") == ledger.counted_by_sum("1=1", ()) == 100


def test_a_batch_with_its_commit_is_never_sent_again(quiet_ledger, monkeypatch):
    """A transaction whose one batch holds its COMMIT (a thread's turn): the connection lost
    before the answer, the commit may have happened. It is not sent again (it would be written
    twice): the caller is told the store failed."""
    ledger = quiet_ledger
    send = ledger_postgres._Tx._send
    lost: list[bool] = []

    def answer_lost(tx, batch):
        send(tx, batch)  # committed...
        if batch[-1][0] == "COMMIT" and not lost:
            lost.append(True)
            tx.conn.close()  # ...and its answer never came
            raise psycopg.OperationalError("the connection was lost (a test)")

    monkeypatch.setattr(ledger_postgres._Tx, "_send", answer_lost)
    with pytest.raises(StoreUnavailable), ledger.transaction() as tx:
        tx.execute("INSERT INTO threads VALUES ('once', 'o', 'x', 0, 0)")
    assert ledger.read("SELECT id FROM threads") == [{"id": "once"}]


def test_a_transaction_rolled_back_at_its_commit_is_not_taken_for_committed(quiet_ledger):
    """A caller that swallowed a statement's failure and commits: PostgreSQL answers the COMMIT
    with ROLLBACK (no error). That is said as a failure, not taken for a commit."""
    ledger = quiet_ledger
    with pytest.raises(StoreUnavailable) as failed, ledger.transaction() as tx:
        tx.execute("INSERT INTO threads VALUES ('lost', 'o', 'x', 0, 0)")
        with contextlib.suppress(psycopg.Error):
            tx.execute("SELECT 1 / 0 AS boom").one()
    assert "ROLLBACK" in failed.value.message
    assert ledger.read("SELECT id FROM threads") == []


def test_a_refusal_by_the_server_is_never_sent_again(fresh_database, tmp_path, monkeypatch, caplog):
    """A lock held past lock_timeout: the server refused on a working connection. The batch is
    not sent again (that would double the wait): LedgerBusy, after one wait, nothing signed;
    the transaction rolled back before its connection goes back to the pool."""
    ledger = Ledger(PostgresBackend(fresh_database, lock_timeout_seconds=0.5))
    try:
        reserve(ledger, 100, daily_limit_atomic=10_000)
        trips, _ = count_round_trips(monkeypatch)
        with psycopg.connect(fresh_database) as holder:
            holder.execute("SELECT key FROM totals WHERE scope = 'day' FOR UPDATE")
            with pytest.raises(ledger_postgres.LedgerBusy) as busy:
                reserve(ledger, 200, daily_limit_atomic=10_000)
            holder.rollback()
        assert "lock_timeout" in busy.value.message and "Nothing was signed" in busy.value.message
        assert trips == ["BEGIN INSERT SELECT SELECT"]
        # (Not left for the pool to roll back, which it says in a warning.)
        assert not [r for r in caplog.records if "returned connection" in r.getMessage()]
        assert ledger.day_spent_atomic() == ledger.counted_by_sum("1=1", ()) == 100
    finally:
        ledger.close()


def test_every_pooled_connection_keeps_its_timeouts(fresh_database, tmp_path):
    """lock_timeout, statement_timeout, idle_in_transaction_session_timeout: set on every
    connection of the pool, in force in the ledger's transactions."""
    store = PostgresBackend(
        fresh_database,
        lock_timeout_seconds=1.5,
        statement_timeout_seconds=0.5,
        idle_in_transaction_timeout_seconds=0.5,
    )
    ledger = Ledger(store)
    try:
        settings = ledger.read(
            "SELECT current_setting('lock_timeout') AS lock,"
            " current_setting('statement_timeout') AS statement,"
            " current_setting('idle_in_transaction_session_timeout') AS idle"
        )
        assert settings == [{"lock": "1500ms", "statement": "500ms", "idle": "500ms"}]

        # A statement too long.
        with pytest.raises(ledger_postgres.LedgerBusy) as slow, ledger.transaction() as tx:
            tx.execute("SELECT pg_sleep(2)").one()
        assert "statement_timeout" in slow.value.message

        # A transaction that waits between its round trips longer than the idle timeout is ended
        # by the server: its later statements and its commit fail, and nothing of it is kept.
        # (The server's FATAL message, or only the connection it closed, as psycopg reads it.)
        with pytest.raises(StoreUnavailable), ledger.transaction() as tx:
            tx.execute("INSERT INTO threads VALUES ('idle', 'o', 'x', 0, 0)")
            assert tx.execute("SELECT 1 AS one").one() == {"one": 1}  # (the INSERT went too)
            time.sleep(1.5)
            tx.execute("INSERT INTO threads VALUES ('later', 'o', 'x', 0, 0)")
        assert ledger.read("SELECT id FROM threads") == []
        # Statement by statement (as migrations run), the server's own word is read: LedgerBusy.
        with (
            pytest.raises(ledger_postgres.LedgerBusy) as idle,
            store.transaction(deferred=False) as tx,
        ):
            tx.execute("INSERT INTO threads VALUES ('idle', 'o', 'x', 0, 0)")
            time.sleep(1.5)
            tx.execute("INSERT INTO threads VALUES ('later', 'o', 'x', 0, 0)")
        assert "idle_in_transaction_session_timeout" in idle.value.message
        assert ledger.read("SELECT id FROM threads") == []
    finally:
        ledger.close()


# --- the password ----------------------------------------------------------------------------


def test_a_database_that_cannot_be_reached_is_named_without_its_password(
    postgres_url, tmp_path, monkeypatch
):
    monkeypatch.setattr(ledger_postgres, "POOL_TIMEOUT_SECONDS", 1.0)
    missing = with_password(urlunsplit(urlsplit(postgres_url)._replace(path="/no_such_db")))
    with pytest.raises(StoreUnavailable) as refused:
        Ledger.open(missing, tmp_path)
    message = refused.value.message
    assert shown(missing) in message and "no_such_db" in message
    assert PASSWORD not in message and PASSWORD not in repr(refused.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"postgresql://blockrun:{PASSWORD}@db.example:5432/blockrun",
            "postgresql://blockrun@db.example:5432/blockrun",
        ),
        (
            f"postgresql://team:{PASSWORD}@db.example/ledger?sslmode=require&password={PASSWORD}",
            "postgresql://team@db.example/ledger",
        ),
        (f"postgres://:{PASSWORD}@db.example/ledger", "postgres://db.example/ledger"),
        (f"postgresql://u:{PASSWORD}@[::1]:5432/ledger", "postgresql://u@[::1]:5432/ledger"),
        (
            f"postgresql://u:{PASSWORD}@db1:5432,db2:5433/ledger#{PASSWORD}",
            "postgresql://u@db1:5432,db2:5433/ledger",
        ),
        (f"postgresql://u:p@ss-{PASSWORD}@db.example/ledger", "postgresql://u@db.example/ledger"),
        ("postgresql://db.example/ledger", "postgresql://db.example/ledger"),
    ],
)
def test_shown_never_shows_the_password(url, expected):
    assert shown(url) == expected
    assert PASSWORD not in shown(url)
