"""Wallet lookup, creation and checks; config parsing. The key must never leak."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
    wallet = find_wallet(config_for(tmp_path, BLOCKRUN_WALLET_KEY=KEY_B))
    assert wallet.address.startswith("0x")


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
        ("BLOCKRUN_DAILY_BUDGET_USD", "1e12", "implausibly"),
        ("BLOCKRUN_NETWORK", "ethereum", "base-sepolia"),
        ("BLOCKRUN_API_URL", "ftp://x", "http(s)"),
        ("BLOCKRUN_API_URL", "http://evil.example/api", "https"),
        ("BLOCKRUN_HTTP_TOKEN", "short", "16 characters"),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path, name, value, fragment):
    with pytest.raises(ConfigError) as info:
        config_for(tmp_path, **{name: value})
    assert name in str(info.value) or name == "BLOCKRUN_HTTP_TOKEN"
    assert fragment in str(info.value)
