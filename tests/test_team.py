"""A team's deployment: two instances over one PostgreSQL ledger, two identities with budgets of
their own (BLOCKRUN_HTTP_TOKENS_FILE), stateless HTTP. What manifests/team/README.md walks through,
as a test: one person's budget refuses a call while the other's goes on, on either instance, and
`spend` shows both."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from blockrun_mcp.identities import add_identity, read_file
from blockrun_mcp.ledger import Ledger
from tests.support.cli import cli_env, run_cli
from tests.support.eras import mcp_client
from tests.support.payer import assert_every_payment_valid
from tests.support.server import (
    CHEAP_MODEL,
    OPUS,
    assert_ledger_matches_sandbox,
    http_server,
    make_service,
    new_key,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("within_one_utc_day")]


def client_for(url: str, token: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
    )


def team_env(tmp_path: Path, ledger_url: str, tokens: Path, **extra: str) -> dict[str, str]:
    return {
        "BLOCKRUN_LEDGER_URL": ledger_url,
        "BLOCKRUN_HTTP_TOKENS_FILE": str(tokens),
        "BLOCKRUN_DAILY_BUDGET_USD": "5.00",
        **extra,
    }


async def ask(client: Client, prompt: str, **arguments: Any) -> Any:
    return await client.call_tool(
        "ask_model", {"prompt": prompt, "model": OPUS, "max_tokens": 2000, **arguments}
    )


async def test_two_instances_two_people_one_ledger(sandbox, tmp_path, fresh_database):
    tokens = tmp_path / "tokens.toml"
    alice = add_identity(tokens, "alice", daily_budget_usd=0.008, max_per_call_usd=None)
    bob = add_identity(tokens, "bob", daily_budget_usd=1.00, max_per_call_usd=None)
    assert alice not in tokens.read_text() and bob not in tokens.read_text()
    key = new_key()
    env = team_env(tmp_path, fresh_database, tokens)
    # Two instances: each its own process state (service), data dir and HTTP server; one
    # wallet, one PostgreSQL ledger.
    first, _ = make_service(tmp_path / "one", sandbox, key=key, env=env)
    second, _ = make_service(tmp_path / "two", sandbox, key=key, env=env)
    with ExitStack() as servers:
        urls = [servers.enter_context(http_server(s)) for s in (first, second)]
        async with AsyncExitStack() as stack:
            clients: dict[tuple[str, int], Client] = {}
            for name, token in (("alice", alice), ("bob", bob)):
                for index, url in enumerate(urls):
                    http = await stack.enter_async_context(client_for(url, token))
                    clients[name, index] = await stack.enter_async_context(
                        mcp_client(streamable_http_client(url, http_client=http))
                    )
            with anyio.fail_after(60):
                # Alice spends on instance one; her budget is then short on instance two too.
                spent = await ask(clients["alice", 0], "alice asks")
                assert not spent.is_error, spent.content[0].text
                cost = spent.structured_content["cost_usd"]
                assert 0.004 < cost < 0.008  # a second one cannot fit in her $0.008
                refused = await ask(clients["alice", 1], "alice again")
                assert refused.is_error
                text = refused.content[0].text
                assert "identity budget" in text and "alice" in text
                # Bob goes on, on both instances.
                for index in (0, 1):
                    answer = await ask(clients["bob", index], f"bob asks {index}")
                    assert not answer.is_error, answer.content[0].text
                # Each sees their own figures, whichever instance answers.
                for index in (0, 1):
                    mine = (
                        await clients["alice", index].call_tool("budget", {})
                    ).structured_content
                    assert mine["session_limit_usd"] == 0.008
                    assert mine["session_spent_usd"] == pytest.approx(cost)
                    assert mine["daily_spent_usd"] > cost
                    bobs = (await clients["bob", index].call_tool("budget", {})).structured_content
                    assert bobs["session_limit_usd"] == 1.00
                    assert bobs["budget_remaining_usd"] < 1.00
                    # Receipts are each person's own.
                    assert [r["transaction"] for r in mine["recent"]] == [
                        spent.structured_content["transaction"]
                    ]
                    assert len(bobs["recent"]) == 2
                    assert spent.structured_content["transaction"] not in json.dumps(bobs)
                # Threads are the caller's own: bob can neither list nor continue alice's.
                thread = spent.structured_content["thread_id"]
                listed = await clients["bob", 1].call_tool("threads", {})
                assert thread not in json.dumps(listed.structured_content)
                stolen = await ask(clients["bob", 0], "bob reads alice", thread_id=thread)
                assert stolen.is_error and "thread" in stolen.content[0].text.lower()
                own = await clients["alice", 1].call_tool("threads", {})
                assert thread in json.dumps(own.structured_content)
                # Lowering a session limit means nothing here: there is no session.
                lowered = await clients["bob", 0].call_tool(
                    "budget", {"set_session_limit_usd": 0.01}
                )
                assert lowered.is_error and "per identity" in lowered.content[0].text
    await first.aclose()
    await second.aclose()
    state = sandbox.state
    assert len(state.settlements) == 3  # alice once, bob twice; the refusal signed nothing
    assert_every_payment_valid(state)
    ledger = Ledger.open(fresh_database, tmp_path, read_only=True)
    try:
        assert_ledger_matches_sandbox(ledger, state)
        by_identity = {}
        for row in ledger.payments():
            by_identity.setdefault(row.identity, []).append(row)
        assert sorted(by_identity) == ["alice", "bob"]
        assert [len(rows) for _, rows in sorted(by_identity.items())] == [1, 2]
    finally:
        ledger.close()
    # `spend` reads the same ledger and shows both people.
    env = cli_env(tmp_path, BLOCKRUN_LEDGER_URL=fresh_database)
    report = run_cli(env, "spend", "--json")
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    assert {entry["identity"] for entry in summary["by_identity"]} == {"alice", "bob"}
    text = run_cli(env, "spend")
    assert text.returncode == 0, text.stderr
    assert "alice" in text.stdout and "bob" in text.stdout


async def test_a_token_not_in_the_file_gets_401_and_the_identity_header_is_not_trusted(
    sandbox, tmp_path, fresh_database
):
    tokens = tmp_path / "tokens.toml"
    alice = add_identity(tokens, "alice", daily_budget_usd=0.05, max_per_call_usd=None)
    env = team_env(tmp_path, fresh_database, tokens)
    service, _ = make_service(tmp_path, sandbox, env=env)
    with http_server(service) as url:
        async with httpx2.AsyncClient(timeout=10) as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            headers = {"Accept": "application/json, text/event-stream"}
            wrong = await http.post(
                url, json=body, headers={**headers, "Authorization": "Bearer " + "x" * 43}
            )
            assert wrong.status_code == 401
            # Naming an identity is not being it: without alice's token, no access.
            forged = await http.post(
                url, json=body, headers={**headers, "X-Blockrun-Identity": "alice"}
            )
            assert forged.status_code == 401
        # With a token, a forged identity header is dropped: the call is booked to the token's owner.
        bob = add_identity(tokens, "bob", daily_budget_usd=1.0, max_per_call_usd=None)
    await service.aclose()
    assert read_file(tokens)[0].name == "alice" and alice != bob
    service, _ = make_service(tmp_path / "again", sandbox, env=env)
    with http_server(service) as url:
        async with (
            httpx2.AsyncClient(
                headers={"Authorization": f"Bearer {bob}", "X-Blockrun-Identity": "alice"},
                timeout=30,
            ) as http,
            mcp_client(streamable_http_client(url, http_client=http)) as client,
        ):
            with anyio.fail_after(30):
                answer = await client.call_tool(
                    "ask_model", {"prompt": "who pays", "model": CHEAP_MODEL, "max_tokens": 100}
                )
                assert not answer.is_error, answer.content[0].text
    await service.aclose()
    ledger = Ledger.open(fresh_database, tmp_path, read_only=True)
    try:
        assert [row.identity for row in ledger.payments()] == ["bob"]
    finally:
        ledger.close()


async def test_an_identity_s_own_caps_refuse_before_anything_is_signed(
    sandbox, tmp_path, fresh_database
):
    tokens = tmp_path / "tokens.toml"
    intern = add_identity(tokens, "intern", daily_budget_usd=0.02, max_per_call_usd=0.015)
    env = team_env(tmp_path, fresh_database, tokens)
    service, _ = make_service(tmp_path, sandbox, env=env)
    with http_server(service) as url:
        async with (
            client_for(url, intern) as http,
            mcp_client(streamable_http_client(url, http_client=http)) as client,
        ):
            with anyio.fail_after(30):
                dear = await ask(client, "too dear for one call", max_tokens=8000)
                assert dear.is_error
                text = dear.content[0].text
                assert "per-call cap $0.01" in text
                assert "intern's max_per_call_usd in the tokens file" in text
                first = await ask(client, "within both caps", max_tokens=4000)
                assert not first.is_error, first.content[0].text
                # A consult whose total is above what is left of the identity's day is refused
                # whole, before any signature.
                consult = await client.call_tool(
                    "ask_models",
                    {"prompt": "several", "models": [OPUS, CHEAP_MODEL], "max_tokens": 4000},
                )
                assert consult.is_error, consult.structured_content
                assert "left of the" in consult.content[0].text
                status = (await client.call_tool("budget", {})).structured_content
                assert status["per_call_cap_usd"] == 0.015
                assert status["session_limit_usd"] == 0.02
                assert status["session_spent_usd"] == first.structured_content["cost_usd"]
    await service.aclose()
    state = sandbox.state
    assert len(state.settlements) == 1
    assert len(state.payments_seen) == 1  # the refusals sent no payment at all
    assert_every_payment_valid(state)


async def test_identities_on_one_sqlite_server_keep_session_budgets_too(sandbox, tmp_path):
    """Tokens file without BLOCKRUN_LEDGER_URL: one instance, MCP sessions as before, and each
    identity's daily budget on top (what is left is the smaller of the two)."""
    tokens = tmp_path / "tokens.toml"
    alice = add_identity(tokens, "alice", daily_budget_usd=0.008, max_per_call_usd=None)
    env = {"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens), "BLOCKRUN_SESSION_BUDGET_USD": "0.50"}
    service, _ = make_service(tmp_path, sandbox, env=env)
    with http_server(service) as url:
        async with (
            client_for(url, alice) as http,
            mcp_client(streamable_http_client(url, http_client=http)) as client,
        ):
            with anyio.fail_after(30):
                spent = await ask(client, "alice on sqlite")
                assert not spent.is_error, spent.content[0].text
                cost = spent.structured_content["cost_usd"]
                status = (await client.call_tool("budget", {})).structured_content
                assert status["session_limit_usd"] == 0.50  # a session budget still applies
                assert status["session_spent_usd"] == pytest.approx(cost)
                assert status["budget_remaining_usd"] == pytest.approx(0.008 - cost)
                assert spent.structured_content["budget_remaining_usd"] == pytest.approx(
                    0.008 - cost
                )
                again = await ask(client, "alice again")
                assert again.is_error and "identity budget" in again.content[0].text
    await service.aclose()
    assert len(sandbox.state.settlements) == 1
    ledger = Ledger(service.config.data_dir / "ledger.sqlite3", read_only=True)
    try:
        assert [row.identity for row in ledger.payments()] == ["alice"]
    finally:
        ledger.close()


async def test_a_running_server_releases_what_ended_processes_reserved(
    sandbox, tmp_path, monkeypatch
):
    """The server's own periodic pass (no restart, no command) releases a reservation whose
    process is gone, every RELEASE_INTERVAL_SECONDS; signed payments wait for the chain."""
    from blockrun_mcp import payments
    from tests.support.cli import dead_pid

    monkeypatch.setattr(payments, "FIRST_RECONCILE_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(payments, "RELEASE_INTERVAL_SECONDS", 0.05)
    service, _ = make_service(tmp_path, sandbox)
    ledger = service.ledger
    async with anyio.create_task_group() as group:
        group.start_soon(service.reconcile_periodically)
        await anyio.sleep(0.2)  # its first passes find nothing
        gone = ledger.reserve(
            session="s",
            tool="ask_model",
            model=OPUS,
            amount_atomic=900,
            network="base",
            session_limit_atomic=None,
            daily_limit_atomic=None,
        )
        ledger.store.run("UPDATE payments SET pid = ? WHERE id = ?", (dead_pid(), gone))
        held = ledger.reserve(
            session="s",
            tool="ask_model",
            model=OPUS,
            amount_atomic=100,
            network="base",
            session_limit_atomic=None,
            daily_limit_atomic=None,
        )
        with anyio.fail_after(10):
            while ledger.payment(gone).status == "reserved":
                await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    assert ledger.payment(gone).status == "released"
    assert ledger.payment(held).status == "reserved"  # a call of this process holds it
    assert ledger.day_spent_atomic() == 100
    await service.aclose()


async def test_an_approval_asked_by_one_instance_is_paid_by_another(
    sandbox, tmp_path, fresh_database
):
    """Behind a load balancer the retry that carries the person's yes may reach another
    instance: the sealing key is the team's (kept in its database), so it pays there, once.
    A handshake-era client of a team server has no session, so nothing can be asked of it in
    the middle of a call: it is refused plainly, unsigned (README, "Team server")."""
    from mcp_types import ElicitResult, InputRequiredResult

    from tests.support.eras import is_sessionless

    tokens = tmp_path / "tokens.toml"
    alice = add_identity(tokens, "alice", daily_budget_usd=1.00, max_per_call_usd=None)
    env = team_env(tmp_path, fresh_database, tokens, BLOCKRUN_CONFIRM_ABOVE_USD="0.0001")
    key = new_key()
    first, _ = make_service(tmp_path / "one", sandbox, key=key, env=env)
    second, _ = make_service(tmp_path / "two", sandbox, key=key, env=env)
    yes = ElicitResult(action="accept", content={"approve": True})

    async def approve(context: Any, params: Any) -> ElicitResult:
        return yes

    arguments = {"prompt": "approve me", "model": CHEAP_MODEL}
    with ExitStack() as servers:
        urls = [servers.enter_context(http_server(s)) for s in (first, second)]
        async with AsyncExitStack() as stack:
            on = []
            for url in urls:
                http = await stack.enter_async_context(client_for(url, alice))
                on.append(
                    await stack.enter_async_context(
                        mcp_client(
                            streamable_http_client(url, http_client=http),
                            elicitation_callback=approve,
                        )
                    )
                )
            with anyio.fail_after(60):
                if not is_sessionless():
                    result = await on[0].call_tool("ask_model", arguments)
                    assert result.is_error and "cannot ask you" in result.content[0].text
                    assert "Nothing was signed" in result.content[0].text
                    assert not sandbox.state.payments_seen
                    return
                else:
                    asked = await on[0].session.call_tool(
                        "ask_model", arguments, allow_input_required=True
                    )
                    assert isinstance(asked, InputRequiredResult)
                    ((question, _),) = asked.input_requests.items()
                    assert not sandbox.state.payments_seen
                    result = await on[1].session.call_tool(
                        "ask_model",
                        arguments,
                        input_responses={question: yes},
                        request_state=asked.request_state,
                    )
                assert not result.is_error, result.content[0].text
    assert len(sandbox.state.payments_seen) == 1
    assert_every_payment_valid(sandbox.state)
