"""Who is calling over HTTP: identities with their own budgets, from a file that holds no secret.

BLOCKRUN_HTTP_TOKENS_FILE is TOML:

    [[identity]]
    name = "alice"
    token_sha256 = "<hex SHA-256 of the bearer token>"
    daily_budget_usd = 2.00
    max_per_call_usd = 0.50   # optional; else BLOCKRUN_MAX_PER_CALL_USD

Only the tokens' hashes are stored, so the file can be read by whoever deploys the server;
`blockrun-mcp token add` makes a token, prints it once and appends its hash. BLOCKRUN_HTTP_TOKEN
keeps working as one more identity, "default", with no budget of its own. The wallet's
BLOCKRUN_DAILY_BUDGET_USD still caps all identities together.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.money import parse_usd_text

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TOKEN_BYTES = 32  # 256 bits, url-safe base64: 43 characters
DEFAULT = "default"  # the identity of BLOCKRUN_HTTP_TOKEN, stdio, and an open loopback server
AMOUNT_KEYS = ("daily_budget_usd", "max_per_call_usd")
# An amount given as a TOML integer, `daily_budget_usd = VALUE  # comment`: tomllib reads `+5`,
# `-0`, `1_000` and `0x10` as integers and hands over only their value, so their spelling is
# checked on the line. (Floats keep theirs through parse_float; strings and the rest are refused
# by type.)
_INTEGER_AMOUNT_LINE = re.compile(
    rf"""[ \t]*["']?(?P<key>{"|".join(AMOUNT_KEYS)})["']?[ \t]*=[ \t]*"""
    r"(?P<value>[+-]?(?:0x[0-9A-Fa-f_]+|0o[0-7_]+|0b[01_]+|[0-9_]+))[ \t]*(?:#.*)?"
)


class IdentitiesError(BlockrunError):
    """The tokens file is unusable; the message names the entry and the fix."""


@dataclass(frozen=True)
class Identity:
    name: str
    token_sha256: str
    daily_budget_usd: float | None = None
    max_per_call_usd: float | None = None

    def __repr__(self) -> str:  # the hash is not a secret, but it need not be in logs either
        return f"Identity({self.name!r})"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Identities:
    """The identities a server knows, found by the bearer token a request carries."""

    def __init__(self, identities: list[Identity]) -> None:
        self.by_name = {identity.name: identity for identity in identities}

    @classmethod
    def load(cls, path: Path | None, single_token: str | None) -> Identities:
        identities = read_file(path) if path is not None else []
        if single_token:
            if DEFAULT in {identity.name for identity in identities}:
                raise IdentitiesError(
                    f"{path} names an identity {DEFAULT!r}, which BLOCKRUN_HTTP_TOKEN already is; "
                    "rename it"
                )
            identities.append(Identity(DEFAULT, token_hash(single_token)))
        return cls(identities)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str) -> Identity | None:
        return self.by_name.get(name)

    def find(self, token: str) -> Identity | None:
        """The identity whose token this is; every hash is compared, in constant time each."""
        digest = token_hash(token)
        found = None
        for identity in self.by_name.values():
            if hmac.compare_digest(digest, identity.token_sha256):
                found = identity
        return found


def read_file(path: Path) -> list[Identity]:
    if not path.is_file():
        raise IdentitiesError(
            f"The tokens file {path} does not exist (or is not a file): make it with "
            f"`blockrun-mcp token add NAME --daily-budget USD --file {path}`, or unset "
            "BLOCKRUN_HTTP_TOKENS_FILE."
        )
    try:
        text = path.read_text(encoding="utf-8")
        # A float keeps its text (`5e-1`, `inf`, `-0.0`, `1_0.5` are TOML floats): _dollars reads
        # it as the amount it shows, or refuses it.
        data = tomllib.loads(text, parse_float=_TomlFloat)
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentitiesError(f"The tokens file {path} cannot be read ({exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise IdentitiesError(f"The tokens file {path} is not valid TOML ({exc}).") from None
    for number, line in enumerate(text.splitlines(), 1):
        if match := _INTEGER_AMOUNT_LINE.fullmatch(line):
            try:
                parse_usd_text(match["value"])
            except ValueError as error:
                raise IdentitiesError(
                    f"The tokens file {path}, line {number}: {match['key']}: {error}."
                ) from None
    entries = data.get("identity", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise IdentitiesError(f"The tokens file {path} must list [[identity]] tables.")
    identities: list[Identity] = []
    for index, entry in enumerate(entries, 1):
        identities.append(_identity(entry, f"{path}, identity {index}"))
    names = [identity.name for identity in identities]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise IdentitiesError(f"The tokens file {path} names {', '.join(duplicates)} twice.")
    hashes = [identity.token_sha256 for identity in identities]
    if len(set(hashes)) != len(hashes):
        raise IdentitiesError(f"The tokens file {path} gives two identities the same token.")
    return identities


def _identity(entry: dict[str, object], where: str) -> Identity:
    unknown = set(entry) - {"name", "token_sha256", *AMOUNT_KEYS}
    if unknown:
        raise IdentitiesError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise IdentitiesError(
            f"{where}: name must be 1-64 letters, digits, '_', '.', '@' or '-', got {name!r}."
        )
    digest = entry.get("token_sha256")
    if not isinstance(digest, str) or not SHA256_HEX.match(digest.lower()):
        raise IdentitiesError(
            f"{where} ({name}): token_sha256 must be the 64 hex digits of a SHA-256; make one "
            "with `blockrun-mcp token add`."
        )
    return Identity(
        name=name,
        token_sha256=digest.lower(),
        daily_budget_usd=_dollars(
            entry.get("daily_budget_usd"), f"{where} ({name})", "daily_budget_usd"
        ),
        max_per_call_usd=_dollars(
            entry.get("max_per_call_usd"), f"{where} ({name})", "max_per_call_usd"
        ),
    )


@dataclass(frozen=True)
class _TomlFloat:
    """A TOML float as written in the file (tomllib's parse_float), read by _dollars."""

    text: str

    def __repr__(self) -> str:  # as the file shows it, in errors about a key that is no amount
        return self.text


def _dollars(value: object, where: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, _TomlFloat):
        try:
            value = parse_usd_text(value.text)
        except ValueError as error:
            raise IdentitiesError(f"{where}: {key}: {error}.") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise IdentitiesError(f"{where}: {key} must be a number of dollars, got {value!r}.")
    if not 0 <= value <= 1_000_000:
        raise IdentitiesError(f"{where}: {key} must be between 0 and 1000000, got {value}.")
    return float(value)


def add_identity(
    path: Path, name: str, *, daily_budget_usd: float | None, max_per_call_usd: float | None
) -> str:
    """Make a random token for a new identity, append its hash to `path`, return the token.

    The token itself is written nowhere: the caller prints it once.
    """
    existing = read_file(path) if path.exists() else []
    if name in {identity.name for identity in existing}:
        raise IdentitiesError(f"{path} already has an identity {name!r}.")
    probe = Identity(name, "0" * 64, daily_budget_usd, max_per_call_usd)
    _identity(  # the same checks a server makes when it reads the file
        {
            "name": probe.name,
            "token_sha256": probe.token_sha256,
            **({"daily_budget_usd": daily_budget_usd} if daily_budget_usd is not None else {}),
            **({"max_per_call_usd": max_per_call_usd} if max_per_call_usd is not None else {}),
        },
        "the new identity",
    )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    lines = ["", "[[identity]]", f'name = "{name}"', f'token_sha256 = "{token_hash(token)}"']
    if daily_budget_usd is not None:
        lines.append(f"daily_budget_usd = {daily_budget_usd:.6f}")
    if max_per_call_usd is not None:
        lines.append(f"max_per_call_usd = {max_per_call_usd:.6f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return token
