"""A stdio connection whose protocol era a timed-out probe does not decide.

A host in the SDKs' `auto` mode opens with a `server/discover` probe (2026-07-28) and, when no
answer comes in time (a server still starting on a busy machine), falls back to the
`initialize` handshake. The SDK's loop lets the first request it reads decide the era for
good: the late probe makes the connection 2026-07-28, and the `initialize` behind it is
refused (-32022), so a host that does not probe again never connects (seen with Claude Code).

Here, while every request so far has been a `server/discover` (a probe changes nothing on the
server), an `initialize` starts the connection again in the handshake era: the serving loop is
closed and a new one begins with that `initialize`. A late answer to the abandoned probe may
still reach the host, which ignores a response to an id it no longer waits for. Once any other
request has been served, the era stands, and an `initialize` is refused as before.
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.lowlevel.server import Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_dual_era_loop
from mcp.shared._context_streams import ContextSendStream, create_context_streams
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCRequest

PROBE = "server/discover"
HANDSHAKE = "initialize"


class _Borrowed:
    """The connection's write stream, lent to one serving loop: the loop closes what it was
    given when it ends, which must not close the wire for the loop after it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def send(self, item: SessionMessage) -> None:
        await self._inner.send(item)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> _Borrowed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


def _request_method(item: object) -> str | None:
    if isinstance(item, SessionMessage) and isinstance(item.message, JSONRPCRequest):
        return item.message.method
    return None


async def serve_connection(
    server: Server[Any],
    read_stream: Any,
    write_stream: Any,
    init_options: InitializationOptions,
) -> None:
    """`Server.run` for one stdio connection, begun again in the handshake era when an
    `initialize` follows nothing but probes."""
    async with server.lifespan(server) as lifespan_state:
        try:
            opening: SessionMessage | None = None
            while True:
                opening = await _serve_until_handshake(
                    server, read_stream, write_stream, lifespan_state, init_options, opening
                )
                if opening is None:
                    return
        finally:
            await write_stream.aclose()


async def _serve_until_handshake(
    server: Server[Any],
    read_stream: Any,
    write_stream: Any,
    lifespan_state: Any,
    init_options: InitializationOptions,
    opening: SessionMessage | None,
) -> SessionMessage | None:
    """Serves one loop, fed first with `opening`; returns the `initialize` that should begin
    the next one, or None when the client has gone."""
    feed: ContextSendStream[Any]
    feed, fed = create_context_streams[Any](0)
    handshake: SessionMessage | None = None

    async def relay() -> None:
        # (Items are passed on in this task's context: the stdio reader sets no context
        # variables for the handlers to see.)
        nonlocal handshake
        probes, others = 0, 0  # requests this loop has seen
        async with feed:
            if opening is not None:
                await feed.send(opening)
                others += 1
            async for item in read_stream:
                method = _request_method(item)
                if method == HANDSHAKE and probes and not others:
                    handshake = item
                    return  # ends this loop's input: it finishes, and the next one begins
                if method == PROBE:
                    probes += 1
                elif method is not None:
                    others += 1
                await feed.send(item)

    async with anyio.create_task_group() as group:
        group.start_soon(relay)
        await serve_dual_era_loop(
            server,
            fed,
            _Borrowed(write_stream),  # type: ignore[arg-type]
            lifespan_state=lifespan_state,
            init_options=init_options,
        )
        group.cancel_scope.cancel()  # the client is gone, or a new era begins
    return handshake
