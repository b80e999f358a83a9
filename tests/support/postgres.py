"""A real PostgreSQL server for the tests, and a fresh database per test.

The server is the one `.ci/postgres.sh start` runs: `.ci/run` starts it and exports its
`BLOCKRUN_TEST_*` names (see the script's header); without them, the `postgres_server` fixture
starts one for the test session and stops it at the end, so a plain `pytest` works. A server that
cannot be installed or started fails the tests that need it, with the script's reason: they are
never skipped.

Fixtures (registered in tests/conftest.py):

- `postgres_url` (session): the server's URL, `postgresql://blockrun@127.0.0.1:PORT/blockrun_test`.
- `fresh_database`: the URL of a new, empty database, dropped `WITH (FORCE)` after the test.
- `restart_postgres`: a function that restarts the server in place (same data, same port; every
  open connection is cut) and returns once it accepts connections again.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "postgres.sh"
URL_VARIABLE = "BLOCKRUN_TEST_POSTGRES_URL"


@dataclass(frozen=True)
class PostgresServer:
    """Where the test server is and how to restart it (the script's exported names)."""

    url: str
    directory: str | None = None  # BLOCKRUN_TEST_PG_DIR: what `postgres.sh stop` removes
    pgdata: str | None = None  # BLOCKRUN_TEST_PGDATA
    pg_ctl: str | None = None  # BLOCKRUN_TEST_PG_CTL
    os_user: str | None = None  # BLOCKRUN_TEST_PG_OS_USER: pg_ctl runs as this user
    log: str | None = None  # BLOCKRUN_TEST_PG_LOG

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> PostgresServer:
        return cls(
            url=environ[URL_VARIABLE],
            directory=environ.get("BLOCKRUN_TEST_PG_DIR") or None,
            pgdata=environ.get("BLOCKRUN_TEST_PGDATA") or None,
            pg_ctl=environ.get("BLOCKRUN_TEST_PG_CTL") or None,
            os_user=environ.get("BLOCKRUN_TEST_PG_OS_USER") or None,
            log=environ.get("BLOCKRUN_TEST_PG_LOG") or None,
        )


def parse_exports(text: str) -> dict[str, str]:
    """`export NAME=value` lines, as `postgres.sh start` prints them, as a dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            values[name] = value
    return values


def _script_environment() -> dict[str, str]:
    # The script picks its own directory: a stale BLOCKRUN_TEST_PG_DIR must not steer it.
    return {k: v for k, v in os.environ.items() if not k.startswith("BLOCKRUN_TEST_PG")}


def start_server() -> PostgresServer:
    """Starts a server with `.ci/postgres.sh start`; fails the calling test if it cannot."""
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), "start"],
            capture_output=True,
            text=True,
            timeout=900,  # installing PostgreSQL on a fresh machine takes a minute or two
            env=_script_environment(),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"could not run {SCRIPT} start: {error}", pytrace=False)
    exports = parse_exports(done.stdout)
    if done.returncode != 0 or URL_VARIABLE not in exports:
        pytest.fail(
            f"the tests need a PostgreSQL server and `bash {SCRIPT} start` could not start one "
            f"(exit {done.returncode}):\n{done.stderr.strip()}\n"
            f"Install PostgreSQL 13+ (Debian: apt-get install postgresql), or point "
            f"{URL_VARIABLE} at a server.",
            pytrace=False,
        )
    return PostgresServer.from_environment(exports)


def stop_server(server: PostgresServer) -> None:
    """Stops a server `start_server` started and removes its directory."""
    if server.directory is None:
        return
    done = subprocess.run(
        ["bash", str(SCRIPT), "stop", server.directory],
        capture_output=True,
        text=True,
        timeout=120,
        env=_script_environment(),
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{SCRIPT} stop {server.directory} failed: {done.stderr.strip()}")


def wait_until_ready(url: str, timeout: float = 30.0) -> None:
    """Returns once `url` accepts a connection and answers a query; raises after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.Error as error:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"PostgreSQL at {url} did not accept connections within {timeout:g} s: {error}"
                ) from error
            time.sleep(0.05)


def restart_server(server: PostgresServer, timeout: float = 60.0) -> None:
    """Restarts the server in place (`pg_ctl restart -m fast`: open connections are cut, the
    data and the port stay) and returns once it accepts connections again."""
    if not (server.pgdata and server.pg_ctl):
        raise RuntimeError(
            f"cannot restart the PostgreSQL server at {server.url}: BLOCKRUN_TEST_PGDATA and "
            "BLOCKRUN_TEST_PG_CTL are not set (start it with .ci/postgres.sh, which exports them)"
        )
    command = [server.pg_ctl, "restart", "-D", server.pgdata, "-m", "fast", "-w", "-s"]
    command += ["-t", str(int(timeout))]
    if server.log:
        command += ["-l", server.log]
    if os.geteuid() == 0 and server.os_user and server.os_user != "root":
        command = ["runuser", "-u", server.os_user, "--", *command]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        cwd="/",  # the server's user may not be allowed into the current directory
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        tail = ""
        if server.log and Path(server.log).is_file():
            tail = "\n".join(Path(server.log).read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(
            f"{shlex.join(command)} failed (exit {done.returncode}): "
            f"{(done.stdout + done.stderr).strip()}\n{tail}"
        )
    wait_until_ready(server.url, timeout)


def database_url(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextmanager
def new_database(url: str) -> Iterator[str]:
    """A new, empty database on the server at `url`, yielded as its URL; dropped after, even with
    connections still open to it."""
    name = f"test_{secrets.token_hex(8)}"
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if conn.info.server_version >= 150000:
            # Copying template1's files is 4x faster than WAL-logging them block by block (the
            # default since 15), and fsync is off on the test server anyway.
            create += sql.SQL(" STRATEGY FILE_COPY")
        conn.execute(create)
    try:
        yield database_url(url, name)
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def own_server() -> Iterator[PostgresServer]:
    """A server started here (`.ci/postgres.sh start`), ready, and stopped afterwards."""
    server = start_server()
    try:
        wait_until_ready(server.url, timeout=30)
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The test session's PostgreSQL server: CI's (`BLOCKRUN_TEST_POSTGRES_URL`), else one started
    here with `.ci/postgres.sh` and stopped when the session ends."""
    if os.environ.get(URL_VARIABLE):
        server = PostgresServer.from_environment(os.environ)
        try:
            wait_until_ready(server.url, timeout=30)
        except TimeoutError as error:
            pytest.fail(f"{URL_VARIABLE} is set, but {error}", pytrace=False)
        yield server
        return
    with own_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The test server's URL (its superuser, its `blockrun_test` database)."""
    return postgres_server.url


@pytest.fixture(scope="session")
def restartable_postgres_server() -> Iterator[PostgresServer]:
    """A server of this test process's own, for the tests that restart it: a restart cuts every
    connection to its server, and the shared one serves the other pytest-xdist worker's tests
    at the same moment. Started on first use, stopped when the session ends."""
    with own_server() as server:
        yield server


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest, postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database of its own, dropped after the test; on the restartable
    server when the test also asks for `restart_postgres`."""
    server_url = postgres_url
    if "restart_postgres" in request.fixturenames:
        server_url = request.getfixturevalue("restartable_postgres_server").url
    with new_database(server_url) as url:
        yield url


@pytest.fixture
def restart_postgres(restartable_postgres_server: PostgresServer) -> Callable[[], None]:
    """`restart_postgres()` restarts the test's server (the one its `fresh_database` is on) in
    place and returns once it is back."""

    def restart() -> None:
        restart_server(restartable_postgres_server)

    return restart


@pytest.fixture
def within_one_utc_day() -> None:
    """Daily budgets reset at 00:00 UTC: a test of them that ran across midnight would see two
    days' budgets. One that would start within two minutes of midnight waits until it passes."""
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    left = (midnight - now).total_seconds()
    if left < 120:
        time.sleep(left + 1)
