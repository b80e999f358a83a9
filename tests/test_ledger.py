"""The ledger's running totals always equal the plain sum over its payments."""

from __future__ import annotations

import contextlib
import random
import sqlite3

import pytest

from blockrun_mcp.ledger import Ledger, LimitExceeded, utc_day


def sums(ledger: Ledger, session: str) -> tuple[int, int]:
    return (
        ledger.counted_by_sum("session = ?", (session,)),
        ledger.counted_by_sum("day = ?", (utc_day(),)),
    )


def test_totals_track_every_status_change(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    rng = random.Random(7)
    open_ids: list[int] = []
    for step in range(400):
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
    assert ledger.day_spent_atomic() <= 500_000


def test_limits_use_the_totals(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
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


def test_a_ledger_without_totals_is_migrated(tmp_path):
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


def test_running_totals_equal_the_sum_through_any_sequence_of_transitions(tmp_path):
    """Random walks over every transition (including the odd ones: settling twice, releasing a
    settled payment, a larger settled amount, notes, unknown ids): the running totals always
    equal the obviously right sum over the payments, and survive a reopen."""
    rng = random.Random(11)
    day = utc_day()
    for trial in range(40):
        path = tmp_path / f"ledger-{trial}.sqlite3"
        ledger = Ledger(path)
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
        ledger.close()
        reopened = Ledger(path)
        assert reopened.day_spent_atomic(day) == reopened.counted_by_sum("day = ?", (day,))
        reopened.close()


def test_mark_signed_says_whether_the_reservation_was_still_there(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    kept, lost = (
        ledger.reserve(
            session="s",
            tool="ask_model",
            model="m",
            amount_atomic=10,
            network="eip155:8453",
            session_limit_atomic=100,
            daily_limit_atomic=None,
        )
        for _ in range(2)
    )
    ledger.mark_released(lost, "released by another process")
    assert ledger.mark_signed(kept, "0x" + "11" * 32) is True
    assert ledger.mark_signed(kept, "0x" + "22" * 32) is False  # already signed: not twice
    assert ledger.mark_signed(lost, "0x" + "33" * 32) is False
    assert [p.status for p in ledger.payments()] == ["released", "signed"]
    assert ledger.payment(kept).nonce == "0x" + "11" * 32
