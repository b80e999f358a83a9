"""The `blockrun-mcp` command. Thin: parses arguments and calls into the modules that do the work.

Imports are deferred to each command so that plain `blockrun-mcp` (serve over stdio) starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import NoReturn

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

    serve = commands.add_parser(
        "serve",
        help="serve MCP over stdio (default) or Streamable HTTP",
        description="Serve the MCP server. With no command at all, blockrun-mcp serves over stdio.",
        epilog=(
            "examples:\n  blockrun-mcp serve\n  blockrun-mcp serve --sandbox\n"
            "  BLOCKRUN_HTTP_TOKEN=$(openssl rand -hex 24) blockrun-mcp serve --transport http --port 8402"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="default stdio"
    )
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8402, help="HTTP port (default 8402)")
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="use the built-in sandbox gateway and a throwaway wallet (no funds needed)",
    )

    commands.add_parser(
        "demo",
        help="run every tool once against the sandbox and print what each returned",
        description="Start the sandbox, connect a real MCP client over stdio and call every tool once.",
        epilog="example:\n  blockrun-mcp demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    wallet = commands.add_parser(
        "wallet",
        help="show the paying wallet, or create one",
        description="Show the wallet blockrun-mcp pays with (never its key), or create a new one.",
        epilog="examples:\n  blockrun-mcp wallet\n  blockrun-mcp wallet create",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wallet.add_argument("action", nargs="?", choices=["show", "create"], default="show")

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


def _fail(message: str) -> NoReturn:
    print(f"blockrun-mcp: {message}", file=sys.stderr)
    sys.exit(2)


def _serve(transport: str, host: str, port: int, sandbox: bool) -> None:
    import anyio

    from blockrun_mcp.config import ConfigError, load_config
    from blockrun_mcp.transports import check_http_binding, serve_http, serve_stdio, service_for

    try:
        config = load_config()
        if transport == "http":
            check_http_binding(host, config)
    except ConfigError as exc:
        _fail(str(exc))
    with service_for(config, sandbox=sandbox) as service:
        if transport == "http":
            anyio.run(serve_http, service, host, port, config)
        else:
            anyio.run(serve_stdio, service)


def _wallet(action: str) -> None:
    from blockrun_mcp.config import ConfigError, load_config
    from blockrun_mcp.wallet import WalletError, create_wallet, find_wallet, key_file_candidates

    try:
        config = load_config()
        wallet = find_wallet(config)
        if action == "create":
            if wallet is not None:
                print(f"A wallet already exists ({wallet.source}); not creating another.")
            else:
                wallet = create_wallet(key_file_candidates(config.home)[0])
                print(
                    f"Created a new wallet; its key is in {wallet.source} (mode 0600). Back it up."
                )
        if wallet is None:
            _fail("No wallet found. Create one with `blockrun-mcp wallet create`.")
    except (ConfigError, WalletError) as exc:
        _fail(str(exc))
    from blockrun_mcp.x402.networks import network_by_name

    network = network_by_name(config.network)
    print(f"address  {wallet.address}")
    print(f"network  {network.name} ({network.caip2})")
    print(f"key      {wallet.source}")
    print(f"fund it  send USDC on {network.name} to {wallet.address} (no ETH needed)")


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list:
        _serve("stdio", "127.0.0.1", 0, sandbox=False)
        return
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            _serve(args.transport, args.host, args.port, args.sandbox)
        return
    if args.command == "demo":
        import anyio

        from blockrun_mcp.demo import run_demo

        sys.exit(1 if anyio.run(run_demo) else 0)
    if args.command == "wallet":
        _wallet(args.action)
        return
    if args.command == "sandbox":
        from blockrun_mcp.sandbox import run_sandbox

        with contextlib.suppress(KeyboardInterrupt):
            run_sandbox(args.host, args.port, network=args.network)
        return
    parser.print_help()
    sys.exit(0)
