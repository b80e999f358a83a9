"""Cutting connections on purpose, the way a crashed gateway or an impatient proxy does.

ASGI has no "abort" message, so the response is started and then an exception is raised: uvicorn
then closes the socket mid-response and the client sees a protocol or read error. A logging
filter keeps those deliberate exceptions out of the server log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send


class SimulatedDrop(Exception):
    """Raised to make the server abort a connection (a sandbox fault, not a bug)."""


class DroppedResponse(Response):
    """Sends headers and the first bytes of a body it promised to be longer, then aborts."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=200, headers=headers, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        partial = b'{"id":"chatcmpl-'
        raw_headers = [(k, v) for k, v in self.raw_headers if k.lower() != b"content-length"] + [
            (b"content-length", b"4096")
        ]
        await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        await send({"type": "http.response.body", "body": partial, "more_body": True})
        raise SimulatedDrop("connection dropped after settlement (sandbox fault)")


def cut_stream(
    events: Iterable[bytes], keep: int, headers: dict[str, str] | None = None
) -> StreamingResponse:
    """A server-sent-event stream that delivers `keep` events, then cuts the connection."""

    async def body() -> AsyncIterator[bytes]:
        for index, event in enumerate(events):
            if index >= keep:
                break
            yield event
        raise SimulatedDrop(f"stream cut after {keep} chunks (sandbox fault)")

    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _is_simulated(exc: BaseException | None) -> bool:
    if isinstance(exc, SimulatedDrop):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_simulated(inner) for inner in exc.exceptions)
    return exc is not None and (_is_simulated(exc.__cause__) or _is_simulated(exc.__context__))


class QuietSimulatedDrops(logging.Filter):
    """Drops log records whose exception is a deliberate SimulatedDrop."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_simulated(exc)


def quiet_simulated_drops() -> None:
    """Install the filter once on uvicorn's error logger."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietSimulatedDrops) for f in logger.filters):
        logger.addFilter(QuietSimulatedDrops())
