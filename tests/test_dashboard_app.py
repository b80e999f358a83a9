"""The dashboard as an MCP App: the `budget` tool names its `ui://` page (only that is added to
tools/list), the page is a resource of the MCP Apps profile, and the tool's result carries the
page's data in `_meta` beside its unchanged text and structured content. Then the page, in
Chromium, inside a stand-in host frame that speaks the extension's postMessage protocol, shows
the figures of that result. A real MCP client of each protocol era, a real server, the sandbox.
"""

from __future__ import annotations

import html
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mcp_types import CallToolResult

from blockrun_mcp.dashboard import mcp_app
from tests.support.dashboard import browse, chromium, read_figures
from tests.support.server import CHEAP_MODEL, open_server

pytestmark = pytest.mark.anyio

# A stand-in MCP Apps host: the view in a same-origin frame, answered as SEP-1865 says (the
# handshake, then the tool's input and result); once the view has rendered, its DOM is copied
# into this page, which is what Chromium dumps.
HOST_PAGE = """<!DOCTYPE html>
<html><body>
<iframe id="view" srcdoc="{view}" width="1200" height="900"></iframe>
<pre id="out"></pre>
<script>
const result = {result};
const frame = document.getElementById("view");
const reply = (message) => frame.contentWindow.postMessage(message, "*");
const seen = [];
window.addEventListener("message", (event) => {{
  const message = event.data;
  seen.push(message.method);
  if (message.method === "ui/initialize") {{
    reply({{jsonrpc: "2.0", id: message.id, result: {{protocolVersion: "2026-01-26",
      hostInfo: {{name: "test-host", version: "1"}}, hostCapabilities: {{}},
      hostContext: {{theme: "dark", displayMode: "inline"}}}}}});
  }} else if (message.method === "ui/notifications/initialized") {{
    reply({{jsonrpc: "2.0", method: "ui/notifications/tool-input", params: {{arguments: {{}}}}}});
    reply({{jsonrpc: "2.0", method: "ui/notifications/tool-result", params: result}});
    setTimeout(() => {{
      const view = frame.contentDocument;
      document.getElementById("out").textContent = JSON.stringify({{
        seen, theme: view.documentElement.dataset.theme, dom: view.documentElement.outerHTML}});
    }}, 300);
  }}
}});
</script>
</body></html>
"""


def tool_result_json(result: CallToolResult) -> dict[str, Any]:
    """The result as the host hands it to the view (the wire's field names)."""
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


async def test_only_the_budget_tool_names_the_page_and_the_page_is_an_app_resource(
    sandbox, tmp_path
):
    async with open_server(tmp_path, sandbox) as h:
        listed = await h.client.list_tools()
        metas = {tool.name: tool.meta for tool in listed.tools}
        assert metas.pop("budget") == {
            "ui": {"resourceUri": mcp_app.URI},
            "ui/resourceUri": mcp_app.URI,
        }
        assert all(meta is None for meta in metas.values()), metas
        resources = (await h.client.list_resources()).resources
        (entry,) = [r for r in resources if str(r.uri) == mcp_app.URI]
        assert entry.mime_type == "text/html;profile=mcp-app"
        read = await h.client.read_resource(mcp_app.URI)
        (content,) = read.contents
        assert content.mime_type == "text/html;profile=mcp-app"
        assert content.text == mcp_app.app_page()
        assert content.text.startswith("<!DOCTYPE html>")
        assert '"mode": "app"' in content.text  # it waits for the host, it fetches nothing


async def test_the_budget_result_keeps_its_text_and_carries_the_page_s_data(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        asked = await h.ok("ask_model", {"prompt": "hello", "model": CHEAP_MODEL})
        status = await h.ok("budget")  # text == structured content, schema-valid, as before
        result = await h.call("budget")
        assert result.structured_content == status
        assert mcp_app.META_KEY not in result.content[0].text  # the model's text is unchanged
        document = result.meta[mcp_app.META_KEY]
        assert document["scope"] == "default"
        assert document["totals"]["payments"] == 1
        assert document["totals"]["spent_usd"] == asked["cost_usd"]
        (receipt,) = document["receipts"]
        assert receipt["tx_hash"] == asked["transaction"]
        limits = {limit["key"]: limit for limit in document["limits"]}
        assert limits["session"]["limit_usd"] == status["session_limit_usd"]
        assert limits["session"]["spent_usd"] == status["session_spent_usd"] == asked["cost_usd"]
        assert limits["per_call"]["limit_usd"] == status["per_call_cap_usd"]
        # A refused call keeps its plain error, with no page data.
        refused = await h.call("budget", {"set_session_limit_usd": 100})
        assert refused.is_error and mcp_app.META_KEY not in (refused.meta or {})


async def test_the_page_in_a_host_frame_shows_the_tool_s_result(sandbox, tmp_path):
    chromium()  # skipped without a browser (outside CI), before paying for anything
    async with open_server(tmp_path, sandbox) as h:
        for prompt in ("one", "two"):
            await h.ok("ask_model", {"prompt": prompt, "model": CHEAP_MODEL})
        result = await h.call("budget")
        page = (await h.client.read_resource(mcp_app.URI)).contents[0].text
    document = result.meta[mcp_app.META_KEY]
    shown = render_in_host(tmp_path, page, tool_result_json(result))
    assert shown["seen"][:2] == ["ui/initialize", "ui/notifications/initialized"]
    assert shown["theme"] == "dark"  # the host's context reached the view
    figures = read_figures(shown["dom"])
    assert figures.state == "ready"
    assert float(figures.totals["spent_usd"]) == document["totals"]["spent_usd"]
    assert int(figures.totals["payments"]) == 2
    assert sorted(figures.receipts) == sorted(r["id"] for r in document["receipts"])
    session = figures.limits["session"]
    assert float(session["data-spent"]) == document["totals"]["spent_usd"]
    # Without the _meta (a host that drops it), the structured content alone still renders.
    bare = tool_result_json(result)
    bare.pop("_meta")
    figures = read_figures(render_in_host(tmp_path, page, bare)["dom"])
    assert figures.state == "ready"
    assert float(figures.limits["session"]["data-spent"]) == document["totals"]["spent_usd"]
    assert len(figures.receipts) == 2


def render_in_host(tmp_path: Path, view: str, result: dict[str, Any]) -> dict[str, Any]:
    """The view rendered by Chromium inside HOST_PAGE; what the host copied out of its frame."""
    site = tmp_path / "host"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text(
        HOST_PAGE.format(
            view=html.escape(view, quote=True),
            result=json.dumps(result).replace("<", "\\u003c"),
        ),
        encoding="utf-8",
    )

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dumped = browse(f"http://127.0.0.1:{server.server_address[1]}/index.html", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    start = dumped.index('<pre id="out">') + len('<pre id="out">')
    copied = html.unescape(dumped[start : dumped.index("</pre>", start)])
    assert copied, "the view never rendered (the host page copied nothing)"
    return json.loads(copied)
