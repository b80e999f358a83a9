"""ThreadStore on its own, on both stores (a SQLite file, then a PostgreSQL database: its tables
live in the ledger's store): turns kept whole and in order, files stored once, a thread its
owner's alone, and two instances writing to one thread both landing."""

from __future__ import annotations

import threading

import pytest

from blockrun_mcp.threads import TITLE_CHARS, ThreadStore, UnknownThread
from blockrun_mcp.workspace import SentFile


def add(store: ThreadStore, thread_id: str | None, owner: str = "alice", **turn) -> str:
    defaults = dict(
        model="m",
        effort=None,
        system=None,
        files=[],
        prompt="q",
        answer="a",
        finish_reason="stop",
        cost_atomic=10,
        payment_id=None,
    )
    return store.add_turn(thread_id, owner, **{**defaults, **turn})


def test_a_thread_keeps_its_turns_in_order_with_their_files_stored_once(ledger_store):
    ledger = ledger_store()
    store = ThreadStore(ledger)
    code = SentFile("src/app.py", "print('50% done?')\n")
    notes = SentFile("notes.md", "é ✓ — unicode stays unicode")
    prompt = "  what does   this do? 100% sure, %s and ?  " + "x" * 200
    thread = add(store, None, files=[code], prompt=prompt, system="be brief", effort="high")
    assert thread.startswith("thr_")
    again = add(store, thread, files=[code, notes], model="other", answer="b", cost_atomic=25)
    assert again == thread
    turns = store.turns(thread, "alice")
    assert [t.seq for t in turns] == [1, 2]
    assert [t.model for t in turns] == ["m", "other"]
    assert turns[0].prompt == prompt and turns[0].system == "be brief" and turns[0].effort == "high"
    assert turns[0].files == [code] and turns[1].files == [code, notes]
    assert [t.cost_atomic for t in turns] == [10, 25] and turns[1].answer == "b"
    assert ledger.read("SELECT COUNT(*) AS n FROM file_texts")[0]["n"] == 2  # once each
    (summary,) = store.recent("alice")
    # Its title: the prompt's start, blanks collapsed, cut to TITLE_CHARS.
    assert summary.title == ("what does this do? 100% sure, %s and ? " + "x" * 200)[:TITLE_CHARS]
    assert len(summary.title) == TITLE_CHARS
    assert (summary.turns, summary.models, summary.cost_atomic) == (2, ["m", "other"], 35)
    assert summary.created_at <= summary.updated_at


def test_a_thread_is_its_owners_alone(ledger_store):
    store = ThreadStore(ledger_store())
    thread = add(store, None, owner="alice")
    store.check(thread, "alice")  # hers: no error
    for owner, thread_id in (("bob", thread), ("alice", "thr_" + "0" * 24), ("alice", "nope")):
        with pytest.raises(UnknownThread) as unknown:
            store.check(thread_id, owner)
        assert "nothing was paid" in unknown.value.message
        with pytest.raises(UnknownThread):
            store.turns(thread_id, owner)
    assert store.recent("bob") == []
    assert [s.id for s in store.recent("alice")] == [thread]


def test_recent_threads_come_newest_first(ledger_store):
    store = ThreadStore(ledger_store())
    first = add(store, None, prompt="first")
    second = add(store, None, prompt="second", model="b", cost_atomic=7)
    assert [s.id for s in store.recent("alice")] == [second, first]
    add(store, first, model="c", cost_atomic=5)  # a new turn makes it the newest again
    recent = store.recent("alice")
    assert [(s.id, s.title, s.turns, s.models, s.cost_atomic) for s in recent] == [
        (first, "first", 2, ["c", "m"], 15),
        (second, "second", 1, ["b"], 7),
    ]
    assert [s.id for s in store.recent("alice", limit=1)] == [first]


def test_two_instances_writing_one_thread_both_land_in_order(ledger_store):
    """Two servers on one store (their own connections) add turns to one thread at once: every
    turn lands, numbered 1..n without a gap or a clash (within one process the ThreadStore's lock
    orders them; across processes, the store must)."""
    stores = [ThreadStore(ledger_store()), ThreadStore(ledger_store())]
    thread = add(stores[0], None, prompt="start")
    per_instance = 8
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(index: int) -> None:
        start.wait()
        try:
            for n in range(per_instance):
                add(stores[index], thread, prompt=f"{index}-{n}", answer=f"answer {index}-{n}")
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    workers = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    turns = stores[1].turns(thread, "alice")
    assert [t.seq for t in turns] == list(range(1, 2 * per_instance + 2))
    for index in range(len(stores)):  # each instance's own turns in the order it wrote them
        mine = [t.prompt for t in turns if t.prompt.startswith(f"{index}-")]
        assert mine == [f"{index}-{n}" for n in range(per_instance)]
    assert all(t.answer == f"answer {t.prompt}" for t in turns[1:])
