"""A payment marked signed stays signed through a power loss, on the SQLite ledger.

In WAL mode, `synchronous=NORMAL` does not sync the WAL at each commit: after a power loss or an
OS crash the last commits can roll back. A row rolled back from "signed" to "reserved" is then
released by the abandoned-reservation pass, though its authorization may have left the machine
and be spent. So the signed transition must commit with `synchronous=FULL` (2), which syncs the
WAL before the commit returns. The pragma is per connection: it is read here on the ledger's own
connection, at the moment the signed UPDATE runs and at any COMMIT of it, through SQLite's
statement trace. (A power loss itself cannot be staged in a test; what it would undo is what
this level decides.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from blockrun_mcp.ledger import Ledger
from blockrun_mcp.ledger_sqlite import SQLiteBackend

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_mark_signed_commits_with_synchronous_full(tmp_path: Path) -> None:
    ledger = Ledger.open(None, tmp_path)
    try:
        store = ledger.store
        assert isinstance(store, SQLiteBackend)
        db: sqlite3.Connection = store._db  # the pragma is per connection: the ledger's own
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        payment_id = ledger.reserve(
            session="s",
            tool="ask_model",
            model="m",
            amount_atomic=1_000,
            network="base",
            session_limit_atomic=None,
            daily_limit_atomic=None,
        )

        levels: list[tuple[str, int]] = []  # (statement, synchronous level when it ran)
        signing = False

        def at_statement(sql: str) -> None:
            nonlocal signing
            words = sql.split()
            if words[:1] == ["UPDATE"] and "status='signed'" in sql:
                signing = True  # autocommit: this statement commits itself
            elif not (signing and words[:1] == ["COMMIT"]):
                return  # or, in an explicit transaction, its COMMIT does
            levels.append((words[0], db.execute("PRAGMA synchronous").fetchone()[0]))

        db.set_trace_callback(at_statement)
        try:
            assert ledger.mark_signed(payment_id, "0x" + "11" * 32)
        finally:
            db.set_trace_callback(None)

        assert levels, "no signed UPDATE was seen on the ledger's connection"
        assert all(level == FULL for _, level in levels), levels
        row = ledger.payment(payment_id)
        assert row is not None and row.status == "signed"
    finally:
        ledger.close()
