"""Header codecs: base64 JSON both ways, 402 terms from v2 headers or a v1 body, receipts."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from blockrun_mcp import safe_json
from blockrun_mcp.x402.errors import MalformedTerms
from blockrun_mcp.x402.models import PaymentRequired, PaymentRequirement, SettlementReceipt

# Real terms are a few hundred bytes; anything far larger is hostile or broken.
MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
MAX_ACCEPTS = 32


def encode_header(payload: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode("ascii")


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise MalformedTerms(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _check_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_depth(item, depth + 1)


def decode_header(value: str, what: str = "header") -> Any:
    """Decode base64 JSON (standard or URL-safe alphabet, padding optional)."""
    if len(value) > MAX_HEADER_BYTES:
        raise MalformedTerms(f"the {what} is {len(value)} bytes, over the {MAX_HEADER_BYTES} limit")
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        decoded = safe_json.loads(raw, max_depth=MAX_JSON_DEPTH + 1)
    except safe_json.JsonTooDeep:
        raise MalformedTerms(f"the {what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise MalformedTerms(f"the {what} is not base64-encoded JSON") from exc
    _check_depth(decoded)
    return decoded


def _terms_from(data: Any, source: str) -> PaymentRequired:
    if not isinstance(data, dict):
        raise MalformedTerms(f"the {source} is not a JSON object")
    version = data.get("x402Version")
    if version not in (1, 2):
        raise MalformedTerms(f"the {source} has unsupported x402Version {version!r}")
    accepts = data.get("accepts")
    if not isinstance(accepts, list) or not accepts:
        raise MalformedTerms(f"the {source} lists no payment options")
    if len(accepts) > MAX_ACCEPTS:
        raise MalformedTerms(f"the {source} lists {len(accepts)} payment options")
    # Each option on its own: one unreadable option must not hide a later good one.
    requirements: list[PaymentRequirement] = []
    unreadable: list[str] = []
    for index, item in enumerate(accepts):
        try:
            requirements.append(PaymentRequirement.from_wire(item, version=version))
        except (ValidationError, ValueError) as exc:
            unreadable.append(f"option {index + 1} is unreadable ({_first_error(exc)})")
    if not requirements:
        raise MalformedTerms(
            f"the {source} has no readable payment option: {'; '.join(unreadable)}"
        )
    try:
        # Validated once: pydantic takes the model instances as they are (and keeps their raw).
        terms = PaymentRequired.model_validate({**data, "accepts": requirements})
    except ValidationError as exc:
        raise MalformedTerms(f"the {source} is invalid ({_first_error(exc)})") from None
    terms.unreadable = unreadable
    if isinstance(data.get("resource"), dict):
        terms.raw_resource = data["resource"]
    if version == 1 and not terms.resource.url:
        resource = accepts[0].get("resource") if isinstance(accepts[0], dict) else None
        if isinstance(resource, str):
            terms.resource.url = resource
    return terms


def _first_error(exc: ValidationError | ValueError) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where} {first['msg']}".strip()


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in names:
        if (value := lowered.get(name.lower())) is not None:
            return value
    return None


def parse_payment_required(headers: Mapping[str, str], body: bytes) -> PaymentRequired:
    """The terms of a 402 response: the v2 header if present, else a v1 JSON body."""
    header = _header(headers, "PAYMENT-REQUIRED", "X-Payment-Required")
    if header:
        return _terms_from(
            decode_header(header, "PAYMENT-REQUIRED header"), "PAYMENT-REQUIRED header"
        )
    if len(body) > MAX_HEADER_BYTES:
        raise MalformedTerms("the 402 carries no PAYMENT-REQUIRED header and an oversized body")
    try:
        data = safe_json.loads(body or b"null", max_depth=MAX_JSON_DEPTH + 1)
    except safe_json.JsonTooDeep:
        raise MalformedTerms(
            f"the 402 body is nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise MalformedTerms("the 402 carries no PAYMENT-REQUIRED header and no JSON body") from exc
    _check_depth(data)
    if isinstance(data, dict) and "accepts" in data:
        return _terms_from(data, "402 body")
    raise MalformedTerms(
        "the 402 carries no payment terms (no PAYMENT-REQUIRED header, no v1 body)"
    )


def read_receipt(headers: Mapping[str, str]) -> SettlementReceipt | None:
    """The settlement receipt, from PAYMENT-RESPONSE, X-PAYMENT-RESPONSE or X-Payment-Receipt."""
    encoded = _header(headers, "PAYMENT-RESPONSE", "X-PAYMENT-RESPONSE")
    tx_hash = _header(headers, "X-Payment-Receipt")
    receipt: SettlementReceipt | None = None
    if encoded:
        try:
            data = decode_header(encoded, "PAYMENT-RESPONSE header")
            if isinstance(data, dict):
                receipt = SettlementReceipt.model_validate(data)
        except (MalformedTerms, ValidationError):
            receipt = None  # an unreadable receipt is no receipt; the amount signed still counts
    if receipt is None and tx_hash:
        receipt = SettlementReceipt(transaction=tx_hash.strip())
    elif receipt is not None and not receipt.transaction and tx_hash:
        receipt.transaction = tx_hash.strip()
    return receipt


def rejection_code(body: bytes) -> str | None:
    """The PAYMENT_* code of a rejected payment, if the body carries one."""
    try:
        data = safe_json.loads(body) if len(body) <= MAX_HEADER_BYTES else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    for key in ("code", "errorCode", "error_code"):
        code = data.get(key)
        if isinstance(code, str) and code.upper().startswith("PAYMENT_"):
            return code.upper()
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, str) and code.upper().startswith("PAYMENT_"):
            return code.upper()
    return None
