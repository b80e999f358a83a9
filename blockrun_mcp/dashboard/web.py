"""The dashboard over HTTP: one page and its JSON, read-only, behind a token and a Host check.

Served two ways, by the same app: `blockrun-mcp dashboard` on 127.0.0.1 (one random token, made
when it starts, in the URL it prints), and a team server's `/dashboard` (each identity's own
bearer token). Every request is checked in this order:

1. Host (and Origin, when a browser sends one) must name this server: a page on another site
   that rebinds its DNS name to 127.0.0.1 reaches the port, but with its own name in Host
   (421), so it can read nothing.
2. The token: `Authorization: Bearer`, else `?token=`, else the cookie a `?token=` set. A
   browser cannot send a bearer header when it opens a URL, so the first page load carries the
   token in the query; the answer is a redirect to the same page without it, setting an
   HttpOnly, SameSite=Strict cookie scoped to the dashboard's path, so the token leaves the
   address bar and the history, and the page's own requests carry the cookie. The first token
   presented decides: a wrong one is refused even beside a good cookie.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from blockrun_mcp.dashboard.page import content_security_policy, page

COOKIE = "blockrun_dashboard"
API = "/api/summary"
# Sent with every answer: nothing is cached or framed, and no URL leaks in a Referer.
SAFE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and whose payments they may see (`identity` None: everyone's)."""

    name: str
    identity: str | None = None


# A presented token -> who it belongs to, or None (refused). Must compare in constant time.
Authenticate = Callable[[str], Viewer | None]
Summary = Callable[[Viewer], Awaitable[BaseModel]]


class SummaryUnavailable(Exception):
    """The ledger cannot be read just now; the message says why, for the page to show."""


@dataclass(frozen=True)
class Refusal:
    """What a request without a good token is told."""

    status: int
    text: str
    headers: dict[str, str] | None = None


def single_token(expected: str, viewer: Viewer) -> Authenticate:
    """The local dashboard's check: its one random token, compared in constant time."""
    wanted = expected.encode()

    def check(token: str) -> Viewer | None:
        return viewer if hmac.compare_digest(token.encode(), wanted) else None

    return check


class DashboardApp:
    """ASGI app for the page at `prefix` (`""`: the root) and its JSON at `prefix + API`."""

    def __init__(
        self,
        *,
        prefix: str,
        authenticate: Authenticate,
        summary: Summary,
        security: Any,  # mcp's TransportSecuritySettings: the Host and Origin this server answers
        refusal: Refusal,
        cookie: str = COOKIE,
        open_to: Callable[[], Viewer | None] = lambda: None,
    ) -> None:
        from mcp.server.transport_security import TransportSecurityMiddleware

        self.prefix = prefix.rstrip("/")
        self.page_paths = {self.prefix or "/", self.prefix + "/"}
        self.api_path = self.prefix + API
        self.authenticate = authenticate
        self.summary = summary
        self.guard = TransportSecurityMiddleware(security)
        self.refusal = refusal
        self.cookie = cookie
        # Who may look without any token (a loopback team server with no identities), else None.
        self.open_to = open_to

    def handles(self, path: str) -> bool:
        """Whether `path` is this app's (all of them at the root; else the prefix's subtree)."""
        return not self.prefix or path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # plain HTTP only: a WebSocket is turned away
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan: nothing to start or stop
            return
        response = await self._answer(Request(scope, receive))
        for name, value in SAFE_HEADERS.items():
            response.headers.setdefault(name, value)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        refused = await self.guard.validate_request(request)
        if refused is not None:  # 421 Invalid Host header, 403 Invalid Origin header
            return refused
        path = request.url.path
        if path not in self.page_paths and path != self.api_path:
            return PlainTextResponse("Not found.", status_code=404)
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse(
                "The dashboard is read-only.", status_code=405, headers={"Allow": "GET, HEAD"}
            )
        viewer, from_query = self._viewer(request)
        if viewer is None:
            return PlainTextResponse(
                self.refusal.text, status_code=self.refusal.status, headers=self.refusal.headers
            )
        if path == self.api_path:
            try:
                document = await self.summary(viewer)
            except SummaryUnavailable as exc:
                return PlainTextResponse(str(exc), status_code=503)
            return JSONResponse(document.model_dump(mode="json"))
        if from_query is not None:
            return self._into_cookie(request, from_query)
        return Response(
            page("http", api=self.api_path),
            media_type="text/html",
            headers={"Content-Security-Policy": content_security_policy()},
        )

    def _viewer(self, request: Request) -> tuple[Viewer | None, str | None]:
        """Who presents which token (the first one found decides), and the token if it came in
        the query (the page then moves it into the cookie)."""
        scheme, _, bearer = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and bearer.strip():
            return self.authenticate(bearer.strip()), None
        query = request.query_params.get("token")
        if query is not None:
            return (self.authenticate(query) if query else None), query
        cookie = request.cookies.get(self.cookie)
        if cookie:
            return self.authenticate(unquote(cookie)), None
        return self.open_to(), None

    def _into_cookie(self, request: Request, token: str) -> Response:
        """The page again, without the token in its URL; the token in a cookie for this path."""
        page_path = self.prefix or "/"
        response = RedirectResponse(page_path, status_code=303)
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        secure = request.url.scheme == "https" or forwarded == "https"
        response.set_cookie(
            self.cookie,
            quote(token, safe=""),  # any BLOCKRUN_HTTP_TOKEN, whatever characters it has
            path=page_path,
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        return response
