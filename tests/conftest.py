"""Shared fixtures. Keep them general: every test module may use them."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from blockrun_mcp.sandbox import SandboxServer
from tests.support import eras
from tests.support.postgres import (  # noqa: F401 (fixtures: a real PostgreSQL server)
    fresh_database,
    postgres_server,
    postgres_url,
    restart_postgres,
    restartable_postgres_server,
    within_one_utc_day,
)
from tests.support.stores import (  # noqa: F401 (fixtures: each ledger test on both stores)
    ledger_databases,
    ledger_store,
)


def pytest_configure(config: pytest.Config) -> None:
    # blockrun-llm (a test dependency) still declares pydantic v1-style configs; not our code.
    config.addinivalue_line(
        "filterwarnings", "ignore:Support for class-based `config`:DeprecationWarning"
    )


@cache
def _talks_mcp(path: str) -> bool:
    source = Path(path).read_text(encoding="utf-8")
    return any(marker in source for marker in eras.MCP_MARKERS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of a module that talks MCP runs once per protocol era (support/eras.py)."""
    if "mcp_era" in metafunc.fixturenames and _talks_mcp(str(metafunc.definition.path)):
        metafunc.parametrize("mcp_era", eras.ERAS, indirect=True)


@pytest.fixture(autouse=True)
def mcp_era(request: pytest.FixtureRequest) -> Iterator[str]:
    """The MCP era this test's clients speak: both, for a module that talks MCP."""
    era = getattr(request, "param", eras.HANDSHAKE)
    eras.set_era(era)
    yield era
    eras.set_era(eras.HANDSHAKE)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A running sandbox gateway (network base, every payer starts with $10), fresh per test."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def funded_account() -> Any:
    """A fresh eth_account LocalAccount. The sandbox funds every unseen payer with $10."""
    from eth_account import Account

    return Account.create()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (pytest.mark.anyio) run on asyncio, the loop the MCP hosts' servers use."""
    return "asyncio"


@pytest.fixture
def rpc() -> Iterator[Any]:
    """A local JSON-RPC node (support.cli.RpcStub): every eth_call answers a 12.5 USDC balance."""
    from tests.support.cli import RpcStub

    stub = RpcStub(balance_atomic=12_500_000)
    yield stub
    stub.close()


@pytest.fixture
async def gateway(sandbox: SandboxServer, funded_account: Any) -> Any:
    """Our gateway client and payer, paying the sandbox from `funded_account`."""
    from tests.support.payer import make_gateway

    client = make_gateway(sandbox.base_url, funded_account)
    yield client
    await client.aclose()
