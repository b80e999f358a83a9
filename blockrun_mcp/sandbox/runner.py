"""Running the sandbox: in a background thread for tests and `--sandbox`, or blocking for the CLI.

The socket is bound before uvicorn starts, so port 0 yields a free port that is known (and
already accepting connections) by the time the context manager returns.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import anyio
import uvicorn

from blockrun_mcp.sandbox.app import create_app
from blockrun_mcp.sandbox.drops import quiet_simulated_drops
from blockrun_mcp.sandbox.state import SandboxState

START_TIMEOUT_SECONDS = 10.0
# In-flight requests (a slow fault, a long poll) get this long to finish when the server stops.
GRACEFUL_SHUTDOWN_SECONDS = 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server(state: SandboxState, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(state),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    quiet_simulated_drops()  # after Config, which (re)configures uvicorn's loggers
    return server


class SandboxServer:
    """A sandbox gateway on a loopback port, served by uvicorn in a daemon thread."""

    def __init__(
        self, state: SandboxState | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = state if state is not None else SandboxState()
        self.host = host
        self._requested_port = port
        self.port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api"

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._socket = _bind(self.host, self._requested_port)
        self.port = self._socket.getsockname()[1]
        self._server = _server(self.state, self.host, self.port)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"blockrun-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox gateway did not start on {self.base_url}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
        if self._socket is not None:
            self._socket.close()
        self._server, self._thread, self._socket = None, None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)


def run_sandbox(host: str, port: int, network: str = "base") -> None:
    """Serve a sandbox gateway until interrupted (Ctrl-C), for `blockrun-mcp sandbox`."""
    state = SandboxState(network=network)
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    url = f"http://{host}:{actual_port}/api"
    print(
        f"BlockRun sandbox gateway ({state.network}, fake USDC) listening on {url}; "
        f"point a client at it with: export BLOCKRUN_API_URL={url}",
        flush=True,
    )
    server = _server(state, host, actual_port)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
