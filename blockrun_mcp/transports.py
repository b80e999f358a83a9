"""Serving the MCP server over stdio or Streamable HTTP, with the sandbox wired in on request."""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from blockrun_mcp.config import Config, ConfigError

if TYPE_CHECKING:
    from blockrun_mcp.identities import Identities
    from blockrun_mcp.service import BlockrunService

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
IDENTITY = b"x-blockrun-identity"  # server.IDENTITY_HEADER
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
    token's hash is compared, in constant time, with every identity's.
    """

    def __init__(self, app: Any, identities: Identities) -> None:
        self.app = app
        self.identities = identities

    @staticmethod
    def _token_of(header: bytes) -> str:
        scheme, _, token = header.strip().partition(b" ")
        return token.strip().decode("latin-1") if scheme.lower() == b"bearer" else ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != IDENTITY]
        identity = None
        if self.identities:
            token = self._token_of(dict(headers).get(b"authorization", b""))
            identity = self.identities.find(token) if token else None
            if identity is None:
                from starlette.responses import JSONResponse

                response = JSONResponse(
                    {
                        "error": "unauthorized",
                        "message": "Send Authorization: Bearer <your token> (BLOCKRUN_HTTP_TOKEN, "
                        "or one `blockrun-mcp token add` made).",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
            headers.append((IDENTITY, identity.name.encode()))
        await self.app({**scope, "headers": headers}, receive, send)


def identities_of(config: Config) -> Identities:
    from blockrun_mcp.identities import Identities, IdentitiesError

    token = config.http_token.get_secret_value() if config.http_token else None
    try:
        return Identities.load(config.tokens_file, token)
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
    identities = identities_of(config)
    if config.shared_ledger:
        unbounded = [i.name for i in identities.by_name.values() if i.daily_budget_usd is None]
        if config.daily_budget_usd is None and (unbounded or not identities):
            raise ConfigError(
                "A team server (BLOCKRUN_LEDGER_URL) keeps no session budgets, so every caller "
                "needs a daily bound: set BLOCKRUN_DAILY_BUDGET_USD, or give every identity a "
                f"daily_budget_usd (without one: {', '.join(unbounded) or 'any caller'})"
            )
    if not is_loopback(host) and not identities:
        raise ConfigError(
            f"Refusing to serve HTTP on {host} without a token: anyone who can reach it could spend "
            "your USDC. Set BLOCKRUN_HTTP_TOKEN to a long random secret, or bind 127.0.0.1."
        )
    return identities


def http_app(
    service: BlockrunService,
    host: str,
    config: Config,
    port: int | None = None,
    identities: Identities | None = None,
) -> Any:
    """The Starlette app. With `port`, Host and Origin must name exactly this server: a web
    page served from another local port is another origin, and is refused like any other.
    `identities`: those check_http_binding read (else read here)."""
    from mcp.server.transport_security import TransportSecuritySettings

    from blockrun_mcp.server import build_server
    from blockrun_mcp.sessions import IssuedSessions, SessionWatch

    sessions = IssuedSessions(on_forget=lambda session_id: service.forget_session(session_id))
    if identities is None:
        identities = identities_of(config)
    mcp = build_server(service, sessions=sessions, identities=identities)
    security = None
    if is_loopback(host) and port:  # port 0 (any free port) cannot be pinned
        names = ("127.0.0.1", "localhost", "[::1]")
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"{name}:{port}" for name in names],
            allowed_origins=[f"http://{name}:{port}" for name in names],
        )
    elif not is_loopback(host):
        # A specific address gets the same Host/Origin checks as loopback; a wildcard bind cannot
        # know its own name, so there the mandatory token is the guard.
        wildcard = host in ("0.0.0.0", "::")
        display = f"[{host}]" if ":" in host else host
        shown_port = str(port) if port else "*"
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=not wildcard,
            allowed_hosts=[f"{display}:{shown_port}"],
            allowed_origins=[f"http://{display}:{shown_port}", f"https://{display}:{shown_port}"],
        )
    app = SessionWatch(
        mcp.streamable_http_app(
            streamable_http_path="/mcp",
            transport_security=security,
            host=host,
            # Instances behind a load balancer share nothing in memory: no MCP session may
            # depend on which one a request reaches (budgets are per identity and per day).
            stateless_http=config.shared_ledger,
        ),
        sessions,
    )
    return IdentityAuth(app, identities)


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
    app = http_app(service, host, config, port, identities)
    shown = f"[{host}]" if ":" in host else host
    auth = (
        f"bearer token required, {len(identities)} identit{'y' if len(identities) == 1 else 'ies'}"
        if identities
        else "no token (loopback only)"
    )
    if config.shared_ledger:
        auth += "; stateless, over a shared ledger"
    print(
        f"blockrun-mcp: serving MCP at http://{shown}:{port}/mcp ({auth})",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    await server.serve()
