"""Conversations that survive restarts: every ask_model turn, kept beside the ledger.

The gateway keeps no state, so continuing a thread sends its earlier turns again, with the
files exactly as they were sent then. A turn is written in one transaction once its answer has
arrived, so a server killed mid-call leaves no half turn (its payment is in the ledger as any
other). Turns on one thread are taken one at a time, so two concurrent calls both land, in order,
the second seeing the first. A thread belongs to its owner (an identity): another cannot list or
continue it, and is told only that no such thread exists.

File contents are stored once each, by their SHA-256, however many turns send them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.ledger import StoreUnavailable
from blockrun_mcp.workspace import SentFile

if TYPE_CHECKING:
    from blockrun_mcp.ledger import Ledger

# The tables live with the ledger's (ledger_sqlite.py, ledger_postgres.py): one store.
TITLE_CHARS = 80
THREAD_ID_PREFIX = "thr_"


class UnknownThread(BlockrunError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"No thread {thread_id[:80]!r} is known here (nothing was paid). Call threads to see "
            "yours, or leave thread_id out to start a new one."
        )


@dataclass(frozen=True)
class Turn:
    seq: int
    created_at: float
    model: str
    effort: str | None
    system: str | None
    files: list[SentFile]
    prompt: str
    answer: str
    finish_reason: str | None
    cost_atomic: int


@dataclass(frozen=True)
class ThreadSummary:
    id: str
    title: str
    created_at: float
    updated_at: float
    turns: int
    models: list[str]
    cost_atomic: int


class ThreadStore:
    """Threads in the ledger's database (ledger.py): one file, one set of transactions."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._locks: weakref.WeakValueDictionary[str, anyio.Lock] = weakref.WeakValueDictionary()

    # --- one thread at a time -------------------------------------------------------------

    @asynccontextmanager
    async def taking_turn(self, thread_id: str) -> AsyncIterator[None]:
        """Held while a turn on `thread_id` is asked and written: the next one waits."""
        lock = self._locks.get(thread_id)
        if lock is None:
            lock = self._locks[thread_id] = anyio.Lock()
        async with lock:
            yield

    # --- reading --------------------------------------------------------------------------

    def check(self, thread_id: str, owner: str) -> None:
        """UnknownThread unless `owner` has this thread (someone else's is unknown too)."""
        if not isinstance(thread_id, str) or not thread_id.startswith(THREAD_ID_PREFIX):
            raise UnknownThread(str(thread_id))
        rows = self._read("SELECT 1 FROM threads WHERE id = ? AND owner = ?", (thread_id, owner))
        if not rows:
            raise UnknownThread(thread_id)

    def turns(self, thread_id: str, owner: str) -> list[Turn]:
        self.check(thread_id, owner)
        rows = self._read(
            "SELECT seq, created_at, model, effort, system, files, prompt, answer, finish_reason,"
            " cost_atomic FROM turns WHERE thread_id = ? ORDER BY seq",
            (thread_id,),
        )
        refs = [json.loads(row["files"]) if row["files"] != "[]" else [] for row in rows]
        texts = self._texts({ref["sha256"] for turn_refs in refs for ref in turn_refs})
        return [
            Turn(
                seq=row["seq"],
                created_at=row["created_at"],
                model=row["model"],
                effort=row["effort"],
                system=row["system"],
                files=[SentFile(ref["label"], texts[ref["sha256"]]) for ref in turn_refs],
                prompt=row["prompt"],
                answer=row["answer"],
                finish_reason=row["finish_reason"],
                cost_atomic=row["cost_atomic"],
            )
            for row, turn_refs in zip(rows, refs, strict=True)
        ]

    def recent(self, owner: str, limit: int = 20) -> list[ThreadSummary]:
        rows = self._read(
            "SELECT t.id, t.title, t.created_at, t.updated_at, COUNT(u.seq) AS turns,"
            " COALESCE(SUM(u.cost_atomic), 0) AS cost"
            " FROM threads t LEFT JOIN turns u ON u.thread_id = t.id WHERE t.owner = ?"
            " GROUP BY t.id, t.title, t.created_at, t.updated_at"
            " ORDER BY t.updated_at DESC LIMIT ?",
            (owner, limit),
        )
        models: dict[str, set[str]] = {}
        if rows:
            marks = ",".join("?" * len(rows))
            for row in self._read(
                f"SELECT DISTINCT thread_id, model FROM turns WHERE thread_id IN ({marks})",
                tuple(row["id"] for row in rows),
            ):
                models.setdefault(row["thread_id"], set()).add(row["model"])
        return [
            ThreadSummary(
                id=row["id"],
                title=row["title"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                turns=row["turns"],
                models=sorted(models.get(row["id"], ())),
                cost_atomic=int(row["cost"]),  # PostgreSQL's SUM of a bigint is a numeric
            )
            for row in rows
        ]

    # --- writing --------------------------------------------------------------------------

    def free_stored_today(self, owner: str, now: float | None = None) -> int:
        """Characters of prompts, answers and system prompts `owner`'s free turns stored since
        the UTC day began: what FREE_STORED_PER_DAY bounds (file texts are kept once each,
        shared by every turn that sent them, and are capped per call instead)."""
        now = time.time() if now is None else now
        day_start = now - now % 86_400
        rows = self.ledger.read(
            "SELECT COALESCE(SUM(LENGTH(u.prompt) + LENGTH(u.answer)"
            " + COALESCE(LENGTH(u.system), 0)), 0) AS stored"
            " FROM turns u JOIN threads t ON t.id = u.thread_id"
            " WHERE t.owner = ? AND u.cost_atomic = 0 AND u.created_at >= ?",
            (owner, day_start),
        )
        return int(rows[0]["stored"]) if rows else 0

    def add_turn(
        self,
        thread_id: str | None,
        owner: str,
        *,
        model: str,
        effort: str | None,
        system: str | None,
        files: list[SentFile],
        prompt: str,
        answer: str,
        finish_reason: str | None,
        cost_atomic: int,
        payment_id: int | None,
    ) -> str:
        """Write one whole turn (a new thread when `thread_id` is None); the thread's id."""
        now = time.time()
        refs = [{"label": f.label, "sha256": _sha256(f.text)} for f in files]
        with self.ledger.transaction() as db:
            if thread_id is None:
                thread_id = THREAD_ID_PREFIX + secrets.token_hex(12)
                title = " ".join(prompt[: TITLE_CHARS * 4].split())[:TITLE_CHARS] or "(untitled)"
                db.execute(
                    "INSERT INTO threads (id, owner, title, created_at, updated_at)"
                    " VALUES (?,?,?,?,?)",
                    (thread_id, owner, title, now, now),
                )
            else:
                # This UPDATE locks the thread's row first (on PostgreSQL; SQLite's BEGIN
                # IMMEDIATE locks everything): a concurrent turn on the same thread, from any
                # instance, waits here, and its seq below then counts this one's.
                db.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (now, thread_id))
            # In hash order: two turns storing the same new texts at once take their keys in
            # one order, so they cannot deadlock (PostgreSQL).
            texts = {ref["sha256"]: file.text for file, ref in zip(files, refs, strict=True)}
            for digest in sorted(texts):
                db.execute(
                    "INSERT INTO file_texts (sha256, text) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (digest, texts[digest]),
                )
            db.execute(
                "INSERT INTO turns (thread_id, seq, created_at, model, effort, system, files,"
                " prompt, answer, finish_reason, cost_atomic, payment_id) VALUES"
                " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM turns WHERE thread_id = ?),"
                " ?,?,?,?,?,?,?,?,?,?)",
                (
                    thread_id,
                    thread_id,
                    now,
                    model,
                    effort,
                    system,
                    json.dumps(refs),
                    prompt,
                    answer,
                    finish_reason,
                    cost_atomic,
                    payment_id,
                ),
            )
        return thread_id

    # --- plumbing -------------------------------------------------------------------------

    def _read(self, sql: str, args: tuple[object, ...]) -> list:
        import sqlite3

        try:
            return self.ledger.read(sql, args)
        except sqlite3.OperationalError as exc:
            # Only a missing table means "a read-only SQLite ledger from before threads": no
            # history. A locked or failing read is not an empty thread: asking on without the
            # earlier turns would be a paid answer to a different conversation.
            if str(exc).startswith("no such table"):
                return []
            raise StoreUnavailable(
                f"The ledger could not be read ({' '.join(str(exc).split())[:200]}), so the "
                "thread's history is unknown; nothing was paid. Try again."
            ) from None

    def _texts(self, hashes: set[str]) -> dict[str, str]:
        if not hashes:
            return {}
        marks = ",".join("?" * len(hashes))
        rows = self._read(
            f"SELECT sha256, text FROM file_texts WHERE sha256 IN ({marks})", tuple(hashes)
        )
        return {row["sha256"]: row["text"] for row in rows}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
