"""Helpers for the command-line tests (tests/test_cli.py, tests/test_doctor.py).

Nothing here reaches the internet: the gateway is the sandbox (or a closed local port standing in
for an unreachable one), and the balance comes from a tiny local JSON-RPC stub.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from blockrun_mcp.cli import main
from blockrun_mcp.ledger import Ledger

VENV_BIN = Path(sys.executable).parent
KEY = "0x" + "4c" * 32
ADDRESS = Account.from_key(KEY).address  # checksummed, as the CLI prints it
TX = "0x" + "ab" * 32


def closed_port_url(path: str = "") -> str:
    """A loopback URL nobody listens on: the gateway or RPC node is unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class RpcStub:
    """A JSON-RPC node that answers eth_call with a fixed USDC balance and records each call."""

    def __init__(self, balance_atomic: int) -> None:
        self.balance_atomic = balance_atomic
        self.calls: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.calls.append(body)
                answer = {
                    "jsonrpc": "2.0",
                    "id": body["id"],
                    "result": f"0x{stub.balance_atomic:064x}",
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A whole environment, built from nothing, so the developer's own BLOCKRUN_* never leak in."""
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "BLOCKRUN_DATA_DIR": str(tmp_path / "data"),
        "BLOCKRUN_OUTPUT_DIR": str(tmp_path / "out"),
        "BLOCKRUN_API_URL": closed_port_url("/api"),
        "BLOCKRUN_RPC_URL": closed_port_url(),
    }
    env.update(extra)
    return env


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith(("BLOCKRUN_", "BASE_CHAIN_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, env: dict[str, str], *argv: str
) -> tuple[int, str, str]:
    """`blockrun-mcp *argv` in this process, under exactly `env`: (exit code, stdout, stderr)."""
    use_env(monkeypatch, env)
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(env: dict[str, str], *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`blockrun-mcp *argv` in a subprocess under exactly `env`."""
    return subprocess.run(
        [sys.executable, "-m", "blockrun_mcp", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        **kw,
    )


def key_file(tmp_path: Path, text: str = KEY, mode: int = 0o600) -> Path:
    path = tmp_path / ".blockrun" / ".session"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def make_ledger(data_dir: Path) -> Path:
    """Payments of every kind, over two days: settled, signed (unknown outcome), an abandoned
    reservation of a dead process, and a released one."""
    path = data_dir / "ledger.sqlite3"
    ledger = Ledger(path)
    common = {"network": "base", "session_limit_atomic": 10**9, "daily_limit_atomic": None}
    settled = ledger.reserve(
        session="s1", tool="ask_model", model="openai/gpt-5-mini", amount_atomic=1_000, **common
    )
    ledger.mark_signed(settled, "0x01")
    ledger.mark_settled(settled, 1_000, TX)
    image = ledger.reserve(
        session="s2",
        tool="generate_image",
        model="openai/gpt-image-1",
        amount_atomic=21_000,
        **common,
    )
    ledger.mark_signed(image, "0x02")
    ledger.mark_settled(image, 21_000, "0x" + "cd" * 32)
    signed = ledger.reserve(
        session="s2",
        tool="generate_video",
        model="xai/grok-imagine-video",
        amount_atomic=100_000,
        **common,
    )
    ledger.mark_signed(signed, "0x03")
    released = ledger.reserve(
        session="s2", tool="ask_model", model="openai/gpt-5-mini", amount_atomic=5_000, **common
    )
    ledger.mark_released(released, "PAYMENT_INVALID")
    abandoned = ledger.reserve(
        session="s3", tool="ask_model", model="openai/gpt-5.2", amount_atomic=7_000, **common
    )
    ledger.close()
    # No public way: Ledger stamps every row with the writing process's pid and today's date,
    # and the reports must be shown a dead process's reservation and an older day. Written to
    # the file itself (its on-disk schema), not through the Ledger object's private connection.
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE payments SET pid=? WHERE id=?", (dead_pid(), abandoned))
        db.execute(
            "UPDATE payments SET day='2020-01-01', created_at=1577880000 WHERE id=?", (settled,)
        )
    return path


def ledger_statuses(path: Path) -> list[tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT id, status FROM payments ORDER BY id").fetchall()


def signed_row(
    ledger: Ledger, *, payer: str | None, nonce: str, valid_before: int | None, pay_to: str
) -> int:
    """A signed $0.01 payment in session "s", as a server leaves it before the answer comes."""
    payment = ledger.reserve(
        session="s",
        tool="ask_model",
        model="m",
        amount_atomic=10_000,
        network="base",
        session_limit_atomic=10**9,
        daily_limit_atomic=None,
    )
    ledger.mark_signed(payment, nonce, payer=payer, pay_to=pay_to, valid_before=valid_before)
    return payment
