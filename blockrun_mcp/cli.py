"""The `blockrun-mcp` command. Thin: parses arguments and calls into the modules that do the work.

Imports are deferred to each command so that plain `blockrun-mcp` (serve over stdio) starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from blockrun_mcp.money import dollars

if TYPE_CHECKING:
    from blockrun_mcp.config import Config
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.wallet import Wallet

EPILOG = """examples:
  blockrun-mcp                          serve MCP over stdio (what MCP hosts run)
  blockrun-mcp demo                     try every tool against the built-in sandbox, no funds needed
  blockrun-mcp doctor                   check the set-up: key, gateway, budgets, folders, PATH
  blockrun-mcp wallet create            make a wallet, then send it USDC on Base
  blockrun-mcp models --category chat --max-price 2
  blockrun-mcp spend --days 7           what was spent, by day, session, tool and model
  blockrun-mcp threads                  the conversations ask_model keeps, and their turns
  blockrun-mcp dashboard                the same figures as a page in the browser, refreshing itself
  blockrun-mcp serve --sandbox          serve with the sandbox gateway and a throwaway wallet
  blockrun-mcp sandbox --port 8787      run the sandbox gateway alone
  blockrun-mcp token add alice --daily-budget 2   a token for a team's HTTP server (per-person budget)
  blockrun-mcp migrate                  bring the ledger's schema (PostgreSQL or SQLite) up to date

Every command takes --help. Settings come from BLOCKRUN_* environment variables (see README).
"""


def _command(
    commands: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _usd(text: str) -> float:
    """A dollar amount given as an option: plain digits only (money.parse_usd_text says why)."""
    from blockrun_mcp.money import parse_usd_text

    try:
        return parse_usd_text(text)
    except ValueError as error:  # argparse prefixes the option: "argument --daily-budget: ..."
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


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

    serve = _command(
        commands,
        "serve",
        "serve MCP over stdio (default) or Streamable HTTP",
        "Serve the MCP server. With no command at all, blockrun-mcp serves over stdio.",
        "examples:\n  blockrun-mcp serve\n  blockrun-mcp serve --sandbox\n"
        "  BLOCKRUN_HTTP_TOKEN=$(openssl rand -hex 24) blockrun-mcp serve --transport http --port 8402",
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

    _command(
        commands,
        "demo",
        "run every tool once against the sandbox and print what each returned",
        "Start the sandbox, connect a real MCP client over stdio and call every tool once.",
        "example:\n  blockrun-mcp demo",
    )

    wallet = _command(
        commands,
        "wallet",
        "show the paying wallet and its balance, or create one",
        "Show the wallet blockrun-mcp pays with: address, network, USDC balance and how to fund\n"
        "it. The key is never printed, unless you ask with --show-private-key and confirm.",
        "examples:\n  blockrun-mcp wallet\n  blockrun-mcp wallet create\n"
        "  BLOCKRUN_NETWORK=base-sepolia blockrun-mcp wallet show\n"
        "  blockrun-mcp wallet show --show-private-key     (asks you to type the address first)\n\n"
        "The balance is read from a public Base RPC node (BLOCKRUN_RPC_URL overrides it).",
    )
    wallet.add_argument(
        "action", nargs="?", choices=["show", "create"], default="show", help="default: show"
    )
    wallet.add_argument(
        "--show-private-key",
        action="store_true",
        help="print the private key after you confirm at an interactive terminal",
    )

    models = _command(
        commands,
        "models",
        "the gateway's models and prices, as a table or JSON",
        "List the models the gateway offers with their prices (USD per 1M tokens before the\n"
        "platform fee; per image; per video second).",
        "examples:\n  blockrun-mcp models\n  blockrun-mcp models --category chat --max-price 2\n"
        "  blockrun-mcp models --provider anthropic\n  blockrun-mcp models --category image\n"
        "  blockrun-mcp models --json | jq -r '.models[].id'\n"
        "  blockrun-mcp models --sandbox        (the sandbox's catalog, no network)",
    )
    models.add_argument("--category", help="chat, reasoning, coding, image, video, ...")
    models.add_argument("--provider", help="openai, anthropic, google, deepseek, nvidia, ...")
    models.add_argument(
        "--max-price",
        type=_usd,
        metavar="USD",
        help="at most this many USD per 1M output tokens (chat), per image or per video second",
    )
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.add_argument(
        "--sandbox", action="store_true", help="list the built-in sandbox's catalog instead"
    )

    threads = _command(
        commands,
        "threads",
        "conversations kept by ask_model, and their turns",
        "List the recent threads from the ledger (id, title, models, turns, cost, last used),\n"
        "or, given a thread id, every turn of it: the model, the files sent, the prompt and the\n"
        "answer. Read-only. Continue a thread by passing its id as ask_model's thread_id.",
        "examples:\n  blockrun-mcp threads\n  blockrun-mcp threads thr_0123abcd...\n"
        "  blockrun-mcp threads --json | jq '.threads[0]'",
    )
    threads.add_argument("thread_id", nargs="?", help="show this thread's turns")
    threads.add_argument("--json", action="store_true", help="print JSON")
    threads.add_argument(
        "--sandbox",
        action="store_true",
        help="read the sandbox ledger ($BLOCKRUN_DATA_DIR/sandbox)",
    )

    spend = _command(
        commands,
        "spend",
        "what was spent, from the local ledger",
        "Report spending from the ledger ($BLOCKRUN_DATA_DIR/ledger.sqlite3) by day, session,\n"
        "tool and model, with totals, pending payments (signed, outcome unknown) and the\n"
        "receipts' transaction hashes, and why each pending payment is still counted.\n"
        "Read-only, unless --reconcile: then the chain (BLOCKRUN_RPC_URL) is asked about each\n"
        "signed payment first; one it reports used is booked as settled, one that expired\n"
        "unused is released, and anything it cannot answer stays counted.",
        "examples:\n  blockrun-mcp spend\n  blockrun-mcp spend --days 7\n"
        "  blockrun-mcp spend --reconcile\n"
        "  blockrun-mcp spend --json | jq .totals\n  blockrun-mcp spend --csv > spend.csv\n"
        "  blockrun-mcp spend --sandbox        (the sandbox's pretend spending)",
    )
    spend.add_argument(
        "--days", type=_positive_int, metavar="N", help="only the last N UTC days (today included)"
    )
    spend_format = spend.add_mutually_exclusive_group()
    spend_format.add_argument("--json", action="store_true", help="print JSON")
    spend_format.add_argument("--csv", action="store_true", help="print one CSV line per payment")
    spend.add_argument(
        "--sandbox",
        action="store_true",
        help="read the sandbox ledger ($BLOCKRUN_DATA_DIR/sandbox)",
    )
    spend.add_argument(
        "--reconcile",
        action="store_true",
        help="first settle or release signed payments as the chain reports them",
    )

    dashboard = _command(
        commands,
        "dashboard",
        "a read-only spend dashboard in the browser, on 127.0.0.1",
        "Serve a page of the ledger's figures on 127.0.0.1: spent, pending and what is left of\n"
        "each limit today, spend per day (30 days), by model, tool and identity, pending\n"
        "payments and why each still counts, receipts linked to the block explorer, and video\n"
        "jobs that can be resumed. It refreshes itself every few seconds. The URL it prints\n"
        "carries a random token of this run; without it the page is refused. Read-only, like\n"
        "`spend`: the same ledger, the same figures.",
        "examples:\n  blockrun-mcp dashboard\n  blockrun-mcp dashboard --port 8450 --no-open\n"
        "  blockrun-mcp dashboard --sandbox        (the sandbox's pretend spending)",
    )
    dashboard.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default 0: any free one)"
    )
    dashboard.add_argument(
        "--no-open", action="store_true", help="print the URL only; do not open a browser"
    )
    dashboard.add_argument(
        "--sandbox",
        action="store_true",
        help="show the sandbox ledger ($BLOCKRUN_DATA_DIR/sandbox)",
    )

    token = _command(
        commands,
        "token",
        "add or list the identities that may use the HTTP server",
        "Identities for `serve --transport http`, kept in BLOCKRUN_HTTP_TOKENS_FILE (TOML, hashes\n"
        "only: the file holds no secret). `token add` makes a random bearer token, prints it\n"
        "once and appends its SHA-256 with the identity's budgets; `token list` shows who is\n"
        "there. A running server re-reads the file within a second of a change.",
        "examples:\n  blockrun-mcp token add alice --daily-budget 2.00 --file team/tokens.toml\n"
        "  blockrun-mcp token add ci-bot --daily-budget 0.50 --max-per-call 0.05\n"
        "  blockrun-mcp token list",
    )
    token_actions = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    token_add = token_actions.add_parser(
        "add", help="make a token for a new identity; printed once, only its hash is kept"
    )
    token_add.add_argument("name", help="who it is for: letters, digits, _ . @ - (up to 64)")
    token_add.add_argument(
        "--daily-budget",
        type=_usd,
        metavar="USD",
        help="most this identity may spend per UTC day (the wallet's daily budget caps all)",
    )
    token_add.add_argument(
        "--max-per-call",
        type=_usd,
        metavar="USD",
        help="most one of its calls may spend (default: BLOCKRUN_MAX_PER_CALL_USD)",
    )
    token_add.add_argument(
        "--admin",
        action="store_true",
        help="its /dashboard shows everyone's spending (others see only their own)",
    )
    token_list = token_actions.add_parser("list", help="the identities and their budgets")
    for action in (token_add, token_list):
        action.add_argument(
            "--file",
            type=Path,
            metavar="F",
            help="the tokens file (default: BLOCKRUN_HTTP_TOKENS_FILE, else "
            "$BLOCKRUN_DATA_DIR/tokens.toml)",
        )

    _command(
        commands,
        "migrate",
        "bring the ledger's database schema up to date",
        "Apply the ledger's schema migrations: to the PostgreSQL database of BLOCKRUN_LEDGER_URL,\n"
        "else to the SQLite ledger in BLOCKRUN_DATA_DIR. Servers apply them when they start, too;\n"
        "safe to run while instances run, and when several start at once (each migration is\n"
        "applied once, under a lock).",
        "examples:\n  BLOCKRUN_LEDGER_URL=postgresql://blockrun@db:5432/blockrun blockrun-mcp migrate",
    )

    doctor = _command(
        commands,
        "doctor",
        "check the set-up and say how to fix each problem",
        "Check the settings, the key and its file permissions, the gateway, the network, the\n"
        "balance, the budgets, the data and output folders, and whether an MCP host can start\n"
        "the server over stdio. Exits 1 if any check FAILs.",
        "examples:\n  blockrun-mcp doctor\n  blockrun-mcp doctor --json\n"
        "  BLOCKRUN_API_URL=http://127.0.0.1:8787/api blockrun-mcp doctor\n\n"
        "It checks this shell's environment: if your host's config sets env vars, run it with\n"
        "the same ones.",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")

    sandbox = _command(
        commands,
        "sandbox",
        "run the local sandbox gateway (a BlockRun look-alike)",
        "Run the sandbox gateway on loopback. Point BLOCKRUN_API_URL at the URL it prints.",
        "example:\n  blockrun-mcp sandbox --port 8787\n  BLOCKRUN_API_URL=http://127.0.0.1:8787/api blockrun-mcp",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sandbox.add_argument(
        "--port", type=int, default=8787, help="port (default 8787; 0 picks a free one)"
    )
    sandbox.add_argument(
        "--network", default="base", choices=["base", "base-sepolia"], help="network to quote on"
    )
    return parser


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"blockrun-mcp: {message}", file=sys.stderr)
    sys.exit(code)


def _config() -> Config:
    from blockrun_mcp.config import ConfigError, load_config

    try:
        return load_config()
    except ConfigError as exc:
        _fail(f"{exc} (`blockrun-mcp doctor` checks every setting)")


def _serve(transport: str, host: str, port: int, sandbox: bool) -> None:
    import anyio

    from blockrun_mcp.config import ConfigError, load_config
    from blockrun_mcp.interrupt import exit_promptly_on_interrupt
    from blockrun_mcp.transports import check_http_binding, serve_http, serve_stdio, service_for

    try:
        config = load_config()
        if transport == "http":
            check_http_binding(host, config)
    except ConfigError as exc:
        _fail(str(exc))
    # Ctrl-C (a host's SIGINT) exits within milliseconds once everything below has closed.
    with exit_promptly_on_interrupt(), service_for(config, sandbox=sandbox) as service:
        if transport == "http":
            anyio.run(serve_http, service, host, port, config)
        else:
            anyio.run(serve_stdio, service)


def _wallet(action: str, show_private_key: bool) -> None:
    from blockrun_mcp.wallet import WalletError, create_wallet, find_wallet, key_file_candidates

    if show_private_key:
        _check_can_reveal_key()  # before anything else, so a refusal prints nothing at all
    config = _config()
    created = False
    try:
        wallet = find_wallet(config)
        if action == "create":
            if wallet is not None:
                print(f"A wallet already exists ({wallet.source}); not creating another.\n")
            else:
                wallet = create_wallet(key_file_candidates(config.home)[0])
                created = True
                print(
                    f"Created a new wallet; its key is in {wallet.source} (mode 0600). "
                    "Back that file up: whoever holds it can spend the wallet's USDC.\n"
                )
        if wallet is None:
            _fail("No wallet found. Create one with `blockrun-mcp wallet create`.")
    except WalletError as exc:
        _fail(str(exc))
    _print_wallet(config, wallet, created)
    if show_private_key:
        _reveal_key(wallet)


def _print_wallet(config: Config, wallet: Wallet, created: bool) -> None:
    from blockrun_mcp.chain import BalanceUnavailable, usdc_balance_atomic
    from blockrun_mcp.money import funding_hint, usdc_balance_text
    from blockrun_mcp.x402.networks import network_by_name

    network = network_by_name(config.network)
    if created:
        balance = "0 USDC (new wallet)"
    else:
        try:
            atomic = usdc_balance_atomic(config.rpc_url, network.usdc, wallet.address)
            balance = usdc_balance_text(atomic)
        except BalanceUnavailable:
            balance = "unknown (network unreachable)"
    print(f"address: {wallet.address}")
    print(f"network: {network.name} ({network.caip2})")
    print(f"key:     {wallet.source}")
    print(f"balance: {balance}")
    print(f"fund it: {funding_hint(network, wallet.address)}")


def _is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # a closed or detached stream is no terminal
        return False


def _check_can_reveal_key() -> None:
    """The key may go only to a person at a terminal, never to a file, a pipe or a host's log.

    stdin must be a terminal so a person confirms, not a script; stdout must be one because that
    is where the key is written, and a redirected stdout would keep it.
    """
    if not _is_terminal(sys.stdin):
        _fail(
            "refusing to print the private key: standard input is not a terminal, and the key "
            "is shown only after you confirm at an interactive terminal (no pipes, no scripts). "
            "The private key was not printed."
        )
    if not _is_terminal(sys.stdout):
        _fail(
            "refusing to print the private key: standard output is not a terminal (it goes to a "
            "file, a pipe or another program), so the key would be stored there. The private key "
            "was not printed. Run the command in an interactive terminal without redirecting its "
            "output."
        )


def _reveal_key(wallet: Wallet) -> None:
    _check_can_reveal_key()  # again here, so no other caller can skip it
    print(
        "\nThe private key gives full control of this wallet's funds. Anyone who sees it can "
        "spend them.",
        file=sys.stderr,
    )
    try:
        answer = input(f"Type the address ({wallet.address}) or 'yes' to print it: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("yes", wallet.address.lower()):
        _fail("not confirmed; the private key was not printed.")
    print(wallet.reveal_private_key())


def _models(args: argparse.Namespace) -> None:
    import json

    import anyio
    import httpx2

    from blockrun_mcp.errors import BlockrunError
    from blockrun_mcp.gateway import GatewayClient
    from blockrun_mcp.reports import filter_models, models_json, models_text

    async def fetch(api_url: str) -> list:
        http = httpx2.AsyncClient(timeout=15.0, headers={"User-Agent": "blockrun-mcp"})
        gateway = GatewayClient(api_url, None, http=http)
        try:
            return await gateway.list_models()
        finally:
            await gateway.aclose()

    try:
        if args.sandbox:
            from blockrun_mcp.sandbox import SandboxServer

            with SandboxServer() as sandbox:
                entries = anyio.run(fetch, sandbox.base_url)
            source = "the built-in sandbox"
        else:
            api_url = _config().api_url
            entries = anyio.run(fetch, api_url)
            source = api_url
    except BlockrunError as exc:
        _fail(f"{exc.message} (`blockrun-mcp models --sandbox` works offline)", code=1)
    entries = filter_models(
        entries, category=args.category, provider=args.provider, max_price=args.max_price
    )
    if args.json:
        print(json.dumps({"source": source, "models": models_json(entries)}, indent=2))
    else:
        print(models_text(entries, source))


def _spend(args: argparse.Namespace) -> None:
    import json
    import sqlite3

    from blockrun_mcp.reports import (
        ledger_path,
        read_ledger,
        since_day,
        spend_csv,
        spend_summary,
        spend_text,
    )

    config = _config()
    since = since_day(args.days)
    if args.reconcile:
        _reconcile(config, sandbox=args.sandbox, quiet=args.json or args.csv)
    ledger = _open_ledger(config, sandbox=args.sandbox, read_only=True)
    where = (
        ledger.store.where
        if ledger is not None
        else str(ledger_path(config.data_dir, sandbox=args.sandbox))
    )
    try:
        payments, running_jobs = read_ledger(ledger, since) if ledger is not None else ([], {})
    except sqlite3.Error as exc:
        _fail(f"the ledger {where} cannot be read ({exc}); `blockrun-mcp doctor` says more", 1)
    finally:
        if ledger is not None:
            ledger.close()
    if args.csv:
        sys.stdout.write(spend_csv(payments))
        return
    summary = spend_summary(payments, where, since, running_jobs)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(spend_text(summary, sandbox=args.sandbox))


def _open_ledger(config: Config, *, sandbox: bool, read_only: bool) -> Ledger | None:
    """The ledger a command reads: PostgreSQL when BLOCKRUN_LEDGER_URL says so, else the SQLite
    file in the data dir (the sandbox's own with `sandbox`); None when there is none yet."""
    import sqlite3

    from blockrun_mcp.errors import BlockrunError
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.reports import ledger_path

    url = config.ledger_url
    try:
        if url is not None and not sandbox:
            return Ledger.open(url.get_secret_value(), config.data_dir, read_only=read_only)
        path = ledger_path(config.data_dir, sandbox=sandbox)
        if not path.exists():
            return None
        return Ledger(path, read_only=read_only)
    except BlockrunError as exc:
        _fail(exc.message, 1)
    except (sqlite3.Error, OSError) as exc:
        _fail(f"the ledger cannot be opened ({exc}); `blockrun-mcp doctor` says more", 1)


def _threads(args: argparse.Namespace) -> None:
    import json

    from blockrun_mcp.reports import threads_text, turns_text
    from blockrun_mcp.threads import ThreadStore, UnknownThread

    ledger = _open_ledger(_config(), sandbox=args.sandbox, read_only=True)
    if ledger is None:
        print("No threads yet: ask_model keeps one for every question it answers.")
        return
    try:
        store = ThreadStore(ledger)
        if args.thread_id:
            try:
                turns = store.turns(args.thread_id, "default")
            except UnknownThread as exc:
                _fail(exc.message, 1)
            if args.json:
                print(
                    json.dumps(
                        {"thread_id": args.thread_id, "turns": [_turn_json(t) for t in turns]},
                        indent=2,
                    )
                )
            else:
                print(turns_text(args.thread_id, turns))
            return
        recent = store.recent("default", limit=50)
        if args.json:
            print(json.dumps({"threads": [asdict(summary) for summary in recent]}, indent=2))
        else:
            print(threads_text(recent))
    finally:
        ledger.close()


def _turn_json(turn: Any) -> dict[str, Any]:
    data = asdict(turn)
    data["files"] = [{"path": f.label, "bytes": f.size} for f in turn.files]
    return data


def _reconcile(config: Config, *, sandbox: bool, quiet: bool) -> None:
    """`spend --reconcile`: the money rule's chain check over the ledger's open payments."""
    import anyio

    from blockrun_mcp.chain import ChainReader
    from blockrun_mcp.money import usd_text
    from blockrun_mcp.payments import reconcile
    from blockrun_mcp.x402.networks import network_by_name

    if sandbox:
        _fail(
            "--reconcile cannot check the sandbox ledger: the sandbox's stand-in chain lived in "
            "the server that made those payments, and it is gone. Its pretend payments need no "
            "reconciling; start a new sandbox session instead.",
            code=2,
        )
    ledger = _open_ledger(config, sandbox=False, read_only=False)
    if ledger is None:
        return
    network = network_by_name(config.network)

    async def run() -> Any:
        async with ChainReader(config.rpc_url, network.usdc) as chain:
            return await reconcile(ledger, chain, network.name)

    try:
        found = anyio.run(run)
    finally:
        ledger.close()
    out = sys.stderr if quiet else sys.stdout
    print(found.summary(), file=out)
    for outcome in found.outcomes:
        print(
            f"  payment {outcome.payment_id} ({usd_text(outcome.amount_atomic)}): "
            f"{outcome.result}: {outcome.reason}",
            file=out,
        )
    if not quiet:
        print()


def _tokens_file(given: Path | None) -> Path:
    """--file, else BLOCKRUN_HTTP_TOKENS_FILE, else the data dir's tokens.toml. Read from the
    environment directly: the file may not exist yet, which the server's settings refuse."""
    if given is not None:
        return given.expanduser()
    named = os.environ.get("BLOCKRUN_HTTP_TOKENS_FILE", "").strip()
    if named:
        return Path(named).expanduser()
    data = os.environ.get("BLOCKRUN_DATA_DIR", "").strip()
    return (Path(data).expanduser() if data else Path.home() / ".blockrun" / "mcp") / "tokens.toml"


def _token(args: argparse.Namespace) -> None:
    from blockrun_mcp.identities import IdentitiesError, add_identity, read_file

    path = _tokens_file(args.file)
    try:
        if args.action == "list":
            identities = read_file(path) if path.exists() else []
            if not identities:
                print(f"No identities in {path}: add one with `blockrun-mcp token add NAME`.")
                return
            print(f"{len(identities)} identit{'y' if len(identities) == 1 else 'ies'} in {path}:")
            for identity in identities:
                words = _budget_words(identity.daily_budget_usd, identity.max_per_call_usd)
                admin = "; admin (its /dashboard shows everyone)" if identity.admin else ""
                print(f"  {identity.name:<24} {words}{admin}")
            return
        made = add_identity(
            path,
            args.name,
            daily_budget_usd=args.daily_budget,
            max_per_call_usd=args.max_per_call,
            admin=args.admin,
        )
    except IdentitiesError as exc:
        _fail(exc.message, 1)
    except OSError as exc:
        _fail(f"cannot write {path} ({exc.strerror or exc})", 1)
    print(
        f"Added {args.name} to {path} "
        f"({_budget_words(args.daily_budget, args.max_per_call)}"
        f"{'; admin: its /dashboard shows everyone' if args.admin else ''}).\n"
        "Its token, shown this once (the file keeps only its SHA-256):\n\n"
        f"  {made}\n\n"
        "Give it to that person; their host connects with, e.g. (Claude Code):\n"
        "  claude mcp add --transport http blockrun https://YOUR-SERVER/mcp \\\n"
        f'    --header "Authorization: Bearer {made}"\n'
        + (
            f"A running server re-reads the file within a second: {args.name} is let in now."
            if os.environ.get("BLOCKRUN_HTTP_TOKENS_FILE", "").strip()
            else f"A server reads it only if told: set BLOCKRUN_HTTP_TOKENS_FILE={path} in its "
            "environment, and (re)start it."
        )
    )


def _budget_words(daily_budget_usd: float | None, max_per_call_usd: float | None) -> str:
    daily = (
        "no daily budget of its own"
        if daily_budget_usd is None
        else f"{dollars(daily_budget_usd)} a day"
    )
    per_call = (
        "per call as BLOCKRUN_MAX_PER_CALL_USD"
        if max_per_call_usd is None
        else f"at most {dollars(max_per_call_usd)} a call"
    )
    return f"{daily}, {per_call}"


def _migrate() -> None:
    from blockrun_mcp.errors import BlockrunError

    config = _config()
    if config.ledger_url is None:
        from blockrun_mcp.ledger import Ledger
        from blockrun_mcp.ledger_sqlite import SCHEMA_VERSION

        path = config.data_dir / "ledger.sqlite3"
        try:
            config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            Ledger(path).close()  # opening a SQLite ledger migrates it
        except (BlockrunError, OSError) as exc:
            _fail(f"cannot migrate {path} ({getattr(exc, 'message', exc)})", 1)
        print(f"{path}: SQLite, schema version {SCHEMA_VERSION} (up to date)")
        return
    from blockrun_mcp.ledger_postgres import PostgresBackend, shown

    url = config.ledger_url.get_secret_value()
    try:
        store = PostgresBackend(url, pool_size=1)  # opening it migrates, under the lock
        try:
            applied = store.migrations_applied
            after = store.schema_version()
            before = after - applied
        finally:
            store.close()
    except BlockrunError as exc:
        _fail(exc.message, 1)
    if applied:
        print(f"{shown(url)}: migrated from schema version {before} to {after}.")
    else:
        print(f"{shown(url)}: schema version {after}, up to date.")


def _doctor(as_json: bool) -> None:
    from blockrun_mcp.doctor import FAIL, checks_json, render_checks, run_checks
    from blockrun_mcp.tables import use_colour

    checks = run_checks()
    print(checks_json(checks) if as_json else render_checks(checks, use_colour()))
    sys.exit(1 if any(c.status == FAIL for c in checks) else 0)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:
        # `blockrun-mcp spend --json | head`: the reader left; no traceback for that. Python
        # flushes stdout once more at exit, so point it somewhere that cannot break.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


def _main(argv: Sequence[str] | None) -> None:
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
        _wallet(args.action, args.show_private_key)
        return
    if args.command == "models":
        _models(args)
        return
    if args.command == "threads":
        _threads(args)
        return
    if args.command == "spend":
        _spend(args)
        return
    if args.command == "doctor":
        _doctor(args.json)
        return
    if args.command == "dashboard":
        from blockrun_mcp.dashboard.server import serve_dashboard

        config = _config()
        with contextlib.suppress(KeyboardInterrupt):
            serve_dashboard(
                config, port=args.port, open_browser=not args.no_open, sandbox=args.sandbox
            )
        return
    if args.command == "token":
        _token(args)
        return
    if args.command == "migrate":
        _migrate()
        return
    if args.command == "sandbox":
        from blockrun_mcp.sandbox import run_sandbox

        with contextlib.suppress(KeyboardInterrupt):
            run_sandbox(args.host, args.port, network=args.network)
        return
    parser.print_help()
    sys.exit(0)
