"""What only the PostgreSQL ledger has, against the real test server (tests/support/postgres.py):
numbered migrations applied once however many instances start together, reservations that hold
their limits across instances, reservations of a dead instance released once, failing closed
while the database is away and recovering by itself, and a password never shown.

What both stores share is tested on both (test_ledger.py, test_budget.py, test_thread_store.py).
"""

from __future__ import annotations

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


def test_a_reservation_cut_off_by_a_restart_fails_closed_and_the_same_ledger_recovers(
    fresh_database, restart_postgres, tmp_path
):
    url = with_password(fresh_database)
    ledger = Ledger.open(url, tmp_path)
    try:
        assert PASSWORD not in ledger.store.where and ledger.store.where == shown(url)
        first = reserve(ledger, 100, daily_limit_atomic=10_000)
        # Hold the day's total, so the next reservation is inside its transaction when the
        # server goes down.
        holder = psycopg.connect(fresh_database)
        holder.execute("SELECT * FROM totals WHERE scope = 'day' FOR UPDATE")
        outcome: list[BaseException] = []

        def reserve_while_held() -> None:
            try:
                reserve(ledger, 200, daily_limit_atomic=10_000)
            except BaseException as error:  # checked below
                outcome.append(error)

        cut = threading.Thread(target=reserve_while_held)
        cut.start()
        wait_for_a_lock_wait(fresh_database)
        restart_postgres()
        cut.join(timeout=60)
        holder.close()
        assert len(outcome) == 1  # it did not get through
        assert_unavailable(outcome[0], ledger)
        # Nothing of it was recorded; the same ledger works again, on fresh connections.
        assert [p.id for p in ledger.payments()] == [first]
        assert ledger.day_spent_atomic() == 100
        second = reserve(ledger, 200, daily_limit_atomic=10_000)
        assert ledger.mark_signed(second, "0x" + "11" * 32)
        assert ledger.day_spent_atomic() == ledger.counted_by_sum("1=1", ()) == 300
        ledger.store.beat()  # and so does its heartbeat
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
