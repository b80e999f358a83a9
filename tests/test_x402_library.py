"""`blockrun_mcp.x402` as a library of its own: its public API, with httpx and httpx2 clients alike.

The same-signature resend is the point: after a dropped connection or a 503, the payer must
resend the very same header, whichever HTTP library the caller's client comes from.
"""

from __future__ import annotations

import inspect

import httpx
import httpx2
import pytest

import blockrun_mcp.x402 as x402
from tests.support.payer import assert_every_payment_valid, chat_request
from tests.support.security import sandbox_view

pytestmark = pytest.mark.anyio

CLIENTS = {"httpx": httpx.AsyncClient, "httpx2": httpx2.AsyncClient}


def _payer(account):
    return x402.X402Payer(
        lambda: account,
        x402.SigningPolicy(x402.BASE, max_atomic=100_000),
        retry_delay_seconds=0.01,
    )


def _chat(client, sandbox):
    return client.build_request(
        "POST", f"{sandbox.base_url}/v1/chat/completions", json=chat_request().wire(stream=False)
    )


def test_the_public_api_is_listed_and_importable():
    assert sorted(x402.__all__) == sorted(set(x402.__all__))
    for name in x402.__all__:
        assert getattr(x402, name) is not None, name
    assert {"X402Payer", "SigningPolicy", "PaymentHold", "BASE", "PaymentRefused"} <= set(
        x402.__all__
    )


def test_error_messages_name_no_setting_of_this_server():
    samples = [
        x402.MalformedTerms("a detail"),
        x402.TermsTimeout(3),
        x402.PaymentRefused("a reason", limit="per-call cap"),
        x402.PaymentInvalid("detail"),
        x402.PaymentUnfunded("0x" + "ab" * 20, "base"),
        x402.PaymentReplay(),
        x402.AnswerTooLarge(10),
        x402.PaidRequestFailed("a detail"),
    ]
    for error in samples:
        assert "BLOCKRUN_" not in error.message and "blockrun-mcp" not in error.message
        assert isinstance(error, x402.PaymentError)
    source = inspect.getsource(x402.policy)
    assert "BLOCKRUN_" not in source


@pytest.mark.parametrize("library", CLIENTS)
async def test_pays_with_either_library(sandbox, funded_account, library):
    async with CLIENTS[library]() as client:
        paid = await _payer(funded_account).send(client, _chat(client, sandbox))
    assert paid.response.status_code == 200
    assert "Say hello" in paid.response.json()["choices"][0]["message"]["content"]
    (settlement,) = sandbox.state.settlements
    assert paid.receipt.transaction == settlement.tx_hash
    assert paid.cost_atomic == settlement.amount_atomic
    assert_every_payment_valid(sandbox.state)


@pytest.mark.parametrize("library", CLIENTS)
async def test_a_dropped_connection_resends_the_same_signature(sandbox, funded_account, library):
    sandbox.state.set_faults(drop_after_settlement=True, times=1)
    async with CLIENTS[library]() as client:
        with pytest.raises(x402.PaymentReplay):
            await _payer(funded_account).send(client, _chat(client, sandbox))
    received, settled = sandbox_view(sandbox.state)
    assert len(received) == 2 and len(set(received)) == 1, "the same nonce, sent twice"
    assert len(settled) == 1
    assert_every_payment_valid(sandbox.state)


@pytest.mark.parametrize("library", CLIENTS)
async def test_a_503_after_payment_resends_the_same_signature(sandbox, funded_account, library):
    sandbox.state.set_faults(status_after_payment=503, times=1)
    async with CLIENTS[library]() as client:
        paid = await _payer(funded_account).send(client, _chat(client, sandbox))
    assert paid.response.status_code == 200
    received, settled = sandbox_view(sandbox.state)
    assert len(received) == 2 and len(set(received)) == 1 and len(settled) == 1


@pytest.mark.parametrize("library", CLIENTS)
async def test_an_approval_hook_refuses_before_anything_is_signed(sandbox, funded_account, library):
    async def refuse(quote: x402.Quote) -> x402.PaymentHold:
        raise x402.PaymentRefused(f"{quote.amount_usd} is too much for me")

    async with CLIENTS[library]() as client:
        with pytest.raises(x402.PaymentRefused, match="too much for me"):
            await _payer(funded_account).send(client, _chat(client, sandbox), approve=refuse)
    assert not sandbox.state.payments_seen


async def test_a_client_of_another_library_is_refused_plainly(sandbox, funded_account):
    class NotHttpx:
        async def send(self, request, stream=False):
            return await real.send(request, stream=stream)

    async with httpx2.AsyncClient() as real:
        with pytest.raises(TypeError, match="not an httpx or httpx2"):
            await _payer(funded_account).send(NotHttpx(), _chat(real, sandbox))
    assert not sandbox.state.payments_seen  # refused before any payment was sent
