"""The ledger's running totals always equal the plain sum over its payments, its limits hold, and
reservations of dead processes are released once, on both stores: every test taking
`ledger_store` runs on a SQLite file and on a PostgreSQL database (tests/support/stores.py).
What only one store has is tested apart: SQLite's in-place migration here (marked so),
PostgreSQL's migrations, instances and outages in test_ledger_postgres.py."""

from __future__ import annotations

import contextlib
import random
import sqlite3

import pytest

from blockrun_mcp.ledger import ABANDONED_NOTE, Ledger, LimitExceeded, VideoJobRow, utc_day
from tests.support.stores import reserve

# The same random walks on both stores, shorter on PostgreSQL, where every check is a few round
# trips to the server: the SQL is the same, what may differ is the dialect, and a short walk
# already takes every statement through it many times.
WALK_STEPS = {"sqlite": 400, "postgresql": 80}
WALK_TRIALS = {"sqlite": 40, "postgresql": 3}


def sums(ledger: Ledger, session: str) -> tuple[int, int]:
    return (
        ledger.counted_by_sum("session = ?", (session,)),
        ledger.counted_by_sum("day = ?", (utc_day(),)),
    )


def test_totals_track_every_status_change(ledger_store):
    ledger = ledger_store()
    rng = random.Random(7)
    open_ids: list[int] = []
    for step in range(WALK_STEPS[ledger_store.kind]):
        session = rng.choice(["a", "b", "c"])
        action = rng.random()
        if action < 0.45 or not open_ids:
            with contextlib.suppress(LimitExceeded):
                open_ids.append(
                    ledger.reserve(
                        session=session,
                        tool="ask_model",
                        model="m",
                        amount_atomic=rng.randint(1, 5000),
                        network="base",
                        session_limit_atomic=200_000,
                        daily_limit_atomic=500_000,
                    )
                )
        else:
            payment_id = rng.choice(open_ids)
            choice = rng.random()
            if choice < 0.3:
                ledger.mark_signed(payment_id, f"0x{step:064x}")
            elif choice < 0.7:
                row = ledger.payment(payment_id)
                ledger.mark_settled(payment_id, rng.randint(0, row.amount_atomic), "0xabc")
            else:
                ledger.mark_released(payment_id, "test")
        for name in ("a", "b", "c"):
            assert (ledger.session_spent_atomic(name), ledger.day_spent_atomic()) == sums(
                ledger, name
            )
    assert 0 < ledger.day_spent_atomic() <= 500_000


def test_limits_use_the_totals(ledger_store):
    ledger = ledger_store()
    kwargs = dict(
        tool="t", model="m", network="base", session_limit_atomic=1000, daily_limit_atomic=1500
    )
    first = ledger.reserve(session="a", amount_atomic=900, **kwargs)
    with pytest.raises(LimitExceeded) as info:
        ledger.reserve(session="a", amount_atomic=200, **kwargs)
    assert info.value.limit == "budget" and info.value.remaining_atomic == 100
    ledger.mark_settled(first, 400, "0x1")  # settled for less: the difference is free again
    ledger.reserve(session="a", amount_atomic=600, **kwargs)
    with pytest.raises(LimitExceeded) as info:
        ledger.reserve(session="b", amount_atomic=600, **kwargs)
    assert info.value.limit == "daily budget" and info.value.remaining_atomic == 500
    assert [p.amount_atomic for p in ledger.payments()] == [600, 900]  # refusals leave no row


def test_each_identity_has_its_own_daily_budget(ledger_store):
    ledger = ledger_store()
    alice = dict(identity="alice", identity_daily_limit_atomic=1000, daily_limit_atomic=5000)
    first = reserve(ledger, 600, session="a1", **alice)
    reserve(ledger, 400, session="a2", **alice)  # exactly the limit, over two sessions
    with pytest.raises(LimitExceeded) as info:
        reserve(ledger, 1, session="a3", **alice)
    assert info.value.limit == "identity budget" and info.value.remaining_atomic == 0
    # Bob has no budget of his own; the day's is shared: 5000 - 1000 left.
    reserve(ledger, 3000, session="b", identity="bob", daily_limit_atomic=5000)
    with pytest.raises(LimitExceeded) as info:
        reserve(ledger, 1001, session="b", identity="bob", daily_limit_atomic=5000)
    assert info.value.limit == "daily budget" and info.value.remaining_atomic == 1000
    # Over both her budget and the day's: hers is the one named.
    with pytest.raises(LimitExceeded) as info:
        reserve(ledger, 2000, session="a1", **alice)
    assert info.value.limit == "identity budget" and info.value.remaining_atomic == 0
    ledger.mark_released(first, "not sent")
    reserve(ledger, 600, session="a1", **alice)  # released: free again, to her alone
    assert ledger.identity_spent_atomic("alice") == 1000
    assert ledger.identity_spent_atomic("bob") == 3000
    assert ledger.identity_spent_atomic("carol") == 0
    assert ledger.day_spent_atomic() == 4000
    assert ledger.identity_spent_atomic("alice") == ledger.counted_by_sum(
        "identity = ? AND day = ?", ("alice", utc_day())
    )
    assert {p.identity for p in ledger.payments(identity="alice")} == {"alice"}
    assert [p.amount_atomic for p in ledger.payments(identity="alice")] == [600, 400, 600]
    assert [p.amount_atomic for p in ledger.payments(identity="bob")] == [3000]
    assert [p.session for p in ledger.payments(session="a1")] == ["a1", "a1"]
    assert len(ledger.payments(limit=2)) == 2


def test_running_totals_equal_the_sum_through_any_sequence_of_transitions(ledger_store):
    """Random walks over every transition (including the odd ones: settling twice, releasing a
    settled payment, a larger settled amount, notes, unknown ids): the running totals always
    equal the obviously right sum over the payments, and survive a reopen."""
    rng = random.Random(11)
    day = utc_day()
    for trial in range(WALK_TRIALS[ledger_store.kind]):
        ledger = ledger_store(f"trial-{trial}")
        ids: list[int] = []
        for _ in range(50):
            op = rng.choice(["reserve", "signed", "settle", "settle_big", "release", "note"])
            if op == "reserve" or not ids:
                with contextlib.suppress(LimitExceeded):
                    ids.append(
                        ledger.reserve(
                            session=rng.choice("ab"),
                            tool="ask_model",
                            model="m",
                            amount_atomic=rng.randint(0, 1000),
                            network="eip155:8453",
                            session_limit_atomic=20_000,
                            daily_limit_atomic=rng.choice([None, 30_000]),
                            identity=rng.choice(["default", "alice"]),
                        )
                    )
                continue
            payment_id = rng.choice([*ids, 10**6])
            if op == "signed":
                ledger.mark_signed(payment_id, "0x" + "11" * 32)
            elif op == "settle":
                ledger.mark_settled(payment_id, rng.randint(0, 1000), "0xabc")
            elif op == "settle_big":
                ledger.mark_settled(payment_id, 10**9, None)
            elif op == "release":
                ledger.mark_released(payment_id, "released")
            else:
                ledger.add_note(payment_id, "a note")
            for session in "ab":
                assert ledger.session_spent_atomic(session) == ledger.counted_by_sum(
                    "session = ?", (session,)
                )
            assert ledger.day_spent_atomic(day) == ledger.counted_by_sum("day = ?", (day,))
        assert ledger.identity_spent_atomic("alice", day) == ledger.counted_by_sum(
            "identity = ? AND day = ?", ("alice", day)
        )
        ledger.close()
        reopened = ledger_store(f"trial-{trial}")
        assert reopened.day_spent_atomic(day) == reopened.counted_by_sum("day = ?", (day,))
        assert [p.id for p in reopened.payments()] == sorted(ids, reverse=True)
        reopened.close()


def test_mark_signed_says_whether_the_reservation_was_still_there(ledger_store):
    ledger = ledger_store()
    kept, lost = (reserve(ledger, 10, session_limit_atomic=100) for _ in range(2))
    ledger.mark_released(lost, "released by another process")
    assert ledger.mark_signed(kept, "0x" + "11" * 32, payer="0xa", pay_to="0xb", valid_before=9)
    assert ledger.mark_signed(kept, "0x" + "22" * 32) is False  # already signed: not twice
    assert ledger.mark_signed(lost, "0x" + "33" * 32) is False
    assert ledger.mark_signed(10**6, "0x" + "44" * 32) is False  # no such payment
    assert [p.status for p in ledger.payments()] == ["released", "signed"]
    row = ledger.payment(kept)
    assert (row.nonce, row.payer, row.pay_to, row.valid_before) == (
        "0x" + "11" * 32,
        "0xa",
        "0xb",
        9,
    )
    assert [p.id for p in ledger.open_signed()] == [kept]
    assert ledger.payment(10**6) is None


def test_a_settled_payment_is_never_released_nor_settled_again(ledger_store):
    ledger = ledger_store()
    payment = reserve(ledger, 500)
    ledger.mark_signed(payment, "0x" + "11" * 32)
    ledger.mark_settled(payment, 450, "0xfeed", note="first")
    ledger.mark_released(payment, "too late")
    ledger.mark_settled(payment, 10, "0xother", note="second")
    row = ledger.payment(payment)
    assert (row.status, row.settled_atomic, row.tx_hash, row.note) == (
        "settled",
        450,
        "0xfeed",
        "first",
    )
    assert ledger.session_spent_atomic("s") == ledger.day_spent_atomic() == 450
    ledger.add_note(payment, "checked on chain")
    assert ledger.payment(payment).note == "first; checked on chain"


def test_reservations_of_a_dead_process_are_released_once_and_signed_ones_never(ledger_store):
    """A process (SQLite: a pid; PostgreSQL: an instance) that died mid-call leaves its
    reservations: the next ledger opened releases them, once. A signed payment may have left, so
    it stays counted; a live process's reservation is not touched; a read-only ledger (a report)
    releases nothing."""
    ledger = ledger_store()
    dead_reserved = [reserve(ledger, amount) for amount in (100, 200)]
    dead_signed = reserve(ledger, 400)
    ledger.mark_signed(dead_signed, "0x" + "11" * 32)
    live = reserve(ledger, 800)
    for payment in (*dead_reserved, dead_signed):
        ledger_store.abandon(ledger, payment)
    assert ledger.day_spent_atomic() == 1500

    report = ledger_store(read_only=True)
    assert [p.status for p in report.payments()] == ["reserved", "signed", "reserved", "reserved"]

    other = ledger_store()  # opening releases what the dead left
    statuses = {p.id: p.status for p in other.payments()}
    assert statuses == {
        dead_reserved[0]: "released",
        dead_reserved[1]: "released",
        dead_signed: "signed",
        live: "reserved",
    }
    assert all(other.payment(p).note == ABANDONED_NOTE for p in dead_reserved)
    assert other.release_abandoned_reservations() == 0  # once: nothing is left to release
    assert ledger.release_abandoned_reservations() == 0
    assert other.day_spent_atomic() == other.counted_by_sum("1=1", ()) == 1200
    assert other.session_spent_atomic("s") == other.identity_spent_atomic("default") == 1200
    # The process taken for dead must not sign what was released; the live one still may.
    assert ledger.mark_signed(dead_reserved[0], "0x" + "22" * 32) is False
    assert ledger.mark_signed(live, "0x" + "33" * 32) is True
    assert other.day_spent_atomic() == 1200


def test_video_jobs_are_kept_and_ended(ledger_store):
    ledger = ledger_store()
    first, second, third = reserve(ledger, 100), reserve(ledger, 200), reserve(ledger, 300)

    def job(job_id: str, payment_id: int) -> VideoJobRow:
        return VideoJobRow(
            job_id=job_id,
            payment_id=payment_id,
            session="s",
            model="video-model",
            poll_url=f"https://gateway.example/v1/videos/{job_id}",
            header_name="PAYMENT-SIGNATURE",
            header_value="signed?value%s",  # placeholders in values stay values
            valid_before=4102444800,
            status="running",
            path=None,
            url=None,
        )

    ledger.save_video_job(job("j1", first))
    ledger.save_video_job(job("j2", second))
    assert ledger.running_jobs_by_payment() == {first: "j1", second: "j2"}
    ledger.save_video_job(job("j1", third))  # the same job again: moved to the new payment
    assert ledger.running_jobs_by_payment() == {second: "j2", third: "j1"}
    assert ledger.video_job("j1").payment_id == third
    assert ledger.video_job("j1").header_value == "signed?value%s"
    ledger.update_video_job("j2", status="done", path="/out/j2.mp4")
    ledger.update_video_job("j2", status="done", url="https://cdn.example/j2.mp4")
    done = ledger.video_job("j2")
    assert (done.status, done.path, done.url) == (
        "done",
        "/out/j2.mp4",
        "https://cdn.example/j2.mp4",
    )
    assert ledger.running_jobs_by_payment([first, second, third]) == {third: "j1"}
    assert ledger.running_jobs_by_payment([]) == {}
    ledger.end_video_jobs_of(third, "expired")
    assert ledger.running_jobs_by_payment() == {}
    assert ledger.video_job("j1").status == "expired" and ledger.video_job("nope") is None


# --- SQLite only ----------------------------------------------------------------------------


def test_sqlite_a_ledger_without_totals_is_migrated(tmp_path):
    """SQLite only: a file from a version before the running totals gets them from its payments
    (PostgreSQL ledgers have had them from their first migration)."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    kwargs = dict(
        tool="t", model="m", network="base", session_limit_atomic=10**9, daily_limit_atomic=None
    )
    settled = ledger.reserve(session="a", amount_atomic=700, **kwargs)
    ledger.mark_settled(settled, 650, "0x1")
    ledger.reserve(session="a", amount_atomic=300, **kwargs)
    released = ledger.reserve(session="b", amount_atomic=999, **kwargs)
    ledger.mark_released(released, "x")
    ledger.close()
    with sqlite3.connect(path) as raw:  # what a ledger from before the totals looks like
        raw.execute("DROP TABLE totals")
        raw.execute("PRAGMA user_version = 0")
    reopened = Ledger(path)
    assert reopened.session_spent_atomic("a") == 950
    assert reopened.session_spent_atomic("b") == 0
    assert reopened.day_spent_atomic() == 950
    read_only = Ledger(path, read_only=True)
    assert read_only.session_spent_atomic("a") == 950


def test_a_reservation_whose_release_failed_is_released_by_the_next_pass(ledger_store):
    """The store failed just when a call released its reservation (the database was down):
    no call holds it any more, so the process's next pass releases it; the reservations its
    calls still hold are left alone."""
    from blockrun_mcp.ledger import StoreUnavailable

    ledger = ledger_store()
    stranded, held = reserve(ledger, 300), reserve(ledger, 500)
    real = ledger.store.transaction

    def down() -> contextlib.AbstractContextManager:
        raise StoreUnavailable("The ledger's store cannot be used (test).")

    ledger.store.transaction = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        ledger.mark_released(stranded, "the payment was not signed")
    ledger.store.transaction = real  # type: ignore[method-assign]
    assert ledger.payment(stranded).status == "reserved"
    assert ledger.day_spent_atomic() == 800
    assert ledger.release_abandoned_reservations() == 1
    assert ledger.payment(stranded).status == "released"
    assert ledger.payment(held).status == "reserved"
    assert ledger.day_spent_atomic() == 500
    assert ledger.release_abandoned_reservations() == 0
    assert ledger.mark_signed(held, "0x" + "44" * 32) is True


def test_a_reservation_signed_meanwhile_is_never_released_as_abandoned(ledger_store):
    """The release of a dead process's reservation is conditional on it still being one: a
    process only taken for dead that signed in between keeps its payment counted."""
    ledger = ledger_store()
    payment = reserve(ledger, 700)
    ledger_store.abandon(ledger, payment)
    # It signs between the survivor's look and its update (the look is made to see it).
    assert ledger.mark_signed(payment, "0x" + "55" * 32) is True
    ledger.store.abandoned_reservations = lambda tx: [payment]  # type: ignore[method-assign]
    assert ledger.release_abandoned_reservations() == 0
    assert ledger.payment(payment).status == "signed"
    assert ledger.day_spent_atomic() == 700
