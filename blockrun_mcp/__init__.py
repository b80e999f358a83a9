"""blockrun-mcp: ask other AI models from an MCP host, paid per request in USDC over x402."""

__version__ = "0.1.0"
