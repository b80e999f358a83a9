"""The team commands and checks: `token add` / `token list`, `migrate`, and what `doctor` and
`spend` say about a PostgreSQL ledger (reachable, migrated, clock, never its password)."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from blockrun_mcp import doctor
from blockrun_mcp.config import ConfigError, load_config
from blockrun_mcp.identities import Identities, IdentitiesError, add_identity, read_file
from blockrun_mcp.ledger_postgres import SCHEMA_VERSION
from blockrun_mcp.transports import check_http_binding
from tests.support.cli import cli_env, closed_port_url, run_main

PASSWORD = "pw-" + "q7" * 10


def with_password(url: str) -> str:
    """The same server and user, with a password in the URL (trust auth ignores it): what must
    never be printed."""
    parts = urlsplit(url)
    netloc = f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def checks_of(env: dict[str, str]) -> dict[str, list[doctor.Check]]:
    found: dict[str, list[doctor.Check]] = {}
    for check in doctor.run_checks(env, start_server=False):
        found.setdefault(check.area, []).append(check)
    return found


# --- token add / token list ---------------------------------------------------------------


def test_token_add_prints_the_token_once_and_keeps_only_its_hash(tmp_path, monkeypatch, capsys):
    tokens = tmp_path / "team" / "tokens.toml"
    env = cli_env(tmp_path)
    code, out, err = run_main(
        monkeypatch,
        capsys,
        env,
        "token",
        "add",
        "alice",
        "--daily-budget",
        "2",
        "--file",
        str(tokens),
    )
    assert code == 0, err
    (token,) = re.findall(r"^  (\S{40,})$", out, re.MULTILINE)
    assert out.count(token) == 2  # on its own line, and in the `claude mcp add` example
    assert "claude mcp add --transport http" in out and "Authorization: Bearer" in out
    text = tokens.read_text()
    assert token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    (alice,) = read_file(tokens)
    assert (alice.name, alice.daily_budget_usd, alice.max_per_call_usd) == ("alice", 2.0, None)
    assert Identities.load(tokens, None).find(token) == alice
    # A second identity, with its own per-call cap; a name taken twice is refused.
    code, out, err = run_main(
        monkeypatch,
        capsys,
        {**env, "BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)},
        "token",
        "add",
        "ci-bot",
        "--daily-budget",
        "0.5",
        "--max-per-call",
        "0.05",
    )
    assert code == 0, err
    assert [i.max_per_call_usd for i in read_file(tokens)] == [None, 0.05]
    code, out, err = run_main(
        monkeypatch, capsys, env, "token", "add", "alice", "--file", str(tokens)
    )
    assert code == 1 and "already has an identity 'alice'" in err and "Traceback" not in err
    assert len(read_file(tokens)) == 2
    # `token list` names them with their budgets, and no hash.
    code, out, err = run_main(monkeypatch, capsys, env, "token", "list", "--file", str(tokens))
    assert code == 0, err
    assert "alice" in out and "$2.00 a day" in out and "ci-bot" in out and "$0.05 a call" in out
    assert not re.search(r"[0-9a-f]{64}", out)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "name must be"),
        ("../evil", "name must be"),
        ('a"b', "name must be"),
        ("x" * 65, "name"),
    ],
)
def test_token_add_refuses_bad_names_and_writes_nothing(tmp_path, monkeypatch, capsys, name, why):
    tokens = tmp_path / "tokens.toml"
    code, _, err = run_main(
        monkeypatch, capsys, cli_env(tmp_path), "token", "add", name, "--file", str(tokens)
    )
    assert code in (1, 2) and why in err and "Traceback" not in err
    assert not tokens.exists()


def test_a_hand_edited_tokens_file_is_checked_entry_by_entry(tmp_path):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[identity]]\nname = "alice"\ntoken_sha256 = "abc"\n')
    with pytest.raises(IdentitiesError, match="token_sha256 must be the 64 hex digits"):
        read_file(tokens)
    tokens.write_text(
        '[[identity]]\nname = "alice"\ntoken_sha256 = "' + "a" * 64 + '"\ndaily_budget_usd = "2"\n'
    )
    with pytest.raises(IdentitiesError, match="daily_budget_usd must be a number of dollars"):
        read_file(tokens)
    tokens.write_text(
        '[[identity]]\nname = "alice"\ntoken_sha256 = "' + "a" * 64 + '"\nbudget = 1\n'
    )
    with pytest.raises(IdentitiesError, match="unknown key"):
        read_file(tokens)
    tokens.write_text("[[identity]\n")
    with pytest.raises(IdentitiesError, match="not valid TOML"):
        read_file(tokens)


# --- serving: what a team server demands ------------------------------------------------


def test_a_team_server_needs_a_daily_bound_and_identities_off_loopback(tmp_path, postgres_url):
    tokens = tmp_path / "tokens.toml"
    add_identity(tokens, "alice", daily_budget_usd=None, max_per_call_usd=None)
    base = {"HOME": str(tmp_path), "BLOCKRUN_LEDGER_URL": postgres_url}
    unbounded = load_config({**base, "BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    with pytest.raises(ConfigError, match=r"daily bound.*alice"):
        check_http_binding("127.0.0.1", unbounded)
    bounded = load_config(
        {**base, "BLOCKRUN_HTTP_TOKENS_FILE": str(tokens), "BLOCKRUN_DAILY_BUDGET_USD": "5"}
    )
    check_http_binding("0.0.0.0", bounded)
    open_to_all = load_config({**base, "BLOCKRUN_DAILY_BUDGET_USD": "5"})
    with pytest.raises(ConfigError, match="without a token"):
        check_http_binding("0.0.0.0", open_to_all)
    # A tokens file not made yet: the commands that do not serve still work; serving says how.
    missing = load_config({**base, "BLOCKRUN_HTTP_TOKENS_FILE": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match=r"does not exist.*token add"):
        check_http_binding("127.0.0.1", missing)
    with pytest.raises(ConfigError, match="PostgreSQL URL"):
        load_config({"HOME": str(tmp_path), "BLOCKRUN_LEDGER_URL": "mysql://db/x"})


# --- migrate ------------------------------------------------------------------------------


def migrations_applied(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [row[0] for row in rows]


def test_migrate_brings_a_new_database_up_to_date_once(
    tmp_path, monkeypatch, capsys, fresh_database
):
    url = with_password(fresh_database)
    env = cli_env(tmp_path, BLOCKRUN_LEDGER_URL=url)
    code, out, err = run_main(monkeypatch, capsys, env, "migrate")
    assert code == 0, err
    assert f"from schema version 0 to {SCHEMA_VERSION}" in out
    assert PASSWORD not in out + err
    code, out, err = run_main(monkeypatch, capsys, env, "migrate")
    assert code == 0 and f"schema version {SCHEMA_VERSION}, up to date" in out
    assert migrations_applied(fresh_database) == list(range(1, SCHEMA_VERSION + 1))


def test_migrate_without_a_database_url_migrates_the_sqlite_ledger(tmp_path, monkeypatch, capsys):
    env = cli_env(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, env, "migrate")
    assert code == 0, err
    assert "SQLite" in out and (tmp_path / "data" / "ledger.sqlite3").is_file()


def test_migrate_and_spend_fail_closed_and_clearly_when_the_database_is_down(
    tmp_path, monkeypatch, capsys
):
    down = closed_port_url("/blockrun").replace("http://", f"postgresql://blockrun:{PASSWORD}@")
    env = cli_env(tmp_path, BLOCKRUN_LEDGER_URL=down)
    for command in (["migrate"], ["spend"], ["threads"]):
        code, out, err = run_main(monkeypatch, capsys, env, *command)
        assert code == 1, (command, out, err)
        assert "PostgreSQL" in err and "cannot be used" in err, err
        assert PASSWORD not in out + err and "Traceback" not in err


# --- doctor -------------------------------------------------------------------------------


def test_doctor_checks_the_database_reachable_migrated_and_its_clock(tmp_path, fresh_database):
    url = with_password(fresh_database)
    env = cli_env(tmp_path, BLOCKRUN_LEDGER_URL=url)
    (unmigrated,) = checks_of(env)["ledger"]
    assert unmigrated.status == doctor.FAIL
    assert f"schema version 0 of {SCHEMA_VERSION}" in unmigrated.detail
    assert "blockrun-mcp migrate" in unmigrated.fix
    with psycopg.connect(fresh_database) as conn:  # doctor only looks: it created nothing
        assert conn.execute("SELECT to_regclass('payments')").fetchone()[0] is None
    from blockrun_mcp.ledger_postgres import PostgresBackend

    PostgresBackend(fresh_database).close()  # what a server does when it starts
    (ready,) = checks_of(env)["ledger"]
    assert ready.status == doctor.OK, ready
    assert "PostgreSQL" in ready.detail and f"schema version {SCHEMA_VERSION}" in ready.detail
    assert "clock skew" in ready.detail
    for check in doctor.run_checks(env, start_server=False):
        assert PASSWORD not in check.detail + check.fix


def test_doctor_says_when_the_database_cannot_be_reached(tmp_path):
    down = closed_port_url("/blockrun").replace("http://", f"postgresql://blockrun:{PASSWORD}@")
    (check,) = checks_of(cli_env(tmp_path, BLOCKRUN_LEDGER_URL=down))["ledger"]
    assert check.status == doctor.FAIL and "cannot be used" in check.detail
    assert "BLOCKRUN_LEDGER_URL" in check.fix and PASSWORD not in check.detail + check.fix


def test_doctor_warns_that_the_session_budget_does_not_apply_to_a_team_server(
    tmp_path, fresh_database
):
    tokens = tmp_path / "tokens.toml"
    add_identity(tokens, "alice", daily_budget_usd=2.0, max_per_call_usd=None)
    env = cli_env(
        tmp_path,
        BLOCKRUN_LEDGER_URL=fresh_database,
        BLOCKRUN_HTTP_TOKENS_FILE=str(tokens),
        BLOCKRUN_SESSION_BUDGET_USD="1.00",
    )
    found = checks_of(env)
    warned = [
        c for c in found["budgets"] if "BLOCKRUN_SESSION_BUDGET_USD does not apply" in c.detail
    ]
    assert warned and warned[0].status == doctor.WARN
    (identities,) = found["identities"]
    assert identities.status == doctor.OK and "alice ($2.00/day)" in identities.detail
    # Without the session budget set, no such warning.
    del env["BLOCKRUN_SESSION_BUDGET_USD"]
    assert not [c for c in checks_of(env).get("budgets", []) if "does not apply" in c.detail]


def test_doctor_fails_a_broken_tokens_file_naming_the_entry(tmp_path):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[identity]]\nname = "bob"\ntoken_sha256 = "nope"\n')
    (check,) = checks_of(cli_env(tmp_path, BLOCKRUN_HTTP_TOKENS_FILE=str(tokens)))["identities"]
    assert check.status == doctor.FAIL and "identity 1 (bob)" in check.detail


def test_the_tokens_file_default_is_in_the_data_dir(tmp_path, monkeypatch, capsys):
    env = cli_env(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, env, "token", "add", "carol")
    assert code == 0, err
    assert str(Path(env["BLOCKRUN_DATA_DIR"]) / "tokens.toml") in out
    assert [i.name for i in read_file(Path(env["BLOCKRUN_DATA_DIR"]) / "tokens.toml")] == ["carol"]


def test_the_sandbox_never_books_pretend_money_in_the_teams_ledger(tmp_path, fresh_database):
    from blockrun_mcp.transports import service_for

    config = load_config({"HOME": str(tmp_path), "BLOCKRUN_LEDGER_URL": fresh_database})
    with service_for(config, sandbox=True) as service:
        assert service.config.ledger_url is None
        assert service.ledger.store.kind == "sqlite"
        assert service.config.data_dir == config.data_dir / "sandbox"
    with psycopg.connect(fresh_database) as conn:  # not even migrated: never opened
        assert conn.execute("SELECT to_regclass('payments')").fetchone()[0] is None
