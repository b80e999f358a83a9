"""Other local users and web pages reaching the HTTP port.

Already covered in tests/test_server_transports.py (not repeated here):
- test_http_requires_the_bearer_token: missing, wrong and prefix-less tokens get 401;
- test_http_rejects_foreign_host_and_origin: a foreign Host (421) or Origin (403) is refused;
- test_http_on_all_interfaces_without_a_token_refuses_to_start: 0.0.0.0 without a token exits.

This file adds: the served port itself is pinned (a page on another local port is another
origin), the guards hold without a token on loopback too, the token is accepted only as a bearer
header and a refused request never reaches a tool, and every non-loopback bind needs a token.
"""

from __future__ import annotations

import anyio
import httpx2
import pytest

from blockrun_mcp.config import ConfigError, load_config
from blockrun_mcp.transports import check_http_binding
from tests.support.eras import mcp_client
from tests.support.server import (
    INITIALIZE,
    MCP_HEADERS,
    PYTHON,
    free_port,
    http_server,
    make_service,
    open_ledger,
    subprocess_env,
    wait_for_port,
)

pytestmark = pytest.mark.anyio

TOKEN = "security-token-" + "c" * 24


async def _post(url: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})


async def test_pages_on_other_origins_cannot_drive_a_tokenless_loopback_server(tmp_path):
    """`serve --transport http` on loopback with no token: Host and Origin must be its own."""
    port, other = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    command = [PYTHON, "-m", "blockrun_mcp", "serve", "--transport", "http", "--port", str(port)]
    command.append("--sandbox")
    with anyio.fail_after(60):
        async with await anyio.open_process(command, env=subprocess_env(tmp_path)) as process:
            try:
                await wait_for_port(port, process)
                refused = {
                    # A web page on another local port (a dev server, a local app) is foreign.
                    "origin_other_local_port": ({"Origin": f"http://127.0.0.1:{other}"}, 403),
                    "origin_localhost_other_port": ({"Origin": f"http://localhost:{other}"}, 403),
                    "origin_of_any_site": ({"Origin": "https://evil.example"}, 403),
                    "origin_null": ({"Origin": "null"}, 403),
                    # DNS rebinding: a foreign name resolved to 127.0.0.1 arrives as its Host.
                    "host_rebound_name": ({"Host": f"evil.example:{port}"}, 421),
                    "host_other_port": ({"Host": f"127.0.0.1:{other}"}, 421),
                }
                for case, (headers, status) in refused.items():
                    assert (await _post(url, headers)).status_code == status, case
                for name in ("127.0.0.1", "localhost"):
                    own = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"}
                    assert (await _post(url, own)).status_code == 200, name
                assert (await _post(url, {})).status_code == 200  # a local non-browser client
            finally:
                process.terminate()
                await process.wait()


async def test_the_token_counts_only_as_a_bearer_header(sandbox, tmp_path):
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKEN": TOKEN})
    with http_server(service) as url:
        attempts = {
            "query_string": (f"{url}?token={TOKEN}", {}),
            "access_token_query": (f"{url}?access_token={TOKEN}", {}),
            "cookie": (url, {"Cookie": f"token={TOKEN}"}),
            "other_header": (url, {"X-Api-Key": TOKEN}),
            "basic_auth": (url, {"Authorization": f"Basic {TOKEN}"}),
            "token_plus_suffix": (url, {"Authorization": f"Bearer {TOKEN}x"}),
            "token_prefix": (url, {"Authorization": f"Bearer {TOKEN[:-1]}"}),
            "bearer_alone": (url, {"Authorization": "Bearer"}),
            "two_headers_one_wrong": (url, {"Authorization": f"Bearer wrong, Bearer {TOKEN}"}),
        }
        for case, (target, headers) in attempts.items():
            response = await _post(target, headers)
            assert response.status_code == 401, case
            assert TOKEN not in response.text  # a refusal never echoes the secret
        assert (await _post(url, {"Authorization": f"Bearer {TOKEN}"})).status_code == 200
    # A refused caller reached no tool: the gateway saw nothing, no payment was reserved.
    assert not sandbox.state.requests_seen
    # (The ledger itself is opened as the server starts.)
    assert open_ledger(service.config).payments() == []


async def test_the_bearer_scheme_is_case_insensitive(sandbox, tmp_path):
    """RFC 7235: the scheme is case-insensitive; the token itself is not."""
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKEN": TOKEN})
    with http_server(service) as url:
        for scheme in ("bearer", "BEARER", "bEaReR"):
            response = await _post(url, {"Authorization": f"{scheme} {TOKEN}"})
            assert response.status_code == 200, scheme
        refused = await _post(url, {"Authorization": f"Bearer {TOKEN.upper()}"})
        assert refused.status_code == 401


def test_a_short_token_stops_only_the_http_server(tmp_path):
    config = load_config(
        {
            "HOME": str(tmp_path),
            "BLOCKRUN_DATA_DIR": str(tmp_path / "d"),
            "BLOCKRUN_HTTP_TOKEN": "short",
        }
    )
    assert config.http_token is not None  # stdio starts: it never reads the token
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(ConfigError, match="shorter than 16"):
            check_http_binding(host, config)


async def test_a_stdio_server_starts_with_a_short_http_token(tmp_path):
    from mcp import StdioServerParameters

    env = subprocess_env(tmp_path, BLOCKRUN_HTTP_TOKEN="short")
    params = StdioServerParameters(command=PYTHON, args=["-m", "blockrun_mcp"], env=env)
    with anyio.fail_after(60):
        async with mcp_client(params) as client:
            tools = (await client.list_tools()).tools
    assert "ask_model" in {tool.name for tool in tools}


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.0.2.10", "10.1.2.3", "myhost.example", "LOCALHOST"]
)
def test_every_non_loopback_bind_needs_a_token(tmp_path, host):
    bare = load_config({"HOME": str(tmp_path), "BLOCKRUN_DATA_DIR": str(tmp_path / "d")})
    with pytest.raises(ConfigError) as info:
        check_http_binding(host, bare)
    assert "BLOCKRUN_HTTP_TOKEN" in str(info.value) and host in str(info.value)
    with_token = bare.model_copy(update={"http_token": load_token(tmp_path)})
    check_http_binding(host, with_token)  # with a token, the bind is allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_binds_need_no_token(tmp_path, host):
    bare = load_config({"HOME": str(tmp_path), "BLOCKRUN_DATA_DIR": str(tmp_path / "d")})
    assert bare.http_token is None
    check_http_binding(host, bare)  # allowed: no ConfigError
    # The very same tokenless config is refused on an outside address: the host is the reason.
    with pytest.raises(ConfigError, match="without a token"):
        check_http_binding("192.0.2.10", bare)


def load_token(tmp_path):
    return load_config(
        {
            "HOME": str(tmp_path),
            "BLOCKRUN_DATA_DIR": str(tmp_path / "d"),
            "BLOCKRUN_HTTP_TOKEN": TOKEN,
        }
    ).http_token


async def test_a_specific_address_without_a_token_refuses_to_start(tmp_path):
    """The CLI refuses before binding anything, and says why."""
    command = [PYTHON, "-m", "blockrun_mcp", "serve", "--transport", "http", "--host", "::"]
    command += ["--port", str(free_port())]
    with anyio.fail_after(60):
        done = await anyio.run_process(command, env=subprocess_env(tmp_path), check=False)
    assert done.returncode != 0
    assert b"BLOCKRUN_HTTP_TOKEN" in done.stderr and b"Refusing" in done.stderr
