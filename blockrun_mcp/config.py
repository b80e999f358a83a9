"""Every environment variable the product reads, with defaults, read once and validated here."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.money import parse_usd_text

DEFAULT_API_URL = "https://blockrun.ai/api"
NETWORK_NAMES = ("base", "base-sepolia")
# Public JSON-RPC endpoints, used only to show the wallet's USDC balance.
DEFAULT_RPC_URLS = {"base": "https://mainnet.base.org", "base-sepolia": "https://sepolia.base.org"}

# Every variable load_config reads. The manifests, the README and `doctor` are checked against it.
ENV_VARS = (
    "BLOCKRUN_API_URL",
    "BLOCKRUN_WALLET_KEY",
    "BASE_CHAIN_WALLET_KEY",
    "BLOCKRUN_NETWORK",
    "BLOCKRUN_SESSION_BUDGET_USD",
    "BLOCKRUN_MAX_PER_CALL_USD",
    "BLOCKRUN_DAILY_BUDGET_USD",
    "BLOCKRUN_DATA_DIR",
    "BLOCKRUN_OUTPUT_DIR",
    "BLOCKRUN_HTTP_TOKEN",
    "BLOCKRUN_RPC_URL",
    "BLOCKRUN_CALL_TIMEOUT_S",
    "BLOCKRUN_PAY_TO",
    "BLOCKRUN_WORKSPACE",
    "BLOCKRUN_CONFIRM_ABOVE_USD",
    "BLOCKRUN_LEDGER_URL",
    "BLOCKRUN_HTTP_TOKENS_FILE",
)
DEFAULT_CALL_TIMEOUT_S = 600.0  # long reasoning answers are legitimate; a trickle forever is not
MAX_CALL_TIMEOUT_S = 24 * 3600.0
HEX_DIGITS = "0123456789abcdefABCDEF"


class ConfigError(BlockrunError, ValueError):
    """A setting is unusable; the message names the variable and the fix."""


class Config(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_url: str = DEFAULT_API_URL
    wallet_key: SecretStr | None = None
    wallet_key_source: str | None = None  # which variable held the key
    network: str = "base"
    session_budget_usd: float = 1.00
    max_per_call_usd: float = 0.50
    daily_budget_usd: float | None = None
    data_dir: Path = Path("~/.blockrun/mcp").expanduser()
    output_dir: Path = Path("~/.blockrun/mcp/media").expanduser()
    http_token: SecretStr | None = None
    # The balance shown by `wallet` and `doctor`, and the chain check that releases expired,
    # unused authorizations (reconcile.py).
    rpc_url: str = DEFAULT_RPC_URLS["base"]
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S  # one paid call, first request to last byte
    pay_to: str | None = None  # when set, the only payee a payment is ever signed for
    # Where `files` may come from when the MCP client offers no roots (else: the start directory).
    workspace: tuple[Path, ...] = ()
    # A paid call quoted above this asks the person first (MCP elicitation); None: never asks.
    confirm_above_usd: float | None = None
    # The ledger on PostgreSQL for a team's instances; None: SQLite in the data dir.
    ledger_url: SecretStr | None = None
    # Identities (name, token hash, budgets) for the HTTP transport; see identities.py.
    tokens_file: Path | None = None

    @property
    def shared_ledger(self) -> bool:
        """Several instances may share this ledger: HTTP is served stateless, and budgets are
        per identity and per day rather than per MCP session."""
        return self.ledger_url is not None

    home: Path = Path("~").expanduser()  # where ~/.blockrun key files are looked up


def _money(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    # A leading "$" only repeats the unit the name says ("$0.10" always worked); "$ 1" does not
    # pass as "1", nor anything float() takes that reads as another amount (money.parse_usd_text).
    amount = raw[1:] if raw.startswith("$") and not raw[1:2].isspace() else raw
    try:
        value = parse_usd_text(amount)
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None
    if value > 1_000_000:
        raise ConfigError(f"{name}={raw!r} is implausibly large; use a real dollar limit")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw.removesuffix("s"))
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number of seconds; use e.g. {name}=600"
        ) from None
    if not math.isfinite(value) or not 0 < value <= MAX_CALL_TIMEOUT_S:
        raise ConfigError(
            f"{name}={raw!r} must be more than 0 and at most {MAX_CALL_TIMEOUT_S:g} seconds, "
            f"e.g. {name}=600"
        )
    return value


def _address(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    body = raw.removeprefix("0x")
    if not raw.startswith("0x") or len(body) != 40 or any(c not in HEX_DIGITS for c in body):
        raise ConfigError(
            f"{name}={raw[:60]!r} is not an address; use the 0x-prefixed 40-hex-digit address of "
            "the payee, or leave it unset"
        )
    return raw


def _paths(env: Mapping[str, str], name: str) -> tuple[Path, ...]:
    """A list of directories, separated as PATH is (":" here, ";" on Windows)."""
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    paths = []
    for part in raw.split(os.pathsep):
        if not part.strip():
            continue
        path = Path(part.strip()).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"{name} names {part.strip()!r}, which is not a directory; list existing "
                f"directories separated by {os.pathsep!r}"
            )
        paths.append(path.resolve())
    return tuple(paths)


def _ledger_url(raw: str) -> SecretStr | None:
    """A PostgreSQL URL (it may hold a password, so it is kept as a secret)."""
    from urllib.parse import urlsplit

    url = raw.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(
            "BLOCKRUN_LEDGER_URL must be a PostgreSQL URL such as "
            "postgresql://user:password@db.example:5432/blockrun, or unset for the SQLite ledger"
        )
    return SecretStr(url)


def _file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    # Whether it exists is checked where it is read (serving HTTP, doctor): the other commands
    # (migrate, spend, token add itself) must work before it is made.
    return Path(raw).expanduser().resolve()


def _api_url(raw: str, name: str = "BLOCKRUN_API_URL", example: str = DEFAULT_API_URL) -> str:
    from urllib.parse import urlparse

    url = raw.strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name}={raw!r} is not an http(s) URL; use e.g. {example}")
    loopback = parsed.hostname in ("localhost", "127.0.0.1", "::1")
    if parsed.scheme == "http" and not loopback:
        raise ConfigError(
            f"{name}={raw!r} uses plain http to a remote host; use https "
            "(plain http is allowed only for a local server on 127.0.0.1)"
        )
    return url


def load_config(env: Mapping[str, str] | None = None, *, home: Path | None = None) -> Config:
    """Read and validate the environment. Raises ConfigError naming the variable to fix."""
    env = os.environ if env is None else env
    home = (home or Path(env.get("HOME") or Path.home())).expanduser()

    network = env.get("BLOCKRUN_NETWORK", "").strip().lower() or "base"
    if network not in NETWORK_NAMES:
        raise ConfigError(
            f"BLOCKRUN_NETWORK={network!r} is not supported; use 'base' (mainnet) or 'base-sepolia'"
        )

    key_source = next(
        (
            name
            for name in ("BLOCKRUN_WALLET_KEY", "BASE_CHAIN_WALLET_KEY")
            if env.get(name, "").strip()
        ),
        None,
    )

    data_raw = env.get("BLOCKRUN_DATA_DIR", "").strip()
    data_dir = Path(data_raw).expanduser() if data_raw else home / ".blockrun" / "mcp"
    output_raw = env.get("BLOCKRUN_OUTPUT_DIR", "").strip()
    output_dir = Path(output_raw).expanduser() if output_raw else data_dir / "media"

    token = env.get("BLOCKRUN_HTTP_TOKEN", "").strip()  # its length is checked where HTTP is served

    session = _money(env, "BLOCKRUN_SESSION_BUDGET_USD", 1.00)
    per_call = _money(env, "BLOCKRUN_MAX_PER_CALL_USD", 0.50)
    assert session is not None and per_call is not None
    return Config(
        api_url=_api_url(env.get("BLOCKRUN_API_URL", "") or DEFAULT_API_URL),
        wallet_key=SecretStr(env[key_source].strip()) if key_source else None,
        wallet_key_source=key_source,
        network=network,
        session_budget_usd=session,
        max_per_call_usd=per_call,
        daily_budget_usd=_money(env, "BLOCKRUN_DAILY_BUDGET_USD", None),
        data_dir=data_dir.resolve(),
        output_dir=output_dir.resolve(),
        http_token=SecretStr(token) if token else None,
        rpc_url=_api_url(
            env.get("BLOCKRUN_RPC_URL", "") or DEFAULT_RPC_URLS[network],
            "BLOCKRUN_RPC_URL",
            DEFAULT_RPC_URLS[network],
        ),
        call_timeout_s=_seconds(env, "BLOCKRUN_CALL_TIMEOUT_S", DEFAULT_CALL_TIMEOUT_S),
        pay_to=_address(env, "BLOCKRUN_PAY_TO"),
        workspace=_paths(env, "BLOCKRUN_WORKSPACE"),
        confirm_above_usd=_money(env, "BLOCKRUN_CONFIRM_ABOVE_USD", None),
        ledger_url=_ledger_url(env.get("BLOCKRUN_LEDGER_URL", "")),
        tokens_file=_file(env, "BLOCKRUN_HTTP_TOKENS_FILE"),
        home=home,
    )
