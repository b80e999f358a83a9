"""Money as integers (issue 19): one rounding rule for prices, one way to write an amount, and
sums of atomic units, never of floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from blockrun_mcp.money import dollars, price_to_atomic, usd_text, usd_to_atomic
from tests.support.server import CHEAP_MODEL, open_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("atomic", "exact", "trimmed", "bare"),
    [
        (84_000, "$0.084000", "$0.084", "0.084000"),
        (5_000_000, "$5.000000", "$5.00", "5.000000"),
        (0, "$0.000000", "$0.00", "0.000000"),
        (1, "$0.000001", "$0.000001", "0.000001"),
        (1_234_567_891, "$1234.567891", "$1234.567891", "1234.567891"),
        (-25_000, "-$0.025000", "-$0.025", "-0.025000"),
    ],
)
def test_one_way_to_write_an_amount(atomic, exact, trimmed, bare):
    assert usd_text(atomic) == exact
    assert usd_text(atomic, trim=True) == trimmed
    assert usd_text(atomic, sign=False) == bare


def test_amounts_past_float_precision_are_written_exactly():
    """$90,071,992.547409 is 2**53 + 1 atomic units: a float cannot hold it."""
    assert usd_text(2**53 + 1) == "$9007199254.740993"


@pytest.mark.parametrize(
    ("price", "atomic"),
    [
        (Decimal("0.0256850000000001"), 25_686),  # a price a hair above a unit costs that unit
        (Decimal("0.025685"), 25_685),
        (0.021, 21_000),  # a float price is taken as the decimal it was written as
        (0.1 + 0.2, 300_001),  # 0.30000000000000004: written so, it is above $0.30
        (Decimal("0.0000001"), 1),
    ],
)
def test_prices_round_up_as_the_gateway_quotes(price, atomic):
    assert price_to_atomic(price) == atomic


def test_limits_people_write_are_exact():
    assert usd_to_atomic(0.5) == 500_000 and usd_to_atomic(0.29) == 290_000
    assert dollars(0.005) == "$0.005" and dollars(1) == "$1.00"


@pytest.mark.parametrize(
    ("model", "prompt", "max_tokens"),
    [
        (CHEAP_MODEL, "hi", 1024),  # the $0.001 minimum
        # Opus's prices put these a fraction of a unit past a whole one: rounded to nearest,
        # the estimate was a unit below the quote.
        ("anthropic/claude-opus-4.7", "hi", 1024),
        ("anthropic/claude-opus-4.7", "hi", 507),
        ("anthropic/claude-opus-4.7", "A question of some length, " * 11, 900),
    ],
)
async def test_the_estimate_is_the_quote_to_the_atomic_unit(
    sandbox, tmp_path, model, prompt, max_tokens
):
    """The same formula, the same rounding: what estimate_cost says is what gets signed."""
    arguments = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    async with open_server(tmp_path, sandbox) as h:
        estimate = await h.ok("estimate_cost", arguments)
        answer = await h.ok("ask_model", arguments)
    (payment,) = sandbox.state.payments_seen
    signed = int(payment["payload"]["authorization"]["value"])
    assert usd_to_atomic(estimate["estimated_usd"]) == signed
    assert usd_to_atomic(answer["cost_usd"]) == signed


async def test_a_consult_costs_the_sum_of_its_signed_amounts(sandbox, tmp_path):
    models = [CHEAP_MODEL, "openai/gpt-5.4-nano", "deepseek/deepseek-chat"]
    async with open_server(tmp_path, sandbox) as h:
        result = await h.ok(
            "ask_models",
            {"prompt": "sum me", "models": models[:2], "synthesize_with": models[2]},
        )
    values = [int(p["payload"]["authorization"]["value"]) for p in sandbox.state.payments_seen]
    assert len(values) == 3
    assert usd_to_atomic(result["cost_usd"]) == sum(values)
