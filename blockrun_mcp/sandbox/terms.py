"""402 answers: honest x402 v2 terms, their hostile variants, v1 terms, and malformed ones.

Every requirement issued is recorded with the request it was issued for, so a payment can later
be checked against exactly the terms this gateway offered for that request.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from starlette.responses import JSONResponse, Response

from blockrun_mcp.sandbox.faults import Faults
from blockrun_mcp.sandbox.quotes import atomic_to_usd_text
from blockrun_mcp.sandbox.state import SandboxState, checksum
from blockrun_mcp.x402.codec import encode_header
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA, NetworkSpec

DEFAULT_TIMEOUT_SECONDS = 300
VIDEO_TIMEOUT_SECONDS = 600  # video jobs run for minutes; the authorization must outlive them
LONG_TIMEOUT_SECONDS = 86_400
OVERPRICE_FACTOR = 100
# pricier_first: an option that is honest in every field but costs 40% more than the quote.
PRICIER_NUMERATOR, PRICIER_DENOMINATOR = 14, 10
# malformed_first: the amount's digits written as Arabic-Indic digits, which Python's int() and
# str.isdigit() both accept and no gateway means as an amount.
ARABIC_INDIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
WRONG_ASSET = "0xD6442efeE5A19B5194F840E4093AC2a4E35C28B1"  # not USDC on any network
HUGE_HEADER_BYTES = 200 * 1024
DEEP_NESTING = 100


def request_key(path: str, body: Any) -> str:
    """Identifies a request by path and body (key order ignored), to bind terms to it."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{path}\n{canonical}".encode()).hexdigest()


def _other_network(spec: NetworkSpec) -> NetworkSpec:
    return BASE_SEPOLIA if spec.caip2 == BASE.caip2 else BASE


def _requirement_v2(
    state: SandboxState, amount: int, timeout: int, hostile: str | None
) -> dict[str, Any]:
    spec = state.network_spec
    # Exactly these keys, in this order: a client echoing the requirement it chose, or
    # rebuilding it field by field as the official SDK does, produces an equal object.
    requirement: dict[str, Any] = {
        "scheme": "exact",
        "network": spec.caip2,
        "amount": str(amount),
        "asset": spec.usdc,
        "payTo": state.treasury,
        "maxTimeoutSeconds": timeout,
        "extra": {"name": spec.domain_name, "version": spec.domain_version},
    }
    if hostile == "wrong_asset":
        requirement["asset"] = WRONG_ASSET
    elif hostile == "wrong_domain":
        requirement["extra"] = {
            "name": _other_network(spec).domain_name,
            "version": spec.domain_version,
        }
    elif hostile == "wrong_version":
        requirement["extra"] = {"name": spec.domain_name, "version": "1"}
    elif hostile == "wrong_network":
        requirement["network"] = _other_network(spec).caip2
    elif hostile == "upto_only":
        requirement["scheme"] = "upto"
    elif hostile == "overpriced":
        requirement["amount"] = str(amount * OVERPRICE_FACTOR)
    elif hostile == "long_timeout":
        requirement["maxTimeoutSeconds"] = LONG_TIMEOUT_SECONDS
    elif hostile == "payto_changes":
        index = state.next_payto_index()
        digest = hashlib.sha256(f"sandbox-payto-{index}".encode()).hexdigest()
        requirement["payTo"] = checksum("0x" + digest[:40])
    return requirement


def _informational_body(state: SandboxState, requirement: dict[str, Any]) -> dict[str, Any]:
    """The human-facing 402 body. Its `network` is the plain name, not CAIP-2, as BlockRun's is."""
    return {
        "error": "Payment Required",
        "message": "This endpoint is paid per request in USDC over x402: sign the terms in "
        "the PAYMENT-REQUIRED header and resend with a PAYMENT-SIGNATURE header.",
        "price": {"amount": atomic_to_usd_text(int(requirement["amount"])), "currency": "USD"},
        "paymentInfo": {
            "network": state.network,
            "asset": requirement["asset"],
            "payTo": requirement["payTo"],
            "scheme": requirement["scheme"],
            "x402Version": 2,
        },
    }


def _v2_response(header: str, body: dict[str, Any]) -> Response:
    return JSONResponse(
        body,
        status_code=402,
        headers={"PAYMENT-REQUIRED": header, "X-Payment-Required": header},
    )


def _v1_response(
    state: SandboxState, key: str, amount: int, url: str, description: str, timeout: int
) -> Response:
    spec = state.network_spec
    requirement = {
        "scheme": "exact",
        "network": spec.name,
        "maxAmountRequired": str(amount),
        "resource": url,
        "description": description,
        "mimeType": "application/json",
        "payTo": state.treasury,
        "maxTimeoutSeconds": timeout,
        "asset": spec.usdc,
        "extra": {"name": spec.domain_name, "version": spec.domain_version},
    }
    state.record_issued(key, 1, requirement)
    body = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [requirement]}
    return JSONResponse(body, status_code=402)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"scheme": "exact"}
    for _ in range(depth):
        value = {"nested": value}
    return value


def _malformed_response(
    state: SandboxState, kind: str, honest: dict[str, Any], resource: dict[str, Any]
) -> Response:
    body = _informational_body(state, honest)
    if kind == "missing":
        return JSONResponse({"error": "Payment Required"}, status_code=402)
    if kind == "garbage":
        header = "%%not*base64!!" * 4
    elif kind == "not_json":
        header = base64.b64encode(b"<html>402 Payment Required</html>").decode()
    elif kind == "no_accepts":
        header = encode_header({"x402Version": 2, "resource": resource, "accepts": []})
    elif kind == "huge":
        padding = "x" * (HUGE_HEADER_BYTES * 3 // 4)
        terms = {"x402Version": 2, "resource": resource, "accepts": [honest], "pad": padding}
        header = encode_header(terms)
    else:  # "deep"
        terms = {"x402Version": 2, "resource": resource, "accepts": [_nested(DEEP_NESTING)]}
        header = encode_header(terms)
    return _v2_response(header, body)


def _lead_option(requirement: dict[str, Any], kind: str | None) -> dict[str, Any] | None:
    """The option listed before the honest one by the *_first hostile kinds, else None."""
    if kind == "pricier_first":
        amount = int(requirement["amount"])
        pricier = -(-amount * PRICIER_NUMERATOR // PRICIER_DENOMINATOR)  # ceil: always dearer
        return {**requirement, "amount": str(pricier)}
    if kind == "malformed_first":
        return {**requirement, "amount": requirement["amount"].translate(ARABIC_INDIC_DIGITS)}
    return None


def _accepts(
    state: SandboxState, key: str, requirement: dict[str, Any], kind: str | None
) -> list[dict[str, Any]]:
    """What `accepts` lists, each payable option recorded as issued for this request.

    The pricier option is a real offer (it verifies and settles at its own amount); the
    malformed one is not recorded, so nothing signed over it can ever verify.
    """
    lead = _lead_option(requirement, kind)
    if lead is not None and kind == "pricier_first":
        state.record_issued(key, 2, lead)
    state.record_issued(key, 2, requirement)
    return [requirement] if lead is None else [lead, requirement]


def payment_required(
    state: SandboxState,
    faults: Faults,
    *,
    key: str,
    amount: int,
    url: str,
    description: str,
    video: bool = False,
) -> Response:
    """The 402 for an unpaid request, shaped by whichever terms faults are on."""
    timeout = VIDEO_TIMEOUT_SECONDS if video else DEFAULT_TIMEOUT_SECONDS
    if video and faults.video_timeout_seconds:
        timeout = faults.video_timeout_seconds
    resource = {"url": url, "description": description, "mimeType": "application/json"}
    if faults.malformed_402:
        honest = _requirement_v2(state, amount, timeout, None)
        return _malformed_response(state, faults.malformed_402, honest, resource)
    if faults.hostile_terms == "v1":
        return _v1_response(state, key, amount, url, description, timeout)
    requirement = _requirement_v2(state, amount, timeout, faults.hostile_terms)
    accepts = _accepts(state, key, requirement, faults.hostile_terms)
    terms = {"x402Version": 2, "resource": resource, "accepts": accepts}
    # The body states the honest price, whatever option the header leads with.
    return _v2_response(encode_header(terms), _informational_body(state, requirement))
