"""The server as hosts run it: stdio subprocesses and Streamable HTTP with a bearer token."""

from __future__ import annotations

import stat

import anyio
import httpx2
import pytest
from eth_utils import is_checksum_address
from mcp import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from blockrun_mcp.ledger import Ledger
from tests.support.eras import check_negotiated, is_sessionless, mcp_client
from tests.support.payer import assert_every_payment_valid
from tests.support.server import (
    CHEAP_MODEL,
    INITIALIZE,
    MCP_HEADERS,
    OPUS,
    PYTHON,
    TOOLS,
    assert_ledger_matches_sandbox,
    free_port,
    http_server,
    make_service,
    new_key,
    open_ledger,
    subprocess_env,
    wait_for_port,
)

pytestmark = pytest.mark.anyio

TOKEN = "test-token-" + "a" * 24
SUBPROCESS_SECONDS = 60


# --- stdio -------------------------------------------------------------------------------


async def test_serve_sandbox_over_stdio(tmp_path):
    params = StdioServerParameters(
        command=PYTHON,
        args=["-m", "blockrun_mcp", "serve", "--sandbox"],
        env=subprocess_env(tmp_path),
    )
    with anyio.fail_after(SUBPROCESS_SECONDS):
        async with mcp_client(params) as client:
            tools = (await client.list_tools()).tools
            assert {tool.name for tool in tools} == TOOLS
            assert all(tool.output_schema for tool in tools)
            result = await client.call_tool(
                "ask_model", {"prompt": "over stdio", "model": CHEAP_MODEL}
            )
            assert not result.is_error, result.content[0].text
            answer = result.structured_content
            assert answer["cost_usd"] > 0 and answer["transaction"]
            assert "over stdio" in answer["content"]
            wallet = (await client.call_tool("wallet", {})).structured_content
            assert wallet["network"] == "base" and is_checksum_address(wallet["address"])
            budget = (await client.call_tool("budget", {})).structured_content
            assert budget["session_spent_usd"] == pytest.approx(answer["cost_usd"])
    # Sandbox money is kept apart from the real ledger, in a private data dir.
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    ledger_file = data / "sandbox" / "ledger.sqlite3"
    assert stat.S_IMODE(ledger_file.stat().st_mode) == 0o600
    assert not (data / "ledger.sqlite3").exists()
    # The wallet shown is the one that paid: the sandbox's throwaway wallet.
    ledger = Ledger(ledger_file, read_only=True)
    try:
        (payment,) = ledger.payments()
    finally:
        ledger.close()
    assert payment.status == "settled" and payment.tx_hash == answer["transaction"]
    assert payment.payer is not None and payment.payer.lower() == wallet["address"].lower()


async def test_plain_module_run_serves_stdio_with_the_configured_gateway(sandbox, tmp_path):
    key = new_key()
    env = subprocess_env(tmp_path, BLOCKRUN_API_URL=sandbox.base_url, BLOCKRUN_WALLET_KEY=key)
    params = StdioServerParameters(command=PYTHON, args=["-m", "blockrun_mcp"], env=env)
    with anyio.fail_after(SUBPROCESS_SECONDS):
        async with mcp_client(params) as client:
            check_negotiated(client)
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            wallet = (await client.call_tool("wallet", {})).structured_content
            result = await client.call_tool(
                "ask_model", {"prompt": "from a host", "model": OPUS, "max_tokens": 200}
            )
            assert not result.is_error, result.content[0].text
            answer = result.structured_content
    state = sandbox.state
    (settlement,) = state.settlements
    assert settlement.payer == wallet["address"]
    assert answer["transaction"] == settlement.tx_hash
    assert answer["cost_usd"] == pytest.approx(settlement.amount_atomic / 1e6)
    assert_every_payment_valid(state)
    config_dir = tmp_path / "data"
    from blockrun_mcp.config import load_config

    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((config_dir / "ledger.sqlite3").stat().st_mode) == 0o600
    ledger = open_ledger(load_config(env))
    try:
        assert ledger.path.parent == config_dir
        assert_ledger_matches_sandbox(ledger, state)
    finally:
        ledger.close()


# --- Streamable HTTP ---------------------------------------------------------------------


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _post(url: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})


def http_client(token: str = TOKEN) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers=_auth(token), timeout=httpx2.Timeout(30, read=60))


async def test_http_requires_the_bearer_token(sandbox, tmp_path):
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKEN": TOKEN})
    with http_server(service) as url:
        missing = await _post(url, {})
        assert missing.status_code == 401
        assert "BLOCKRUN_HTTP_TOKEN" in missing.json()["message"]
        assert missing.headers["www-authenticate"] == "Bearer"
        assert (await _post(url, _auth("wrong-token-" + "b" * 24))).status_code == 401
        assert (await _post(url, {"Authorization": TOKEN})).status_code == 401
        assert (await _post(url, _auth())).status_code == 200
        assert not sandbox.state.requests_seen


async def test_http_rejects_foreign_host_and_origin(sandbox, tmp_path):
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKEN": TOKEN})
    with http_server(service) as url:
        port = url.split(":")[2].split("/")[0]
        assert (await _post(url, {**_auth(), "Host": "evil.example"})).status_code == 421
        assert (await _post(url, {**_auth(), "Host": f"evil.example:{port}"})).status_code == 421
        assert (await _post(url, {**_auth(), "Origin": "http://evil.example"})).status_code == 403
        own = await _post(
            url, {**_auth(), "Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
        )
        assert own.status_code == 200


async def test_http_tools_work_with_the_token(sandbox, tmp_path):
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKEN": TOKEN})
    with http_server(service) as url:
        with anyio.fail_after(30):
            async with (
                http_client() as http,
                mcp_client(streamable_http_client(url, http_client=http)) as client,
            ):
                assert {t.name for t in (await client.list_tools()).tools} == TOOLS
                result = await client.call_tool(
                    "ask_model", {"prompt": "over http", "model": OPUS, "max_tokens": 200}
                )
                assert not result.is_error, result.content[0].text
                answer = result.structured_content
                assert "over http" in answer["content"] and answer["cost_usd"] > 0
        state = sandbox.state
        assert answer["transaction"] == state.settlements[0].tx_hash
        assert_every_payment_valid(state)
    ledger = open_ledger(service.config)
    try:
        assert_ledger_matches_sandbox(ledger, state)
        (row,) = ledger.payments()
        if is_sessionless():  # no MCP session: the identity's budget on this server
            assert row.session.endswith(f"-http-{row.identity}")
        else:  # the MCP session the handshake opened
            assert row.session.startswith("http-")
    finally:
        ledger.close()


async def test_http_sessions_have_separate_budgets(sandbox, tmp_path):
    service, _ = make_service(
        tmp_path,
        sandbox,
        env={"BLOCKRUN_HTTP_TOKEN": TOKEN, "BLOCKRUN_SESSION_BUDGET_USD": "0.05"},
    )
    with http_server(service) as url:
        with anyio.fail_after(30):
            async with (
                http_client() as http_a,
                http_client() as http_b,
                mcp_client(streamable_http_client(url, http_client=http_a)) as a,
                mcp_client(streamable_http_client(url, http_client=http_b)) as b,
            ):
                spend = await a.call_tool(
                    "ask_model", {"prompt": "a spends", "model": OPUS, "max_tokens": 4000}
                )
                assert not spend.is_error, spend.content[0].text
                cost = spend.structured_content["cost_usd"]
                budget_a = (await a.call_tool("budget", {})).structured_content
                budget_b = (await b.call_tool("budget", {})).structured_content
                assert budget_a["session_spent_usd"] == pytest.approx(cost)
                if is_sessionless():
                    # No sessions on 2026-07-28: one token is one person, whose session-less
                    # budget on this server both clients draw on (README, "Session budgets").
                    assert budget_b == budget_a
                    lowered = await b.call_tool("budget", {"set_session_limit_usd": 0.001})
                    assert lowered.structured_content["session_limit_usd"] == 0.001
                    again = (await a.call_tool("budget", {})).structured_content
                    assert again["session_limit_usd"] == 0.001  # a lowered limit is kept
                    refused = await a.call_tool(
                        "ask_model", {"prompt": "a is capped", "model": OPUS, "max_tokens": 4000}
                    )
                    assert refused.is_error and "budget" in refused.content[0].text
                    assert len(sandbox.state.settlements) == 1
                    return
                assert budget_a["budget_remaining_usd"] == pytest.approx(0.05 - cost)
                assert budget_b["session_spent_usd"] == 0
                assert budget_b["budget_remaining_usd"] == 0.05
                # B lowering its own limit leaves A's alone.
                lowered = await b.call_tool("budget", {"set_session_limit_usd": 0.001})
                assert lowered.structured_content["session_limit_usd"] == 0.001
                again = (await a.call_tool("budget", {})).structured_content
                assert again["session_limit_usd"] == 0.05
                refused = await b.call_tool(
                    "ask_model", {"prompt": "b is capped", "model": OPUS, "max_tokens": 4000}
                )
                assert refused.is_error and "budget" in refused.content[0].text
                assert len(sandbox.state.settlements) == 1
        assert_every_payment_valid(sandbox.state)
    ledger = open_ledger(service.config)
    try:
        assert_ledger_matches_sandbox(ledger, sandbox.state)
    finally:
        ledger.close()


async def test_http_on_all_interfaces_without_a_token_refuses_to_start(tmp_path):
    env = subprocess_env(tmp_path)
    with anyio.fail_after(SUBPROCESS_SECONDS):
        done = await anyio.run_process(
            [
                PYTHON,
                "-m",
                "blockrun_mcp",
                "serve",
                "--transport",
                "http",
                "--host",
                "0.0.0.0",
                "--port",
                str(free_port()),
            ],
            env=env,
            check=False,
        )
    assert done.returncode != 0
    assert b"BLOCKRUN_HTTP_TOKEN" in done.stderr


async def test_serve_http_sandbox_subprocess(tmp_path):
    port = free_port()
    env = subprocess_env(tmp_path, BLOCKRUN_HTTP_TOKEN=TOKEN)
    command = [
        PYTHON,
        "-m",
        "blockrun_mcp",
        "serve",
        "--transport",
        "http",
        "--port",
        str(port),
        "--sandbox",
    ]
    url = f"http://127.0.0.1:{port}/mcp"
    with anyio.fail_after(SUBPROCESS_SECONDS):
        async with await anyio.open_process(command, env=env) as process:
            try:
                await wait_for_port(port, process)
                assert (await _post(url, {})).status_code == 401
                async with (
                    http_client() as http,
                    mcp_client(streamable_http_client(url, http_client=http)) as client,
                ):
                    assert {t.name for t in (await client.list_tools()).tools} == TOOLS
                    result = await client.call_tool(
                        "ask_model", {"prompt": "cli http", "model": CHEAP_MODEL}
                    )
                    assert not result.is_error, result.content[0].text
                    assert result.structured_content["cost_usd"] > 0
            finally:
                process.terminate()
                await process.wait()
