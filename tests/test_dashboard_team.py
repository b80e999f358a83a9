"""A team server's `/dashboard` (`serve --transport http`, PostgreSQL ledger, tokens file):
each identity sees its own spending, an identity with `admin = true` sees everyone's, a forged
identity header changes nothing, and without a good token, or by another Host, nothing is
shown. The query-string token works for /dashboard only, never for /mcp.

Two people pay the sandbox through real MCP clients of the test's era; the page is then read
as a browser reads it (the token in the query, then the cookie it set), and by Chromium.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client

from blockrun_mcp.dashboard import mcp_app
from blockrun_mcp.identities import add_identity
from tests.support.cli import cli_env, run_cli
from tests.support.dashboard import assert_page_matches_spend, browse, chromium, read_figures
from tests.support.eras import mcp_client
from tests.support.server import CHEAP_MODEL, make_service, serving

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("within_one_utc_day")]


@dataclass
class Team:
    base: str  # http://127.0.0.1:PORT
    port: int
    tokens: dict[str, str]
    transactions: dict[str, list[str]]
    budgets: dict[str, Any]  # each person's budget tool result, as the MCP client got it
    ledger_url: str


@asynccontextmanager
async def team_server(sandbox: Any, tmp_path: Path, ledger_url: str) -> AsyncIterator[Team]:
    """alice (one paid call) and bob (two), and carol the admin (none), on a team server."""
    tokens_file = tmp_path / "tokens.toml"
    tokens = {
        "alice": add_identity(tokens_file, "alice", daily_budget_usd=1.0, max_per_call_usd=0.2),
        "bob": add_identity(tokens_file, "bob", daily_budget_usd=2.0, max_per_call_usd=None),
        "carol": add_identity(
            tokens_file, "carol", daily_budget_usd=0.5, max_per_call_usd=None, admin=True
        ),
    }
    env = {
        "BLOCKRUN_LEDGER_URL": ledger_url,
        "BLOCKRUN_HTTP_TOKENS_FILE": str(tokens_file),
        "BLOCKRUN_DAILY_BUDGET_USD": "5.00",
    }
    service, _ = make_service(tmp_path, sandbox, env=env)
    transactions: dict[str, list[str]] = {}
    budgets: dict[str, Any] = {}
    with serving(service) as served:
        for name, calls in (("alice", 1), ("bob", 2)):
            async with (
                httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=30
                ) as http,
                mcp_client(streamable_http_client(served.url, http_client=http)) as client,
            ):
                with anyio.fail_after(60):
                    for index in range(calls):
                        answer = await client.call_tool(
                            "ask_model", {"prompt": f"{name} {index}", "model": CHEAP_MODEL}
                        )
                        assert not answer.is_error, answer.content[0].text
                        transactions.setdefault(name, []).append(
                            answer.structured_content["transaction"]
                        )
                    budgets[name] = await client.call_tool("budget", {})
        yield Team(
            base=served.url.removesuffix("/mcp"),
            port=served.port,
            tokens=tokens,
            transactions=transactions,
            budgets=budgets,
            ledger_url=ledger_url,
        )
    await service.aclose()


def spend_json(tmp_path: Path, ledger_url: str) -> dict[str, Any]:
    done = run_cli(cli_env(tmp_path, BLOCKRUN_LEDGER_URL=ledger_url), "spend", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def opened(http: httpx2.AsyncClient, token: str) -> str:
    """Open /dashboard?token= as a browser does: the answer moves the token into a cookie.
    Returns the Cookie header the browser then sends."""
    answer = await http.get("/dashboard", params={"token": token})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"]
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/dashboard" in lowered
    return cookie.split(";", 1)[0]


def without_time(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "generated_at"}


async def test_each_person_sees_their_own_and_the_admin_everyone_s(
    sandbox, tmp_path, fresh_database
):
    async with (
        team_server(sandbox, tmp_path, fresh_database) as team,
        httpx2.AsyncClient(base_url=team.base, timeout=10, follow_redirects=False) as http,
    ):
        spend = spend_json(tmp_path, team.ledger_url)
        alice_cookie = await opened(http, team.tokens["alice"])
        page = await http.get("/dashboard", headers={"Cookie": alice_cookie})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '"api": "/dashboard/api/summary"' in page.text
        mine = (await http.get("/dashboard/api/summary", headers={"Cookie": alice_cookie})).json()
        assert (mine["viewer"], mine["scope"]) == ("alice", "alice")
        assert [group["name"] for group in mine["by_identity"]] == ["alice"]
        assert [r["tx_hash"] for r in mine["receipts"]] == team.transactions["alice"]
        text = json.dumps(mine)
        assert not any(tx in text for tx in team.transactions["bob"])
        assert "bob" not in text and "carol" not in text
        (alice_row,) = [r for r in spend["by_identity"] if r["identity"] == "alice"]
        assert mine["totals"]["total_usd"] == alice_row["total_usd"]
        assert mine["totals"]["payments"] == alice_row["payments"] == 1
        limits = {limit["key"]: limit for limit in mine["limits"]}
        assert set(limits) == {"daily", "per_call", "identity:alice", "per_call:alice"}
        assert limits["identity:alice"]["spent_usd"] == alice_row["spent_usd"]
        assert limits["identity:alice"]["left_usd"] == round(1.0 - alice_row["total_usd"], 6)
        # A forged identity header changes nothing, with the cookie or the bearer token.
        for headers in (
            {"Cookie": alice_cookie, "X-Blockrun-Identity": "bob"},
            {"Authorization": f"Bearer {team.tokens['alice']}", "X-Blockrun-Identity": "carol"},
        ):
            forged = await http.get("/dashboard/api/summary", headers=headers)
            assert without_time(forged.json()) == without_time(mine)
        # bob: his own two payments.
        bobs = (
            await http.get("/dashboard/api/summary", params={"token": team.tokens["bob"]})
        ).json()
        assert bobs["scope"] == "bob"
        assert sorted(r["tx_hash"] for r in bobs["receipts"]) == sorted(team.transactions["bob"])
        # carol, the admin: everyone's, the same figures as `spend --json`.
        carol_cookie = await opened(http, team.tokens["carol"])
        everyone = (
            await http.get("/dashboard/api/summary", headers={"Cookie": carol_cookie})
        ).json()
        assert (everyone["viewer"], everyone["scope"]) == ("carol (admin)", "everyone")
        assert {k: everyone["totals"][k] for k in spend["totals"]} == spend["totals"]
        assert {g["name"] for g in everyone["by_identity"]} == {"alice", "bob"}
        assert {r["tx_hash"] for r in everyone["receipts"]} == {
            tx for txs in team.transactions.values() for tx in txs
        }
        keys = {limit["key"] for limit in everyone["limits"]}
        assert {"identity:alice", "identity:bob", "identity:carol"} <= keys
    # The budget tool's MCP App data is the caller's own too.
    for name in ("alice", "bob"):
        document = team.budgets[name].meta[mcp_app.META_KEY]
        assert document["scope"] == name
        assert sorted(r["tx_hash"] for r in document["receipts"]) == sorted(team.transactions[name])


async def test_without_a_good_token_or_by_another_host_nothing_is_shown(
    sandbox, tmp_path, fresh_database
):
    async with (
        team_server(sandbox, tmp_path, fresh_database) as team,
        httpx2.AsyncClient(base_url=team.base, timeout=10, follow_redirects=False) as http,
    ):
        alice = team.tokens["alice"]
        for path, params, headers in [
            ("/dashboard", {}, {}),
            ("/dashboard/api/summary", {}, {}),
            ("/dashboard", {"token": "x" * 43}, {}),
            ("/dashboard", {"token": ""}, {}),
            ("/dashboard/api/summary", {}, {"Authorization": "Bearer " + "x" * 43}),
            ("/dashboard/api/summary", {}, {"Cookie": "blockrun_dashboard=" + "x" * 43}),
            # Naming an identity is not being it.
            ("/dashboard/api/summary", {}, {"X-Blockrun-Identity": "carol"}),
        ]:
            refused = await http.get(path, params=params, headers=headers)
            assert refused.status_code == 401, (path, params, headers)
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "token" in refused.text and "alice" not in refused.text
        # DNS rebinding: a good token, but the server was reached by another name.
        for host in ("evil.example", f"evil.example:{team.port}"):
            rebound = await http.get(
                "/dashboard/api/summary", params={"token": alice}, headers={"Host": host}
            )
            assert rebound.status_code == 421
        # The query-string token is the dashboard's alone: /mcp still wants the bearer header.
        mcp = await http.post(
            "/mcp",
            params={"token": alice},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert mcp.status_code == 401
        cookie = await opened(http, alice)
        with_cookie = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Accept": "application/json, text/event-stream", "Cookie": cookie},
        )
        assert with_cookie.status_code == 401
        # Read-only, and nothing else lives under /dashboard.
        posted = await http.post("/dashboard/api/summary", params={"token": alice})
        assert posted.status_code == 405
        missing = await http.get("/dashboard/other", params={"token": alice})
        assert missing.status_code == 404


async def test_the_admin_s_page_in_chromium_shows_what_spend_json_says(
    sandbox, tmp_path, fresh_database
):
    chromium()  # skipped (or failed, in CI) before anything else
    async with team_server(sandbox, tmp_path, fresh_database) as team:
        spend = spend_json(tmp_path, team.ledger_url)
        url = f"{team.base}/dashboard?token={team.tokens['carol']}"
        dom = await anyio.to_thread.run_sync(browse, url, tmp_path)
    figures = read_figures(dom)
    assert_page_matches_spend(figures, spend)
    assert figures.scope == "everyone"
    assert {name for kind, name in figures.groups if kind == "identity"} == {"alice", "bob"}
