"""`blockrun-mcp doctor`: every way the set-up can be wrong, each with its fix.

Checks only look: nothing is created, signed or paid. The network is touched twice, both with
short timeouts: the gateway's free catalog (GET /v1/models) and one `eth_call` for the balance.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blockrun_mcp.config import DEFAULT_API_URL, ENV_VARS, ConfigError, load_config
from blockrun_mcp.money import dollars

if TYPE_CHECKING:
    from blockrun_mcp.config import Config
    from blockrun_mcp.ledger import PaymentRow
    from blockrun_mcp.wallet import Wallet

GATEWAY_TIMEOUT_SECONDS = 5.0
MIN_TOKEN_CHARS = 16  # as transports.check_http_binding demands (not imported: it pulls in more)
STDIO_TIMEOUT_SECONDS = 30.0
# The PATH a GUI app gets on macOS (launchd) and often on Linux desktops: no ~/.local/bin.
GUI_HOST_PATH = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    area: str
    status: str  # ok, warn or FAIL
    detail: str
    fix: str = ""


def run_checks(env: Mapping[str, str] | None = None, *, start_server: bool = True) -> list[Check]:
    """Every check, in order. `start_server=False` skips starting the server over stdio."""
    env = dict(os.environ if env is None else env)
    checks: list[Check] = []
    config = _settings(env, checks)
    wallet = _key(config, checks)
    _network(config, checks)
    _gateway(config, checks)
    if wallet is not None:
        _balance(config, wallet, checks)
    _budgets(config, checks)
    _team(env, config, checks)
    _directory("data dir", config.data_dir, "BLOCKRUN_DATA_DIR", checks, private=True)
    if config.ledger_url is not None:
        _shared_ledger(config, checks)
    else:
        _ledger(config.data_dir / "ledger.sqlite3", config, checks)
    _directory("output dir", config.output_dir, "BLOCKRUN_OUTPUT_DIR", checks, private=False)
    _stdio(env, checks, start_server)
    return checks


# --- settings -------------------------------------------------------------------------------


def _settings(env: dict[str, str], checks: list[Check]) -> Config:
    """Validate each variable on its own, so every bad one is named; go on without the bad ones."""
    home = env.get("HOME", "")
    bad = []
    for name in ENV_VARS:
        if not env.get(name, "").strip():
            continue
        try:
            load_config({"HOME": home, name: env[name]})
        except ConfigError as exc:
            bad.append(name)
            checks.append(
                Check(
                    "settings",
                    FAIL,
                    str(exc),
                    f"correct {name} where it is set (your MCP host's config or your shell), "
                    "or remove it to use the default",
                )
            )
    if not bad:
        used = [n for n in ENV_VARS if env.get(n, "").strip()]
        detail = f"valid ({', '.join(used)})" if used else "valid (all defaults)"
        checks.append(Check("settings", OK, detail))
    token = env.get("BLOCKRUN_HTTP_TOKEN", "").strip()
    if token and len(token) < MIN_TOKEN_CHARS:
        checks.append(
            Check(
                "settings",
                WARN,
                f"BLOCKRUN_HTTP_TOKEN is shorter than {MIN_TOKEN_CHARS} characters: "
                "`serve --transport http` refuses to start with it (stdio does not use it)",
                "set BLOCKRUN_HTTP_TOKEN to a long random token, e.g. "
                'python3 -c "import secrets; print(secrets.token_urlsafe(32))"',
            )
        )
    for name in sorted(env):
        if name.startswith("BLOCKRUN_") and name not in ENV_VARS:
            close = difflib.get_close_matches(name, ENV_VARS, n=1, cutoff=0.6)
            checks.append(
                Check(
                    "settings",
                    WARN,
                    f"{name} is not a blockrun-mcp setting and is ignored",
                    f"did you mean {close[0]}?"
                    if close
                    else "the README's Configuration table lists every variable",
                )
            )
    try:
        config = load_config({k: v for k, v in env.items() if k not in bad})
    except ConfigError:  # not expected: each variable passed alone
        config = load_config({"HOME": home})
    return config


# --- key and wallet -------------------------------------------------------------------------


def _key(config: Config, checks: list[Check]) -> Wallet | None:
    from blockrun_mcp.wallet import WalletError, find_wallet, key_file_candidates

    try:
        wallet = find_wallet(config)
    except WalletError as exc:
        checks.append(
            Check(
                "key",
                FAIL,
                str(exc),
                "fix the key as the message says; never paste a key into a chat or a shared file",
            )
        )
        return None
    if wallet is None:
        files = " or ".join(str(p) for p in key_file_candidates(config.home))
        checks.append(
            Check(
                "key",
                WARN,
                f"no wallet key (looked in BLOCKRUN_WALLET_KEY, BASE_CHAIN_WALLET_KEY, {files}); "
                "only free models will work",
                "run `blockrun-mcp wallet create`, then send it USDC on Base",
            )
        )
        return None
    path = Path(wallet.source)
    where = wallet.source
    if path.is_file():
        where = f"{path} (mode {stat.S_IMODE(path.stat().st_mode):o})"
    checks.append(Check("key", OK, f"{wallet.address} from {where}"))
    return wallet


def _network(config: Config, checks: list[Check]) -> None:
    from blockrun_mcp.x402.networks import network_by_name

    spec = network_by_name(config.network)
    detail = f"{spec.name} ({spec.caip2}): payments are signed only for USDC {spec.usdc}"
    if spec.name != "base" and config.api_url == DEFAULT_API_URL:
        checks.append(
            Check(
                "network",
                WARN,
                f"{detail}, but {DEFAULT_API_URL} quotes on Base mainnet, so paid calls will be "
                "refused before signing",
                "unset BLOCKRUN_NETWORK for real use, or test with "
                "BLOCKRUN_API_URL=https://testnet.blockrun.ai/api",
            )
        )
        return
    checks.append(Check("network", OK, detail))


def _gateway(config: Config, checks: list[Check]) -> None:
    import anyio
    import httpx2

    from blockrun_mcp.errors import BlockrunError
    from blockrun_mcp.gateway import GatewayClient, GatewayError, GatewayUnreachable

    async def fetch() -> int:
        http = httpx2.AsyncClient(
            timeout=GATEWAY_TIMEOUT_SECONDS, headers={"User-Agent": "blockrun-mcp doctor"}
        )
        gateway = GatewayClient(config.api_url, None, http=http)
        try:
            return len(await gateway.list_models())
        finally:
            await gateway.aclose()

    url = f"{config.api_url}/v1/models"
    started = time.monotonic()
    try:
        count = anyio.run(fetch)
    except GatewayUnreachable:
        checks.append(
            Check(
                "gateway",
                FAIL,
                f"{url} cannot be reached (no answer within {GATEWAY_TIMEOUT_SECONDS:g} s)",
                "check your internet connection, proxy or firewall, and BLOCKRUN_API_URL "
                f"(default {DEFAULT_API_URL}); to work offline use `blockrun-mcp serve --sandbox`",
            )
        )
        return
    except BlockrunError as exc:
        hint = "BLOCKRUN_API_URL must be the gateway's base URL, ending in /api"
        status = exc.status if isinstance(exc, GatewayError) else None
        if status == 404 and not config.api_url.endswith("/api"):
            hint = f"add /api: BLOCKRUN_API_URL={config.api_url}/api"
        checks.append(
            Check("gateway", FAIL, f"{url} is not a BlockRun model catalog: {exc.message}", hint)
        )
        return
    elapsed = (time.monotonic() - started) * 1000
    checks.append(Check("gateway", OK, f"{url} answered with {count} models in {elapsed:.0f} ms"))


def _balance(config: Config, wallet: Wallet, checks: list[Check]) -> None:
    from blockrun_mcp.chain import BalanceUnavailable, usdc_balance_atomic
    from blockrun_mcp.money import funding_hint, usdc_balance_text
    from blockrun_mcp.x402.networks import network_by_name

    spec = network_by_name(config.network)
    try:
        atomic = usdc_balance_atomic(config.rpc_url, spec.usdc, wallet.address)
    except BalanceUnavailable as exc:
        checks.append(
            Check(
                "balance",
                WARN,
                f"unknown: the RPC node could not be asked ({exc})",
                "not needed for payments; set BLOCKRUN_RPC_URL to another Base RPC to see it",
            )
        )
        return
    if atomic == 0:
        checks.append(
            Check(
                "balance",
                WARN,
                f"0 USDC on {spec.name}: every paid call will fail with 'insufficient funds'",
                f"{funding_hint(spec, wallet.address)} Free models work meanwhile.",
            )
        )
        return
    checks.append(Check("balance", OK, f"{usdc_balance_text(atomic)} on {spec.name}"))


def _budgets(config: Config, checks: list[Check]) -> None:
    session, per_call, daily = (
        config.session_budget_usd,
        config.max_per_call_usd,
        config.daily_budget_usd,
    )
    summary = (
        f"session {dollars(session)}, per call {dollars(per_call)}, "
        f"daily {'unset' if daily is None else f'{dollars(daily)}'}"
    )
    problems = []
    if session == 0 or per_call == 0 or daily == 0:
        zero = [
            name
            for name, value in (
                ("BLOCKRUN_SESSION_BUDGET_USD", session),
                ("BLOCKRUN_MAX_PER_CALL_USD", per_call),
                ("BLOCKRUN_DAILY_BUDGET_USD", daily),
            )
            if value == 0
        ]
        problems.append(
            Check(
                "budgets",
                WARN,
                f"{summary}: {' and '.join(zero)} = 0 allows only free models",
                "raise it (e.g. 1.00) to use paid models",
            )
        )
    elif per_call > session:
        problems.append(
            Check(
                "budgets",
                WARN,
                f"{summary}: the per-call cap is above the session budget, so no call can spend "
                f"more than {dollars(session)} anyway",
                "lower BLOCKRUN_MAX_PER_CALL_USD or raise BLOCKRUN_SESSION_BUDGET_USD",
            )
        )
    if daily is not None and 0 < daily < session:
        problems.append(
            Check(
                "budgets",
                WARN,
                f"{summary}: the daily budget is below the session budget, so sessions will stop "
                f"at {dollars(daily)} a day",
                "raise BLOCKRUN_DAILY_BUDGET_USD or lower BLOCKRUN_SESSION_BUDGET_USD",
            )
        )
    checks.extend(problems or [Check("budgets", OK, summary)])
    checks.append(Check("session budget", OK, session_scope(config)))


def session_scope(config: Config) -> str:
    """What one session budget covers on this configuration (README, "Session budgets")."""
    if config.shared_ledger:
        return (
            "over HTTP there are no sessions: each identity's daily budget (tokens file) on every "
            "instance; over stdio, the server process"
        )
    return (
        "over stdio, the server process; over HTTP, each MCP session, owned by the identity "
        "that opened it, else (2026-07-28 clients, which have no sessions) the identity on "
        "this server since it started"
    )


# --- a team's deployment: identities and the PostgreSQL ledger -------------------------------

# Instances' heartbeats and liveness use the database's clock; the UTC day of a payment (and so
# which daily budget it counts in) still uses each instance's own.
MAX_CLOCK_SKEW_SECONDS = 5.0


def _team(env: dict[str, str], config: Config, checks: list[Check]) -> None:
    from blockrun_mcp.errors import BlockrunError
    from blockrun_mcp.identities import Identities

    if config.tokens_file is not None:
        try:
            identities = Identities.load(config.tokens_file, None)
        except BlockrunError as exc:
            checks.append(
                Check(
                    "identities",
                    FAIL,
                    exc.message,
                    "fix the entry it names, or add identities with `blockrun-mcp token add`",
                )
            )
        else:
            described = ", ".join(
                f"{i.name} ({'no daily budget' if i.daily_budget_usd is None else f'{dollars(i.daily_budget_usd)}/day'})"
                for i in identities.by_name.values()
            )
            checks.append(
                Check(
                    "identities",
                    OK if identities else WARN,
                    f"{config.tokens_file}: {described}"
                    if identities
                    else f"{config.tokens_file} has no identities: every HTTP request gets 401",
                    "" if identities else "add one with `blockrun-mcp token add NAME`",
                )
            )
    if config.shared_ledger and env.get("BLOCKRUN_SESSION_BUDGET_USD", "").strip():
        checks.append(
            Check(
                "budgets",
                WARN,
                "BLOCKRUN_SESSION_BUDGET_USD does not apply to `serve --transport http` with "
                "BLOCKRUN_LEDGER_URL: that is served stateless (any instance may answer any "
                "request), so budgets are per identity and per day; stdio sessions still use it",
                "cap each person with daily_budget_usd in BLOCKRUN_HTTP_TOKENS_FILE and the "
                "wallet with BLOCKRUN_DAILY_BUDGET_USD",
            )
        )


def _shared_ledger(config: Config, checks: list[Check]) -> None:
    """The PostgreSQL ledger: reachable, migrated, and on a clock that agrees with ours."""
    from blockrun_mcp.errors import BlockrunError
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.ledger_postgres import SCHEMA_VERSION, PostgresBackend, shown

    assert config.ledger_url is not None
    url = config.ledger_url.get_secret_value()
    try:
        store = PostgresBackend(url, read_only=True, pool_size=1)
    except BlockrunError as exc:
        checks.append(
            Check(
                "ledger",
                FAIL,
                exc.message,
                "start the database or correct BLOCKRUN_LEDGER_URL (postgresql://user:password"
                "@host:5432/dbname); the user needs CREATE on the database for the migrations",
            )
        )
        return
    try:
        version = store.schema_version()
        if version < SCHEMA_VERSION:
            checks.append(
                Check(
                    "ledger",
                    FAIL,
                    f"{shown(url)} is at schema version {version} of {SCHEMA_VERSION}",
                    "run `blockrun-mcp migrate` (a server applies it too when it starts)",
                )
            )
            return
        if version > SCHEMA_VERSION:
            checks.append(
                Check(
                    "ledger",
                    FAIL,
                    f"{shown(url)} is at schema version {version}, newer than this "
                    f"blockrun-mcp knows ({SCHEMA_VERSION})",
                    "upgrade blockrun-mcp on this machine to the version the other instances run",
                )
            )
            return
        skew = store.clock_skew_seconds()
        if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
            checks.append(
                Check(
                    "ledger",
                    WARN,
                    f"the database's clock and this machine's differ by {skew:+.1f} s",
                    "run NTP (chrony, systemd-timesyncd) on every instance and on the database "
                    "server: each instance dates its payments' UTC day by its own clock",
                )
            )
        ledger = Ledger(store)
        payments = ledger.payments()
        detail = (
            f"{shown(url)}: PostgreSQL, schema version {version}, clock skew {skew:+.2f} s, "
            f"{len(payments)} payment(s)"
        ) + _pending_detail(payments)
        checks.append(Check("ledger", OK, detail))
        _payees(payments, config, checks)
    except BlockrunError as exc:
        checks.append(Check("ledger", FAIL, exc.message, "check the database server's log"))
    finally:
        store.close()


# --- directories ----------------------------------------------------------------------------


def _directory(area: str, path: Path, variable: str, checks: list[Check], *, private: bool) -> None:
    fix = f"set {variable} to a folder you can write to"
    if path.exists() and not path.is_dir():
        checks.append(Check(area, FAIL, f"{path} exists but is not a folder", fix))
        return
    if not path.exists():
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            checks.append(
                Check(area, FAIL, f"{path} cannot be created: {ancestor} is not a folder", fix)
            )
        elif not _writable(ancestor):
            checks.append(
                Check(area, FAIL, f"{path} cannot be created: {ancestor} is not writable", fix)
            )
        else:
            checks.append(Check(area, OK, f"{path} will be created on first use"))
        return
    if not _writable(path):
        checks.append(Check(area, FAIL, f"{path} is not writable", fix))
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if private and mode & 0o077:
        checks.append(
            Check(
                area,
                WARN,
                f"{path} is writable but other users can open it (mode {mode:o})",
                f"chmod 700 {path}",
            )
        )
        return
    checks.append(Check(area, OK, f"{path} is writable"))


def _writable(folder: Path) -> bool:
    """Really try: os.access says yes to root even on a read-only file system."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".blockrun-doctor-"):
            return True
    except OSError:
        return False


def _ledger(path: Path, config: Config, checks: list[Check]) -> None:
    if not path.exists():
        return
    import sqlite3

    mode = stat.S_IMODE(path.stat().st_mode)
    try:
        from blockrun_mcp.reports import read_payments

        payments = read_payments(path)
        count = len(payments)
    except sqlite3.Error as exc:
        checks.append(
            Check(
                "ledger",
                FAIL,
                f"{path} cannot be read ({exc})",
                f"move it aside (mv {path} {path}.broken); a new ledger is created, but today's "
                "daily spend starts from zero",
            )
        )
        return
    if mode & 0o077:
        checks.append(
            Check(
                "ledger", WARN, f"{path} is readable by others (mode {mode:o})", f"chmod 600 {path}"
            )
        )
        return
    checks.append(
        Check("ledger", OK, f"{path} holds {count} payment(s)" + _pending_detail(payments))
    )
    _payees(payments, config, checks)


def _pending_detail(payments: list[PaymentRow]) -> str:
    """What the ledger holds signed with the outcome unknown, for either store's line."""
    from blockrun_mcp.money import usd_text

    pending = [row for row in payments if row.status == "signed"]
    if not pending:
        return ""
    amount = usd_text(sum(row.amount_atomic for row in pending))
    return (
        f"; {len(pending)} signed with the outcome unknown ({amount}, counted as spent "
        "until settled or expired unused: `blockrun-mcp spend` says why each is pending)"
    )


def _payees(payments: list[PaymentRow], config: Config, checks: list[Check]) -> None:
    """Who was paid: one gateway has one payTo, so a second one (or one other than a pinned
    BLOCKRUN_PAY_TO) is worth a look."""
    seen: dict[str, list[PaymentRow]] = {}
    for row in payments:
        if row.pay_to:
            seen.setdefault(row.pay_to.lower(), []).append(row)
    if not seen:
        return
    described = "; ".join(
        f"{rows[0].pay_to} ({len(rows)} payment(s), last {_day(max(r.created_at for r in rows))})"
        for rows in sorted(seen.values(), key=lambda rows: -max(r.created_at for r in rows))
    )
    pinned = config.pay_to.lower() if config.pay_to else None
    if pinned is not None and set(seen) - {pinned}:
        checks.append(
            Check(
                "payee",
                WARN,
                f"the ledger has payments to payees other than BLOCKRUN_PAY_TO: {described}",
                "those were signed before the pin was set; check them against BlockRun's "
                "published payee",
            )
        )
    elif len(seen) > 1:
        checks.append(
            Check(
                "payee",
                WARN,
                f"the gateway's payTo changed between payments: {described}",
                "check which address BlockRun publishes, then pin it with BLOCKRUN_PAY_TO",
            )
        )
    else:
        checks.append(Check("payee", OK, f"every payment went to {described}"))


def _day(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


# --- stdio from the host --------------------------------------------------------------------


def _stdio(env: dict[str, str], checks: list[Check], start_server: bool) -> None:
    path = env.get("PATH", os.defpath)
    uvx = shutil.which("uvx", path=path)
    console = shutil.which("blockrun-mcp", path=path)
    own = Path(sys.executable).with_name("blockrun-mcp")
    fallback = str(own) if own.exists() else f"{sys.executable} -m blockrun_mcp"
    if uvx is None and console is None:
        checks.append(
            Check(
                "stdio",
                FAIL,
                "neither `uvx` nor `blockrun-mcp` is on PATH, so the host configs in manifests/ "
                "cannot start the server",
                f"install uv (https://docs.astral.sh/uv/), or use the absolute command "
                f"`{fallback}` in your host's config",
            )
        )
    elif uvx is None:
        checks.append(
            Check(
                "stdio",
                WARN,
                f"`uvx` is not on PATH; `blockrun-mcp` is ({console})",
                f'in your host\'s config use "command": "{console}" with no args, instead of uvx',
            )
        )
    else:
        gui_path = os.pathsep.join(GUI_HOST_PATH)
        hint = ""
        if shutil.which("uvx", path=gui_path) is None:
            hint = (
                f"; GUI hosts (Claude Desktop, Cursor from the Dock) may not see {Path(uvx).parent}: "
                f'if one says "spawn uvx ENOENT", use "command": "{uvx}"'
            )
        checks.append(Check("stdio", OK, f"uvx is {uvx}{hint}"))
    if start_server:
        checks.append(_stdio_probe(console, env))


def initialize_request(client_name: str) -> dict[str, Any]:
    """A raw MCP `initialize` request (JSON-RPC id 1), for talking to the server without a client."""
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": client_name, "version": "1"},
        },
    }


def _stdio_probe(console: str | None, env: dict[str, str]) -> Check:
    """Start the server as a host would and send `initialize`; it must answer on stdout."""
    command = [console] if console else [sys.executable, "-m", "blockrun_mcp"]
    request = initialize_request("blockrun-mcp doctor")
    shown = " ".join(command)
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            input=json.dumps(request) + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=STDIO_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(
            "server",
            FAIL,
            f"`{shown}` did not answer initialize ({type(exc).__name__})",
            "run it in a terminal to see why",
        )
    elapsed = time.monotonic() - started
    for line in done.stdout.splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
            version = answer["result"].get("protocolVersion", "?")
            return Check(
                "server",
                OK,
                f"`{shown}` answers initialize over stdio ({elapsed:.1f} s, {version})",
            )
    reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Check(
        "server",
        FAIL,
        f"`{shown}` did not answer initialize over stdio: {reason}",
        "fix the problem it names; hosts show the same error in their MCP logs",
    )


# --- output ---------------------------------------------------------------------------------


def render_checks(checks: list[Check], colour: bool) -> str:
    from blockrun_mcp.tables import paint

    colours = {OK: "green", WARN: "yellow", FAIL: "red"}
    width = max(len(c.area) for c in checks)
    lines = []
    for check in checks:
        mark = paint(check.status.ljust(4), colours[check.status], colour)
        lines.append(f"  {mark}  {check.area.ljust(width)}  {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"  {'':4}  {'':{width}}  fix: {check.fix}")
    failures = sum(c.status == FAIL for c in checks)
    warnings = sum(c.status == WARN for c in checks)
    if failures:
        verdict = paint(f"{failures} problem(s) to fix", "red", colour)
    elif warnings:
        verdict = paint(f"ready, with {warnings} warning(s)", "yellow", colour)
    else:
        verdict = paint("all good", "green", colour)
    return "\n".join(["blockrun-mcp doctor", *lines, "", verdict])


def checks_json(checks: list[Check]) -> str:
    return json.dumps(
        {"ok": not any(c.status == FAIL for c in checks), "checks": [asdict(c) for c in checks]},
        indent=2,
    )
