"""`/dashboard` on the HTTP server (`serve --transport http`), behind the bearer tokens.

An identity sees its own payments and its own limits; one marked `admin = true` in the tokens
file sees everyone's. The identity is the token's, found the way transports.IdentityAuth finds
it (every hash compared in constant time); a client's X-Blockrun-Identity header is never read
here (IdentityAuth removes it anyway). A loopback server without tokens is one person's: its
page shows everything, like its /mcp serves everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blockrun_mcp.dashboard.web import DashboardApp, Refusal, SummaryUnavailable, Viewer
from blockrun_mcp.errors import BlockrunError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from blockrun_mcp.identities import Identities
    from blockrun_mcp.service import BlockrunService

PREFIX = "/dashboard"
REFUSAL = Refusal(
    401,
    "Unauthorized. Open /dashboard?token=YOUR_TOKEN with the bearer token your MCP host uses "
    "(`blockrun-mcp token add` made it); the page then keeps it in a cookie and drops it from "
    "the address.",
    {"WWW-Authenticate": "Bearer"},
)


def is_sandbox(service: BlockrunService) -> bool:
    """A service of `--sandbox` (transports.service_for): its transactions are pretend."""
    from blockrun_mcp.transports import SANDBOX_FUNDING

    return service.options.funding_hint == SANDBOX_FUNDING


def team_dashboard(service: BlockrunService, identities: Identities, security: Any) -> DashboardApp:
    """The app IdentityAuth hands `/dashboard` and `/dashboard/...` to."""
    from blockrun_mcp.dashboard.data import Budgets, View, build_dashboard
    from blockrun_mcp.off_loop import off_loop

    def authenticate(token: str) -> Viewer | None:
        identity = identities.find(token)
        if identity is None:
            return None
        if identity.admin:
            return Viewer(f"{identity.name} (admin)")
        return Viewer(identity.name, identity.name)

    def open_to() -> Viewer | None:
        return None if identities.requires_token() else Viewer("local")

    def build(viewer: Viewer) -> BaseModel:
        try:
            ledger = service.ledger
            return build_dashboard(
                ledger,
                ledger.store.where,
                Budgets.of(service.config, list(identities.by_name.values())),
                View(viewer=viewer.name, identity=viewer.identity, sandbox=is_sandbox(service)),
                service.network.name,
            )
        except BlockrunError as exc:  # the team's database is down for a moment, say
            raise SummaryUnavailable(exc.message) from None

    async def summary(viewer: Viewer) -> BaseModel:
        return await off_loop(build, viewer)

    return DashboardApp(
        prefix=PREFIX,
        authenticate=authenticate,
        summary=summary,
        security=security,
        refusal=REFUSAL,
        open_to=open_to,
    )
