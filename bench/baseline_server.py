"""The spawn baseline: a minimal MCPServer with one tool, on the same interpreter."""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("baseline", log_level="WARNING")


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text."""
    return text


if __name__ == "__main__":
    mcp.run()
