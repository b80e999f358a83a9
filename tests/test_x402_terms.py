"""Parsing 402 terms and the signing policy: what we sign, and everything we refuse."""

from __future__ import annotations

import base64
import json

import pytest

from blockrun_mcp.money import parse_atomic, usd_to_atomic
from blockrun_mcp.x402.codec import (
    decode_header,
    encode_header,
    parse_payment_required,
    read_receipt,
    rejection_code,
)
from blockrun_mcp.x402.errors import MalformedTerms, PaymentRefused
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA
from blockrun_mcp.x402.policy import SigningPolicy

PAY_TO = "0x1111111111111111111111111111111111111111"


def requirement(**overrides: object) -> dict:
    base = {
        "scheme": "exact",
        "network": BASE.caip2,
        "amount": "25685",
        "asset": BASE.usdc,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    base.update(overrides)
    return base


def v2_headers(*accepts: dict) -> dict[str, str]:
    terms = {
        "x402Version": 2,
        "resource": {"url": "https://blockrun.ai/api/v1/chat/completions", "description": "chat"},
        "accepts": list(accepts),
    }
    return {"PAYMENT-REQUIRED": encode_header(terms)}


POLICY = SigningPolicy(network=BASE, max_atomic=usd_to_atomic(0.50), pay_to=PAY_TO)


def test_v2_header_in_any_case_and_alphabet():
    value = v2_headers(requirement())["PAYMENT-REQUIRED"]
    for name in ("PAYMENT-REQUIRED", "payment-required", "Payment-Required", "X-Payment-Required"):
        terms = parse_payment_required({name: value}, b"")
        assert terms.x402Version == 2
        assert terms.accepts[0].amount == "25685"
    urlsafe = value.replace("+", "-").replace("/", "_").rstrip("=")
    assert parse_payment_required({"payment-required": urlsafe}, b"").accepts[0].payTo == PAY_TO


def test_raw_requirement_is_kept_for_exact_echo():
    odd = requirement(extra={"name": "USD Coin", "version": "2", "vendor": "x"}, note=[1, 2])
    terms = parse_payment_required(v2_headers(odd), b"")
    assert terms.accepts[0].raw == odd


def test_v1_body_terms():
    body = {
        "x402Version": 1,
        "error": "X-PAYMENT header is required",
        "accepts": [
            {
                "scheme": "exact",
                "network": "base",
                "maxAmountRequired": "1000",
                "resource": "https://blockrun.ai/api/v1/chat/completions",
                "description": "chat",
                "mimeType": "application/json",
                "payTo": PAY_TO,
                "maxTimeoutSeconds": 60,
                "asset": BASE.usdc,
                "extra": {"name": "USD Coin", "version": "2"},
            }
        ],
    }
    terms = parse_payment_required({}, json.dumps(body).encode())
    assert terms.x402Version == 1
    assert terms.accepts[0].amount == "1000"
    assert terms.resource.url.endswith("/v1/chat/completions")
    assert POLICY.choose(terms).network == "base"


@pytest.mark.parametrize(
    ("headers", "body", "fragment"),
    [
        ({"PAYMENT-REQUIRED": "%%%not base64%%%"}, b"", "not base64"),
        ({"PAYMENT-REQUIRED": base64.b64encode(b"hello").decode()}, b"", "not base64-encoded JSON"),
        (
            {"PAYMENT-REQUIRED": encode_header({"x402Version": 2, "accepts": []})},
            b"",
            "no payment options",
        ),
        (
            {"PAYMENT-REQUIRED": encode_header({"x402Version": 9, "accepts": [requirement()]})},
            b"",
            "x402Version",
        ),
        (
            {
                "PAYMENT-REQUIRED": encode_header(
                    {"x402Version": 2, "accepts": [{"scheme": "exact"}]}
                )
            },
            b"",
            "unreadable",
        ),
        ({"PAYMENT-REQUIRED": encode_header([1, 2])}, b"", "not a JSON object"),
        ({"PAYMENT-REQUIRED": "A" * 200_000}, b"", "limit"),
        ({}, b"<html>Payment Required</html>", "no JSON body"),
        ({}, b'{"error": "Payment Required", "price": {"amount": "0.01"}}', "no payment terms"),
    ],
)
def test_garbage_terms_get_a_clear_error(headers, body, fragment):
    with pytest.raises(MalformedTerms) as info:
        parse_payment_required(headers, body)
    assert fragment in str(info.value)
    assert "Nothing was signed" in str(info.value)


def test_deeply_nested_terms_are_refused():
    deep: object = "x"
    for _ in range(100):
        deep = {"a": deep}
    with pytest.raises(MalformedTerms, match="nested"):
        decode_header(encode_header({"x402Version": 2, "accepts": [requirement(extra=deep)]}))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"scheme": "upto"}, 'not "exact"'),
        ({"network": BASE_SEPOLIA.caip2}, "not the configured base"),
        ({"network": "eip155:1"}, "not the configured base"),
        ({"asset": BASE_SEPOLIA.usdc}, "is not USDC"),
        ({"extra": {"name": "USDC", "version": "2"}}, "domain name"),
        ({"extra": {"name": "USD Coin", "version": "1"}}, "domain version"),
        ({"extra": None}, "domain name"),
        ({"amount": "500001"}, "per-call cap"),
        ({"amount": "0"}, "zero"),
        ({"amount": "-5"}, "whole number"),
        ({"amount": "1e3"}, "whole number"),
        # str.isdigit() and int() take these; an amount is ASCII digits or nothing.
        ({"amount": "٣٠٠"}, "whole number"),
        ({"amount": "３００"}, "whole number"),
        ({"amount": "2²"}, "whole number"),
        ({"amount": " 300"}, "whole number"),
        ({"amount": "+300"}, "whole number"),
        ({"amount": "1" * 79}, "whole number"),
        ({"payTo": "0x" + "22" * 20}, "pinned payee"),
        ({"maxTimeoutSeconds": 86400}, "maxTimeoutSeconds"),
        ({"maxTimeoutSeconds": 0}, "maxTimeoutSeconds"),
        ({"payTo": "not-an-address"}, "payTo"),
    ],
)
def test_policy_refuses_hostile_requirements(overrides, reason):
    terms = parse_payment_required(v2_headers(requirement(**overrides)), b"")
    with pytest.raises(PaymentRefused) as info:
        POLICY.choose(terms)
    assert reason in info.value.reason
    assert "Nothing was signed" in str(info.value)


def test_policy_picks_the_acceptable_option_among_several():
    terms = parse_payment_required(
        v2_headers(requirement(scheme="upto"), requirement(asset=BASE_SEPOLIA.usdc), requirement()),
        b"",
    )
    chosen = POLICY.choose(terms)
    assert chosen.scheme == "exact" and chosen.asset == BASE.usdc


def test_the_cheapest_acceptable_option_wins_and_the_first_of_equals():
    dear, cheap, cheap_too = (
        requirement(amount="140000"),
        requirement(amount="100000", maxTimeoutSeconds=301),
        requirement(amount="100000", maxTimeoutSeconds=302),
    )
    terms = parse_payment_required(v2_headers(dear, requirement(amount="1"), cheap), b"")
    terms.accepts[1].extra = None  # the cheapest option of all is unacceptable
    assert POLICY.choose(terms).amount == "100000"
    terms = parse_payment_required(v2_headers(dear, cheap, cheap_too), b"")
    assert POLICY.choose(terms).maxTimeoutSeconds == 301


def test_an_unreadable_option_does_not_hide_a_good_one():
    broken = {"scheme": "exact", "amount": "5"}  # no network, asset, payTo
    terms = parse_payment_required(v2_headers(broken, "not an object", requirement()), b"")  # type: ignore[arg-type]
    assert len(terms.accepts) == 1 and len(terms.unreadable) == 2
    assert POLICY.choose(terms).amount == "25685"
    only_broken = parse_payment_required(v2_headers(broken, requirement(scheme="upto")), b"")
    with pytest.raises(PaymentRefused) as info:
        POLICY.choose(only_broken)
    assert "option 1 is unreadable" in info.value.reason and "upto" in info.value.reason


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("25685", 25685),
        ("9" * 78, int("9" * 78)),
        ("٣", None),
        ("３", None),
        ("²", None),
        ("", None),
        ("1_000", None),
        ("-1", None),
        ("0x10", None),
        (12, None),
        (None, None),
        ("1" * 79, None),
    ],
)
def test_atomic_amounts_are_ascii_digits_only(text, value):
    assert parse_atomic(text) == value


def test_over_cap_refusal_names_the_limit():
    terms = parse_payment_required(v2_headers(requirement(amount="900000")), b"")
    with pytest.raises(PaymentRefused) as info:
        POLICY.choose(terms)
    assert info.value.limit == "per-call cap"


def test_sepolia_policy_accepts_its_own_pinned_domain():
    policy = SigningPolicy(network=BASE_SEPOLIA, max_atomic=10**6)
    ok = requirement(
        network=BASE_SEPOLIA.caip2, asset=BASE_SEPOLIA.usdc, extra={"name": "USDC", "version": "2"}
    )
    assert policy.choose(parse_payment_required(v2_headers(ok), b"")).network == BASE_SEPOLIA.caip2
    wrong = dict(ok, extra={"name": "USD Coin", "version": "2"})
    with pytest.raises(PaymentRefused):
        policy.choose(parse_payment_required(v2_headers(wrong), b""))


def test_receipts_from_every_header():
    tx = "0x" + "ab" * 32
    encoded = encode_header(
        {"success": True, "transaction": tx, "network": BASE.caip2, "payer": PAY_TO}
    )
    for name in ("PAYMENT-RESPONSE", "payment-response", "X-PAYMENT-RESPONSE"):
        assert read_receipt({name: encoded}).transaction == tx
    assert read_receipt({"X-Payment-Receipt": tx}).transaction == tx
    assert read_receipt({"PAYMENT-RESPONSE": "garbage!!"}) is None
    assert read_receipt({}) is None


def test_rejection_codes():
    assert (
        rejection_code(b'{"error":"Payment verification failed","code":"PAYMENT_REPLAY"}')
        == "PAYMENT_REPLAY"
    )
    assert rejection_code(b'{"error":{"code":"payment_unfunded"}}') == "PAYMENT_UNFUNDED"
    assert rejection_code(b'{"error":"nope"}') is None
    assert rejection_code(b"not json") is None
