"""Which MCP session ids this server issued over HTTP, and to whom: only those get a session
budget, and only their opener may use them.

A client sends `Mcp-Session-Id` on every request, and nothing stops it from making one up or
copying another person's. A made-up id must not open a fresh session budget (one per invented id
would be no limit at all), so the ids are learned from this server's own answers: the response
that opens a session carries the id the SDK chose, and the request that opened it carries the
identity the transport authenticated. Another identity's request with that id is answered exactly
as an unknown id is, before the SDK sees it. Each identity may hold at most SESSIONS_PER_IDENTITY
sessions, so one person cannot take the SDK's whole limit from everyone else.

Sessions ended by their client are forgotten with their budgets, as are those of a revoked token.
At most MAX_SESSIONS are remembered, the least recently used going first, so the map cannot grow
without bound.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
# The MCP SDK refuses to open more sessions than this at once.
MAX_SESSIONS = 10_000
# One identity's share: far more than one person's hosts hold open, far less than MAX_SESSIONS.
SESSIONS_PER_IDENTITY = 100
# The SDK ends a session after this long with no request in flight (transports passes it to the
# SDK, so both agree). It does not say so, so a session is counted until this, plus a margin,
# has passed here too: never forgotten while the SDK may still serve it.
SESSION_IDLE_SECONDS = 30 * 60
IDLE_MARGIN_SECONDS = 60
# Where the transport's authentication leaves the identity of the request (transports.IdentityAuth):
# in the ASGI scope, which no client can write to.
IDENTITY_SCOPE_KEY = "blockrun.identity"
# Whom a session belongs to without tokens: the one local user (ledger.DEFAULT_IDENTITY).
ANONYMOUS = "default"

# An identity: its name, and the hash of the token that proved it (None without tokens). A new
# token for the same name is another credential: the old token's sessions end with it.
Credential = tuple[str, str | None]


@dataclass
class _Session:
    credential: Credential
    in_flight: int = 0
    last_active: float = 0.0


class IssuedSessions:
    """The session ids this server issued and has not seen end, most recently used last, each
    with the identity that opened it."""

    def __init__(
        self,
        *,
        limit: int = MAX_SESSIONS,
        per_identity: int | None = SESSIONS_PER_IDENTITY,
        idle_seconds: float | None = SESSION_IDLE_SECONDS,
        on_forget: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._open: Counter[str] = Counter()  # issued sessions per identity name
        self._opening: Counter[str] = Counter()  # requests admitted to open one, not yet answered
        self.limit = limit
        self.per_identity = per_identity
        self.idle_seconds = idle_seconds
        self.on_forget = on_forget
        self.clock = clock

    def issue(self, session_id: str, credential: Credential = (ANONYMOUS, None)) -> None:
        if session_id in self._sessions:  # not from the SDK's random ids; counted once anyway
            self._count(self._sessions[session_id].credential[0], -1)
        self._count(credential[0], +1)
        self._sessions[session_id] = _Session(credential, last_active=self.clock())
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > self.limit:
            self._drop(next(iter(self._sessions)))

    def knows(self, session_id: str) -> bool:
        if session_id not in self._sessions:
            return False
        self._sessions.move_to_end(session_id)
        return True

    def owner(self, session_id: str) -> str | None:
        """The name of the identity that opened this session, or None for an id not issued here."""
        session = self._sessions.get(session_id)
        return session.credential[0] if session is not None else None

    def foreign_to(self, session_id: str, credential: Credential) -> bool:
        """Whether this id was issued here to someone else (an unknown id is the SDK's to answer)."""
        session = self._sessions.get(session_id)
        return session is not None and session.credential != credential

    def end(self, session_id: str) -> None:
        if session_id in self._sessions:
            self._drop(session_id)

    def keep_only(self, credentials: Iterable[Credential]) -> None:
        """Forget every session whose opener's token is no longer valid (revoked or replaced)."""
        valid = set(credentials)
        for session_id in [i for i, s in self._sessions.items() if s.credential not in valid]:
            self._drop(session_id)

    # --- one identity's share ------------------------------------------------------------------

    def admit(self, name: str) -> bool:
        """Let one more request open a session for `name`, if it has room; counted until
        `admitted` is called, so parallel openings cannot overshoot the share."""
        if self.per_identity is not None and self._held(name) >= self.per_identity:
            self._forget_idle(name)
            if self._held(name) >= self.per_identity:
                return False
        self._opening[name] += 1
        return True

    def admitted(self, name: str) -> None:
        """The admitted request was answered: its session, if any, is now issued (or none was)."""
        self._opening[name] -= 1
        if self._opening[name] <= 0:
            del self._opening[name]

    def open_count(self, name: str) -> int:
        return self._open[name]

    # --- activity, mirroring the SDK's idle timeout ---------------------------------------------

    def begin(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.in_flight += 1

    def finish(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.in_flight = max(0, session.in_flight - 1)
            session.last_active = self.clock()

    def __len__(self) -> int:
        return len(self._sessions)

    def _held(self, name: str) -> int:
        return self._open[name] + self._opening[name]

    def _forget_idle(self, name: str) -> None:
        """Forget `name`'s sessions the SDK has ended for idleness: it announces no such end, and
        without this a client that crashed would count against its owner for good."""
        if self.idle_seconds is None:
            return
        horizon = self.clock() - self.idle_seconds - IDLE_MARGIN_SECONDS
        for session_id, session in list(self._sessions.items()):
            idle = session.in_flight == 0 and session.last_active < horizon
            if session.credential[0] == name and idle:
                self._drop(session_id)

    def _count(self, name: str, delta: int) -> None:
        self._open[name] += delta
        if self._open[name] <= 0:
            del self._open[name]

    def _drop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id)
        self._count(session.credential[0], -1)
        if self.on_forget is not None:
            self.on_forget(session_id)


def _header(headers: Any, name: bytes) -> str | None:
    """The first value, as the SDK reads it: a second copy of a header changes nothing."""
    for key, value in headers or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def jsonrpc_error(message: str, status: int, code: int = INVALID_REQUEST) -> Response:
    """A JSON-RPC error with no request id, built as the SDK's session manager builds its
    refusals (streamable_http_manager._error_response): the same body and headers, so a refusal
    made here cannot be told from the SDK's own, and MCP clients show its message."""
    error = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message))
    body = error.model_dump_json(by_alias=True, exclude_unset=True)
    return Response(body, status_code=status, media_type="application/json")


def unknown_session() -> Response:
    """What the SDK answers an id it does not know, or one another credential opened."""
    return jsonrpc_error("Session not found", 404)


def _too_many(name: str, cap: int | None) -> Response:
    return jsonrpc_error(
        f"Too many open MCP sessions for {name!r}: {cap} are open, the most one identity may "
        "hold on this server. Close the sessions you no longer use (a client ends its session "
        "when it shuts down, with an HTTP DELETE), or wait: a session idle for "
        f"{SESSION_IDLE_SECONDS // 60} minutes ends by itself.",
        429,
    )


class SessionWatch:
    """ASGI middleware: learns issued session ids (and their openers) from the responses that
    carry them, refuses another identity's id as unknown, and holds each identity to its share."""

    def __init__(self, app: Any, sessions: IssuedSessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _reaches_sessions(scope.get("headers")):
            await self.app(scope, receive, send)
            return
        credential = _credential(scope)
        asked = _header(scope.get("headers"), SESSION_HEADER)
        if asked is not None:
            await self._within_session(asked, credential, scope, receive, send)
        elif scope.get("method") == "POST":
            await self._opening(credential, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _within_session(
        self, asked: str, credential: Credential, scope: Any, receive: Any, send: Any
    ) -> None:
        if self.sessions.foreign_to(asked, credential):
            await unknown_session()(scope, receive, send)
            return
        method = scope.get("method", "")

        async def watch(message: Any) -> None:
            # Ended by its client. (Sessions the SDK let expire are not announced; they are
            # forgotten once idle long enough. A 404 is not taken as an end: the SDK gives one for
            # many reasons.)
            ended = message["type"] == "http.response.start" and message["status"] < 300
            if ended and method == "DELETE":
                self.sessions.end(asked)
            await send(message)

        self.sessions.begin(asked)
        try:
            await self.app(scope, receive, watch)
        finally:
            self.sessions.finish(asked)

    async def _opening(self, credential: Credential, scope: Any, receive: Any, send: Any) -> None:
        name = credential[0]
        if not self.sessions.admit(name):
            await _too_many(name, self.sessions.per_identity)(scope, receive, send)
            return
        issued: str | None = None

        async def watch(message: Any) -> None:
            nonlocal issued
            if message["type"] == "http.response.start" and message["status"] < 400:
                issued = _header(message.get("headers"), SESSION_HEADER)
                if issued is not None:  # the SDK opened a session and named it
                    self.sessions.issue(issued, credential)
                    self.sessions.begin(issued)  # this very request is its first in flight
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.sessions.admitted(name)
            if issued is not None:
                self.sessions.finish(issued)


def _reaches_sessions(headers: Any) -> bool:
    """Whether the SDK routes this request to its handshake-era sessions. A 2026-07-28 request
    (any version it does not know as a handshake one) goes where no session id means anything."""
    version = _header(headers, VERSION_HEADER)
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


def _credential(scope: Any) -> Credential:
    identity = scope.get(IDENTITY_SCOPE_KEY)
    if identity is None:
        return (ANONYMOUS, None)
    return (identity.name, identity.token_sha256)
