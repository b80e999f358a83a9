"""A team's HTTP server as its users see it: a session is its opener's alone, one identity cannot
take every session, the tokens file is followed while the server runs (and fails closed), and
every loopback bind, with any port, refuses foreign Host headers.

Real servers on loopback (support.server.serving binds as `serve --transport http` does), real
MCP clients of the test's era, and raw requests where a client would never send what an attacker
does. The 2026-07-28 era has no MCP sessions: there, the same forged ids must change nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from blockrun_mcp.identities import add_identity
from blockrun_mcp.sessions import IDLE_MARGIN_SECONDS, SESSION_IDLE_SECONDS, IssuedSessions
from blockrun_mcp.transports import identities_of
from tests.support.eras import check_negotiated, is_sessionless, mcp_client
from tests.support.server import (
    INITIALIZE,
    MCP_HEADERS,
    PYTHON,
    TOOLS,
    make_service,
    serving,
    subprocess_env,
)

pytestmark = pytest.mark.anyio

HANDSHAKE_VERSION = "2025-11-25"
RECHECK_SECONDS = 0.05  # how often these servers look at their tokens file
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
SDK_SESSIONS_LOGGER = "mcp.server.streamable_http_manager"


# --- helpers --------------------------------------------------------------------------------


def team(tmp_path: Path, *names: str) -> tuple[Path, dict[str, str]]:
    """A tokens file with these identities; their tokens by name."""
    tokens = tmp_path / "tokens.toml"
    made = {
        name: add_identity(tokens, name, daily_budget_usd=1.0, max_per_call_usd=None)
        for name in names
    }
    return tokens, made


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def in_session(session_id: str) -> dict[str, str]:
    return {"Mcp-Session-Id": session_id, "Mcp-Protocol-Version": HANDSHAKE_VERSION}


async def raw(url: str, headers: dict[str, str], body: Any = None, method: str = "POST") -> Any:
    """One request as any HTTP client could send it: headers chosen, nothing added."""
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.request(
            method, url, json=body if method == "POST" else None, headers={**MCP_HEADERS, **headers}
        )


async def open_raw_session(url: str, token: str, **headers: str) -> str:
    """A handshake-era session opened by hand (it exists whatever era the test runs in)."""
    opened = await raw(url, {**auth(token), **headers}, INITIALIZE)
    assert opened.status_code == 200, opened.text
    session_id = opened.headers["mcp-session-id"]
    done = await raw(url, {**auth(token), **in_session(session_id)}, INITIALIZED)
    assert done.status_code == 202, done.text
    return session_id


def assert_same_answer(got: Any, expected: Any) -> None:
    """Two answers no client can tell apart (the date header aside)."""
    assert (got.status_code, got.content) == (expected.status_code, expected.content)
    for header in ("content-type", "content-length", "mcp-session-id"):
        assert got.headers.get(header) == expected.headers.get(header), header


@asynccontextmanager
async def client_of(url: str, token: str, **headers: str) -> AsyncIterator[tuple[Client, list]]:
    """A real MCP client of this test's era with `token`, and the session ids it was given."""
    issued: list[str] = []

    async def remember(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            issued.append(response.headers["mcp-session-id"])

    async with (
        httpx2.AsyncClient(
            headers={**auth(token), **headers},
            timeout=30,
            event_hooks={"response": [remember]},
        ) as http,
        mcp_client(streamable_http_client(url, http_client=http)) as client,
    ):
        check_negotiated(client)
        yield client, issued


def messages_in(error: BaseException) -> str:
    """Every message in an error and the groups and causes around it (an MCP client raises its
    server's refusal from inside a task group)."""
    parts = [str(error)]
    if isinstance(error, BaseExceptionGroup):
        parts += [messages_in(inner) for inner in error.exceptions]
    if error.__cause__ is not None:
        parts.append(messages_in(error.__cause__))
    return " | ".join(parts)


def bind_problem(host: str) -> str | None:
    """Why this machine cannot listen on `host`, or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        return f"this machine cannot bind {host}: {exc}"
    return None


# --- 1. a session is its opener's -----------------------------------------------------------


async def test_another_identity_s_session_id_is_answered_as_an_unknown_one(
    sandbox, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger=SDK_SESSIONS_LOGGER)
    tokens, token = team(tmp_path, "alice", "bob")
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    with serving(service) as served, anyio.fail_after(60):
        url = served.url
        alice_session = await open_raw_session(url, token["alice"])
        assert served.sessions.owner(alice_session) == "alice"
        made_up = uuid.uuid4().hex
        assert served.sessions.owner(made_up) is None
        for method, body in (("POST", TOOLS_LIST), ("GET", None), ("DELETE", None)):
            unknown = await raw(url, {**auth(token["bob"]), **in_session(made_up)}, body, method)
            assert unknown.status_code == 404 and "Session not found" in unknown.text
            # Bob with alice's id; then also claiming to be alice: both as if it did not exist.
            for forged in ({}, {"X-Blockrun-Identity": "alice"}):
                headers = {**auth(token["bob"]), **forged, **in_session(alice_session)}
                assert_same_answer(await raw(url, headers, body, method), unknown)
        # Refused here, before the SDK saw it (the SDK would refuse too, and say so in its log).
        assert "credential does not match" not in caplog.text
        # Alice's session lives on: bob's DELETE ended nothing.
        assert served.sessions.owner(alice_session) == "alice"
        listed = await raw(url, {**auth(token["alice"]), **in_session(alice_session)}, TOOLS_LIST)
        assert listed.status_code == 200 and "ask_model" in listed.text
        async with client_of(url, token["alice"]) as (alice, issued):
            assert {tool.name for tool in (await alice.list_tools()).tools} == TOOLS
            budget = await alice.call_tool("budget", {})
            assert not budget.is_error, budget.content[0].text
            assert bool(issued) != is_sessionless()  # a session only where the era has them
            for session_id in issued:
                assert served.sessions.owner(session_id) == "alice"
        # A session opened with a forged identity header is the token's owner's.
        bobs = await open_raw_session(url, token["bob"], **{"X-Blockrun-Identity": "alice"})
        assert served.sessions.owner(bobs) == "bob"
        refused = await raw(url, {**auth(token["alice"]), **in_session(bobs)}, TOOLS_LIST)
        assert refused.status_code == 404


async def test_a_forged_session_id_changes_nothing_for_a_real_client(sandbox, tmp_path):
    """Bob's own client sending alice's session id: in the handshake era it is refused like an
    unknown id (the SDK's answer); in the 2026-07-28 era the header means nothing, and bob is
    served as himself, exactly as with a made-up id."""
    tokens, token = team(tmp_path, "alice", "bob")
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    with serving(service) as served, anyio.fail_after(60):
        alice_session = await open_raw_session(served.url, token["alice"])
        answers = []
        for session_id in (alice_session, uuid.uuid4().hex):
            forged = {"Mcp-Session-Id": session_id}
            if not is_sessionless():
                with pytest.raises(BaseException) as refused:
                    async with client_of(served.url, token["bob"], **forged) as (bob, _):
                        await bob.list_tools()
                assert "Session not found" in messages_in(refused.value)
                answers.append(messages_in(refused.value))
                continue
            async with client_of(served.url, token["bob"], **forged) as (bob, issued):
                status = await bob.call_tool("budget", {})
                assert not status.is_error, status.content[0].text
                assert not issued
                answers.append(status.structured_content)
        assert len(answers) == 2 and answers[0] == answers[1]  # alice's id, or a made-up one
        assert served.sessions.owner(alice_session) == "alice"
        mine = await raw(
            served.url, {**auth(token["alice"]), **in_session(alice_session)}, TOOLS_LIST
        )
        assert mine.status_code == 200


# --- 2. one identity's share of sessions ----------------------------------------------------


async def test_an_identity_at_its_session_share_is_refused_readably_and_others_go_on(
    sandbox, tmp_path
):
    tokens, token = team(tmp_path, "alice", "bob")
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    with serving(service, sessions_per_identity=2) as served, anyio.fail_after(60):
        url = served.url
        first = await open_raw_session(url, token["alice"])
        second = await open_raw_session(url, token["alice"])
        assert served.sessions.open_count("alice") == 2
        refused = await raw(url, auth(token["alice"]), INITIALIZE)
        assert refused.status_code == 429 and "mcp-session-id" not in refused.headers
        error = refused.json()["error"]
        assert "Too many open MCP sessions for 'alice'" in error["message"]
        assert "DELETE" in error["message"] and "2 are open" in error["message"]
        # Bob is not held to alice's share.
        bobs = await open_raw_session(url, token["bob"])
        assert served.sessions.owner(bobs) == "bob"
        # A real client of alice's: refused with that message where it would open a session.
        async with AsyncExitStack() as stack:
            if is_sessionless():  # no session is opened: any number of clients work
                for _ in range(3):
                    alice, _issued = await stack.enter_async_context(client_of(url, token["alice"]))
                    assert not (await alice.call_tool("budget", {})).is_error
            else:
                with pytest.raises(BaseException) as too_many:
                    await stack.enter_async_context(client_of(url, token["alice"]))
                assert "Too many open MCP sessions for 'alice'" in messages_in(too_many.value)
        # Ending a session (its client's DELETE) makes room again.
        ended = await raw(url, {**auth(token["alice"]), **in_session(first)}, method="DELETE")
        assert ended.status_code == 200
        assert served.sessions.owner(first) is None
        assert served.sessions.open_count("alice") == 1
        third = await open_raw_session(url, token["alice"])
        assert {served.sessions.owner(s) for s in (second, third)} == {"alice"}


def test_a_session_the_sdk_let_expire_stops_counting_against_its_owner():
    """The SDK ends a session idle for SESSION_IDLE_SECONDS without saying so; a client that
    crashed must not hold its owner's share for good. A session with a request in flight (an open
    event stream) is not idle, however old."""
    now = [1000.0]
    forgotten: list[str] = []
    sessions = IssuedSessions(per_identity=2, clock=lambda: now[0], on_forget=forgotten.append)
    alice = ("alice", "a" * 64)
    for session_id in ("crashed", "streaming"):
        assert sessions.admit("alice")
        sessions.issue(session_id, alice)
        sessions.admitted("alice")
    sessions.begin("streaming")  # its GET stream stays open
    assert not sessions.admit("alice")
    now[0] += SESSION_IDLE_SECONDS  # the SDK's idle timeout, not yet our margin beyond it
    assert not sessions.admit("alice") and not forgotten
    now[0] += IDLE_MARGIN_SECONDS + 1
    assert sessions.admit("alice")
    assert forgotten == ["crashed"] and sessions.owner("streaming") == "alice"
    assert sessions.foreign_to("streaming", ("alice", "b" * 64))  # another token of hers
    assert not sessions.foreign_to("streaming", alice) and not sessions.foreign_to("crashed", alice)


# --- 3. the tokens file, followed while serving ---------------------------------------------


async def test_a_removed_or_replaced_token_stops_at_once_with_its_sessions(sandbox, tmp_path):
    tokens, token = team(tmp_path, "alice", "bob")
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    identities = identities_of(service.config, recheck_seconds=RECHECK_SECONDS)
    with serving(service, identities=identities) as served, anyio.fail_after(60):
        url = served.url
        bobs = await open_raw_session(url, token["bob"])
        async with client_of(url, token["alice"]) as (alice, issued):
            alices = issued[0] if issued else await open_raw_session(url, token["alice"])
            assert not (await alice.call_tool("budget", {})).is_error
            # Alice's entry goes; a new identity, carol, comes: no restart.
            carol = add_identity(
                tokens.with_name("carol.toml"), "carol", daily_budget_usd=1, max_per_call_usd=None
            )
            bob_entry = tokens.read_text().split("[[identity]]")[2]
            carol_entry = tokens.with_name("carol.toml").read_text().split("[[identity]]")[1]
            tokens.write_text(f"[[identity]]{bob_entry}\n[[identity]]{carol_entry}")
            await anyio.sleep(RECHECK_SECONDS * 3)
            with pytest.raises(Exception):  # noqa: B017 (a client's 401 has no type of its own)
                await alice.call_tool("budget", {})
            assert (await raw(url, auth(token["alice"]), INITIALIZE)).status_code == 401
            in_her_session = {**auth(token["alice"]), **in_session(alices)}
            assert (await raw(url, in_her_session, TOOLS_LIST)).status_code == 401
            # Her session is forgotten here, budget and all; bob's and carol's go on.
            assert served.sessions.owner(alices) is None
            assert served.sessions.owner(bobs) == "bob"
            bob_list = await raw(url, {**auth(token["bob"]), **in_session(bobs)}, TOOLS_LIST)
            assert bob_list.status_code == 200
            assert served.sessions.owner(await open_raw_session(url, carol)) == "carol"
        # Alice comes back with a new token: her old session is as unknown to her as to anyone.
        new_alice = add_identity(tokens, "alice", daily_budget_usd=1, max_per_call_usd=None)
        await anyio.sleep(RECHECK_SECONDS * 3)
        made_up = await raw(url, {**auth(new_alice), **in_session(uuid.uuid4().hex)}, TOOLS_LIST)
        old = await raw(url, {**auth(new_alice), **in_session(alices)}, TOOLS_LIST)
        assert old.status_code == 404
        assert_same_answer(old, made_up)
        async with client_of(url, new_alice) as (alice, _):
            assert not (await alice.call_tool("budget", {})).is_error


async def test_an_unusable_tokens_file_fails_closed_until_fixed(sandbox, tmp_path, caplog):
    tokens, token = team(tmp_path, "alice")
    good = tokens.read_bytes()
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    identities = identities_of(service.config, recheck_seconds=RECHECK_SECONDS)
    caplog.set_level(logging.WARNING, logger="blockrun_mcp.identities")

    async def status_now(headers: dict[str, str]) -> int:
        await anyio.sleep(RECHECK_SECONDS * 3)
        return (await raw(served.url, headers, INITIALIZE)).status_code

    breakages: list[tuple[str, Any]] = [
        ("not UTF-8", lambda: tokens.write_bytes(b"\xff\xfe[[identity]]")),
        ("not TOML", lambda: tokens.write_text("[[identity]\nname = ")),
        ("gone", tokens.unlink),
        ("a folder", lambda: (tokens.unlink(), tokens.mkdir())),
    ]
    if os.geteuid() != 0:  # root reads a file whatever its mode
        breakages.append(("mode 000", lambda: tokens.chmod(0)))
    with serving(service, identities=identities) as served, anyio.fail_after(60):
        assert await status_now(auth(token["alice"])) == 200
        for name, breakage in breakages:
            caplog.clear()
            breakage()
            for headers in (auth(token["alice"]), auth("x" * 43), {}):
                assert await status_now(headers) == 503, name
            answer = await raw(served.url, auth(token["alice"]), INITIALIZE)
            assert "cannot use its tokens file" in answer.json()["error"]["message"], name
            assert str(tokens) not in answer.text  # where it is, is for the operator
            logged = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert logged and str(tokens) in logged[0].getMessage(), name
            assert "503" in logged[0].getMessage()
            if tokens.is_dir():
                tokens.rmdir()
            with open(tokens, "wb") as fixed:  # the same file again, readable
                fixed.write(good)
            tokens.chmod(0o600)
            assert await status_now(auth(token["alice"])) == 200, name
            assert "readable again" in caplog.text


# --- 4. DNS rebinding, on every loopback bind and any port ----------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
async def test_every_loopback_bind_refuses_foreign_hosts(sandbox, tmp_path, host):
    if problem := bind_problem("127.0.0.1" if host == "localhost" else host):
        pytest.skip(problem)
    service, _ = make_service(tmp_path, sandbox)  # no token: the checks are the only guard
    with serving(service, host) as served, anyio.fail_after(30):
        port = served.port
        assert port != 0
        own = f"[{host}]" if ":" in host else host
        refused = {
            "rebound name": ({"Host": f"evil.example:{port}"}, 421),
            "rebound name, no port": ({"Host": "evil.example"}, 421),
            "own name, another port": ({"Host": f"{own}:{port + 1}"}, 421),
            "foreign page": ({"Origin": "http://evil.example"}, 403),
            "page on another local port": ({"Origin": f"http://{own}:{port + 1}"}, 403),
        }
        for case, (headers, status) in refused.items():
            assert (await raw(served.url, headers, INITIALIZE)).status_code == status, case
        for name in dict.fromkeys((own, "127.0.0.1", "localhost")):
            headers = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}
            assert (await raw(served.url, headers, INITIALIZE)).status_code == 200, name
        assert (await raw(served.url, {}, INITIALIZE)).status_code == 200


async def test_port_0_prints_the_real_port_and_pins_it(tmp_path):
    token = "identities-token-" + "e" * 24
    command = [PYTHON, "-m", "blockrun_mcp", "serve", "--transport", "http", "--port", "0"]
    env = subprocess_env(tmp_path, BLOCKRUN_HTTP_TOKEN=token)
    with anyio.fail_after(60):
        async with await anyio.open_process([*command, "--sandbox"], env=env) as process:
            try:
                printed = b""
                while b"/mcp" not in printed:
                    printed += await process.stderr.receive()
                line = next(x for x in printed.decode().splitlines() if "serving MCP at" in x)
                url = line.split("serving MCP at ")[1].split()[0]
                port = int(url.rsplit(":", 1)[1].removesuffix("/mcp"))
                assert url == f"http://127.0.0.1:{port}/mcp" and port != 0
                own = {**auth(token), "Host": f"127.0.0.1:{port}"}
                assert (await raw(url, own, INITIALIZE)).status_code == 200
                assert (
                    await raw(url, {**own, "Host": "localhost:" + str(port)}, INITIALIZE)
                ).status_code == 200
                for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}"):
                    wrong = {**auth(token), "Host": host}
                    assert (await raw(url, wrong, INITIALIZE)).status_code == 421, host
            finally:
                process.terminate()
                await process.wait()
