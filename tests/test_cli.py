"""The command line: help, wallet, demo, models and spend (doctor is in tests/test_doctor.py).

Nothing here reaches the internet: the gateway is the sandbox (or a closed local port standing in
for an unreachable one), and the balance comes from a tiny local JSON-RPC stub (tests/conftest.py's
`rpc`). The helpers shared with tests/test_doctor.py are in tests/support/cli.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from blockrun_mcp.cli import main
from blockrun_mcp.ledger import Ledger
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA
from tests.support.cli import (
    ADDRESS,
    KEY,
    TX,
    cli_env,
    key_file,
    ledger_statuses,
    make_ledger,
    run_cli,
    run_main,
)

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
    tmp_path, monkeypatch, capsys, rpc
):
    key_file(tmp_path)
    code, out, err = run_main(
        monkeypatch, capsys, cli_env(tmp_path, BLOCKRUN_RPC_URL=rpc.url), "wallet", "show"
    )
    assert code == 0, err
    assert f"address: {ADDRESS}" in out
    assert "network: base (eip155:8453)" in out
    assert "balance: 12.5 USDC" in out
    assert f"fund it: Send USDC on Base (eip155:8453) to {ADDRESS}" in out
    assert KEY[2:] not in out + err
    (call,) = rpc.calls
    assert call["method"] == "eth_call"
    request = call["params"][0]
    assert request["to"] == BASE.usdc
    assert request["data"] == "0x70a08231" + ADDRESS[2:].lower().rjust(64, "0")


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


def test_private_key_is_printed_only_after_confirmation_at_a_terminal(tmp_path):
    key_file(tmp_path)
    env = cli_env(tmp_path)
    code, out, _ = _at_terminal(env, "no")
    assert code != 0
    assert "not confirmed" in out
    assert KEY[2:] not in out
    code, out, _ = _at_terminal(env, ADDRESS.lower())
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


def test_demo_never_passes_the_wallet_key_to_its_server(tmp_path):
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
    # Only the dirs, and the demo's own throwaway project for delegate to explore.
    assert server[0]["own"] == ["BLOCKRUN_DATA_DIR", "BLOCKRUN_OUTPUT_DIR", "BLOCKRUN_WORKSPACE"]
    # The demo still runs, on the throwaway wallet rather than the user's.
    assert "server offers 10 tools" in done.stdout, done.stdout + done.stderr
    wallet_line = next(
        line for line in done.stdout.splitlines() if line.strip().startswith("wallet ")
    )
    assert ADDRESS not in wallet_line
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
    statuses = ledger_statuses(path)
    assert ("reserved" in {s for _, s in statuses}) is True
    env = cli_env(tmp_path)
    for args in (["spend"], ["spend", "--json"], ["spend", "--csv"], ["spend", "--days", "1"]):
        code, _, err = run_main(monkeypatch, capsys, env, *args)
        assert code == 0, err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert ledger_statuses(path) == statuses
    # The writer would have released the dead process's reservation: the report must not.
    Ledger(path).close()
    assert ledger_statuses(path) != statuses


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
