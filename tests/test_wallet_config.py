"""Wallet lookup, creation and checks; config parsing. The key must never leak."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from blockrun_mcp import wallet as wallet_module
from blockrun_mcp.config import ConfigError, load_config
from blockrun_mcp.wallet import (
    WalletError,
    create_wallet,
    find_wallet,
    load_wallet,
    parse_private_key,
)

KEY_A = "0x" + "1a" * 32
KEY_B = "2b" * 32


def config_for(tmp_path: Path, **env: str):
    return load_config({"HOME": str(tmp_path), **env})


def write_key(path: Path, key: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(mode)


def test_lookup_order(tmp_path):
    session = tmp_path / ".blockrun" / ".session"
    legacy = tmp_path / ".blockrun" / "wallet.key"
    assert find_wallet(config_for(tmp_path)) is None
    write_key(legacy, "0x" + "3c" * 32)
    assert find_wallet(config_for(tmp_path)).source == str(legacy)
    write_key(session, "0x" + "4d" * 32)
    assert find_wallet(config_for(tmp_path)).source == str(session)
    assert (
        find_wallet(config_for(tmp_path, BASE_CHAIN_WALLET_KEY=KEY_B)).source
        == "BASE_CHAIN_WALLET_KEY"
    )
    both = config_for(tmp_path, BLOCKRUN_WALLET_KEY=KEY_A, BASE_CHAIN_WALLET_KEY=KEY_B)
    wallet = find_wallet(both)
    assert wallet.source == "BLOCKRUN_WALLET_KEY"
    from eth_account import Account

    assert wallet.address == Account.from_key(KEY_A).address


def test_key_without_0x_prefix(tmp_path):
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import is_checksum_address

    bare = find_wallet(config_for(tmp_path, BLOCKRUN_WALLET_KEY=KEY_B))
    expected = Account.from_key("0x" + KEY_B).address
    # The same wallet as the 0x-prefixed key (in any case), shown with its EIP-55 checksum.
    for spelling in ("0x" + KEY_B, "0X" + KEY_B.upper(), KEY_B.upper()):
        assert find_wallet(config_for(tmp_path, BLOCKRUN_WALLET_KEY=spelling)).address == expected
    assert bare.address == expected
    assert is_checksum_address(bare.address) and bare.address != bare.address.lower()
    # It signs as that address.
    message = encode_defunct(text="blockrun")
    signature = bare.account.sign_message(message).signature
    assert Account.recover_message(message, signature=signature) == expected


def test_missing_wallet_says_how_to_make_one(tmp_path):
    with pytest.raises(WalletError, match="wallet create"):
        load_wallet(config_for(tmp_path))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    session = tmp_path / ".blockrun" / ".session"
    write_key(session, KEY_A, mode)
    with pytest.raises(WalletError) as info:
        find_wallet(config_for(tmp_path))
    assert f"chmod 600 {session}" in str(info.value)
    assert KEY_A[2:] not in str(info.value)


NOBODY = 65534  # any uid other than ours will do; this one exists on most systems


@pytest.fixture(params=["chown", "euid"])
def give_away(request, monkeypatch) -> Callable[[Path], None]:
    """Make a path belong to another user: really (chown, needs root), or by changing who we are.

    The real chown is the faithful test; pretending to be another uid runs everywhere.
    """

    def chown(path: Path) -> None:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        if path.is_symlink():
            os.chown(path.resolve(), NOBODY, NOBODY)

    def pretend(path: Path) -> None:
        real = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: real + 1)

    if request.param == "chown":
        if os.geteuid() != 0:
            pytest.skip("only root can give a file away; the 'euid' variant covers this case")
        return chown
    return pretend


def assert_refused(config, *fragments: str) -> str:
    with pytest.raises(WalletError) as info:
        find_wallet(config)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text
    assert KEY_A[2:] not in text.lower()
    return text


def test_key_file_owned_by_another_user_is_refused(tmp_path, give_away):
    session = tmp_path / ".blockrun" / ".session"
    write_key(session, KEY_A)
    give_away(session)
    text = assert_refused(config_for(tmp_path), str(session), "another user", "chown")
    assert "wallet create" in text


def test_symlink_to_a_key_file_owned_by_another_user_is_refused(tmp_path, give_away):
    target = tmp_path / "elsewhere" / "key"
    write_key(target, KEY_A)
    session = tmp_path / ".blockrun" / ".session"
    session.parent.mkdir()
    session.symlink_to(target)
    give_away(session)
    assert_refused(config_for(tmp_path), str(session), os.path.realpath(target), "another user")


def test_symlink_to_our_own_private_key_file_is_accepted(tmp_path):
    target = tmp_path / "secrets" / "key"
    write_key(target, KEY_A)
    session = tmp_path / ".blockrun" / ".session"
    session.parent.mkdir()
    session.symlink_to(target)
    assert find_wallet(config_for(tmp_path)).source == str(session)


def test_key_folder_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder away")
    session = tmp_path / ".blockrun" / ".session"
    write_key(session, KEY_A)
    os.chown(session.parent, NOBODY, NOBODY)
    assert_refused(config_for(tmp_path), str(session.parent), "another user", "folder you own")


@pytest.mark.parametrize(
    ("mode", "refused"),
    [
        pytest.param(0o777, True, id="world-writable"),
        pytest.param(0o1777, False, id="world-writable-sticky-like-tmp"),
        pytest.param(0o770, False, id="group-writable"),
    ],
)
def test_key_folder_anyone_can_write_is_refused(tmp_path, mode, refused):
    session = tmp_path / ".blockrun" / ".session"
    write_key(session, KEY_A)
    session.parent.chmod(mode)
    if refused:
        assert_refused(config_for(tmp_path), str(session.parent), "every user", "chmod 700")
    else:
        assert find_wallet(config_for(tmp_path)).source == str(session)


def finishes(action: Callable[[], object], seconds: float = 5.0) -> BaseException | None:
    """Run `action` in a daemon thread; fail the test if it blocks. Returns what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # handed back to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "reading the key file blocked"
    return raised[0] if raised else None


def unblock(fifo: Path) -> None:
    """If a reader is stuck opening the pipe, opening its write end lets it go."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading, nothing to release
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("kind", ["fifo", "link to fifo", "directory", "broken link"])
def test_key_path_that_is_not_a_plain_file_is_refused_without_blocking(tmp_path, kind):
    session = tmp_path / ".blockrun" / ".session"
    session.parent.mkdir()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    if kind == "fifo":
        os.mkfifo(session, 0o600)
    elif kind == "link to fifo":
        session.symlink_to(fifo)
    elif kind == "directory":
        session.mkdir(mode=0o700)
    else:
        session.symlink_to(tmp_path / "missing")
    # A valid key in the next candidate must not be used instead: the user meant .session.
    write_key(tmp_path / ".blockrun" / "wallet.key", KEY_A)
    try:
        raised = finishes(lambda: find_wallet(config_for(tmp_path)))
    finally:
        unblock(session if kind == "fifo" else fifo)
    assert isinstance(raised, WalletError), raised
    assert str(session) in str(raised)
    assert KEY_A[2:] not in str(raised)


def test_key_file_swapped_for_a_pipe_after_the_check_is_refused_without_blocking(
    tmp_path, monkeypatch
):
    session = tmp_path / ".blockrun" / ".session"
    write_key(session, KEY_A)
    real_check = wallet_module.check_key_file_permissions

    def check_then_swap(path: Path) -> None:
        real_check(path)
        path.unlink()
        os.mkfifo(path, 0o600)

    monkeypatch.setattr(wallet_module, "check_key_file_permissions", check_then_swap)
    try:
        raised = finishes(lambda: find_wallet(config_for(tmp_path)))
    finally:
        unblock(session)
    assert isinstance(raised, WalletError), raised
    assert "named pipe" in str(raised)


def test_oversized_key_file_is_refused_unread(tmp_path):
    session = tmp_path / ".blockrun" / ".session"
    write_key(session, KEY_A + "\n" + "#" * 10_000)
    assert_refused(config_for(tmp_path), str(session), "larger than")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0x",
        "0x1234",
        "zz" * 32,
        "0x" + "00" * 32,
        "0x" + "ff" * 32,
        KEY_A + "00",
        "0x" + "1a" * 31 + "g1",
    ],
)
def test_malformed_keys_are_refused_without_echo(bad):
    with pytest.raises(WalletError) as info:
        parse_private_key(bad, "BLOCKRUN_WALLET_KEY")
    text = str(info.value)
    assert "BLOCKRUN_WALLET_KEY" in text
    if len(bad) > 8:
        assert bad.removeprefix("0x") not in text


def test_malformed_key_file(tmp_path):
    session = tmp_path / ".blockrun" / ".session"
    write_key(session, "not a key")
    with pytest.raises(WalletError, match=str(session)):
        find_wallet(config_for(tmp_path))
    session.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(WalletError, match="could not be read"):
        find_wallet(config_for(tmp_path))


def test_create_wallet_writes_0600_and_never_overwrites(tmp_path):
    path = tmp_path / "new" / ".session"
    os.umask(0o022)
    wallet = create_wallet(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = load_wallet(
        load_config({"HOME": str(tmp_path), "BLOCKRUN_WALLET_KEY": path.read_text()})
    )
    assert loaded.address == wallet.address
    with pytest.raises(WalletError, match="refusing to overwrite"):
        create_wallet(path)


def test_key_never_in_repr_str_or_config_dump(tmp_path):
    cfg = config_for(tmp_path, BLOCKRUN_WALLET_KEY=KEY_A)
    wallet = load_wallet(cfg)
    secret = KEY_A[2:]
    for text in (repr(wallet), str(wallet), repr(cfg), str(cfg), cfg.model_dump_json()):
        assert secret not in text.lower()
    assert wallet.address in repr(wallet)


def test_config_defaults(tmp_path):
    cfg = config_for(tmp_path)
    assert cfg.api_url == "https://blockrun.ai/api"
    assert cfg.network == "base"
    assert cfg.session_budget_usd == 1.00
    assert cfg.max_per_call_usd == 0.50
    assert cfg.daily_budget_usd is None
    assert cfg.data_dir == (tmp_path / ".blockrun" / "mcp").resolve()
    assert cfg.output_dir == cfg.data_dir / "media"
    assert cfg.http_token is None


def test_config_values(tmp_path):
    cfg = config_for(
        tmp_path,
        BLOCKRUN_API_URL="http://127.0.0.1:9999/api/",
        BLOCKRUN_NETWORK="Base-Sepolia",
        BLOCKRUN_SESSION_BUDGET_USD="2.5",
        BLOCKRUN_MAX_PER_CALL_USD="$0.10",
        BLOCKRUN_DAILY_BUDGET_USD="5",
        BLOCKRUN_DATA_DIR=str(tmp_path / "data"),
        BLOCKRUN_HTTP_TOKEN="t" * 32,
    )
    assert cfg.api_url == "http://127.0.0.1:9999/api"
    assert cfg.network == "base-sepolia"
    assert (cfg.session_budget_usd, cfg.max_per_call_usd, cfg.daily_budget_usd) == (2.5, 0.10, 5.0)
    assert cfg.output_dir == (tmp_path / "data" / "media").resolve()
    assert "t" * 32 not in repr(cfg)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("BLOCKRUN_SESSION_BUDGET_USD", "lots", "not a number"),
        ("BLOCKRUN_SESSION_BUDGET_USD", "-1", "0 or more"),
        ("BLOCKRUN_MAX_PER_CALL_USD", "nan", "0 or more"),
        ("BLOCKRUN_DAILY_BUDGET_USD", "inf", "0 or more"),
        ("BLOCKRUN_DAILY_BUDGET_USD", "2000000", "implausibly"),
        ("BLOCKRUN_NETWORK", "ethereum", "base-sepolia"),
        ("BLOCKRUN_API_URL", "ftp://x", "http(s)"),
        ("BLOCKRUN_API_URL", "http://evil.example/api", "https"),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path, name, value, fragment):
    with pytest.raises(ConfigError) as info:
        config_for(tmp_path, **{name: value})
    assert name in str(info.value)
    assert fragment in str(info.value)
