"""Who pays is one value: two people on one server cannot see or touch each other's money, jobs,
threads or files, in either protocol era.

One HTTP server on SQLite with two identities (a tokens file), real MCP clients of the test's
era over streamable HTTP, and raw requests for what a hostile client would forge. On 2026-07-28
there are no MCP sessions: each identity's session-less budget is its own, never one bucket for
two people.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ListRootsResult, Root

from blockrun_mcp.identities import add_identity
from tests.support.eras import check_negotiated, is_sessionless, mcp_client
from tests.support.payer import assert_every_payment_valid
from tests.support.server import (
    CHEAP_MODEL,
    DATA_URI_IMAGE_MODEL,
    OPUS,
    VIDEO_MODEL,
    http_server,
    make_service,
    nonces_seen,
    open_ledger,
)

pytestmark = pytest.mark.anyio
ROUND = 60  # seconds a whole test may take


def people(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    tokens = tmp_path / "tokens.toml"
    found = {
        name: add_identity(tokens, name, daily_budget_usd=None, max_per_call_usd=None)
        for name in ("alice", "bob")
    }
    return tokens, found


@asynccontextmanager
async def as_person(url: str, token: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
        ) as http,
        mcp_client(streamable_http_client(url, http_client=http), **kwargs) as client,
    ):
        check_negotiated(client)
        yield client


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def error(result: Any) -> str:
    assert result.is_error, result.structured_content
    return result.content[0].text


@asynccontextmanager
async def two_people(
    sandbox: Any, tmp_path: Path, **env: str
) -> AsyncIterator[tuple[Client, Client]]:
    tokens, token = people(tmp_path)
    service, _ = make_service(
        tmp_path,
        sandbox,
        env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens), **env},
        video_wait_seconds=0.3,
    )
    with http_server(service) as url, anyio.fail_after(ROUND):
        async with as_person(url, token["alice"]) as alice, as_person(url, token["bob"]) as bob:
            yield alice, bob


async def test_budgets_and_receipts_are_each_persons_own(sandbox, tmp_path):
    async with two_people(sandbox, tmp_path, BLOCKRUN_SESSION_BUDGET_USD="0.05") as (alice, bob):
        spent = ok(
            await alice.call_tool(
                "ask_model", {"prompt": "alice", "model": OPUS, "max_tokens": 2000}
            )
        )
        mine = ok(await alice.call_tool("budget", {}))
        bobs = ok(await bob.call_tool("budget", {}))
        assert spent["cost_usd"] > 0
        assert mine["session_spent_usd"] == pytest.approx(spent["cost_usd"])
        assert [r["transaction"] for r in mine["recent"]] == [spent["transaction"]]
        # Bob's session budget is untouched, and alice's payment is nowhere in his answer.
        assert bobs["session_spent_usd"] == 0 and bobs["budget_remaining_usd"] == 0.05
        assert bobs["recent"] == [] and spent["transaction"] not in json.dumps(bobs)
        # Bob lowering his limit leaves alice's alone; his lowered limit holds on his next call.
        ok(await bob.call_tool("budget", {"set_session_limit_usd": 0.001}))
        assert ok(await alice.call_tool("budget", {}))["session_limit_usd"] == 0.05
        assert ok(await bob.call_tool("budget", {}))["session_limit_usd"] == 0.001
        refused = await bob.call_tool(
            "ask_model", {"prompt": "bob", "model": OPUS, "max_tokens": 2000}
        )
        assert "budget" in error(refused)
    assert len(sandbox.state.payments_seen) == 1
    assert_every_payment_valid(sandbox.state)


async def test_another_persons_video_job_is_unknown_and_never_polled(sandbox, tmp_path):
    sandbox.state.set_faults(video_polls_before_done=10_000)
    async with two_people(sandbox, tmp_path) as (alice, bob):
        started = ok(
            await alice.call_tool(
                "generate_video", {"prompt": "a cat", "model": VIDEO_MODEL, "duration_seconds": 5}
            )
        )
        assert started["status"] == "running"
        job = started["job_id"]
        with sandbox.state.lock:
            polls_before = len(sandbox.state.requests_seen)
        stolen = error(await bob.call_tool("generate_video", {"job_id": job}))
        made_up = error(await bob.call_tool("generate_video", {"job_id": "job_" + "0" * 24}))
        # The same sentence as a made-up id, and not one request to the gateway for it.
        assert stolen == made_up.replace("job_" + "0" * 24, job)
        with sandbox.state.lock:
            assert len(sandbox.state.requests_seen) == polls_before
        assert job not in json.dumps(ok(await bob.call_tool("budget", {})))
        # Alice still resumes her own job.
        resumed = ok(await alice.call_tool("generate_video", {"job_id": job}))
        assert resumed["job_id"] == job and resumed["cost_usd"] == 0
    assert len(set(nonces_seen(sandbox.state))) == 1  # one payment, polled with its signature


async def test_each_persons_media_go_to_a_folder_of_their_own(sandbox, tmp_path):
    output = tmp_path / "media"
    async with two_people(sandbox, tmp_path, BLOCKRUN_OUTPUT_DIR=str(output)) as (alice, bob):
        arguments = {"prompt": "the same cat", "model": DATA_URI_IMAGE_MODEL}
        hers = ok(await alice.call_tool("generate_image", arguments))["images"][0]["path"]
        his = ok(await bob.call_tool("generate_image", arguments))["images"][0]["path"]
    assert Path(hers).parent == (output / "alice").resolve()
    assert Path(his).parent == (output / "bob").resolve()
    assert Path(hers).read_bytes() and Path(his).read_bytes()
    assert_every_payment_valid(sandbox.state)


async def test_another_persons_thread_is_unknown(sandbox, tmp_path):
    async with two_people(sandbox, tmp_path) as (alice, bob):
        first = ok(
            await alice.call_tool("ask_model", {"prompt": "secret plan", "model": CHEAP_MODEL})
        )
        thread = first["thread_id"]
        assert thread not in json.dumps(ok(await bob.call_tool("threads", {})))
        stolen = error(await bob.call_tool("threads", {"thread_id": thread}))
        made_up = error(await bob.call_tool("threads", {"thread_id": "thr_" + "0" * 24}))
        assert stolen == made_up.replace("thr_" + "0" * 24, thread)
        paid_before = len(sandbox.state.payments_seen)
        refused = error(
            await bob.call_tool(
                "ask_model", {"prompt": "go on", "model": CHEAP_MODEL, "thread_id": thread}
            )
        )
        assert "secret plan" not in refused
        assert len(sandbox.state.payments_seen) == paid_before  # nothing paid for the attempt


async def test_a_forged_identity_header_changes_nothing(sandbox, tmp_path):
    async with two_people(sandbox, tmp_path) as (alice, _bob):
        ok(await alice.call_tool("ask_model", {"prompt": "alice", "model": CHEAP_MODEL}))
    tokens, token = people(tmp_path / "again")
    service, _ = make_service(
        tmp_path / "again", sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)}
    )
    with http_server(service) as url, anyio.fail_after(ROUND):
        async with (
            httpx2.AsyncClient(
                headers={
                    "Authorization": f"Bearer {token['bob']}",
                    "X-Blockrun-Identity": "alice",
                },
                timeout=30,
            ) as http,
            mcp_client(streamable_http_client(url, http_client=http)) as bob,
        ):
            ok(await bob.call_tool("ask_model", {"prompt": "bob as alice", "model": CHEAP_MODEL}))
            receipts = ok(await bob.call_tool("budget", {}))["recent"]
            assert len(receipts) == 1
    ledger = open_ledger(service.config)
    try:
        (row,) = [r for r in ledger.payments() if r.status != "released"]
    finally:
        ledger.close()
    assert row.identity == "bob"


async def test_files_over_http_come_only_from_the_operators_workspace(sandbox, tmp_path):
    """A client's roots name its own disk: the server never reads them. Without a workspace the
    operator configured, `files` is refused with what to set; with one, files come from there."""
    secret = tmp_path / "elsewhere" / "notes.txt"
    secret.parent.mkdir()
    secret.write_text("the server host's private notes\n")

    async def offers_everything(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=secret.parent.as_uri())])

    tokens, token = people(tmp_path)
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    ask = {"prompt": "read it", "model": CHEAP_MODEL, "files": ["notes.txt"]}
    with http_server(service) as url, anyio.fail_after(ROUND):
        async with as_person(url, token["alice"], list_roots_callback=offers_everything) as alice:
            refused = error(await alice.call_tool("ask_model", ask))
            assert "BLOCKRUN_WORKSPACE" in refused and "tokens file" in refused
            assert "Nothing was signed" in refused
    assert not sandbox.state.payments_seen

    project = tmp_path / "project"
    project.mkdir()
    (project / "readme.txt").write_text("the team's project\n")
    service, _ = make_service(
        tmp_path / "two",
        sandbox,
        env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens), "BLOCKRUN_WORKSPACE": str(project)},
    )
    with http_server(service) as url, anyio.fail_after(ROUND):
        async with as_person(url, token["alice"], list_roots_callback=offers_everything) as alice:
            assert "not found" in error(await alice.call_tool("ask_model", ask))
            answer = ok(
                await alice.call_tool(
                    "ask_model", {**ask, "files": ["readme.txt"], "prompt": "project"}
                )
            )
            assert answer["workspace"] == [str(project)]
            assert [f["path"] for f in answer["files"]] == ["readme.txt"]
    with sandbox.state.lock:
        bodies = json.dumps([p for p in sandbox.state.requests_seen])
    assert "private notes" not in bodies


async def test_one_persons_sealed_question_is_refused_for_another(sandbox, tmp_path):
    """2026-07-28: the request_state of alice's approval question is sealed to alice; bob
    bringing it back with a yes is refused, unsigned. (The handshake era has no such state:
    bob's forged answer is simply not read, and without a way to ask him nothing is paid.)"""
    tokens, token = people(tmp_path)
    service, _ = make_service(
        tmp_path,
        sandbox,
        env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens), "BLOCKRUN_CONFIRM_ABOVE_USD": "0.0001"},
    )
    from mcp_types import ElicitResult, InputRequiredResult

    async def never(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="decline")

    ask = {"prompt": "approve", "model": CHEAP_MODEL}
    yes = {"blockrun_approve_payment": ElicitResult(action="accept", content={"approve": True})}
    with http_server(service) as url, anyio.fail_after(ROUND):
        async with (
            as_person(url, token["alice"], elicitation_callback=never) as alice,
            as_person(url, token["bob"], elicitation_callback=never) as bob,
        ):
            if not is_sessionless():
                result = await bob.session.call_tool("ask_model", ask, input_responses=yes)
                assert "declined" in error(result)
            else:
                first = await alice.session.call_tool("ask_model", ask, allow_input_required=True)
                assert isinstance(first, InputRequiredResult)
                from mcp.shared.exceptions import MCPError

                with pytest.raises(MCPError, match="requestState"):
                    await bob.session.call_tool(
                        "ask_model",
                        ask,
                        input_responses=yes,
                        request_state=first.request_state,
                        allow_input_required=True,
                    )
    assert not sandbox.state.payments_seen


async def test_each_identity_reads_files_from_its_own_workspace(sandbox, tmp_path):
    """`workspace` per identity in the tokens file: alice's files come from her directory, and
    bob (with none, and no BLOCKRUN_WORKSPACE) is refused; neither reaches the other's."""
    tokens, token = people(tmp_path)
    project = tmp_path / "alices-project"
    project.mkdir()
    (project / "plan.txt").write_text("alice's plan\n")
    text = tokens.read_text().replace(
        'name = "alice"', f'name = "alice"\nworkspace = "{project}"', 1
    )
    assert text != tokens.read_text()
    tokens.write_text(text)
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    ask = {"prompt": "read", "model": CHEAP_MODEL, "files": ["plan.txt"]}
    with http_server(service) as url, anyio.fail_after(ROUND):
        async with as_person(url, token["alice"]) as alice, as_person(url, token["bob"]) as bob:
            mine = ok(await alice.call_tool("ask_model", ask))
            assert mine["workspace"] == [str(project)] and mine["files"][0]["path"] == "plan.txt"
            refused = error(await bob.call_tool("ask_model", ask))
            assert "workspace" in refused and "Nothing was signed" in refused
    assert len(sandbox.state.payments_seen) == 1


def test_a_relative_workspace_in_the_tokens_file_is_refused(tmp_path):
    from blockrun_mcp.identities import IdentitiesError, read_file

    tokens, _ = people(tmp_path)
    tokens.write_text(
        tokens.read_text().replace('name = "bob"', 'name = "bob"\nworkspace = "src"', 1)
    )
    with pytest.raises(IdentitiesError, match="absolute"):
        read_file(tokens)


async def test_what_free_calls_store_is_capped_per_person_per_day(sandbox, tmp_path, monkeypatch):
    """Free calls cost nothing, so only this cap bounds what they make the ledger keep: past it
    the answer still comes back, unsaved, with a note; another person's turns are still kept."""
    from blockrun_mcp.service import chat
    from tests.support.server import FREE_MODEL

    monkeypatch.setattr(chat, "FREE_STORED_PER_DAY", 3_000)
    big = {"prompt": "x" * 1_200, "model": FREE_MODEL, "max_tokens": 50}
    async with two_people(sandbox, tmp_path) as (alice, bob):
        first = ok(await alice.call_tool("ask_model", big))
        second = ok(await alice.call_tool("ask_model", big))
        assert first["thread_id"] and second["thread_id"] and second.get("note") is None
        third = ok(await alice.call_tool("ask_model", big))
        assert third["content"] and third["thread_id"] is None
        assert "not saved" in third["note"] and "alice" in third["note"]
        assert ok(await bob.call_tool("ask_model", big))["thread_id"]
        listed = ok(await alice.call_tool("threads", {}))["threads"]
        assert len(listed) == 2
    assert not sandbox.state.payments_seen


async def test_an_ended_sessions_budget_is_freed(sandbox, tmp_path):
    """A session's budget object lives as long as its session: a client that ends it (DELETE,
    handshake era) takes it along. Session-less budgets (2026-07-28) are one per identity."""
    tokens, token = people(tmp_path)
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    with http_server(service) as url, anyio.fail_after(ROUND):
        for _ in range(3):
            async with as_person(url, token["alice"]) as alice:
                ok(await alice.call_tool("budget", {}))
                assert service.session_count == 1
            if is_sessionless():
                assert service.session_count == 1  # alice's one session-less budget
            else:
                await anyio.sleep(0)  # (the DELETE is answered before the client closes)
                assert service.session_count == 0
