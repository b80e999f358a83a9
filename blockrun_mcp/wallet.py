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

from blockrun_mcp.errors import BlockrunError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from blockrun_mcp.config import Config


class WalletError(BlockrunError):
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


# A key file is a few dozen bytes; anything much bigger is not one, so never read it whole.
MAX_KEY_FILE_BYTES = 4096


def _describe(path: Path) -> str:
    """The path as the user knows it, plus where it really points if it is a symlink."""
    return f"{path} (a link to {os.path.realpath(path)})" if path.is_symlink() else str(path)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def _euid() -> int | None:
    """Our effective uid; None on Windows, where files have no POSIX owner to compare."""
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid else None


def _check_key_stat(path: Path, info: os.stat_result) -> None:
    """A plain file, yours, readable by you alone: what ssh demands of ~/.ssh/config, and sshd
    (StrictModes) of authorized_keys. Takes a stat so the same rules apply after opening."""
    if not stat.S_ISREG(info.st_mode):
        raise WalletError(
            f"The key file {_describe(path)} is {_file_kind(info.st_mode)}, not a plain file, so "
            "it was not read. Put the key file there, or remove it and run "
            "`blockrun-mcp wallet create`."
        )
    euid = _euid()
    if euid is not None and info.st_uid != euid:
        # Its owner can read the key (and spend from it) or swap in a key they know.
        raise WalletError(
            f"The key file {_describe(path)} belongs to another user (uid {info.st_uid}), not to "
            f"you (uid {euid}): its owner can read or replace the key. If the file is yours, take "
            f"it back with `sudo chown {euid} {os.path.realpath(path)}`; if not, move it away and "
            "run `blockrun-mcp wallet create`, or set BLOCKRUN_WALLET_KEY."
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WalletError(
            f"The key file {path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}). "
            f"Run `chmod 600 {path}` and try again."
        )


def _check_key_folder(folder: Path, path: Path) -> None:
    """Whoever can write the folder can delete or replace the key, whatever the file's own mode.

    Like ssh's StrictModes, but a group-writable folder is let through: with per-user groups
    (umask 002) that is common and harmless, and the file's own 0600 still guards the key.
    """
    info = folder.stat()
    euid = _euid()
    if euid is not None and info.st_uid not in (euid, 0):
        raise WalletError(
            f"The folder {folder} holding the key file {path} belongs to another user "
            f"(uid {info.st_uid}), who can delete or replace the key. Move the key into a folder "
            "you own, such as ~/.blockrun (mode 700)."
        )
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise WalletError(
            f"The folder {folder} holding the key file {path} can be written by every user "
            f"(mode {stat.S_IMODE(info.st_mode):o}), so anyone can delete or replace the key. "
            f"Run `chmod 700 {folder}`, or move the key into a folder only you can write."
        )


def check_key_file_permissions(path: Path) -> None:
    """Refuse a key file that is not a plain file of ours that only we can read.

    Checked with stat before anything opens it, so a named pipe or a device is never opened,
    and through a symlink, so the file that is really read is the one checked.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise WalletError(
            f"The key file {_describe(path)} points to nothing. Fix the link, or remove it and "
            "run `blockrun-mcp wallet create`."
        ) from None
    except OSError as exc:
        raise WalletError(
            f"The key file {_describe(path)} could not be checked ({type(exc).__name__}). "
            "Fix or remove it, or run `blockrun-mcp wallet create`."
        ) from None
    _check_key_stat(path, info)
    for folder in dict.fromkeys((path.absolute().parent, Path(os.path.realpath(path)).parent)):
        _check_key_folder(folder, path)


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


def _read_key_file(path: Path) -> str:
    """The key file's text, read only if it passes the checks, and read without blocking."""
    check_key_file_permissions(path)
    # O_NONBLOCK: should the file be swapped for a named pipe after the check, open() still
    # returns at once. The re-check on the open descriptor then refuses whatever was swapped in.
    flags = os.O_RDONLY
    for extra in ("O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC"):  # POSIX only
        flags |= getattr(os, extra, 0)
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as handle:
            _check_key_stat(path, os.fstat(handle.fileno()))
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
        if len(data) > MAX_KEY_FILE_BYTES:
            raise WalletError(
                f"The key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes, so it is not a "
                "key file. Check what it is, or remove it and run `blockrun-mcp wallet create`."
            )
        return data.decode("utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise WalletError(
            f"The key file {path} could not be read ({type(exc).__name__})."
        ) from None


def _from_file(path: Path) -> Wallet:
    text = _read_key_file(path)
    return Wallet(source=str(path), _key=parse_private_key(text, str(path)))


def find_wallet(config: Config) -> Wallet | None:
    """The wallet by the shared lookup order, or None when there is no key anywhere."""
    if config.wallet_key is not None:
        source = config.wallet_key_source or "BLOCKRUN_WALLET_KEY"
        return Wallet(
            source=source, _key=parse_private_key(config.wallet_key.get_secret_value(), source)
        )
    for path in key_file_candidates(config.home):
        # lexists, not is_file: a pipe, a folder or a broken link where the key should be is
        # reported, not silently passed over for the next candidate.
        if os.path.lexists(path):
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
