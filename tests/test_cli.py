"""The command line: wallet, models, spend and doctor, with every misconfiguration doctor explains.

Nothing here reaches the internet: the gateway is the sandbox (or a closed local port standing in
for an unreachable one), and the balance comes from a tiny local JSON-RPC stub.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pty
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from blockrun_mcp import doctor
from blockrun_mcp.cli import main
from blockrun_mcp.config import load_config
from blockrun_mcp.ledger import Ledger
from blockrun_mcp.wallet import create_wallet
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA

VENV_BIN = Path(sys.executable).parent
KEY = "0x" + "4c" * 32


@pytest.fixture(scope="module")
def address() -> str:
    from eth_account import Account

    return Account.from_key(KEY).address


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


@pytest.fixture
def rpc() -> Iterator[RpcStub]:
    stub = RpcStub(balance_atomic=12_500_000)
    yield stub
    stub.close()


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


def run_main(monkeypatch, capsys, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    use_env(monkeypatch, env)
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(env: dict[str, str], *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
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


# --- help and start-up ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [None, "serve", "demo", "wallet", "models", "spend", "doctor", "sandbox"]
)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"] if command else ["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert "blockrun-mcp" in out.split("example", 1)[1]


def test_serving_does_not_import_the_command_line_extras():
    code = (
        "import sys, blockrun_mcp.cli, blockrun_mcp.transports, blockrun_mcp.server, "
        "blockrun_mcp.service; blockrun_mcp.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('blockrun_mcp')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = done.stdout
    for extra in ("reports", "doctor", "tables", "chain", "sandbox"):
        assert f"blockrun_mcp.{extra}'" not in loaded


# --- wallet ---------------------------------------------------------------------------------


def test_wallet_show_prints_address_network_balance_and_how_to_fund(
    tmp_path, monkeypatch, capsys, rpc, address
):
    key_file(tmp_path)
    code, out, err = run_main(
        monkeypatch, capsys, cli_env(tmp_path, BLOCKRUN_RPC_URL=rpc.url), "wallet", "show"
    )
    assert code == 0, err
    assert f"address: {address}" in out
    assert "network: base (eip155:8453)" in out
    assert "balance: 12.5 USDC" in out
    assert f"fund it: Send USDC on Base (eip155:8453) to {address}" in out
    assert KEY[2:] not in out + err
    (call,) = rpc.calls
    assert call["method"] == "eth_call"
    request = call["params"][0]
    assert request["to"] == BASE.usdc
    assert request["data"] == "0x70a08231" + address[2:].lower().rjust(64, "0")


def test_wallet_balance_is_unknown_when_the_network_is_unreachable(tmp_path, monkeypatch, capsys):
    key_file(tmp_path)
    code, out, _ = run_main(monkeypatch, capsys, cli_env(tmp_path), "wallet")
    assert code == 0
    assert "balance: unknown (network unreachable)" in out


def test_wallet_on_base_sepolia_asks_the_sepolia_contract(tmp_path, monkeypatch, capsys, rpc):
    key_file(tmp_path)
    env = cli_env(tmp_path, BLOCKRUN_RPC_URL=rpc.url, BLOCKRUN_NETWORK="base-sepolia")
    code, out, _ = run_main(monkeypatch, capsys, env, "wallet")
    assert code == 0
    assert "network: base-sepolia (eip155:84532)" in out
    assert "faucet" in out
    assert rpc.calls[0]["params"][0]["to"] == BASE_SEPOLIA.usdc


def test_wallet_create_writes_a_private_key_file_and_never_prints_it(tmp_path, monkeypatch, capsys):
    env = cli_env(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, env, "wallet", "create")
    assert code == 0, err
    path = tmp_path / ".blockrun" / ".session"
    assert path.stat().st_mode & 0o777 == 0o600
    key = path.read_text().strip()
    assert key[2:] not in out + err
    assert "balance: 0 USDC (new wallet)" in out
    code, out, _ = run_main(monkeypatch, capsys, env, "wallet", "create")
    assert code == 0
    assert "already exists" in out
    assert path.read_text().strip() == key


def test_wallet_without_a_key_says_how_to_create_one(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, cli_env(tmp_path), "wallet")
    assert code != 0
    assert "blockrun-mcp wallet create" in err


def test_private_key_is_refused_without_a_terminal(tmp_path):
    key_file(tmp_path)
    done = run_cli(cli_env(tmp_path), "wallet", "--show-private-key", stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "interactive terminal" in done.stderr
    assert KEY[2:] not in done.stdout + done.stderr


def _read_terminal(primary: int, process: subprocess.Popen[bytes], seconds: float = 60) -> str:
    """Everything the child wrote to its terminal, until it exits and the terminal closes."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not select.select([primary], [], [], 0.1)[0]:
            if process.poll() is not None and not select.select([primary], [], [], 0.1)[0]:
                break
            continue
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the child has exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=max(1.0, deadline - time.monotonic()))
    return b"".join(chunks).decode(errors="replace")


def _at_terminal(
    env: dict[str, str], answer: str, stdout: int | None = None
) -> tuple[int, str, str]:
    """Run `wallet --show-private-key` as at a terminal; type `answer` at the prompt.

    stdin and stderr are the terminal; so is stdout unless `stdout` redirects it (a pipe or an
    open file). Returns the exit code, what the terminal showed, and what went to the pipe.
    """
    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "blockrun_mcp", "wallet", "--show-private-key"],
            stdin=secondary,
            stdout=secondary if stdout is None else stdout,
            stderr=secondary,
            env=env,
        )
        os.close(secondary)  # the child holds the terminal now; its exit ends our reads
        secondary = -1
        os.write(primary, answer.encode() + b"\n")
        piped = process.stdout.read().decode() if process.stdout else ""
        shown = _read_terminal(primary, process)
        return process.wait(), shown, piped
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)


def test_private_key_is_printed_only_after_confirmation_at_a_terminal(tmp_path, address):
    key_file(tmp_path)
    env = cli_env(tmp_path)
    code, out, _ = _at_terminal(env, "no")
    assert code != 0
    assert "not confirmed" in out
    assert KEY[2:] not in out
    code, out, _ = _at_terminal(env, address.lower())
    assert code == 0
    assert out.strip().splitlines()[-1].endswith(KEY)
    code, out, _ = _at_terminal(env, "yes")
    assert code == 0
    assert KEY in out


@pytest.mark.parametrize("target", ["pipe", "file"])
def test_private_key_is_refused_when_stdout_is_not_a_terminal(tmp_path, target):
    """A person at a terminal who confirms, but stdout redirected: the key would land there."""
    key_file(tmp_path)
    env = cli_env(tmp_path)
    if target == "pipe":
        code, shown, piped = _at_terminal(env, "yes", stdout=subprocess.PIPE)
    else:
        with open(tmp_path / "out.txt", "wb") as redirected:
            code, shown, _ = _at_terminal(env, "yes", stdout=redirected.fileno())
        piped = (tmp_path / "out.txt").read_text()
    assert code != 0
    assert "standard output is not a terminal" in shown
    assert "was not printed" in shown
    assert piped == ""  # refused before anything, the address included, was written
    assert KEY[2:] not in (shown + piped).lower()


# --- demo -----------------------------------------------------------------------------------


def test_demo_server_environment_has_no_wallet_key_and_no_real_settings(tmp_path):
    from blockrun_mcp.config import ENV_VARS
    from blockrun_mcp.demo import sandbox_child_env

    parent = {name: f"user's {name}" for name in ENV_VARS}
    parent |= {"BLOCKRUN_WALLET_KEY": KEY, "BASE_CHAIN_WALLET_KEY": KEY, "blockrun_wallet_key": KEY}
    parent |= {"BLOCKRUN_SOMETHING_NEW": "x", "BASE_CHAIN_RPC": "x"}
    needed = {
        "PATH": "/venv/bin:/usr/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": "/src",
        "VIRTUAL_ENV": "/venv",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
        "HTTPS_PROXY": "http://proxy:3128",
        "SSL_CERT_FILE": "/etc/ssl/cert.pem",
    }
    child = sandbox_child_env(parent | needed)
    assert KEY not in child.values()
    assert KEY[2:] not in json.dumps(child)
    own = {name for name in child if name.upper().startswith(("BLOCKRUN_", "BASE_CHAIN_"))}
    assert own == {"BLOCKRUN_DATA_DIR", "BLOCKRUN_OUTPUT_DIR"}
    assert child["BLOCKRUN_DATA_DIR"] == "user's BLOCKRUN_DATA_DIR"
    assert {name: child[name] for name in needed} == needed


PROBE = """
import json, os, sys
seen = [n for n, v in os.environ.items() if {key!r} in v.lower()]
own = sorted(n for n in os.environ if n.upper().startswith(("BLOCKRUN_", "BASE_CHAIN_")))
with open(os.path.join({folder!r}, f"{{os.getpid()}}.json"), "w") as f:
    json.dump({{"argv": sys.orig_argv, "key_in": seen, "own": own}}, f)
"""


def test_demo_never_passes_the_wallet_key_to_its_server(tmp_path, address):
    """End to end: a real key in the demo's environment; every Python process reports its own.

    A sitecustomize on PYTHONPATH runs first thing in each interpreter (the demo and the server
    it starts) and records which variables hold the key, by name only.
    """
    probe = tmp_path / "probe"
    reports = tmp_path / "reports"
    probe.mkdir()
    reports.mkdir()
    (probe / "sitecustomize.py").write_text(PROBE.format(key=KEY[2:], folder=str(reports)))
    env = cli_env(tmp_path, BLOCKRUN_WALLET_KEY=KEY, BASE_CHAIN_WALLET_KEY=KEY)
    env["PYTHONPATH"] = str(probe)
    done = run_cli(env, "demo")
    found = [json.loads(path.read_text()) for path in reports.glob("*.json")]
    demo = [r for r in found if r["argv"][-1:] == ["demo"]]
    server = [r for r in found if r["argv"][-2:] == ["serve", "--sandbox"]]
    assert len(demo) == 1 and len(server) == 1, (found, done.stdout, done.stderr)
    assert set(demo[0]["key_in"]) == {"BLOCKRUN_WALLET_KEY", "BASE_CHAIN_WALLET_KEY"}  # probe works
    assert server[0]["key_in"] == []
    assert server[0]["own"] == ["BLOCKRUN_DATA_DIR", "BLOCKRUN_OUTPUT_DIR"]
    # The demo still runs, on the throwaway wallet rather than the user's.
    assert "server offers 7 tools" in done.stdout, done.stdout + done.stderr
    wallet_line = next(
        line for line in done.stdout.splitlines() if line.strip().startswith("wallet ")
    )
    assert address not in wallet_line
    assert KEY[2:] not in (done.stdout + done.stderr).lower()


# --- models ---------------------------------------------------------------------------------


def test_models_sandbox_table_filters_by_category_and_price(tmp_path, monkeypatch, capsys):
    code, out, err = run_main(
        monkeypatch,
        capsys,
        cli_env(tmp_path),
        "models",
        "--sandbox",
        "--category",
        "chat",
        "--max-price",
        "0.5",
    )
    assert code == 0, err
    assert "openai/gpt-5.4-nano" in out  # $0.40 per 1M output tokens
    assert "nvidia/gpt-oss-120b" in out and "free" in out
    assert "anthropic/claude-opus-4.7" not in out  # $25
    assert "openai/gpt-image-1" not in out  # an image model
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["model", "kind", "price"]


def test_models_json_from_the_gateway_by_provider(sandbox, tmp_path, monkeypatch, capsys):
    env = cli_env(tmp_path, BLOCKRUN_API_URL=sandbox.base_url)
    code, out, err = run_main(monkeypatch, capsys, env, "models", "--json", "--provider", "openai")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == sandbox.base_url
    ids = {m["id"] for m in data["models"]}
    assert {"openai/gpt-5-mini", "openai/gpt-image-1"} <= ids
    assert {m["provider"] for m in data["models"]} == {"openai"}
    images = [m for m in data["models"] if m["kind"] == "image"]
    assert images and all(m["image_price"] > 0 for m in images)


def test_models_max_price_applies_per_image(tmp_path, monkeypatch, capsys):
    code, out, _ = run_main(
        monkeypatch,
        capsys,
        cli_env(tmp_path),
        "models",
        "--sandbox",
        "--json",
        "--category",
        "image",
        "--max-price",
        "0.03",
    )
    assert code == 0
    models = json.loads(out)["models"]
    assert models
    assert all(m["kind"] == "image" and m["image_price"] <= 0.03 for m in models)


def test_models_with_an_unreachable_gateway_fails_with_a_way_out(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, cli_env(tmp_path), "models")
    assert code == 1
    assert "could not be reached" in err
    assert "--sandbox" in err


def test_models_rejects_a_negative_price(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(
        monkeypatch, capsys, cli_env(tmp_path), "models", "--sandbox", "--max-price", "-1"
    )
    assert code == 2
    assert "--max-price" in err


# --- spend ----------------------------------------------------------------------------------

TX = "0x" + "ab" * 32


def _dead_pid() -> int:
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
    db = ledger._db
    db.execute("UPDATE payments SET pid=? WHERE id=?", (_dead_pid(), abandoned))
    db.execute("UPDATE payments SET day='2020-01-01', created_at=1577880000 WHERE id=?", (settled,))
    ledger.close()
    return path


def _statuses(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, status FROM payments ORDER BY id").fetchall()


def test_spend_report_totals_groups_pending_and_receipts(tmp_path, monkeypatch, capsys):
    env = cli_env(tmp_path)
    make_ledger(tmp_path / "data")
    code, out, err = run_main(monkeypatch, capsys, env, "spend", "--json")
    assert code == 0, err
    report = json.loads(out)
    totals = report["totals"]
    assert totals["spent_usd"] == pytest.approx(0.022)
    assert totals["pending_usd"] == pytest.approx(0.107)  # the signed video + the reservation
    assert (totals["payments"], totals["settled"], totals["pending"], totals["released"]) == (
        5,
        2,
        2,
        1,
    )
    assert [d["day"] for d in report["by_day"]][-1] == "2020-01-01"
    by_tool = {t["tool"]: t for t in report["by_tool"]}
    assert by_tool["generate_video"]["pending_usd"] == pytest.approx(0.1)
    assert by_tool["ask_model"]["spent_usd"] == pytest.approx(0.001)
    assert {s["session"] for s in report["by_session"]} == {"s1", "s2", "s3"}
    assert {m["model"] for m in report["by_model"]} >= {"openai/gpt-5-mini", "openai/gpt-5.2"}
    assert {p["status"] for p in report["pending"]} == {"signed", "reserved"}
    assert TX in {r["tx_hash"] for r in report["receipts"]}

    code, text, _ = run_main(monkeypatch, capsys, env, "spend")
    assert code == 0
    for expected in ("By day", "By session", "By tool", "By model", "Pending", TX, "$0.022"):
        assert expected in text


def test_spend_never_changes_the_ledger(tmp_path, monkeypatch, capsys):
    path = make_ledger(tmp_path / "data")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    statuses = _statuses(path)
    assert ("reserved" in {s for _, s in statuses}) is True
    env = cli_env(tmp_path)
    for args in (["spend"], ["spend", "--json"], ["spend", "--csv"], ["spend", "--days", "1"]):
        code, _, err = run_main(monkeypatch, capsys, env, *args)
        assert code == 0, err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert _statuses(path) == statuses
    # The writer would have released the dead process's reservation: the report must not.
    Ledger(path).close()
    assert _statuses(path) != statuses


def test_spend_csv_has_one_line_per_payment(tmp_path, monkeypatch, capsys):
    make_ledger(tmp_path / "data")
    code, out, _ = run_main(monkeypatch, capsys, cli_env(tmp_path), "spend", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 5
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["tx_hash"] == TX and rows[0]["settled_usd"] == "0.001000"
    assert rows[2]["status"] == "signed" and rows[2]["settled_usd"] == ""


def test_spend_days_leaves_out_older_days(tmp_path, monkeypatch, capsys):
    make_ledger(tmp_path / "data")
    code, out, _ = run_main(
        monkeypatch, capsys, cli_env(tmp_path), "spend", "--days", "7", "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert report["totals"]["payments"] == 4
    assert TX not in out


def test_spend_with_no_ledger_creates_nothing(tmp_path, monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, cli_env(tmp_path), "spend")
    assert code == 0
    assert "nothing has been spent" in out
    assert not (tmp_path / "data").exists()


def test_spend_sandbox_reads_the_sandbox_ledger(tmp_path, monkeypatch, capsys):
    make_ledger(tmp_path / "data" / "sandbox")
    env = cli_env(tmp_path)
    code, out, _ = run_main(monkeypatch, capsys, env, "spend", "--sandbox", "--json")
    assert code == 0
    assert json.loads(out)["totals"]["payments"] == 5
    code, out, _ = run_main(monkeypatch, capsys, env, "spend", "--json")
    assert json.loads(out)["totals"]["payments"] == 0


def test_spend_reports_a_real_sandbox_session(tmp_path, monkeypatch, capsys):
    """End to end: pay through a served sandbox over stdio, then report it."""
    env = cli_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "blockrun_mcp", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    code, out, _ = run_main(monkeypatch, capsys, env, "spend", "--sandbox", "--json")
    assert code == 0
    report = json.loads(out)
    assert {t["tool"] for t in report["by_tool"]} >= {"ask_model", "generate_image"}
    assert all(r["tx_hash"] for r in report["receipts"])


# --- doctor ---------------------------------------------------------------------------------


def fake_uvx(tmp_path: Path) -> str:
    folder = tmp_path / "uv-bin"
    folder.mkdir(exist_ok=True)
    uvx = folder / "uvx"
    uvx.write_text("#!/bin/sh\nexit 0\n")
    uvx.chmod(0o755)
    return str(folder)


def healthy_env(tmp_path: Path, sandbox: Any, rpc: RpcStub, **extra: str) -> dict[str, str]:
    key_file(tmp_path)
    env = cli_env(tmp_path, BLOCKRUN_API_URL=sandbox.base_url, BLOCKRUN_RPC_URL=rpc.url)
    env["PATH"] = f"{fake_uvx(tmp_path)}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def checks_of(env: dict[str, str]) -> dict[str, list[doctor.Check]]:
    by_area: dict[str, list[doctor.Check]] = {}
    for check in doctor.run_checks(env, start_server=False):
        by_area.setdefault(check.area, []).append(check)
    return by_area


def only(checks: dict[str, list[doctor.Check]], area: str) -> doctor.Check:
    (check,) = checks[area]
    return check


def test_doctor_on_a_healthy_setup_is_all_ok_and_exits_zero(tmp_path, sandbox, rpc, address):
    env = healthy_env(tmp_path, sandbox, rpc)
    done = run_cli(env, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all good" in done.stdout
    assert "FAIL" not in done.stdout and "warn" not in done.stdout
    for area in ("settings", "key", "network", "gateway", "balance", "budgets", "data dir"):
        assert f"ok    {area}" in done.stdout
    assert address in done.stdout
    assert "answers initialize over stdio" in done.stdout
    assert KEY[2:] not in done.stdout + done.stderr


def test_doctor_json_lists_every_check(tmp_path, sandbox, rpc):
    done = run_cli(healthy_env(tmp_path, sandbox, rpc), "doctor", "--json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert {c["area"] for c in report["checks"]} >= {"settings", "key", "gateway", "server"}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BLOCKRUN_NETWORK", "mainnet", "not supported"),
        ("BLOCKRUN_SESSION_BUDGET_USD", "one dollar", "not a number"),
        ("BLOCKRUN_MAX_PER_CALL_USD", "-1", "0 or more"),
        ("BLOCKRUN_DAILY_BUDGET_USD", "nan", "0 or more"),
        ("BLOCKRUN_API_URL", "http://gateway.example.com/api", "plain http"),
        ("BLOCKRUN_API_URL", "blockrun.ai/api", "not an http(s) URL"),
        ("BLOCKRUN_RPC_URL", "ws://mainnet.base.org", "not an http(s) URL"),
    ],
)
def test_doctor_names_each_bad_setting(tmp_path, sandbox, rpc, name, value, says):
    checks = checks_of(healthy_env(tmp_path, sandbox, rpc, **{name: value}))
    (failure,) = [c for c in checks["settings"] if c.status == doctor.FAIL]
    assert name in failure.detail and says in failure.detail
    assert name in failure.fix
    # The other checks still run, on the defaults.
    assert only(checks, "key").status == doctor.OK


def test_doctor_warns_that_a_short_http_token_stops_only_the_http_server(tmp_path, sandbox, rpc):
    checks = checks_of(healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_HTTP_TOKEN="short"))
    statuses = {c.status for c in checks["settings"]}
    assert doctor.FAIL not in statuses
    (warning,) = [c for c in checks["settings"] if c.status == doctor.WARN]
    assert "shorter than 16" in warning.detail and "--transport http" in warning.detail
    assert "short" not in warning.fix.replace("shorter", "")


def test_doctor_exits_non_zero_and_the_server_refuses_a_bad_setting(tmp_path, sandbox, rpc):
    done = run_cli(healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_NETWORK="polygon"), "doctor")
    assert done.returncode == 1
    assert "FAIL  settings" in done.stdout
    assert "FAIL  server" in done.stdout  # what a host would see in its MCP log
    assert "BLOCKRUN_NETWORK" in done.stdout


def test_doctor_suggests_the_right_name_for_a_misspelt_variable(tmp_path, sandbox, rpc):
    checks = checks_of(healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_SESION_BUDGET_USD="2"))
    (warning,) = [c for c in checks["settings"] if c.status == doctor.WARN]
    assert "BLOCKRUN_SESION_BUDGET_USD" in warning.detail
    assert "BLOCKRUN_SESSION_BUDGET_USD" in warning.fix


def test_doctor_fails_a_key_file_others_can_read(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    path = key_file(tmp_path, mode=0o644)
    check = only(checks_of(env), "key")
    assert check.status == doctor.FAIL
    assert f"chmod 600 {path}" in check.detail
    assert KEY[2:] not in check.detail + check.fix


@pytest.mark.parametrize("where", ["file", "env"])
def test_doctor_fails_a_malformed_key(tmp_path, sandbox, rpc, where):
    env = healthy_env(tmp_path, sandbox, rpc)
    if where == "file":
        key_file(tmp_path, text="0x1234-not-a-key")
    else:
        env["BLOCKRUN_WALLET_KEY"] = "0x" + "zz" * 32
    check = only(checks_of(env), "key")
    assert check.status == doctor.FAIL
    assert "not a private key" in check.detail
    assert "zz" * 32 not in check.detail
    assert "balance" not in checks_of(env)


def test_doctor_warns_when_there_is_no_key(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    (tmp_path / ".blockrun" / ".session").unlink()
    check = only(checks_of(env), "key")
    assert check.status == doctor.WARN
    assert "blockrun-mcp wallet create" in check.fix


def test_doctor_fails_an_unreachable_gateway(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_API_URL=closed_port_url("/api"))
    check = only(checks_of(env), "gateway")
    assert check.status == doctor.FAIL
    assert "cannot be reached" in check.detail
    assert "BLOCKRUN_API_URL" in check.fix and "--sandbox" in check.fix


def test_doctor_says_to_add_api_to_a_gateway_url_without_it(tmp_path, sandbox, rpc):
    bare = sandbox.base_url.removesuffix("/api")
    check = only(checks_of(healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_API_URL=bare)), "gateway")
    assert check.status == doctor.FAIL
    assert f"BLOCKRUN_API_URL={bare}/api" in check.fix


def test_doctor_warns_about_an_unfunded_wallet(tmp_path, sandbox, rpc, address):
    rpc.balance_atomic = 0
    check = only(checks_of(healthy_env(tmp_path, sandbox, rpc)), "balance")
    assert check.status == doctor.WARN
    assert address in check.fix


def test_doctor_warns_when_the_balance_cannot_be_read(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_RPC_URL=closed_port_url())
    check = only(checks_of(env), "balance")
    assert check.status == doctor.WARN
    assert "unknown" in check.detail


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (
            {"BLOCKRUN_SESSION_BUDGET_USD": "0.20", "BLOCKRUN_MAX_PER_CALL_USD": "0.50"},
            "above the session budget",
        ),
        ({"BLOCKRUN_SESSION_BUDGET_USD": "0"}, "only free models"),
        ({"BLOCKRUN_MAX_PER_CALL_USD": "0"}, "only free models"),
        ({"BLOCKRUN_DAILY_BUDGET_USD": "0.25"}, "daily budget is below the session budget"),
    ],
)
def test_doctor_warns_about_budgets_that_cannot_work_as_meant(
    tmp_path, sandbox, rpc, settings, says
):
    checks = checks_of(healthy_env(tmp_path, sandbox, rpc, **settings))
    warnings = [c for c in checks["budgets"] if c.status == doctor.WARN]
    assert any(says in c.detail for c in warnings), warnings


def test_doctor_warns_about_base_sepolia_on_the_mainnet_gateway(tmp_path):
    checks: list[doctor.Check] = []
    config = load_config({"HOME": str(tmp_path), "BLOCKRUN_NETWORK": "base-sepolia"})
    doctor._network(config, checks)
    (check,) = checks
    assert check.status == doctor.WARN
    assert "refused before signing" in check.detail


def test_doctor_fails_a_data_dir_that_is_a_file(tmp_path, sandbox, rpc):
    file = tmp_path / "not-a-folder"
    file.write_text("")
    check = only(
        checks_of(healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_DATA_DIR=str(file))), "data dir"
    )
    assert check.status == doctor.FAIL
    assert "not a folder" in check.detail and "BLOCKRUN_DATA_DIR" in check.fix


def test_doctor_fails_an_output_dir_that_cannot_be_created(tmp_path, sandbox, rpc):
    file = tmp_path / "a-file"
    file.write_text("")
    env = healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_OUTPUT_DIR=str(file / "media"))
    check = only(checks_of(env), "output dir")
    assert check.status == doctor.FAIL
    assert "cannot be created" in check.detail and "BLOCKRUN_OUTPUT_DIR" in check.fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_doctor_fails_a_read_only_data_dir(tmp_path, sandbox, rpc):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    check = only(
        checks_of(healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_DATA_DIR=str(folder))), "data dir"
    )
    assert check.status == doctor.FAIL
    assert "not writable" in check.detail


def test_doctor_says_a_missing_data_dir_will_be_created_without_creating_it(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    check = only(checks_of(env), "data dir")
    assert check.status == doctor.OK and "will be created" in check.detail
    assert not (tmp_path / "data").exists()


def test_doctor_warns_about_a_data_dir_and_ledger_others_can_open(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    make_ledger(tmp_path / "data")
    (tmp_path / "data").chmod(0o755)
    (tmp_path / "data" / "ledger.sqlite3").chmod(0o644)
    checks = checks_of(env)
    assert only(checks, "data dir").status == doctor.WARN
    assert "chmod 700" in only(checks, "data dir").fix
    assert only(checks, "ledger").status == doctor.WARN
    assert "chmod 600" in only(checks, "ledger").fix


def test_doctor_fails_a_corrupt_ledger(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "ledger.sqlite3").write_bytes(b"this is not a database" * 100)
    (data / "ledger.sqlite3").chmod(0o600)
    check = only(checks_of(env), "ledger")
    assert check.status == doctor.FAIL
    assert "mv " in check.fix


def test_doctor_fails_when_hosts_cannot_find_any_command(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc, PATH="/usr/bin:/bin")
    check = only(checks_of(env), "stdio")
    assert check.status == doctor.FAIL
    assert "uvx" in check.detail and "blockrun-mcp" in check.detail
    assert str(VENV_BIN / "blockrun-mcp") in check.fix


def test_doctor_warns_when_only_uvx_is_missing(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc, PATH=f"{VENV_BIN}:/usr/bin:/bin")
    check = only(checks_of(env), "stdio")
    assert check.status == doctor.WARN
    assert str(VENV_BIN / "blockrun-mcp") in check.fix


def test_doctor_tells_gui_hosts_the_absolute_uvx_path(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    check = only(checks_of(env), "stdio")
    assert check.status == doctor.OK
    assert f'"command": "{tmp_path}/uv-bin/uvx"' in check.detail


def test_doctor_is_quick_when_everything_is_local(tmp_path, sandbox, rpc):
    started = time.monotonic()
    checks_of(healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_API_URL=closed_port_url("/api")))
    assert time.monotonic() - started < 5


def test_created_wallet_passes_doctor_key_check(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    (tmp_path / ".blockrun" / ".session").unlink()
    wallet = create_wallet(tmp_path / ".blockrun" / ".session")
    check = only(checks_of(env), "key")
    assert check.status == doctor.OK
    assert wallet.address in check.detail and "mode 600" in check.detail
