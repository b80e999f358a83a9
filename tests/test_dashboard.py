"""`blockrun-mcp dashboard`: the page and its JSON behind the run's token and a Host check, the
same figures as `blockrun-mcp spend --json` (one ledger filled by paying the sandbox), and a
prompt stop on Ctrl-C. Also `admin = true` in the tokens file, which the team's /dashboard reads.

The dashboard runs as users run it, a subprocess of the real command; requests are raw HTTP,
so each refusal is seen as an attacker's client would see it. The browser's side is in
test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import anyio
import httpx2
import pytest

from blockrun_mcp.dashboard.data import explorer_url
from blockrun_mcp.dashboard.page import content_security_policy, page
from blockrun_mcp.identities import IdentitiesError, add_identity, read_file
from blockrun_mcp.payments import FINALITY_MARGIN_SECONDS
from tests.support.cli import cli_env, run_cli, run_main
from tests.support.dashboard import dashboard_process, fill_ledger

pytestmark = pytest.mark.usefixtures("within_one_utc_day")


def spend_json(env: dict[str, str]) -> dict:
    done = run_cli(env, "spend", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def get(url: str, **headers: str) -> httpx2.Response:
    """One request exactly as written: no cookies kept, no redirect followed."""
    return httpx2.get(url, headers=headers, follow_redirects=False, timeout=10)


@pytest.fixture
def filled(sandbox, tmp_path) -> dict[str, str]:
    """The environment of a ledger with settled, pending and running-video payments."""
    anyio.run(fill_ledger, tmp_path, sandbox)
    return cli_env(tmp_path, BLOCKRUN_DAILY_BUDGET_USD="5.00")


def test_without_the_run_s_token_or_from_another_host_nothing_is_shown(filled):
    with dashboard_process(filled) as board:
        base, token, port = board.base, board.token, board.port
        for url, headers in [
            (f"{base}/", {}),
            (f"{base}/api/summary", {}),
            (f"{base}/?token=", {}),
            (f"{base}/?token=wrong", {}),
            (f"{base}/?token={token[:-1]}", {}),
            (f"{base}/api/summary", {"Authorization": "Bearer wrong"}),
            (f"{base}/api/summary", {"Cookie": f"blockrun_dashboard_{port}=wrong"}),
            # The first token presented decides: a wrong one beside the right cookie is refused.
            (f"{base}/?token=wrong", {"Cookie": f"blockrun_dashboard_{port}={token}"}),
        ]:
            refused = get(url, **headers)
            assert refused.status_code == 403, (url, headers, refused.status_code)
            assert "token" in refused.text and "spent" not in refused.text
            assert refused.headers["cache-control"] == "no-store"
        # DNS rebinding: the right token, but the page was reached by another name.
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}"):
            rebound = get(board.url, Host=host)
            assert rebound.status_code == 421, host
            assert "Host" in rebound.text
        # A page of another origin that got hold of the token still cannot read the JSON.
        foreign = get(f"{base}/api/summary?token={token}", Origin="http://evil.example")
        assert foreign.status_code == 403
        assert get(f"{base}/api/summary?token={token}", Host=f"localhost:{port}").is_success
        # Read-only: nothing but GET.
        posted = httpx2.post(f"{base}/api/summary?token={token}", timeout=10)
        assert posted.status_code == 405


def test_the_token_moves_from_the_address_into_a_cookie_for_this_port_only(filled):
    with dashboard_process(filled) as board:
        opened = get(board.url)
        assert opened.status_code == 303
        assert opened.headers["location"] == "/"  # the token leaves the address bar
        cookie = opened.headers["set-cookie"]
        name = f"blockrun_dashboard_{board.port}"
        assert cookie.startswith(f"{name}={board.token};")
        lowered = cookie.lower()
        assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
        shown = get(f"{board.base}/", Cookie=f"{name}={board.token}")
        assert shown.status_code == 200
        assert shown.headers["content-type"].startswith("text/html")
        assert shown.headers["content-security-policy"] == content_security_policy()
        assert shown.headers["x-frame-options"] == "DENY"
        assert shown.headers["referrer-policy"] == "no-referrer"
        assert board.token not in shown.text  # the page itself never carries the token
        # Another dashboard's cookie (another port) is not this one's.
        other = get(f"{board.base}/", Cookie=f"blockrun_dashboard_{board.port + 1}={board.token}")
        assert other.status_code == 403


def test_the_json_says_what_spend_json_says(filled, tmp_path):
    spend = spend_json(filled)
    with dashboard_process(filled) as board:
        answer = get(f"{board.base}/api/summary", Authorization=f"Bearer {board.token}")
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["ledger"] == spend["ledger"] == str(tmp_path / "data" / "ledger.sqlite3")
    assert data["scope"] == "everyone" and data["viewer"] == "local" and not data["sandbox"]
    totals = {key: data["totals"][key] for key in spend["totals"]}
    assert totals == spend["totals"]
    assert spend["totals"]["pending"] == 1 and spend["totals"]["settled"] == 4
    for kind in ("model", "tool", "identity"):
        mine = {g["name"]: g for g in data[f"by_{kind}"]}
        for row in spend[f"by_{kind}"]:
            name = row.pop(kind)
            assert mine[name] == {"name": name, **row}
        assert len(mine) == len(spend[f"by_{kind}"])
    by_day = {d["day"]: d for d in data["days"]}
    for row in spend["by_day"]:
        assert by_day[row["day"]]["total_usd"] == row["total_usd"]
    assert len(data["days"]) == 30 and data["days"][-1]["day"] == data["today"]
    assert [p["id"] for p in data["pending"]] == [p["id"] for p in spend["pending"]]
    assert [(r["id"], r["tx_hash"], r["amount_usd"]) for r in data["receipts"]] == [
        (r["id"], r["tx_hash"], r["amount_usd"]) for r in spend["receipts"]
    ]
    # Each receipt links its transaction on the network's explorer.
    for receipt in data["receipts"]:
        assert receipt["explorer_url"] == f"https://basescan.org/tx/{receipt['tx_hash']}"
    # The limits: today's daily budget is the same day `spend` shows.
    limits = {limit["key"]: limit for limit in data["limits"]}
    (today,) = [row for row in spend["by_day"] if row["day"] == data["today"]]
    daily = limits["daily"]
    assert (daily["limit_usd"], daily["spent_usd"], daily["pending_usd"]) == (
        5.0,
        today["spent_usd"],
        today["pending_usd"],
    )
    assert daily["left_usd"] == round(5.0 - today["total_usd"], 6)
    assert limits["per_call"]["limit_usd"] == 0.5 and limits["per_call"]["left_usd"] is None
    assert limits["session"]["limit_usd"] == 1.0 and limits["session"]["spent_usd"] is None


def test_a_pending_payment_says_why_it_counts_and_when_it_may_be_released(filled):
    with dashboard_process(filled) as board:
        data = get(f"{board.base}/api/summary?token={board.token}").json()
    (pending,) = data["pending"]
    (job,) = data["video_jobs"]
    assert pending["status"] == "signed" and pending["tool"] == "generate_video"
    assert pending["job_id"] == job["job_id"] and job["payment_id"] == pending["id"]
    assert job["resume"] == f"generate_video(job_id={job['job_id']!r})"
    assert "may still settle until" in pending["why"]
    valid_before = time.mktime(time.strptime(pending["valid_before"], "%Y-%m-%d %H:%M:%S"))
    release = time.mktime(time.strptime(pending["release_after"], "%Y-%m-%d %H:%M:%S"))
    assert release - valid_before == FINALITY_MARGIN_SECONDS
    assert pending["release_after"] in pending["release"] and "chain" in pending["release"]


def test_ctrl_c_stops_it_at_once_even_with_a_browser_connected(filled):
    with dashboard_process(filled) as board, httpx2.Client(timeout=10) as browser:
        # A keep-alive connection left open, as a browser's is between refreshes.
        assert browser.get(f"{board.base}/api/summary?token={board.token}").is_success
        started = time.monotonic()
        board.process.send_signal(signal.SIGINT)
        try:
            code = board.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("the dashboard did not stop within 5 s of Ctrl-C")
        assert time.monotonic() - started < 5
        assert code == 0
        assert "Traceback" not in (board.process.stderr.read() if board.process.stderr else "")


def test_before_any_paid_call_the_page_shows_nothing_spent(tmp_path):
    env = cli_env(tmp_path)
    with dashboard_process(env) as board:
        data = get(f"{board.base}/api/summary?token={board.token}").json()
    assert data["totals"]["payments"] == 0 and data["receipts"] == [] and data["pending"] == []
    assert not (tmp_path / "data" / "ledger.sqlite3").exists()  # read-only: it made nothing


def test_the_sandbox_ledger_is_pretend_and_links_nowhere(sandbox, tmp_path):
    # `serve --sandbox` keeps its ledger in $BLOCKRUN_DATA_DIR/sandbox: one filled goes there.
    anyio.run(fill_ledger, tmp_path / "run", sandbox)
    (tmp_path / "data" / "sandbox").mkdir(parents=True)
    for part in (tmp_path / "run" / "data").glob("ledger.sqlite3*"):
        part.rename(tmp_path / "data" / "sandbox" / part.name)
    env = cli_env(tmp_path)
    with dashboard_process(env, "--sandbox") as board:
        data = get(f"{board.base}/api/summary?token={board.token}").json()
    assert data["sandbox"] and data["receipts"]
    assert all(receipt["explorer_url"] is None for receipt in data["receipts"])


def test_explorer_links_by_network_and_never_for_an_odd_hash():
    tx = "0x" + "ab" * 32
    assert explorer_url("base", tx) == f"https://basescan.org/tx/{tx}"
    assert explorer_url("base-sepolia", tx) == f"https://sepolia.basescan.org/tx/{tx}"
    assert explorer_url("ethereum", tx) is None
    for odd in (None, "", "0x1234", tx + "00", f'{tx}"><script>', "javascript:alert(1)"):
        assert explorer_url("base", odd) is None


def test_the_page_loads_nothing_from_anywhere_else():
    for mode in ("http", "app"):
        html = page(mode, api="/api/summary" if mode == "http" else None)
        assert "src=" not in html and "<link" not in html and "@import" not in html
        # No address anywhere (the SVG namespace is a name, never fetched); the explorer's
        # links come from the data, and only https ones are made links.
        addresses = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", html))
        assert addresses <= {"http://www.w3.org/2000/svg"}, addresses
    csp = content_security_policy()
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp


# --- admin = true ---------------------------------------------------------------------------


def test_admin_is_read_from_the_tokens_file_false_unless_said(tmp_path):
    tokens = tmp_path / "tokens.toml"
    add_identity(tokens, "alice", daily_budget_usd=1.0, max_per_call_usd=None)
    add_identity(tokens, "carol", daily_budget_usd=1.0, max_per_call_usd=None, admin=True)
    assert {i.name: i.admin for i in read_file(tokens)} == {"alice": False, "carol": True}
    assert "admin = true" in tokens.read_text()
    for wrong in ('"yes"', "1", '"true"'):
        bad = tmp_path / f"bad-{len(wrong)}.toml"
        bad.write_text(
            tokens.read_text().replace("admin = true", f"admin = {wrong}"), encoding="utf-8"
        )
        with pytest.raises(IdentitiesError, match="admin must be true or false"):
            read_file(bad)


def test_token_add_admin_and_token_list_say_so(tmp_path, monkeypatch, capsys):
    tokens = tmp_path / "tokens.toml"
    env = cli_env(tmp_path)
    code, out, _ = run_main(
        monkeypatch, capsys, env, "token", "add", "carol", "--admin", "--file", str(tokens)
    )
    assert code == 0 and "; admin: its /dashboard shows everyone" in out
    code, out, _ = run_main(
        monkeypatch, capsys, env, "token", "add", "alice", "--file", str(tokens)
    )
    assert code == 0 and "; admin" not in out
    code, out, _ = run_main(monkeypatch, capsys, env, "token", "list", "--file", str(tokens))
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "; admin" in lines["carol"] and "; admin" not in lines["alice"]
    assert [i.admin for i in read_file(Path(tokens))] == [True, False]
