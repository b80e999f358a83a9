"""The `blockrun-mcp` command. Thin: parses arguments and calls into the modules that do the work.

Imports are deferred to each command so that plain `blockrun-mcp` (serve over stdio) starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

EPILOG = """examples:
  blockrun-mcp                          serve MCP over stdio (what MCP hosts run)
  blockrun-mcp demo                     try every tool against the built-in sandbox, no funds needed
  blockrun-mcp serve --sandbox          serve with the sandbox gateway and a throwaway wallet
  blockrun-mcp sandbox --port 8787      run the sandbox gateway alone
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockrun-mcp",
        description="MCP server: ask other AI models, paid per request in USDC over x402, within your budgets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from blockrun_mcp import __version__

    parser.add_argument("--version", action="version", version=f"blockrun-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sandbox = commands.add_parser(
        "sandbox",
        help="run the local sandbox gateway (a BlockRun look-alike)",
        description="Run the sandbox gateway on loopback. Point BLOCKRUN_API_URL at the URL it prints.",
        epilog="example:\n  blockrun-mcp sandbox --port 8787\n  BLOCKRUN_API_URL=http://127.0.0.1:8787/api blockrun-mcp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sandbox.add_argument(
        "--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)"
    )
    sandbox.add_argument(
        "--network", default="base", choices=["base", "base-sepolia"], help="network to quote on"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sandbox":
        from blockrun_mcp.sandbox import run_sandbox

        with contextlib.suppress(KeyboardInterrupt):
            run_sandbox(args.host, args.port, network=args.network)
        return
    parser.print_help()
    sys.exit(0)
