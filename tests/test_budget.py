"""The budget layer and a call's payments on their own, over a real ledger (a SQLite file, then a
PostgreSQL database: tests/support/stores.py): each check holds by itself.

The signing policy also caps each payment, so a tool-level test cannot tell whether the budget
layer checks too; these can. Money code is checked twice on purpose.
"""

from __future__ import annotations

import pytest

from blockrun_mcp.budget import Limits, SessionBudget
from blockrun_mcp.identities import Identity
from blockrun_mcp.payments import PaidCall
from blockrun_mcp.x402.errors import PaymentRefused
from blockrun_mcp.x402.models import Authorization, PaymentRequirement, SettlementReceipt
from blockrun_mcp.x402.networks import BASE
from blockrun_mcp.x402.payer import Quote
from blockrun_mcp.x402.signer import SignedPayment
from tests.support.stores import LedgerStores

pytestmark = pytest.mark.anyio

PAYER = "0x" + "ab" * 20
PAYEE = "0x" + "cd" * 20


def _budget(
    ledger_store: LedgerStores, *, session: float = 1.0, per_call: float = 0.05
) -> SessionBudget:
    return SessionBudget(ledger_store(), "s", Limits(session, per_call, None), "base")


def _quote(amount_atomic: int) -> Quote:
    requirement = PaymentRequirement(
        scheme="exact",
        network=BASE.caip2,
        amount=str(amount_atomic),
        asset=BASE.usdc,
        payTo=PAYEE,
        extra={"name": BASE.domain_name, "version": BASE.domain_version},
    )
    return Quote(amount_atomic, requirement, "POST", "https://gateway.example/api")


def _signed(amount_atomic: int, nonce: str = "0x" + "11" * 32) -> SignedPayment:
    authorization = Authorization.model_validate(
        {
            "from": PAYER,
            "to": PAYEE,
            "value": str(amount_atomic),
            "validAfter": "0",
            "validBefore": "4102444800",
            "nonce": nonce,
        }
    )
    return SignedPayment(
        "PAYMENT-SIGNATURE", "x", authorization, _quote(amount_atomic).requirement, 2
    )


async def test_the_budget_layer_refuses_a_quote_over_the_per_call_cap_by_itself(ledger_store):
    budget = _budget(ledger_store, per_call=0.05)
    approve = PaidCall(budget, tool="ask_model", model="m", estimate_atomic=None)
    with pytest.raises(PaymentRefused) as refused:
        await approve(_quote(50_001))
    assert refused.value.limit == "per-call cap" and "BLOCKRUN_MAX_PER_CALL_USD" in str(
        refused.value
    )
    assert budget.ledger.payments() == [] and approve.holds == []
    hold = await approve(_quote(50_000))  # exactly the cap is allowed
    assert hold is approve.holds[0]
    assert [row.amount_atomic for row in budget.ledger.payments()] == [50_000]


async def test_the_budget_layer_refuses_a_quote_past_the_session_budget(ledger_store):
    budget = _budget(ledger_store, session=0.10, per_call=0.10)
    approve = PaidCall(budget, tool="ask_model", model="m", estimate_atomic=None)
    await approve(_quote(60_000))
    with pytest.raises(PaymentRefused) as refused:
        await approve(_quote(40_001))
    assert refused.value.limit == "budget" and "$0.040000 is left" in str(refused.value)
    await approve(_quote(40_000))
    assert budget.status().budget_remaining_usd == 0


async def test_a_suspicious_quote_is_refused_by_the_budget_layer(ledger_store):
    budget = _budget(ledger_store, per_call=0.5)
    approve = PaidCall(budget, tool="ask_model", model="m", estimate_atomic=10_000)
    with pytest.raises(PaymentRefused) as refused:
        await approve(_quote(31_000))  # > 1.5x and > $0.02 above the estimate
    assert refused.value.limit == "suspicious quote"
    await approve(_quote(30_000))  # $0.02 above: allowed
    assert len(budget.ledger.payments()) == 1


@pytest.mark.parametrize(("estimate", "allowed"), [(30_000, 50_000), (100_000, 150_000)])
async def test_the_suspicious_boundary_is_exact_in_atomic_units(ledger_store, estimate, allowed):
    """$0.05 against a $0.03 estimate is exactly $0.02 above: allowed (in floats it is not)."""
    budget = _budget(ledger_store, per_call=0.5)
    approve = PaidCall(budget, tool="t", model="m", estimate_atomic=estimate)
    with pytest.raises(PaymentRefused):
        await approve(_quote(allowed + 1))
    await approve(_quote(allowed))
    assert [row.amount_atomic for row in budget.ledger.payments()] == [allowed]


@pytest.mark.parametrize("claimed", ["0", "1", "49999", "50001", "٣", "", "lots"])
async def test_settling_books_the_signed_amount_whatever_the_receipt_claims(ledger_store, claimed):
    budget = _budget(ledger_store)
    approve = PaidCall(budget, tool="ask_model", model="m", estimate_atomic=None)
    hold = await approve(_quote(50_000))
    await hold.signed(_signed(50_000))
    await hold.settle(SettlementReceipt(transaction="0xfeed", amount=claimed))
    (row,) = budget.ledger.payments()
    assert row.status == "settled" and row.settled_atomic == row.amount_atomic == 50_000
    assert row.counted_atomic == 50_000 and budget.status().session_spent_usd == 0.05
    assert f"receipt claimed {claimed!r}" in row.note
    assert row.payer == PAYER and row.pay_to == PAYEE and row.valid_before == 4102444800


async def test_an_honest_receipt_leaves_no_note(ledger_store):
    budget = _budget(ledger_store)
    call = PaidCall(budget, tool="t", model="m", estimate_atomic=None)
    hold = await call(_quote(50_000))
    await hold.signed(_signed(50_000))
    await hold.settle(SettlementReceipt(transaction="0xfeed", amount="50000"))
    await hold.settle(None)  # a second settle changes nothing
    (row,) = budget.ledger.payments()
    assert row.note == "" and row.tx_hash == "0xfeed"
    assert call.cost_usd == call.settled_usd == 0.05 and call.money_moved() is True


async def test_a_claim_after_signing_is_recorded_and_keeps_counting(ledger_store):
    budget = _budget(ledger_store)
    call = PaidCall(budget, tool="t", model="m", estimate_atomic=None)
    hold = await call(_quote(50_000))
    await hold.signed(_signed(50_000))
    await hold.record_claim("the gateway said PAYMENT_INVALID")
    await hold.record_claim("the gateway said it again")
    (row,) = budget.ledger.payments()
    assert row.status == "signed" and row.counted_atomic == 50_000
    assert row.note == "the gateway said PAYMENT_INVALID; the gateway said it again"
    assert budget.status().session_spent_usd == 0.05 and call.cost_usd == 0.05
    assert call.money_moved() is None and "stays counted" in call.money_sentence()


async def test_the_session_limit_only_goes_down(ledger_store):
    budget = _budget(ledger_store, session=1.0)
    assert budget.lower_session_limit(0.5) == 0.5
    for higher in (0.6, 0.500001, 1.0):
        with pytest.raises(ValueError, match="only be lowered"):
            budget.lower_session_limit(higher)
    assert budget.session_limit_usd == 0.5
    assert budget.lower_session_limit(0.5) == 0.5  # the same value is not a raise
    with pytest.raises(ValueError, match="negative"):
        budget.lower_session_limit(-0.01)


async def test_an_identity_budget_refuses_one_person_while_the_other_goes_on(ledger_store):
    """Two people on one ledger (two instances of a team, or two sessions): each has a daily
    budget and a per-call cap of their own; the day's budget is shared."""
    ledger, other_instance = ledger_store(), ledger_store()
    limits = Limits(1.0, 0.05, 0.20)
    alice = Identity("alice", "0" * 64, daily_budget_usd=0.08, max_per_call_usd=0.06)
    bob = Identity("bob", "1" * 64, daily_budget_usd=None)
    for_alice = SessionBudget(ledger, "a", limits, "base", identity=alice, per_session=False)
    for_bob = SessionBudget(other_instance, "b", limits, "base", identity=bob)
    assert for_alice.per_call_usd == 0.06 and for_bob.per_call_usd == 0.05
    for_alice.check_quote(60_000, None)  # her own cap is above the wallet's
    with pytest.raises(PaymentRefused, match="alice's max_per_call_usd"):
        for_alice.check_quote(60_001, None)
    for_alice.reserve(50_000, tool="ask_model", model="m")
    with pytest.raises(PaymentRefused) as refused:
        for_alice.reserve(30_001, tool="ask_model", model="m")  # on the other instance too
    assert refused.value.limit == "identity budget"
    assert "alice's daily_budget_usd" in str(refused.value) and "$0.030000 is left" in str(
        refused.value
    )
    for_bob.reserve(50_000, tool="ask_model", model="m")
    for_bob.reserve(50_000, tool="ask_model", model="m")
    with pytest.raises(PaymentRefused) as refused:
        for_bob.reserve(50_001, tool="ask_model", model="m")  # the day's $0.20: 0.15 spent
    assert refused.value.limit == "daily budget"
    # No session budget for alice (stateless HTTP): her day stands in for it.
    status = for_alice.status()
    assert (status.session_limit_usd, status.session_spent_usd) == (0.08, 0.05)
    assert status.budget_remaining_usd == 0.03 and status.daily_spent_usd == 0.15
    assert for_bob.status().budget_remaining_usd == 0.05  # the day's remainder binds him
    with pytest.raises(ValueError, match="no session budget"):
        for_alice.lower_session_limit(0.01)
    rows = sorted((p.identity, p.amount_atomic, p.status) for p in other_instance.payments())
    assert rows == [("alice", 50_000, "reserved")] + [("bob", 50_000, "reserved")] * 2
