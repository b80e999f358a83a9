"""The fast EIP-712 message and signature for TransferWithAuthorization equal eth-account's."""

from __future__ import annotations

import random
import secrets

import pytest
from eth_account import Account

from blockrun_mcp.x402.eip3009 import signable_transfer, signable_transfer_fast, transfer_digest
from blockrun_mcp.x402.networks import NETWORKS
from blockrun_mcp.x402.signer import sign_digest

FIXED_AUTHORIZATION = {
    "from": "0x" + "11" * 20,
    "to": "0x" + "22" * 20,
    "value": "1",
    "validAfter": "0",
    "validBefore": "1",
    "nonce": "0x" + "33" * 32,
}


@pytest.mark.parametrize("network", list(NETWORKS.values()), ids=list(NETWORKS))
def test_fast_message_equals_the_library_encoding(network):
    rng = random.Random(3)
    for _ in range(50):
        authorization = {
            "from": Account.create().address,
            "to": Account.create().address.lower(),
            "value": str(rng.randint(0, 2**256 - 1)),
            "validAfter": str(rng.randint(0, 2**64)),
            "validBefore": str(rng.randint(0, 2**64)),
            "nonce": "0x" + secrets.token_hex(32),
        }
        assert signable_transfer_fast(network, authorization) == signable_transfer(
            network, authorization
        )


def test_domains_differ_between_networks():
    auth = dict(FIXED_AUTHORIZATION)
    base, sepolia = (signable_transfer_fast(n, auth) for n in NETWORKS.values())
    assert base.header != sepolia.header and base.body == sepolia.body


@pytest.mark.parametrize("network", list(NETWORKS.values()), ids=list(NETWORKS))
def test_fast_signature_equals_eth_accounts_and_recovers_the_signer(network):
    rng = random.Random(5)
    for _ in range(30):
        account = Account.create()
        authorization = {
            "from": account.address,
            "to": Account.create().address,
            "value": str(rng.randint(0, 2**256 - 1)),
            "validAfter": str(rng.randint(0, 2**64)),
            "validBefore": str(rng.randint(0, 2**64)),
            "nonce": "0x" + secrets.token_hex(32),
        }
        message = signable_transfer(network, authorization)
        ours = sign_digest(account, transfer_digest(network, authorization))
        library = account.sign_message(message).signature.hex()
        assert ours == "0x" + library.removeprefix("0x")
        assert Account.recover_message(message, signature=ours) == account.address
        # A second signature by the same account (cached key) is the same, deterministically.
        assert sign_digest(account, transfer_digest(network, authorization)) == ours


def test_the_cached_signing_key_prints_no_key():
    account = Account.create()
    sign_digest(account, b"\x01" * 32)
    key_hex = bytes(account.key).hex()
    from blockrun_mcp.x402 import signer

    # No public way: the cache is private on purpose (nothing should reach the key object), and
    # what must not print the key is exactly what the cache holds.
    cached = signer._signing_keys[account]
    assert cached.secret == bytes(account.key)  # it is this account's key that is held
    for text in (repr(cached), str(cached)):
        assert key_hex not in text.lower()


@pytest.mark.parametrize(
    ("field", "value", "library_refuses"),
    [
        ("from", "0x" + "11" * 19, True),
        ("to", "11" * 21, True),
        ("to", "0x" + "1 " * 20, True),
        ("value", "-1", True),
        ("validBefore", str(2**256), True),
        # eth-account pads a short bytes32; our nonces are always 32 bytes, so refuse anything else.
        ("nonce", "0x" + "33" * 31, False),
        ("nonce", "33" * 32, False),
    ],
)
def test_fast_message_refuses_malformed_fields(field, value, library_refuses):
    network = next(iter(NETWORKS.values()))
    authorization = dict(FIXED_AUTHORIZATION)
    authorization[field] = value
    if library_refuses:
        with pytest.raises(Exception):  # noqa: B017 - each library raises its own type
            signable_transfer(network, authorization)
    with pytest.raises(ValueError):
        signable_transfer_fast(network, authorization)
