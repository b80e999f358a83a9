"""The PostgreSQL test server (.ci/postgres.sh) and its fixtures (tests/support/postgres.py) work:
a real server on loopback, a fresh isolated database per test, and a restart that cuts every
connection and comes back with the data intact."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.support.postgres import SCRIPT, new_database, parse_exports


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKRUN_TEST_PG")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environment, **env},
        stdin=subprocess.DEVNULL,
    )


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


def test_the_server_is_a_real_postgresql_on_loopback(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    assert parts.scheme == "postgresql"
    assert parts.hostname == "127.0.0.1"
    with psycopg.connect(postgres_url) as conn:
        assert int(conn.execute("SHOW server_version_num").fetchone()[0]) >= 130000
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"


def test_a_fresh_database_is_empty_and_writable(fresh_database: str) -> None:
    assert tables(fresh_database) == []
    with psycopg.connect(fresh_database) as conn:
        conn.execute("CREATE TABLE spend (id bigserial PRIMARY KEY, atomic bigint NOT NULL)")
        conn.execute("INSERT INTO spend (atomic) VALUES (1500), (2500)")
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT sum(atomic) FROM spend").fetchone()[0] == 4000


def test_fresh_databases_are_isolated(postgres_url: str, fresh_database: str) -> None:
    with new_database(postgres_url) as other:
        assert other != fresh_database
        with psycopg.connect(fresh_database) as conn:
            conn.execute("CREATE TABLE ledger (note text)")
            conn.execute("INSERT INTO ledger VALUES ('first')")
        assert tables(other) == []
        with psycopg.connect(other) as conn:
            conn.execute("CREATE TABLE ledger (note text)")
            conn.execute("INSERT INTO ledger VALUES ('second')")
        for url, note in ((fresh_database, "first"), (other, "second")):
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT note FROM ledger").fetchall() == [(note,)]


def test_a_fresh_database_is_dropped_afterwards_even_while_connected(postgres_url: str) -> None:
    with new_database(postgres_url) as url:
        name = urlsplit(url).path.lstrip("/")
        lingering = psycopg.connect(url)  # left open: DROP ... WITH (FORCE) cuts it
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert found.fetchone()[0] == 0
    with pytest.raises(psycopg.OperationalError):
        lingering.execute("SELECT 1")
    lingering.close()


def test_a_restart_cuts_connections_and_the_server_comes_back(
    fresh_database: str, restart_postgres: Callable[[], None]
) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (7)")
        started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        restart_postgres()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > started
        assert conn.execute("SELECT v FROM kept").fetchall() == [(7,)]


def test_a_pool_fails_closed_during_a_restart_and_recovers(
    fresh_database: str, restart_postgres: Callable[[], None]
) -> None:
    with ConnectionPool(
        fresh_database, min_size=2, max_size=2, check=ConnectionPool.check_connection
    ) as pool:
        pool.wait(timeout=10)
        with pool.connection() as conn:
            restart_postgres()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        # The connection the restart cut is discarded; the pool's next one works.
        with pool.connection(timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_script_starts_restarts_and_stops_a_server_of_its_own() -> None:
    started = run_script("start")
    assert started.returncode == 0, started.stderr
    exports = parse_exports(started.stdout)
    directory = exports["BLOCKRUN_TEST_PG_DIR"]
    try:
        url = exports["BLOCKRUN_TEST_POSTGRES_URL"]
        assert os.path.isdir(exports["BLOCKRUN_TEST_PGDATA"])
        assert os.access(exports["BLOCKRUN_TEST_PG_CTL"], os.X_OK)
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE survives (v int)")
        # start again on the same directory: the same server, the same lines
        again = run_script("start", directory)
        assert again.returncode == 0, again.stderr
        assert parse_exports(again.stdout) == exports
        restarted = run_script("restart", directory)
        assert restarted.returncode == 0, restarted.stderr
        with psycopg.connect(url) as conn:
            conn.execute("SELECT * FROM survives")
        assert run_script("status", directory).returncode == 0
    finally:
        stopped = run_script("stop", directory)
    assert stopped.returncode == 0, stopped.stderr
    assert not os.path.exists(directory)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    # stopping what is already gone is not an error
    assert run_script("stop", directory).returncode == 0


def test_the_script_refuses_what_is_not_its_own(tmp_path) -> None:
    (tmp_path / "keep.txt").write_text("not a server")
    stopped = run_script("stop", str(tmp_path))
    assert stopped.returncode == 1
    assert "was not made by postgres.sh" in stopped.stderr
    assert (tmp_path / "keep.txt").exists()
    started = run_script("start", str(tmp_path))
    assert started.returncode == 1
    assert "is not empty" in started.stderr
    missing = run_script("start", BLOCKRUN_PG_BINDIR="/nonexistent")
    assert missing.returncode == 1
    assert "BLOCKRUN_PG_BINDIR=/nonexistent has no pg_ctl" in missing.stderr
