"""The wallet key never leaves the process: not in MCP messages, logs, files, traffic or reprs.

A full session runs over stdio in a subprocess with a known key (every tool, and faults on the
way), capturing every byte the server wrote to stdout and stderr, every file it left under its
home, data and output dirs, and everything it sent to the gateway. The key's hex is searched for
in all of it, with and without 0x, in any case, and as raw or base64 bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from blockrun_mcp.config import load_config
from blockrun_mcp.server import TOOL_NAMES
from blockrun_mcp.wallet import WalletError, find_wallet, parse_private_key
from blockrun_mcp.x402.errors import PaidRequestFailed, PaymentReplay, PaymentUnfunded
from tests.support.security import contains_secret
from tests.support.server import (
    DATA_URI_IMAGE_MODEL,
    OPUS,
    PYTHON,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    env_for,
    make_service,
    new_key,
    subprocess_env,
)

pytestmark = pytest.mark.anyio


class RawSession:
    """JSON-RPC over a server's stdio, keeping every byte the server writes."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._pending = b""
        self._next_id = 0
        self.responses: dict[int, dict[str, Any]] = {}

    async def drain_stderr(self) -> None:
        async for chunk in self.process.stderr:
            self.stderr.extend(chunk)

    async def send(self, message: dict[str, Any]) -> None:
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while request_id not in self.responses:
            while b"\n" not in self._pending:
                chunk = await self.process.stdout.receive()
                self.stdout.extend(chunk)
                self._pending += chunk
            line, self._pending = self._pending.split(b"\n", 1)
            message = json.loads(line)
            if "id" in message and "method" not in message:
                self.responses[message["id"]] = message
        return self.responses.pop(request_id)

    async def tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return (await self.request("tools/call", {"name": name, "arguments": arguments}))["result"]


def test_the_scanner_finds_the_key_in_every_form():
    """A scanner that cannot find anything would prove nothing."""
    key = new_key()
    bare = key.removeprefix("0x")
    for blob in (key, key.upper(), bare, bare.upper(), f"x{key}y", json.dumps({"k": key})):
        assert contains_secret(blob.encode(), key), blob
    import base64

    assert contains_secret(b"..." + bytes.fromhex(bare) + b"...", key) == ["raw bytes"]
    assert contains_secret(base64.b64encode(bytes.fromhex(bare)), key) == ["base64"]
    assert contains_secret(b"0x" + b"0" * 64, key) == []


async def test_a_full_session_never_writes_the_key_anywhere(sandbox, tmp_path):
    key = new_key()
    env = subprocess_env(
        tmp_path,
        BLOCKRUN_API_URL=sandbox.base_url,
        BLOCKRUN_WALLET_KEY=key,
        BLOCKRUN_OUTPUT_DIR=str(tmp_path / "out"),
        BLOCKRUN_DAILY_BUDGET_USD="5",
    )
    state = sandbox.state
    state.set_faults(video_polls_before_done=0)
    results: dict[str, Any] = {}
    command = [PYTHON, "-m", "blockrun_mcp", "serve"]
    with anyio.fail_after(60):
        async with await anyio.open_process(command, env=env) as process:
            session = RawSession(process)
            async with anyio.create_task_group() as group:
                group.start_soon(session.drain_stderr)
                init = await session.request(
                    "initialize",
                    {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "secrets-test", "version": "1"},
                    },
                )
                assert init["result"]["protocolVersion"] == "2025-11-25"
                await session.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                assert len((await session.request("tools/list", {}))["result"]["tools"]) == len(
                    TOOL_NAMES
                )
                tool = session.tool
                results["wallet"] = await tool("wallet", {})
                results["models"] = await tool("list_models", {})
                results["estimate"] = await tool("estimate_cost", {"model": OPUS})
                results["ask"] = await tool("ask_model", {"prompt": "secret?", "model": OPUS})
                results["url_image"] = await tool(
                    "generate_image", {"prompt": "a key", "model": URL_IMAGE_MODEL}
                )
                results["data_image"] = await tool(
                    "generate_image", {"prompt": "a lock", "model": DATA_URI_IMAGE_MODEL}
                )
                video = await tool(
                    "generate_video",
                    {"prompt": "a vault", "model": VIDEO_MODEL, "duration_seconds": 1},
                )
                results["video"] = video
                results["resume"] = await tool(
                    "generate_video", {"job_id": video["structuredContent"]["job_id"]}
                )
                # Faults on the way: each error text is scanned like everything else.
                state.set_faults(status_after_payment=503, times=1)
                results["retried"] = await tool("ask_model", {"prompt": "again", "model": OPUS})
                state.set_faults(force_payment_code="PAYMENT_UNFUNDED", times=1)
                results["unfunded"] = await tool("ask_model", {"prompt": "broke", "model": OPUS})
                state.set_faults(malformed_402="garbage", times=1)
                results["malformed"] = await tool("ask_model", {"prompt": "terms", "model": OPUS})
                state.set_faults(drop_after_settlement=True, times=1)
                results["dropped"] = await tool("generate_image", {"prompt": "lost"})
                state.set_faults(hostile_terms="wrong_domain")
                results["hostile"] = await tool("ask_model", {"prompt": "domain", "model": OPUS})
                state.clear_faults()
                results["invalid"] = await tool("ask_model", {"prompt": 123})
                results["unknown"] = await tool("ask_model", {"prompt": "x", "model": "no/such"})
                results["lowered"] = await tool("budget", {"set_session_limit_usd": 0.5})
                results["budget"] = await tool("budget", {})
                await process.stdin.aclose()  # the host closes the pipe: the server exits
                async for chunk in process.stdout:
                    session.stdout.extend(chunk)
                assert await process.wait() == 0

    # The session really did everything it claims (so the scan below covers real output).
    ok = [name for name, result in results.items() if not result.get("isError")]
    errors = [name for name, result in results.items() if result.get("isError")]
    assert set(errors) == {"unfunded", "malformed", "dropped", "hostile", "invalid", "unknown"}
    assert "retried" in ok and results["video"]["structuredContent"]["status"] == "completed"
    address = results["wallet"]["structuredContent"]["address"]
    assert address.encode() in session.stdout
    assert address in results["unfunded"]["content"][0]["text"]
    assert len(state.settlements) >= 5 and state.payments_seen

    blobs: dict[str, bytes] = {
        "stdout (every MCP message)": bytes(session.stdout),
        "stderr (logs)": bytes(session.stderr),
        "payments sent to the gateway": json.dumps(state.payments_seen).encode(),
        "request bodies sent to the gateway": json.dumps(state.bodies_seen).encode(),
        "requests sent to the gateway": json.dumps(state.requests_seen).encode(),
    }
    written = [Path(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    names = {path.name for path in written}
    assert "ledger.sqlite3" in names
    assert any(path.suffix == ".png" for path in written)
    assert any(path.suffix == ".mp4" for path in written)
    for path in written:
        blobs[f"file {path.relative_to(tmp_path)}"] = path.read_bytes()
    leaks = {where: found for where, blob in blobs.items() if (found := contains_secret(blob, key))}
    assert not leaks, f"the private key leaked into: {leaks}"


async def test_repr_str_and_errors_never_show_the_key(sandbox, tmp_path):
    key = new_key()
    service, _ = make_service(tmp_path, sandbox, key=key)
    config = load_config(env_for(tmp_path, sandbox, BLOCKRUN_WALLET_KEY=key))
    wallet = find_wallet(config)
    assert wallet is not None and wallet.source == "BLOCKRUN_WALLET_KEY"
    try:
        texts = [
            repr(service),
            str(service),
            repr(vars(service)),
            repr(service.payer),
            repr(vars(service.payer)),
            repr(service.payer.policy),
            repr(service.gateway),
            repr(config),
            str(config),
            config.model_dump_json(),
            json.dumps(config.model_dump(), default=str),
            repr(wallet),
            str(wallet),
            f"{wallet}",
            repr(service.wallet()),
            repr(service.account.wallet()),
            str(PaymentUnfunded(wallet.address, "base")),
            str(PaymentReplay()),
            str(PaidRequestFailed("a drop")),
        ]
        for bad in (key + "00", key[:-1], key.upper() + "g", "0x" + key):
            with pytest.raises(WalletError) as info:
                parse_private_key(bad, "BLOCKRUN_WALLET_KEY")
            texts += [str(info.value), repr(info.value)]
        texts.append(repr(parse_private_key(key, "test")))
    finally:
        await service.aclose()
    for text in texts:
        assert not contains_secret(text.encode(), key), text
