"""The two MCP protocol eras every MCP-level test runs under.

Hosts in the field speak either the initialize handshake (<= 2025-11-25: older hosts, and Claude
Code with MCP_PROTOCOL_NEGOTIATION=legacy) or the session-less 2026-07-28 protocol (Claude Code
today, the SDK's default client, Codex's new mode). A feature that works on one era only is not
done, so every test module that talks MCP is run once per era (conftest's `mcp_era` fixture), and
its clients are made here, in the era of the test being run.
"""

from __future__ import annotations

from typing import Any

from mcp import Client

HANDSHAKE = "handshake"
SESSIONLESS = "2026-07-28"
ERAS = (HANDSHAKE, SESSIONLESS)
# What each era's client is told, and the version it must end up speaking.
CLIENT_MODE = {HANDSHAKE: "legacy", SESSIONLESS: "auto"}
NEGOTIATED = {HANDSHAKE: "2025-11-25", SESSIONLESS: "2026-07-28"}
# Test modules whose source names one of these talk MCP, and so run once per era.
MCP_MARKERS = ("open_server(", "mcp_client(", "open_http_client(", "as_person(")

_current = HANDSHAKE


def set_era(era: str) -> None:
    """Called by conftest's `mcp_era` fixture before each test."""
    global _current
    if era not in ERAS:
        raise ValueError(f"unknown MCP era {era!r}")
    _current = era


def current_era() -> str:
    return _current


def is_sessionless() -> bool:
    return _current == SESSIONLESS


def mcp_client(target: Any, *, era: str | None = None, **kwargs: Any) -> Client:
    """A real MCP client of this test's era (or of `era`), on an in-process server or a transport.

    The SDK's default ("auto") discovers the server and speaks 2026-07-28; "legacy" does the
    initialize handshake. `check_negotiated` confirms which one it ended up on.
    """
    return Client(target, mode=CLIENT_MODE[era or _current], **kwargs)


def check_negotiated(client: Client, era: str | None = None) -> None:
    """The client speaks the version of its era: a silent fallback would test the wrong thing."""
    expected = NEGOTIATED[era or _current]
    assert client.protocol_version == expected, (client.protocol_version, expected)
