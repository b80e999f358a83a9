"""manifests/team/: the team walkthrough's script runs as its README says, and the proxy configs
send /mcp to the instances the walkthrough starts.

`try-it.sh` is run as a user would run it, against a database of its own: a sandbox gateway, two
`blockrun-mcp serve --transport http` processes over one PostgreSQL ledger, two identities made
with `token add`, real MCP clients over Streamable HTTP, then `blockrun-mcp spend`. It is done when
alice's budget refuses her while bob's calls go on, and the ledger and `spend` show both.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from blockrun_mcp.ledger import Ledger

REPO = Path(__file__).resolve().parent.parent
TEAM = REPO / "manifests" / "team"
SCRIPT = TEAM / "try-it.sh"
VENV_BIN = Path(sys.executable).parent
INSTANCE_PORTS = ("8411", "8412")  # the walkthrough's instances, as the proxy configs name them


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def section(report: str, title: str) -> list[str]:
    """The rows of one table of `blockrun-mcp spend`'s text: after its title, header and rule."""
    lines = report.splitlines()
    start = lines.index(title) + 3
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


@pytest.mark.usefixtures("within_one_utc_day")
def test_try_it_sh_runs_the_walkthrough_on_the_sandbox(tmp_path, fresh_database):
    ports = {name: free_port() for name in ("SANDBOX_PORT", "PORT_ONE", "PORT_TWO")}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKRUN_")}
    env.update(
        BLOCKRUN_MCP=str(VENV_BIN / "blockrun-mcp"),
        PYTHON=sys.executable,
        TMPDIR=str(scratch),
        HOME=str(tmp_path),  # no wallet file of the developer's is ever found
        **{name: str(port) for name, port in ports.items()},
        # The caller's own settings must not reach the pretend deployment: a token this short
        # would stop every instance from starting.
        BLOCKRUN_HTTP_TOKEN="short",
        BLOCKRUN_SESSION_BUDGET_USD="0",
    )
    done = subprocess.run(
        ["bash", str(SCRIPT), fresh_database],
        capture_output=True,
        text=True,
        timeout=180,  # about 20 s on an idle machine
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    one, two = ports["PORT_ONE"], ports["PORT_TWO"]
    instance = {1: f"instance 1 (:{one})", 2: f"instance 2 (:{two})"}

    # Step 4: alice served once, then refused by her own budget on the other instance.
    asked = re.findall(
        r"^(alice|bob) +-> (instance \d \(:\d+\)): (served|REFUSED)(.*)$", output, re.M
    )
    alice = [(where, outcome, rest) for who, where, outcome, rest in asked if who == "alice"]
    assert [outcome for _, outcome, _ in alice] == ["served", "REFUSED"], output
    assert alice[0][0] == instance[1] and alice[1][0] == instance[2]
    refusal = alice[1][2]
    assert "identity budget" in refusal and "alice's daily_budget_usd" in refusal, refusal
    assert "Nothing was signed" in refusal
    # bob: served on both instances, the second time after alice's refusal.
    bob = [(where, outcome) for who, where, outcome, _ in asked if who == "bob"]
    assert sorted(bob) == [(instance[1], "served"), (instance[2], "served")], output
    assert asked[-1][:3] == ("bob", instance[1], "served")

    # Step 5: spend's "By identity" lists both, from the shared ledger.
    people = {row.split()[0]: row.split()[1] for row in section(done.stdout, "By identity")}
    assert people == {"alice": "1", "bob": "2"}, done.stdout
    assert "done: alice was refused by her budget while bob went on" in done.stdout

    # The ledger itself agrees: one payment for alice, two for bob, all settled.
    ledger = Ledger.open(fresh_database, tmp_path, read_only=True)
    try:
        payments = ledger.payments()
    finally:
        ledger.close()
    assert Counter(row.identity for row in payments) == {"alice": 1, "bob": 2}
    assert {row.status for row in payments} == {"settled"}

    # It cleaned up: nothing listens any more, and its temporary directory is gone.
    assert not any(listening(port) for port in ports.values())
    assert list(scratch.iterdir()) == []


def test_try_it_sh_refuses_a_database_url_it_cannot_use(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKRUN_")}
    env.update(BLOCKRUN_MCP=str(VENV_BIN / "blockrun-mcp"), PYTHON=sys.executable)
    for args, says in (
        ([], "give the URL of an empty PostgreSQL database"),
        (["mysql://x/y"], "is not a postgresql:// URL"),
    ):
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        assert done.returncode != 0
        assert says in done.stderr


def test_the_proxy_configs_send_mcp_to_the_walkthroughs_instances():
    """Not a validator (neither proxy is installed here): the configs name the instances the
    walkthrough starts, and rewrite Host to the instance's own address, without which every
    instance answers 421 (its DNS-rebinding protection)."""
    assert sorted(p.name for p in TEAM.iterdir()) == [
        "Caddyfile",
        "README.md",
        "nginx.conf",
        "try-it.sh",
    ]
    guide = (TEAM / "README.md").read_text(encoding="utf-8")
    for name in ("Caddyfile", "nginx.conf", "try-it.sh"):
        assert f"]({name})" in guide, f"manifests/team/README.md does not link {name}"
    for port in INSTANCE_PORTS:
        assert f"--port {port}" in guide

    caddy = (TEAM / "Caddyfile").read_text(encoding="utf-8")
    assert re.search(
        r"handle @blockrun \{\s*reverse_proxy 127\.0\.0\.1:8411 127\.0\.0\.1:8412 \{", caddy
    )
    assert "@blockrun path /mcp /dashboard /dashboard/*" in caddy
    assert "header_up Host {upstream_hostport}" in caddy
    assert "header_up -X-Blockrun-Identity" in caddy
    assert caddy.count("{") == caddy.count("}")

    nginx = (TEAM / "nginx.conf").read_text(encoding="utf-8")
    code = "\n".join(line.split("#", 1)[0] for line in nginx.splitlines())
    assert code.count("{") == code.count("}")
    for port in INSTANCE_PORTS:
        assert re.search(rf"\b127\.0\.0\.1:{port};", code)
    assert "location = /mcp {" in code and "location /dashboard {" in code
    assert "proxy_pass http://$blockrun_instance;" in code
    # proxy_pass's own Host ($proxy_host: the instance's address) must not be overridden.
    assert not re.search(r"proxy_set_header\s+Host\b", code, re.I)
    assert 'proxy_set_header X-Blockrun-Identity "";' in code
    assert "proxy_buffering off;" in code
