"""Finding, creating and checking the paying wallet's key. The key is never printed or logged."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from blockrun_mcp.config import Config


class WalletError(Exception):
    """The key is missing, malformed or exposed; the message says the fix and never the key."""


def key_file_candidates(home: Path) -> list[Path]:
    """Key files shared with BlockRun's own tools, in lookup order."""
    return [home / ".blockrun" / ".session", home / ".blockrun" / "wallet.key"]


def parse_private_key(text: str, source: str) -> SecretStr:
    """Validate a hex private key (with or without 0x) without ever echoing it."""
    candidate = text.strip()
    body = candidate[2:] if candidate[:2].lower() == "0x" else candidate
    if len(body) != 64 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise WalletError(
            f"The key in {source} is not a private key: expected 64 hex characters "
            f"(optionally with 0x), got {len(body)} characters. Fix it, or remove it and run "
            "`blockrun-mcp wallet create`."
        )
    value = int(body, 16)
    # secp256k1 group order: keys must be in [1, n-1].
    if not 0 < value < 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141:
        raise WalletError(f"The key in {source} is outside the valid range for an Ethereum key.")
    return SecretStr("0x" + body.lower())


def check_key_file_permissions(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WalletError(
            f"The key file {path} can be read by other users (mode {stat.S_IMODE(mode):o}). "
            f"Run `chmod 600 {path}` and try again."
        )


@dataclass
class Wallet:
    """The paying wallet. `repr`, `str` and errors show the address, never the key."""

    source: str
    _key: SecretStr = field(repr=False)

    @cached_property
    def account(self) -> LocalAccount:
        from eth_account import Account  # slow import: only when the wallet is first used

        return Account.from_key(self._key.get_secret_value())

    @property
    def address(self) -> str:
        return self.account.address

    def reveal_private_key(self) -> str:
        """Only for an explicit, confirmed user request in the CLI."""
        return self._key.get_secret_value()

    def __repr__(self) -> str:
        return f"Wallet(address={self.address}, source={self.source!r})"

    __str__ = __repr__


def _from_file(path: Path) -> Wallet:
    check_key_file_permissions(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise WalletError(
            f"The key file {path} could not be read ({type(exc).__name__})."
        ) from None
    return Wallet(source=str(path), _key=parse_private_key(text, str(path)))


def find_wallet(config: Config) -> Wallet | None:
    """The wallet by the shared lookup order, or None when there is no key anywhere."""
    if config.wallet_key is not None:
        source = config.wallet_key_source or "BLOCKRUN_WALLET_KEY"
        return Wallet(
            source=source, _key=parse_private_key(config.wallet_key.get_secret_value(), source)
        )
    for path in key_file_candidates(config.home):
        if path.is_file():
            return _from_file(path)
    return None


def load_wallet(config: Config) -> Wallet:
    wallet = find_wallet(config)
    if wallet is None:
        first = key_file_candidates(config.home)[0]
        raise WalletError(
            "No wallet key found (looked in BLOCKRUN_WALLET_KEY, BASE_CHAIN_WALLET_KEY, "
            f"{first} and {key_file_candidates(config.home)[1]}). Run `blockrun-mcp wallet create` "
            "to make one, or try everything for free with `blockrun-mcp serve --sandbox`."
        )
    return wallet


def create_wallet(path: Path) -> Wallet:
    """Write a new random key to `path` with mode 0600. Never overwrites an existing file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = "0x" + secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WalletError(f"{path} already exists; refusing to overwrite a wallet key.") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode is masked by umask; make it exact
    return Wallet(source=str(path), _key=parse_private_key(key, str(path)))


def throwaway_wallet() -> Wallet:
    """A random in-memory wallet for the sandbox: nothing to fund, nothing written."""
    return Wallet(source="sandbox (throwaway)", _key=SecretStr("0x" + secrets.token_hex(32)))
