"""`blockrun-mcp doctor`: every misconfiguration it explains, each with its fix.

Nothing here reaches the internet: the gateway is the sandbox (or a closed local port standing in
for an unreachable one), and the balance comes from a tiny local JSON-RPC stub (tests/conftest.py's
`rpc`). The helpers shared with the other command-line tests are in tests/support/cli.py.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from blockrun_mcp import doctor
from blockrun_mcp.ledger import Ledger
from blockrun_mcp.wallet import create_wallet
from tests.support.cli import (
    ADDRESS,
    KEY,
    VENV_BIN,
    RpcStub,
    cli_env,
    closed_port_url,
    key_file,
    make_ledger,
    run_cli,
    signed_row,
)


def fake_uvx(tmp_path: Path) -> str:
    folder = tmp_path / "uv-bin"
    folder.mkdir(exist_ok=True)
    uvx = folder / "uvx"
    uvx.write_text("#!/bin/sh\nexit 0\n")
    uvx.chmod(0o755)
    return str(folder)


def healthy_env(tmp_path: Path, sandbox: Any, rpc: RpcStub, **extra: str) -> dict[str, str]:
    """A key file, the sandbox as the gateway, the RPC stub as the node, and a uvx on PATH."""
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


def test_doctor_on_a_healthy_setup_is_all_ok_and_exits_zero(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    done = run_cli(env, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all good" in done.stdout
    assert "FAIL" not in done.stdout and "warn" not in done.stdout
    for area in ("settings", "key", "network", "gateway", "balance", "budgets", "data dir"):
        assert f"ok    {area}" in done.stdout
    assert ADDRESS in done.stdout
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


def test_doctor_warns_about_an_unfunded_wallet(tmp_path, sandbox, rpc):
    rpc.balance_atomic = 0
    check = only(checks_of(healthy_env(tmp_path, sandbox, rpc)), "balance")
    assert check.status == doctor.WARN
    assert ADDRESS in check.fix


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


def test_doctor_warns_about_base_sepolia_on_the_mainnet_gateway(tmp_path, monkeypatch):
    """The whole doctor, on the default (mainnet) gateway URL; every HTTP request goes to a proxy
    nobody listens on, so nothing leaves this machine."""
    for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", closed_port_url())
    env = cli_env(tmp_path, BLOCKRUN_NETWORK="base-sepolia")
    del env["BLOCKRUN_API_URL"]
    checks = checks_of(env)
    check = only(checks, "network")
    assert check.status == doctor.WARN
    assert "refused before signing" in check.detail
    assert "BLOCKRUN_API_URL=https://testnet.blockrun.ai/api" in check.fix
    assert only(checks, "gateway").status == doctor.FAIL  # the closed proxy: nothing went out
    # Another gateway (here a local one) may well quote on Base Sepolia: no warning.
    local = checks_of(cli_env(tmp_path, BLOCKRUN_NETWORK="base-sepolia"))
    assert only(local, "network").status == doctor.OK


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
    checks = checks_of(
        healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_API_URL=closed_port_url("/api"))
    )
    assert time.monotonic() - started < 5
    # Every check ran in that time; the closed gateway port failed at once, the rest passed.
    assert only(checks, "gateway").status == doctor.FAIL
    for area in ("settings", "key", "network", "balance", "budgets", "data dir", "stdio"):
        assert {c.status for c in checks[area]} == {doctor.OK}, checks[area]


def test_created_wallet_passes_doctor_key_check(tmp_path, sandbox, rpc):
    env = healthy_env(tmp_path, sandbox, rpc)
    (tmp_path / ".blockrun" / ".session").unlink()
    wallet = create_wallet(tmp_path / ".blockrun" / ".session")
    check = only(checks_of(env), "key")
    assert check.status == doctor.OK
    assert wallet.address in check.detail and "mode 600" in check.detail


# --- who was paid ---------------------------------------------------------------------------

OTHER_PAYEE = "0x" + "12" * 20


def _payee_checks(tmp_path: Path, payees: list[str], **extra: str) -> list[doctor.Check]:
    """Doctor's payee and ledger checks over a ledger holding one signed payment per payee."""
    ledger = Ledger(tmp_path / "data" / "ledger.sqlite3")
    for payee in payees:
        signed_row(
            ledger,
            payer="0x" + "ab" * 20,
            nonce="0x" + secrets.token_hex(32),
            valid_before=int(time.time()) + 300,
            pay_to=payee,
        )
    ledger.close()
    checks = doctor.run_checks(cli_env(tmp_path, **extra), start_server=False)
    return [check for check in checks if check.area in ("payee", "ledger")]


def test_doctor_names_one_payee(tmp_path):
    ledger, payee = _payee_checks(tmp_path, [OTHER_PAYEE, OTHER_PAYEE.upper().replace("X", "x")])
    assert (
        payee.status == doctor.OK and OTHER_PAYEE in payee.detail and "2 payment(s)" in payee.detail
    )
    assert "2 signed with the outcome unknown" in ledger.detail


def test_doctor_warns_when_the_payee_changed(tmp_path):
    _, payee = _payee_checks(tmp_path, [OTHER_PAYEE, "0x" + "34" * 20])
    assert payee.status == doctor.WARN and "changed" in payee.detail
    assert "BLOCKRUN_PAY_TO" in payee.fix


def test_doctor_warns_about_payees_other_than_the_pinned_one(tmp_path):
    _, payee = _payee_checks(tmp_path, [OTHER_PAYEE], BLOCKRUN_PAY_TO="0x" + "34" * 20)
    assert payee.status == doctor.WARN and "other than BLOCKRUN_PAY_TO" in payee.detail


def test_doctor_says_what_one_session_budget_covers(tmp_path, sandbox, rpc):
    (local,) = checks_of(healthy_env(tmp_path, sandbox, rpc))["session budget"]
    assert "stdio, the server process" in local.detail
    assert "identity that opened it" in local.detail and "2026-07-28" in local.detail
    team = healthy_env(tmp_path, sandbox, rpc, BLOCKRUN_LEDGER_URL="postgresql://x@127.0.0.1:9/db")
    (shared,) = checks_of(team)["session budget"]
    assert "no sessions" in shared.detail and "daily budget" in shared.detail
