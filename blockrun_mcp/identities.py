"""Who is calling over HTTP: identities with their own budgets, from a file that holds no secret.

BLOCKRUN_HTTP_TOKENS_FILE is TOML:

    [[identity]]
    name = "alice"
    token_sha256 = "<hex SHA-256 of the bearer token>"
    daily_budget_usd = 2.00
    max_per_call_usd = 0.50   # optional; else BLOCKRUN_MAX_PER_CALL_USD
    admin = true              # optional: its /dashboard shows everyone's spending, not just its own

Only the tokens' hashes are stored, so the file can be read by whoever deploys the server;
`blockrun-mcp token add` makes a token, prints it once and appends its hash. BLOCKRUN_HTTP_TOKEN
keeps working as one more identity, "default", with no budget of its own. The wallet's
BLOCKRUN_DAILY_BUDGET_USD still caps all identities together.

A running HTTP server re-reads the file when it changes (LiveIdentities), so `token add` and a
removed entry take effect without a restart. A file it can no longer read or accept makes it
refuse every request until the file is fixed: it never goes on with the old list, nor with none.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.money import parse_usd_text

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TOKEN_BYTES = 32  # 256 bits, url-safe base64: 43 characters
# How often a serving process looks at the tokens file: one stat per this many seconds at most,
# on the request path (no thread of its own), and a re-read only when the stat changed.
RECHECK_SECONDS = 1.0
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
    # Where this identity's `files` come from over HTTP (absolute server paths); None: the
    # server's BLOCKRUN_WORKSPACE, and without that `files` is refused.
    workspace: tuple[Path, ...] | None = None
    # The team server's /dashboard shows an admin everyone's payments and budgets; anyone else,
    # their own. It grants nothing else: an admin's calls are budgeted like anyone's.
    admin: bool = False

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

    # Why the identities cannot be used any more (LiveIdentities), else None.
    failure: str | None = None

    def requires_token(self) -> bool:
        """Whether a request needs a bearer token. A fixed set needs one when it is not empty."""
        return bool(self.by_name)

    def refresh(self) -> None:
        """Catch up with the tokens file (LiveIdentities); a fixed set has nothing to catch up."""

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


log = logging.getLogger(__name__)
# What a tokens file's stat says about its content: a change of any of them means read it again.
# ctime changes with chmod and chown too, so a file made unreadable is noticed like an edit.
StatKey = tuple[int, int, int, int, int]


def _stat_key(path: Path) -> StatKey:
    found = path.stat()
    return (found.st_mtime_ns, found.st_ctime_ns, found.st_size, found.st_ino, found.st_dev)


class LiveIdentities(Identities):
    """The identities of a serving process, kept in step with the tokens file.

    `refresh()` runs on the request path: it looks at the file's stat at most once per
    `recheck_seconds` and reads the file again only when that changed. A file that cannot be read
    or checked any more sets `failure`, and the transport then refuses every request: the old
    list would keep a revoked token working, an empty one would open the server. `on_change` hears
    of every new list, so what belonged to a removed identity can be let go at once.
    """

    def __init__(
        self,
        path: Path | None,
        single_token: str | None,
        *,
        check: Callable[[Identities], None] | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.single_token = single_token
        self.check = check
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self.failure = None
        self.on_change: Callable[[Identities], None] | None = None
        # The stat before the read: a change in between is then seen at the next check.
        self._key: StatKey | None = None
        if path is not None:
            with contextlib.suppress(OSError):  # read_file says what is wrong with it
                self._key = _stat_key(path)
        # At start, an unusable file is an error for the one starting the server, before it serves.
        super().__init__(list(self._read().by_name.values()))
        self._next_check = clock() + recheck_seconds

    def requires_token(self) -> bool:
        # Configured with a file, a token is always needed: a file emptied later means nobody.
        return self.path is not None or super().requires_token()

    def refresh(self) -> None:
        if self.path is None or self.clock() < self._next_check:
            return
        self._next_check = self.clock() + self.recheck_seconds
        try:
            key = _stat_key(self.path)
        except OSError as exc:
            self._fail(f"The tokens file {self.path} cannot be read ({exc.strerror or exc}).")
            return
        if key == self._key:
            return  # unchanged: still good, or still broken in the same way
        self._key = key
        try:
            current = self._read()
        except IdentitiesError as exc:
            self._fail(exc.message)
            return
        self._use(current)

    def _read(self) -> Identities:
        identities = Identities.load(self.path, self.single_token)
        if self.check is not None:
            self.check(identities)
        return identities

    def _fail(self, problem: str) -> None:
        if problem != self.failure:  # once per problem, not once per request
            where = "" if str(self.path) in problem else f" (the tokens file {self.path})"
            log.error(
                "blockrun-mcp: %s%s. Every HTTP request is refused (503) until it is fixed.",
                problem.rstrip("."),
                where,
            )
        self.failure = problem

    def _use(self, current: Identities) -> None:
        before, after = set(self.by_name), set(current.by_name)
        if self.failure is not None:
            log.warning("blockrun-mcp: the tokens file %s is readable again.", self.path)
        self.failure = None
        self.by_name = current.by_name
        changed = sorted(after - before), sorted(before - after)
        if any(changed):
            log.warning(
                "blockrun-mcp: the tokens file changed: %d identities (added: %s; removed: %s).",
                len(after),
                ", ".join(changed[0]) or "none",
                ", ".join(changed[1]) or "none",
            )
        if self.on_change is not None:
            self.on_change(self)


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
    unknown = set(entry) - {"name", "token_sha256", "workspace", "admin", *AMOUNT_KEYS}
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
        workspace=_workspace(entry.get("workspace"), f"{where} ({name})"),
        admin=_admin(entry.get("admin", False), f"{where} ({name})"),
    )


def _admin(value: object, where: str) -> bool:
    """`admin = true` or `admin = false`: a TOML boolean, never a string that reads like one."""
    if not isinstance(value, bool):
        raise IdentitiesError(f"{where}: admin must be true or false, got {value!r}.")
    return value


def _workspace(value: object, where: str) -> tuple[Path, ...] | None:
    """`workspace = "/srv/project"` or a list of such: absolute directories on the server."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise IdentitiesError(
            f"{where}: workspace must be an absolute directory on the server, or a list of them."
        )
    paths = tuple(Path(item) for item in items)
    relative = [str(path) for path in paths if not path.is_absolute()]
    if relative:
        raise IdentitiesError(
            f"{where}: workspace must name absolute directories on the server, got "
            f"{', '.join(relative)}."
        )
    return paths


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
    path: Path,
    name: str,
    *,
    daily_budget_usd: float | None,
    max_per_call_usd: float | None,
    admin: bool = False,
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
    if admin:
        lines.append("admin = true")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return token
