"""The fast EIP-712 message for TransferWithAuthorization equals eth-account's full encoding."""

from __future__ import annotations

import random
import secrets

import pytest
from eth_account import Account

from blockrun_mcp.x402.eip3009 import signable_transfer, signable_transfer_fast
from blockrun_mcp.x402.networks import NETWORKS


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
    auth = {
        "from": "0x" + "11" * 20,
        "to": "0x" + "22" * 20,
        "value": "1",
        "validAfter": "0",
        "validBefore": "1",
        "nonce": "0x" + "33" * 32,
    }
    base, sepolia = (signable_transfer_fast(n, auth) for n in NETWORKS.values())
    assert base.header != sepolia.header and base.body == sepolia.body
