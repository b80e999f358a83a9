"""`blockrun-mcp dashboard`: the page on 127.0.0.1, for whoever has the URL it prints.

The URL carries a random token made at start (it dies with the process); without it, or with a
Host that is not 127.0.0.1 (or localhost) and this port, a request is refused. The ledger is
opened read-only, as `blockrun-mcp spend` opens it: the page never settles, releases or rewrites
anything, while servers keep using the same ledger. A ledger that does not exist yet is looked
for again at each refresh, so a first paid call shows up without a restart.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import sys
import threading
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from blockrun_mcp.dashboard.web import (
    DashboardApp,
    Refusal,
    SummaryUnavailable,
    Viewer,
    single_token,
)
from blockrun_mcp.errors import BlockrunError

if TYPE_CHECKING:
    from blockrun_mcp.config import Config
    from blockrun_mcp.dashboard.data import Dashboard
    from blockrun_mcp.identities import Identity
    from blockrun_mcp.ledger import Ledger

HOST = "127.0.0.1"
TOKEN_BYTES = 32
# Ctrl-C: open connections (a browser's keep-alive, a refresh in flight) get this long.
SHUTDOWN_SECONDS = 1
REFUSAL = Refusal(
    403,
    "Forbidden: open the URL `blockrun-mcp dashboard` printed; it carries this dashboard's token.",
)


class LedgerReader:
    """The ledger `spend` would read (PostgreSQL when BLOCKRUN_LEDGER_URL says so, else the
    SQLite file in the data dir, the sandbox's with `sandbox`), opened read-only on first use."""

    def __init__(self, config: Config, *, sandbox: bool) -> None:
        from blockrun_mcp.reports import ledger_path

        self.data_dir = config.data_dir
        self.url = None if sandbox else config.ledger_url
        self.path: Path = ledger_path(config.data_dir, sandbox=sandbox)
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        if self._ledger is not None:
            return self._ledger.store.where
        if self.url is not None:
            from blockrun_mcp.ledger_postgres import shown

            return shown(self.url.get_secret_value())
        return str(self.path)

    def get(self) -> Ledger | None:
        """The ledger, or None while there is none (no paid call yet). Raises BlockrunError or
        sqlite3.Error when it cannot be opened."""
        from blockrun_mcp.ledger import Ledger

        with self._lock:
            if self._ledger is None:
                if self.url is not None:
                    self._ledger = Ledger.open(
                        self.url.get_secret_value(), self.data_dir, read_only=True
                    )
                elif self.path.exists():
                    self._ledger = Ledger(self.path, read_only=True)
            return self._ledger

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None


def _identities(config: Config) -> list[Identity]:
    """The tokens file's identities, for their budgets; none if there is no usable file (the
    HTTP server, not this page, is where a broken file is reported)."""
    from blockrun_mcp.identities import IdentitiesError, read_file

    if config.tokens_file is None:
        return []
    try:
        return read_file(config.tokens_file)
    except IdentitiesError:
        return []


def local_app(
    config: Config, reader: LedgerReader, token: str, port: int, *, sandbox: bool
) -> DashboardApp:
    from blockrun_mcp.dashboard.data import Budgets, View, build_dashboard
    from blockrun_mcp.off_loop import off_loop
    from blockrun_mcp.transports import transport_security

    viewer = Viewer("local")

    def build(seen: Viewer) -> Dashboard:
        try:
            return build_dashboard(
                reader.get(),
                reader.where,
                Budgets.of(config, _identities(config)),
                View(viewer=seen.name, identity=seen.identity, sandbox=sandbox),
                config.network,
            )
        except BlockrunError as exc:
            raise SummaryUnavailable(exc.message) from None
        except (sqlite3.Error, OSError) as exc:
            raise SummaryUnavailable(
                f"the ledger {reader.where} cannot be read ({exc}); `blockrun-mcp doctor` says more"
            ) from None

    async def summary(seen: Viewer) -> Dashboard:
        return await off_loop(build, seen)

    return DashboardApp(
        prefix="",
        authenticate=single_token(token, viewer),
        summary=summary,
        # Host must be a loopback name with exactly this port (DNS rebinding); so must Origin.
        security=transport_security(HOST, port),
        refusal=REFUSAL,
        # Per port: cookies are shared by every port of a host, and two dashboards may run.
        cookie=f"blockrun_dashboard_{port}",
    )


def serve_dashboard(
    config: Config,
    *,
    port: int = 0,
    open_browser: bool = True,
    sandbox: bool = False,
    out: TextIO | None = None,
) -> None:
    """Serve until Ctrl-C (uvicorn stops on SIGINT and SIGTERM, then KeyboardInterrupt is the
    caller's to swallow). Port 0: any free one; the URL printed names the real one."""
    import uvicorn

    from blockrun_mcp.transports import listening_sockets

    out = out or sys.stdout
    reader = LedgerReader(config, sandbox=sandbox)
    if reader.url is not None:
        try:
            reader.get()  # a database that cannot be reached is said now, not on the page
        except BlockrunError as exc:
            raise SystemExit(f"blockrun-mcp: {exc.message}") from None
    try:
        sockets = listening_sockets(HOST, port)
    except OSError as exc:
        reader.close()
        raise SystemExit(
            f"blockrun-mcp: cannot listen on {HOST}:{port}: {exc.strerror or exc}"
        ) from None
    for sock in sockets:
        sock.listen(128)  # before the URL is printed: whoever opens it at once gets an answer
    port = sockets[0].getsockname()[1]
    token = secrets.token_urlsafe(TOKEN_BYTES)
    app = local_app(config, reader, token, port, sandbox=sandbox)
    url = f"http://{HOST}:{port}/?token={token}"
    print(
        f"blockrun-mcp dashboard: {url}\n"
        f"Read-only, from {reader.where}{' (sandbox)' if sandbox else ''}. "
        "The token in the URL is this run's own; Ctrl-C stops it.",
        file=out,
        flush=True,
    )
    if open_browser:
        # In a thread: a text-mode browser would otherwise hold this one until it quits.
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        )
    )
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        reader.close()
