"""Running the sandbox: in a background thread for tests and `--sandbox`, or blocking for the CLI.

The socket is bound before uvicorn starts, so port 0 yields a free port that is known (and
already accepting connections) by the time the context manager returns.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    # proto must be IPPROTO_TCP, not the default 0: asyncio only sets TCP_NODELAY on accepted
    # sockets whose proto says TCP, and without it Nagle + delayed ACK delay every response
    # (bench/README.md has the figure).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _PromptServer(uvicorn.Server):
    """uvicorn, but stopping in milliseconds rather than ~0.2 s.

    Stock uvicorn polls `should_exit` every 0.1 s and sleeps another 0.1 s while shutting down;
    with a fresh sandbox per test that alone would dominate a test run. This wakes the main
    loop as soon as `wake()` is called and polls in-flight requests at 10 ms while stopping.
    It uses uvicorn's `servers` and `server_state`, present since uvicorn 0.2x.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _wake_event: asyncio.Event | None = None

    def wake(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._wake_event is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                self._loop.call_soon_threadsafe(self._wake_event.set)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_event.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GRACEFUL_SHUTDOWN_SECONDS
        state = self.server_state
        while (state.connections or state.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for task in state.tasks:
            task.cancel()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


def _server(state: SandboxState, host: str, port: int) -> _PromptServer:
    config = uvicorn.Config(
        create_app(state),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = _PromptServer(config)
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
        self._server: _PromptServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api"

    @property
    def rpc_url(self) -> str:
        """The stand-in chain's JSON-RPC endpoint (BLOCKRUN_RPC_URL for a client of this sandbox)."""
        return f"{self.origin}/rpc"

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
            self._server.wake()
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
    origin = f"http://[{host}]:{actual_port}" if ":" in host else f"http://{host}:{actual_port}"
    url, rpc_url = f"{origin}/api", f"{origin}/rpc"
    print(
        f"BlockRun sandbox gateway ({state.network}, fake USDC) listening on {url}; "
        f"point a client at it with: export BLOCKRUN_API_URL={url}\n"
        f"Its stand-in chain answers JSON-RPC on {rpc_url}: export BLOCKRUN_RPC_URL={rpc_url}",
        flush=True,
    )
    server = _server(state, host, actual_port)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown; stopping is the intent
    finally:
        sock.close()
