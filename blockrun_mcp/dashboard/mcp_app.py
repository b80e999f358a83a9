"""The dashboard as an MCP App (the MCP Apps extension, SEP-1865, `io.modelcontextprotocol/ui`):
hosts that render apps (Claude Desktop, VS Code) show the page beside the `budget` tool's
result; the others read its text result as before.

The tool names the page in its `_meta` (the only addition to tools/list, which every turn
carries). The page comes from `resources/read`, and its data from the tool's result: the
structured content (the budget result) and, in the result's `_meta`, which is not for the
model, the dashboard document of the caller's own payments. Imports are deferred: the stdio
server starts without loading the dashboard.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.service import BlockrunService

URI = "ui://blockrun/dashboard.html"
MIME_TYPE = "text/html;profile=mcp-app"
META_KEY = "ai.blockrun/dashboard"  # in the budget result's _meta (dashboard.js reads it)
# Both spellings, as the extension's own SDK writes them: `ui.resourceUri`, and the flat key
# hosts that predate it read.
TOOL_META = {"ui": {"resourceUri": URI}, "ui/resourceUri": URI}
RESOURCE_META = {"ui": {"prefersBorder": True}}  # no `csp`: the page fetches nothing

log = logging.getLogger("blockrun_mcp")


def app_page() -> str:
    from blockrun_mcp.dashboard.page import page

    return page("app")


def result_meta(service: BlockrunService, budget: SessionBudget) -> dict[str, Any] | None:
    """The budget result's `_meta`: the dashboard of the caller's own payments (this session's
    limit included), or None when it cannot be read now. Blocking: call it off the loop. The
    budget's text result stands on its own, so a failure here never fails the call."""
    from blockrun_mcp.dashboard.data import Budgets, View, build_dashboard
    from blockrun_mcp.dashboard.team import is_sandbox

    try:
        ledger = service.ledger
        config = service.config
        budgets = Budgets(
            per_call_usd=config.max_per_call_usd,
            daily_usd=config.daily_budget_usd,
            session_usd=None,
            identities=(budget.identity,) if budget.identity is not None else (),
        )
        view = View(
            viewer=budget.identity_name, identity=budget.identity_name, sandbox=is_sandbox(service)
        )
        document = build_dashboard(
            ledger,
            ledger.store.where,
            budgets,
            view,
            service.network.name,
            session=budget.status() if budget.per_session else None,
        )
    except Exception as exc:  # the ledger is down for a moment, say: the text result says so
        log.warning("blockrun-mcp: the budget tool's dashboard view was left out: %s", exc)
        return None
    return {META_KEY: document.model_dump(mode="json")}
