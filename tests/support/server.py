"""Helpers for the MCP server tests: a real server over the sandbox, driven by a real MCP client.

Nothing of ours is mocked: the service pays the sandbox gateway over loopback HTTP, the server is
`build_server(service)`, and the test talks to it through `mcp.Client` in the protocol era of the
test being run (support/eras.py: each MCP-level test runs in both).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jsonschema
from mcp import Client
from mcp_types import CallToolResult, ListRootsResult, Root

from blockrun_mcp.config import Config, load_config
from blockrun_mcp.doctor import initialize_request
from blockrun_mcp.ledger import Ledger, PaymentRow
from blockrun_mcp.sandbox import SandboxServer, SandboxState
from blockrun_mcp.server import TOOL_NAMES, build_server
from blockrun_mcp.service import BlockrunService, ServiceOptions
from blockrun_mcp.wallet import Wallet, find_wallet
from tests.support.eras import check_negotiated, mcp_client

TOOLS = TOOL_NAMES
# A raw MCP initialize request, for HTTP tests that talk to the transport without a client.
INITIALIZE = initialize_request("raw-test")
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
CHEAP_MODEL = "openai/gpt-5-mini"
NANO_MODEL = "openai/gpt-5.4-nano"
OPUS = "anthropic/claude-opus-4.7"
FREE_MODEL = "nvidia/gpt-oss-120b"
DATA_URI_IMAGE_MODEL = "openai/gpt-image-1"
URL_IMAGE_MODEL = "openai/dall-e-3"
VIDEO_MODEL = "xai/grok-imagine-video"
REPO_ROOT = Path(__file__).resolve().parents[2]


def new_key() -> str:
    return "0x" + secrets.token_hex(32)


def wallet_for(key: str) -> Wallet:
    """The wallet of `key`, as found in BLOCKRUN_WALLET_KEY (by the public lookup)."""
    wallet = find_wallet(load_config({"BLOCKRUN_WALLET_KEY": key}))
    assert wallet is not None
    return wallet


def env_for(tmp_path: Path, sandbox: SandboxServer | None = None, **extra: str) -> dict[str, str]:
    """The environment of one test: data and media under tmp_path, the sandbox as the gateway."""
    env = {
        "HOME": str(tmp_path),
        "BLOCKRUN_DATA_DIR": str(tmp_path / "data"),
        "BLOCKRUN_OUTPUT_DIR": str(tmp_path / "out"),
    }
    if sandbox is not None:
        env["BLOCKRUN_API_URL"] = sandbox.base_url
        env["BLOCKRUN_RPC_URL"] = sandbox.rpc_url  # its stand-in chain
    env.update(extra)
    return env


@dataclass
class Harness:
    """One server over one service, and the client session talking to it."""

    client: Client
    service: BlockrunService
    config: Config
    key: str
    tools: dict[str, Any] = field(default_factory=dict)
    seen_texts: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.service.wallet().address

    @property
    def ledger(self) -> Ledger:
        return self.service.ledger

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, **kw: Any
    ) -> CallToolResult:
        result = await self.client.call_tool(name, arguments or {}, **kw)
        text = result.content[0].text if result.content else ""
        self.seen_texts.append(text)
        if result.structured_content is not None:
            self.seen_texts.append(json.dumps(result.structured_content))
        # The private key must never leave the server, in any answer.
        bare_key = self.key.removeprefix("0x")
        assert bare_key not in text.lower()
        assert bare_key not in json.dumps(result.structured_content or {}).lower()
        return result

    async def ok(
        self, name: str, arguments: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Call a tool that must succeed; returns its structured content, checked against its schema."""
        result = await self.call(name, arguments, **kw)
        assert not result.is_error, f"{name} failed: {result.content[0].text}"
        data = result.structured_content
        assert isinstance(data, dict)
        schema = self.tools[name].output_schema
        assert schema is not None, f"{name} has no outputSchema"
        jsonschema.validate(data, schema)
        # The text copy the host's model reads says the same, minus nulls.
        text = json.loads(result.content[0].text)
        assert text == _without_nulls(data)
        return data

    async def fail(self, name: str, arguments: dict[str, Any] | None = None, **kw: Any) -> str:
        """Call a tool that must fail with a readable tool error; returns the error text."""
        result = await self.call(name, arguments, **kw)
        assert result.is_error, f"{name} unexpectedly succeeded: {result.structured_content}"
        assert result.structured_content is None
        text = result.content[0].text
        assert text and "Traceback" not in text
        # A crash the SDK masked would read just "Error executing tool <name>".
        assert text.strip() != f"Error executing tool {name}"
        assert "Unexpected internal error" not in text, text
        return text


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def make_service(
    tmp_path: Path,
    sandbox: SandboxServer | None,
    *,
    key: str | None = None,
    env: dict[str, str] | None = None,
    video_wait_seconds: float = 10.0,
    api_url: str | None = None,
    with_wallet: bool = True,
) -> tuple[BlockrunService, str]:
    """The service as transports.service_for builds it, but on the test's own sandbox.

    Without a wallet the service looks one up as in production (there is none under tmp_path).
    """
    key = key or new_key()
    full_env = env_for(tmp_path, sandbox, **(env or {}))
    if api_url is not None:
        full_env["BLOCKRUN_API_URL"] = api_url
    config = load_config(full_env)
    service = BlockrunService(
        config,
        wallet=wallet_for(key) if with_wallet else None,
        options=ServiceOptions(video_poll_interval=0.05, video_wait_seconds=video_wait_seconds),
    )
    return service, key


@asynccontextmanager
async def open_server(
    tmp_path: Path,
    sandbox: SandboxServer | None,
    *,
    key: str | None = None,
    env: dict[str, str] | None = None,
    video_wait_seconds: float = 10.0,
    api_url: str | None = None,
    with_wallet: bool = True,
    roots: list[Path] | None = None,
    elicitation: Any = None,
) -> AsyncIterator[Harness]:
    """A server and a real MCP client; with `roots`, the client offers them (`roots/list`);
    with `elicitation`, it answers the server's questions with that callback."""
    service, key = make_service(
        tmp_path,
        sandbox,
        key=key,
        env=env,
        video_wait_seconds=video_wait_seconds,
        api_url=api_url,
        with_wallet=with_wallet,
    )

    async def list_roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=path.resolve().as_uri()) for path in roots or []])

    async with mcp_client(
        build_server(service),
        list_roots_callback=list_roots if roots is not None else None,
        elicitation_callback=elicitation,
    ) as client:
        check_negotiated(client)
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        yield Harness(client=client, service=service, config=service.config, key=key, tools=tools)


def open_ledger(config: Config) -> Ledger:
    """The ledger file as a restarted server would open it."""
    return Ledger(config.data_dir / "ledger.sqlite3")


def settled_rows(ledger: Ledger) -> list[PaymentRow]:
    return [row for row in ledger.payments() if row.status == "settled"]


def assert_ledger_matches_sandbox(ledger: Ledger, state: SandboxState) -> None:
    """What the ledger says was settled is exactly what the sandbox settled."""
    rows = settled_rows(ledger)
    with state.lock:
        settlements = list(state.settlements)
    assert sum(row.settled_atomic or 0 for row in rows) == sum(s.amount_atomic for s in settlements)
    by_tx = {s.tx_hash: s for s in settlements}
    assert len(rows) == len(settlements) == len(by_tx)
    for row in rows:
        assert row.tx_hash in by_tx, f"ledger row {row.id} has a tx_hash the sandbox never settled"
        settlement = by_tx[row.tx_hash]
        assert row.settled_atomic == settlement.amount_atomic
        assert row.nonce is not None and row.nonce.lower() == settlement.nonce.lower()


def nonces_seen(state: SandboxState) -> list[str]:
    with state.lock:
        return [p["payload"]["authorization"]["nonce"] for p in state.payments_seen]


def paid_posts(state: SandboxState) -> list[tuple[str, str, bool]]:
    """Requests to paid endpoints (every POST; GETs are the catalog, media and video polls)."""
    with state.lock:
        return [r for r in state.requests_seen if r[0] == "POST"]


def quote_usd(state: SandboxState, index: int = -1) -> float:
    with state.lock:
        return int(state.issued_terms[index]["amount"]) / 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for_port(port: int, process: anyio.abc.Process) -> None:
    """Until a server subprocess listens on `port` (fails at once if it exits instead)."""
    while True:
        assert process.returncode is None, "the server exited before listening"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            await anyio.sleep(0.05)


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a server subprocess: no inherited BLOCKRUN_* settings."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "BLOCKRUN_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


PYTHON = sys.executable


@contextmanager
def http_server(service: BlockrunService, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve transports.http_app for `service` with uvicorn in a thread; yields the /mcp URL."""
    import uvicorn

    from blockrun_mcp.transports import http_app

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    app = http_app(service, host, service.config)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the HTTP server did not start"
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Served:
    """An HTTP server started as `serve --transport http` starts one (see `serving`)."""

    url: str
    port: int
    app: Any  # transports.IdentityAuth, around sessions.SessionWatch

    @property
    def sessions(self) -> Any:
        """The server's sessions.IssuedSessions: which ids it issued, and to whom."""
        return self.app.app.sessions


@contextmanager
def serving(service: BlockrunService, host: str = "127.0.0.1", **options: Any) -> Iterator[Served]:
    """Serve `service` as transports.serve_http does with `--port 0`: the sockets bound first,
    the app pinned to the port the OS gave them. `options` go to transports.http_app
    (`identities`, `sessions_per_identity`)."""
    import uvicorn

    from blockrun_mcp.transports import http_app, listening_sockets

    sockets = listening_sockets(host, 0)
    port = sockets[0].getsockname()[1]
    app = http_app(service, host, service.config, port, **options)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the HTTP server did not start"
        time.sleep(0.01)
    shown = f"[{host}]" if ":" in host else host
    try:
        yield Served(url=f"http://{shown}:{port}/mcp", port=port, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for sock in sockets:
            sock.close()
