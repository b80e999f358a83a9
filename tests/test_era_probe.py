"""A host's probe that times out leaves no rejected `initialize` behind (stdio).

A host in `auto` mode sends `server/discover`, gives up waiting (a server starting on a busy
machine), and falls back to the handshake. The server reads both: the probe first. Here the
server process gets both lines at once, as a host that timed out would leave them, and the
`initialize` must be answered as a handshake, after which the connection serves the handshake
era. Once a real request has been served in the 2026-07-28 era, an `initialize` is still refused.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from mcp_types.version import LATEST_MODERN_VERSION

from tests.support.server import PYTHON, subprocess_env

PROTOCOL = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO = {"name": "probe-test", "version": "1"}
ENVELOPE = {
    PROTOCOL: LATEST_MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    "io.modelcontextprotocol/clientCapabilities": {},
}
HANDSHAKE_VERSION = "2025-11-25"


def line(message: dict[str, Any]) -> bytes:
    return (json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode()


def probe(request_id: int) -> bytes:
    return line({"id": request_id, "method": "server/discover", "params": {"_meta": ENVELOPE}})


def initialize(request_id: int) -> bytes:
    params = {"protocolVersion": HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
    return line({"id": request_id, "method": "initialize", "params": params})


def converse(tmp_path: Path, *lines: bytes, unanswered: int | None = None) -> dict[Any, Any]:
    """Writes `lines` to a stdio server at once and returns its answers by request id, read
    until every request but `unanswered` has one (input is closed only then: EOF ends the
    server)."""
    wanted = {json.loads(text)["id"] for text in lines if "id" in json.loads(text)}
    wanted.discard(unanswered)
    process = subprocess.Popen(
        [PYTHON, "-m", "blockrun_mcp", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(tmp_path, BLOCKRUN_API_URL="http://127.0.0.1:9/api"),
    )
    assert process.stdin is not None and process.stdout is not None
    answers: dict[Any, dict[str, Any]] = {}
    try:
        process.stdin.write(b"".join(lines))
        process.stdin.flush()
        while not wanted <= answers.keys():
            text = process.stdout.readline()
            assert text, f"the server ended with {sorted(wanted - answers.keys())} unanswered"
            answer = json.loads(text)
            if "id" in answer:
                answers[answer["id"]] = answer
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        finally:
            process.kill()
    return answers


def test_an_initialize_behind_an_abandoned_probe_is_a_handshake(tmp_path):
    answers = converse(
        tmp_path,
        probe(1),
        initialize(2),
        line({"method": "notifications/initialized"}),
        line({"id": 3, "method": "tools/list"}),
        unanswered=1,  # the host gave up on its probe: an answer to it may come or not
    )
    assert "error" not in answers[2], answers[2]
    assert answers[2]["result"]["protocolVersion"] == HANDSHAKE_VERSION
    # The connection now serves the handshake era: a plain tools/list is answered.
    assert "ask_model" in {tool["name"] for tool in answers[3]["result"]["tools"]}


def test_after_a_real_modern_request_an_initialize_is_still_refused(tmp_path):
    tools = line({"id": 2, "method": "tools/list", "params": {"_meta": ENVELOPE}})
    answers = converse(tmp_path, probe(1), tools, initialize(3))
    assert "ask_model" in {tool["name"] for tool in answers[2]["result"]["tools"]}
    assert answers[3]["error"]["code"] == -32022  # the era stands once it has served a request


def test_a_plain_handshake_is_unchanged(tmp_path):
    answers = converse(
        tmp_path,
        initialize(1),
        line({"method": "notifications/initialized"}),
        line({"id": 2, "method": "tools/list"}),
    )
    assert answers[1]["result"]["protocolVersion"] == HANDSHAKE_VERSION
    assert answers[2]["result"]["tools"]


def test_a_probe_alone_is_answered_in_the_2026_era(tmp_path):
    answers = converse(tmp_path, probe(1))
    assert LATEST_MODERN_VERSION in answers[1]["result"]["supportedVersions"]
