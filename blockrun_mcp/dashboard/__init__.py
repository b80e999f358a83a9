"""The spend dashboard: the ledger's figures as a page, in three places.

- `blockrun-mcp dashboard` (server.py): a read-only page on 127.0.0.1 behind a random token.
- A team server's `/dashboard` (team.py): the same page behind each identity's bearer token.
- An MCP Apps host (mcp_app.py): the same page beside the `budget` tool's result.

data.py builds the one JSON document all three show, with the functions `blockrun-mcp spend`
uses; page.py is the HTML (assets/: its style and script, inlined; nothing is loaded from
anywhere else); web.py is the HTTP side (token, cookie, Host check).
"""
