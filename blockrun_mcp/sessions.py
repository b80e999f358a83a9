"""Which MCP session ids this server issued over HTTP: only those get a session budget.

A client sends `Mcp-Session-Id` on every request, and nothing stops it from making one up. A
made-up id must not open a fresh session budget (one per invented id would be no limit at all),
so the ids are learned from this server's own answers: the response that opens a session
carries the id the SDK chose. Sessions ended by their client are forgotten with their budgets, and at most MAX_SESSIONS are remembered, the least recently used
going first, so the map cannot grow without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

SESSION_HEADER = b"mcp-session-id"
# The MCP SDK refuses to open more sessions than this at once.
MAX_SESSIONS = 10_000


class IssuedSessions:
    """The session ids this server issued and has not seen end, most recently used last."""

    def __init__(
        self, *, limit: int = MAX_SESSIONS, on_forget: Callable[[str], None] | None = None
    ) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.limit = limit
        self.on_forget = on_forget

    def issue(self, session_id: str) -> None:
        self._ids[session_id] = None
        self._ids.move_to_end(session_id)
        while len(self._ids) > self.limit:
            oldest, _ = self._ids.popitem(last=False)
            self._forgotten(oldest)

    def knows(self, session_id: str) -> bool:
        if session_id not in self._ids:
            return False
        self._ids.move_to_end(session_id)
        return True

    def end(self, session_id: str) -> None:
        if session_id in self._ids:
            del self._ids[session_id]
            self._forgotten(session_id)

    def __len__(self) -> int:
        return len(self._ids)

    def _forgotten(self, session_id: str) -> None:
        if self.on_forget is not None:
            self.on_forget(session_id)


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class SessionWatch:
    """ASGI middleware: learns issued session ids from the responses that carry them."""

    def __init__(self, app: Any, sessions: IssuedSessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asked = _header(scope.get("headers"), SESSION_HEADER)
        method = scope.get("method", "")

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                self._learn(asked, method, message["status"], message.get("headers"))
            await send(message)

        await self.app(scope, receive, watch)

    def _learn(self, asked: str | None, method: str, status: int, headers: Any) -> None:
        answered = _header(headers, SESSION_HEADER)
        if asked is None and answered is not None and status < 400:
            self.sessions.issue(answered)  # the SDK opened a session and named it
        elif asked is not None and method == "DELETE" and status < 300:
            # Ended by its client. (Sessions the SDK let expire are not announced; they age out
            # of the map instead. A 404 is not taken as an end: anyone can provoke one.)
            self.sessions.end(asked)
