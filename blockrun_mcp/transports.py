"""Serving the MCP server over stdio or Streamable HTTP, with the sandbox wired in on request."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from blockrun_mcp.config import Config, ConfigError
from blockrun_mcp.identities import (
    RECHECK_SECONDS,
    Identities,
    IdentitiesError,
    Identity,
    LiveIdentities,
)
from blockrun_mcp.sessions import IDENTITY_SCOPE_KEY, SESSIONS_PER_IDENTITY, jsonrpc_error

if TYPE_CHECKING:
    from blockrun_mcp.service import BlockrunService

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
IDENTITY = b"x-blockrun-identity"  # server.IDENTITY_HEADER
# What a browser puts in Host for each loopback name: a page may reach the server by any of them.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
MIN_TOKEN_CHARS = 16
SANDBOX_FUNDING = (
    "Sandbox: a throwaway wallet the built-in sandbox gateway funds with $10 of pretend USDC."
)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def service_for(
    config: Config, *, sandbox: bool, video_poll_interval: float | None = None
) -> Iterator[BlockrunService]:
    """The service, talking to the real gateway, or to an in-process sandbox with a throwaway wallet.

    Sandbox spending goes to its own ledger and media folder, so pretend money never counts
    against the user's real daily budget.
    """
    from blockrun_mcp.service import BlockrunService, ServiceOptions

    if not sandbox:
        yield BlockrunService(config)
        return
    from blockrun_mcp.sandbox import SandboxServer, SandboxState
    from blockrun_mcp.wallet import throwaway_wallet

    # The sandbox ledger lives in a subfolder; mkdir(parents=True) would create the user's data
    # dir itself with the default mode, so make it private first.
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with SandboxServer(SandboxState(network=config.network)) as gateway:
        sandbox_config = config.model_copy(
            update={
                "api_url": gateway.base_url,
                "rpc_url": gateway.rpc_url,  # its chain: balances and used nonces, as settled
                "data_dir": config.data_dir / "sandbox",
                "output_dir": config.output_dir / "sandbox",
                # Never the team's PostgreSQL ledger: pretend money in a real ledger would count.
                "ledger_url": None,
            }
        )
        options = ServiceOptions(
            funding_hint=SANDBOX_FUNDING, video_poll_interval=video_poll_interval or 1.0
        )
        yield BlockrunService(sandbox_config, wallet=throwaway_wallet(), options=options)


async def serve_stdio(service: BlockrunService) -> None:
    from blockrun_mcp.server import build_server

    await build_server(service).run_stdio_async()


class IdentityAuth:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>` of a known
    identity (BLOCKRUN_HTTP_TOKEN, or one in BLOCKRUN_HTTP_TOKENS_FILE), and passes on which
    one in a header of its own. A client's own copy of that header is always removed first.

    The scheme name is case-insensitive (RFC 7235: "bearer" and "BEARER" are Bearer); the
    token's hash is compared, in constant time, with every identity's. The tokens file is looked
    at again as requests come (LiveIdentities): while it cannot be used, every request is refused.
    """

    def __init__(self, app: Any, identities: Identities, dashboard: Any = None) -> None:
        self.app = app
        self.identities = identities
        # `/dashboard` (dashboard/team.py): a browser cannot send a bearer header when it opens a
        # page, so that app takes the token from the query or its cookie too, for itself only.
        self.dashboard = dashboard

    @staticmethod
    def _token_of(header: bytes) -> str:
        scheme, _, token = header.strip().partition(b" ")
        return token.strip().decode("latin-1") if scheme.lower() == b"bearer" else ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != IDENTITY]
        self.identities.refresh()
        if self.identities.failure is not None:
            await _tokens_file_unusable()(scope, receive, send)
            return
        if self.dashboard is not None and self.dashboard.handles(scope.get("path", "")):
            await self.dashboard({**scope, "headers": headers}, receive, send)
            return
        identity = None
        if self.identities.requires_token():
            token = self._token_of(dict(headers).get(b"authorization", b""))
            identity = self.identities.find(token) if token else None
            if identity is None:
                await _unauthorized()(scope, receive, send)
                return
            headers.append((IDENTITY, identity.name.encode()))
        await self.app(_authenticated(scope, headers, identity), receive, send)


def _authenticated(scope: Any, headers: list[Any], identity: Identity | None) -> Any:
    """The request as the app sees it: our identity header, and the identity in the scope, where
    SessionWatch reads who opens or uses a session. The SDK gets it too, as the session's
    credential, so it refuses another's session id by itself as well (belt and braces: ours is
    first), even once ours has forgotten the id."""
    scope = {**scope, "headers": headers, IDENTITY_SCOPE_KEY: identity}
    if identity is not None:
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken

        # Only the token's hash: the token itself is not kept anywhere.
        scope["user"] = AuthenticatedUser(
            AccessToken(
                token=identity.token_sha256,
                client_id=identity.name,
                scopes=[],
                subject=identity.token_sha256,
            )
        )
    return scope


def _unauthorized() -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {
            "error": "unauthorized",
            "message": "Send Authorization: Bearer <your token> (BLOCKRUN_HTTP_TOKEN, "
            "or one `blockrun-mcp token add` made).",
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _tokens_file_unusable() -> Any:
    from mcp_types import INTERNAL_ERROR

    # The reason (and the file's path) is for the operator, in the server's log.
    return jsonrpc_error(
        "This server cannot use its tokens file (BLOCKRUN_HTTP_TOKENS_FILE), so it refuses every "
        "request until its operator fixes the file; the server's log says what is wrong.",
        503,
        INTERNAL_ERROR,
    )


def _team_bounds(config: Config) -> Callable[[Identities], None]:
    """The rule a team server's identities must keep, at start and at every re-read."""

    def check(identities: Identities) -> None:
        if not config.shared_ledger or config.daily_budget_usd is not None:
            return
        unbounded = [i.name for i in identities.by_name.values() if i.daily_budget_usd is None]
        if unbounded or not identities:
            raise IdentitiesError(
                "A team server (BLOCKRUN_LEDGER_URL) keeps no session budgets, so every caller "
                "needs a daily bound: set BLOCKRUN_DAILY_BUDGET_USD, or give every identity a "
                f"daily_budget_usd (without one: {', '.join(unbounded) or 'any caller'})"
            )

    return check


def identities_of(config: Config, *, recheck_seconds: float | None = None) -> LiveIdentities:
    """The identities to serve, kept in step with the tokens file (every `recheck_seconds`)."""
    token = config.http_token.get_secret_value() if config.http_token else None
    try:
        return LiveIdentities(
            config.tokens_file,
            token,
            check=_team_bounds(config),
            recheck_seconds=RECHECK_SECONDS if recheck_seconds is None else recheck_seconds,
        )
    except IdentitiesError as exc:  # said where the settings are checked: before serving
        raise ConfigError(exc.message) from None


def check_http_binding(host: str, config: Config) -> Identities:
    """Only where HTTP is served: a stdio server never reads BLOCKRUN_HTTP_TOKEN. Returns the
    identities it checked, so the server is built on the same ones."""
    token = config.http_token.get_secret_value() if config.http_token else ""
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"BLOCKRUN_HTTP_TOKEN is shorter than {MIN_TOKEN_CHARS} characters; use a long random "
            'token (e.g. python3 -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    identities = identities_of(config)  # with the team's rule (_team_bounds)
    if not is_loopback(host) and not identities:
        raise ConfigError(
            f"Refusing to serve HTTP on {host} without a token: anyone who can reach it could spend "
            "your USDC. Set BLOCKRUN_HTTP_TOKEN to a long random secret, or bind 127.0.0.1."
        )
    return identities


def shared_state_key(service: BlockrunService) -> bytes | None:
    """The key that seals what a 2026-07-28 client brings back between an approval's rounds:
    one for all of a team's instances (kept in their database), since the retry may reach any
    of them; None (a key of this process's own) otherwise."""
    if not service.config.shared_ledger:
        return None
    store = service.ledger.store
    shared = getattr(store, "shared_secret", None)
    return shared("mcp-request-state") if shared is not None else None


def http_app(
    service: BlockrunService,
    host: str,
    config: Config,
    port: int | None = None,
    identities: Identities | None = None,
    *,
    sessions_per_identity: int = SESSIONS_PER_IDENTITY,
) -> Any:
    """The Starlette app. With `port`, Host and Origin must name exactly this server: a web
    page served from another local port is another origin, and is refused like any other.
    `identities`: those check_http_binding read (else read here). `sessions_per_identity`: how
    many MCP sessions one identity may hold open at once."""
    from blockrun_mcp.server import build_server
    from blockrun_mcp.sessions import SESSION_IDLE_SECONDS, IssuedSessions, SessionWatch

    stateless = config.shared_ledger
    sessions = IssuedSessions(
        # Stateless HTTP opens no session: a share would only count requests in flight.
        per_identity=None if stateless else sessions_per_identity,
        on_forget=lambda session_id: service.forget_session(session_id),
    )
    if identities is None:
        identities = identities_of(config)
    if isinstance(identities, LiveIdentities):
        # A revoked or replaced token's sessions end with it, budgets and all.
        identities.on_change = lambda current: sessions.keep_only(
            (i.name, i.token_sha256) for i in current.by_name.values()
        )
    mcp = build_server(
        service, sessions=sessions, identities=identities, state_key=shared_state_key(service)
    )
    app = SessionWatch(
        mcp.streamable_http_app(
            streamable_http_path="/mcp",
            transport_security=transport_security(host, port),
            host=host,
            # Instances behind a load balancer share nothing in memory: no MCP session may
            # depend on which one a request reaches (budgets are per identity and per day).
            stateless_http=stateless,
            # Said here, not left to the SDK's default: IssuedSessions counts a session until then.
            session_idle_timeout=SESSION_IDLE_SECONDS,
        ),
        sessions,
    )
    from blockrun_mcp.dashboard.team import team_dashboard

    dashboard = team_dashboard(service, identities, transport_security(host, port))
    return IdentityAuth(app, identities, dashboard)


def transport_security(host: str, port: int | None) -> Any:
    """The SDK's Host and Origin checks (DNS rebinding) for a server bound to `host`:`port`.

    Loopback, whatever the address (127.0.0.1, 127.x.y.z, ::1, localhost): a page may name it by
    any loopback name, but only with this port, else another local server's pages would be
    same-origin. Without a port (an app not yet bound) any port of those names, which still
    refuses every foreign name. A specific other address gets the same checks on its own name;
    a wildcard bind cannot know its name, so there the mandatory token is the guard.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    shown_port = str(port) if port else "*"
    if is_loopback(host):
        names = dict.fromkeys((*LOOPBACK_HOSTS, *_host_names(host)))
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"{name}:{shown_port}" for name in names],
            allowed_origins=[f"http://{name}:{shown_port}" for name in names],
        )
    wildcard = host in ("0.0.0.0", "::")
    names = dict.fromkeys(_host_names(host))
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=not wildcard,
        allowed_hosts=[f"{name}:{shown_port}" for name in names],
        allowed_origins=[
            f"{scheme}://{name}:{shown_port}" for name in names for scheme in ("http", "https")
        ],
    )


def _host_names(host: str) -> list[str]:
    """`host` as it appears in a Host header: IPv6 in brackets, as given and in its short form."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [host]
    if address.version == 4:
        return [host]
    return [f"[{host}]", f"[{address.compressed}]"]


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of `host`, all on one port: `port`, or with 0 the one the
    OS gave the first. Bound before the app is built, so that the port the server pins its Host
    checks to, and prints, is the real one.

    As uvicorn binds (SO_REUSEADDR; IPv6 sockets IPv6 only). An address family this machine
    lacks is skipped (`localhost` on a host without IPv6); any other failure is the caller's.
    """
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    missing: OSError | None = None
    for family, kind, proto, _, address in dict.fromkeys(found):
        if bound:
            address = (address[0], bound[0].getsockname()[1], *address[2:])
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                for other in bound:
                    other.close()
                raise
            missing = missing or exc
            continue
        bound.append(sock)
    if not bound:
        raise missing or OSError(errno.EADDRNOTAVAIL, f"no address to bind for {host}")
    return bound


async def serve_http(service: BlockrunService, host: str, port: int, config: Config) -> None:
    import uvicorn

    identities = check_http_binding(host, config)
    # A long-running server loads the wallet (and eth-account, a second or more to import) now,
    # not in its first paid call, which would hold up every other request meanwhile. (stdio
    # keeps its fast start: a host waits for it.)
    import coincurve  # noqa: F401 (the signer's library, imported here rather than mid-call)

    from blockrun_mcp.errors import BlockrunError

    with contextlib.suppress(BlockrunError):  # no wallet: free models still work
        service.wallet()
    shown = f"[{host}]" if ":" in host else host
    try:
        sockets = listening_sockets(host, port)
    except OSError as exc:
        reason = exc.strerror or exc
        raise SystemExit(f"blockrun-mcp: cannot listen on {shown}:{port}: {reason}") from None
    port = sockets[0].getsockname()[1]  # the real one, also when asked for any (0)
    app = http_app(service, host, config, port, identities)
    print(
        f"blockrun-mcp: serving MCP at http://{shown}:{port}/mcp ({_auth_text(identities, config)})",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    await server.serve(sockets=sockets)


def _auth_text(identities: Identities, config: Config) -> str:
    count = len(identities)
    auth = (
        f"bearer token required, {count} identit{'y' if count == 1 else 'ies'}"
        if identities.requires_token()
        else "no token (loopback only)"
    )
    if config.shared_ledger:
        auth += "; stateless, over a shared ledger"
    return auth
