"""A held database lock stops no one else: the event loop never waits on the ledger.

A team server on PostgreSQL, two people, real MCP clients of the test's era over HTTP. Another
connection holds the day's totals row (what every reservation under a daily budget locks):
bob's free calls, the catalog and his budget answer while it is held; alice's paid call waits
at most the ledger's lock_timeout and ends with nothing signed; once the lock is gone she pays
exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import psycopg
import pytest

from blockrun_mcp import ledger_postgres
from tests.support.payer import assert_every_payment_valid
from tests.support.server import CHEAP_MODEL, FREE_MODEL, http_server, make_service, nonces_seen
from tests.test_payers import as_person, error, ok, people

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("within_one_utc_day")]
LOCK_TIMEOUT = 4.0  # long enough for the other calls to come and go on a busy machine


async def waiting_on_a_lock(url: str) -> None:
    """Until a ledger connection waits on a row lock (the reservation blocked)."""
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
        if count:
            return
        await anyio.sleep(0.02)


@contextmanager
def holding_the_days_total(url: str) -> Iterator[None]:
    """Another transaction holds the day's totals row, as a stuck reservation would."""
    with psycopg.connect(url) as holder:
        locked = holder.execute("SELECT key FROM totals WHERE scope = 'day' FOR UPDATE").fetchall()
        assert locked, "the day's totals row exists once something was reserved"
        try:
            yield
        finally:
            holder.rollback()


async def test_a_held_lock_stops_only_the_call_that_needs_it(
    sandbox: Any, tmp_path: Any, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_postgres, "LOCK_TIMEOUT_SECONDS", LOCK_TIMEOUT)
    tokens, token = people(tmp_path)
    env = {
        "BLOCKRUN_LEDGER_URL": fresh_database,
        "BLOCKRUN_HTTP_TOKENS_FILE": str(tokens),
        "BLOCKRUN_DAILY_BUDGET_USD": "5.00",
    }
    service, _ = make_service(tmp_path, sandbox, env=env)
    paid = {"prompt": "paid", "model": CHEAP_MODEL}
    with http_server(service) as url, anyio.fail_after(60):
        async with as_person(url, token["alice"]) as alice, as_person(url, token["bob"]) as bob:
            ok(await alice.call_tool("ask_model", paid))  # the day's row now exists
            signed_before = len(nonces_seen(sandbox.state))
            finished: list[str] = []
            answers: dict[str, Any] = {}

            async def call(who: Any, name: str, tool: str, arguments: dict[str, Any]) -> None:
                answers[name] = await who.call_tool(tool, arguments)
                finished.append(name)

            with holding_the_days_total(fresh_database):
                async with anyio.create_task_group() as group:
                    # Alice's reservation waits on the held row, in a worker thread...
                    group.start_soon(call, alice, "alice", "ask_model", paid)
                    await waiting_on_a_lock(fresh_database)
                    # ...while bob's calls, on the same instance, come and go.
                    for n in range(3):
                        free = {"prompt": f"free {n}", "model": FREE_MODEL}
                        group.start_soon(call, bob, f"free {n}", "ask_model", free)
                    group.start_soon(call, bob, "models", "list_models", {})
                    group.start_soon(call, bob, "budget", "budget", {})
                # Everyone else answered before the one call that waits on the lock gave up.
                assert finished[-1] == "alice", finished
                for name in ("free 0", "free 1", "free 2"):
                    assert ok(answers[name])["cost_usd"] == 0
                assert ok(answers["models"])["models"] and ok(answers["budget"])["recent"] == []
                stuck = error(answers["alice"])
                assert "busy" in stuck and "lock_timeout" in stuck
                assert "Nothing was signed" in stuck
                assert len(nonces_seen(sandbox.state)) == signed_before
            again = ok(await alice.call_tool("ask_model", paid))
            assert again["cost_usd"] > 0
    assert len(nonces_seen(sandbox.state)) == signed_before + 1
    assert_every_payment_valid(sandbox.state)
