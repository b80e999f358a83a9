"""The sandbox gateway, driven over real HTTP and paid with signatures made by BlockRun's own SDK.

Nothing here uses our payer: payments are signed with `blockrun_llm.x402.create_payment_payload`
and re-checked with the x402 reference facilitator, so the sandbox is tested independently of the
client it exists to test.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from blockrun_llm.types import APIError
from blockrun_llm.x402 import create_payment_payload

from blockrun_mcp.sandbox import SandboxServer, SandboxState, create_app
from blockrun_mcp.sandbox.faults import Faults
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA

CHAT = "/v1/chat/completions"
HELLO = {"model": "openai/gpt-5.2", "messages": [{"role": "user", "content": "Hello"}]}
HELLO_ATOMIC = 1517  # (6 * 1.75 + 102.4 * 14) / 1e6 * 1.05 = 0.00151630... -> ceil 1517
REQUIREMENT_KEYS = {"scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"}


# helpers


def decode(value: str) -> Any:
    return json.loads(base64.b64decode(value))


def encode(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def terms_of(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 402, response.text
    return decode(response.headers["PAYMENT-REQUIRED"])


def sign(
    account: Any,
    terms: dict[str, Any],
    *,
    amount: str | None = None,
    pay_to: str | None = None,
    network: str | None = None,
    timeout: int | None = None,
) -> str:
    """A PAYMENT-SIGNATURE for the first requirement, signed by the official SDK."""
    requirement = terms["accepts"][0]
    return create_payment_payload(
        account,
        recipient=pay_to or requirement["payTo"],
        amount=amount or requirement["amount"],
        network=network or requirement["network"],
        resource_url=terms["resource"]["url"],
        resource_description=terms["resource"]["description"],
        max_timeout_seconds=requirement["maxTimeoutSeconds"] if timeout is None else timeout,
    )


def with_accepted(header: str, accepted: dict[str, Any]) -> str:
    """The same signed payload with `accepted` swapped, to reach checks past the terms match."""
    payload = decode(header)
    payload["accepted"] = accepted
    return encode(payload)


def rejection(response: httpx2.Response) -> tuple[str, str]:
    assert response.status_code == 402, response.text
    body = response.json()
    assert body["error"] == "Payment verification failed"
    return body["code"], body["message"]


class Gateway:
    """A thin httpx wrapper bound to one sandbox."""

    def __init__(self, server: SandboxServer, client: httpx2.Client) -> None:
        self.server = server
        self.state = server.state
        self.url = server.base_url
        self.client = client

    def post(self, path: str, body: Any, header: str | None = None, **kw: Any) -> httpx2.Response:
        headers = {"PAYMENT-SIGNATURE": header} if header else {}
        return self.client.post(self.url + path, json=body, headers=headers, **kw)

    def get(self, path_or_url: str, header: str | None = None) -> httpx2.Response:
        url = path_or_url if path_or_url.startswith("http") else self.url + path_or_url
        return self.client.get(url, headers={"PAYMENT-SIGNATURE": header} if header else {})

    def pay(
        self, account: Any, path: str, body: Any, **sign_kwargs: Any
    ) -> tuple[dict[str, Any], str, httpx2.Response]:
        terms = terms_of(self.post(path, body))
        header = sign(account, terms, **sign_kwargs)
        return terms, header, self.post(path, body, header)


@pytest.fixture
def gw(sandbox: SandboxServer) -> Iterator[Gateway]:
    with httpx2.Client(timeout=10) as client:
        yield Gateway(sandbox, client)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29])
    return struct.unpack(">II", data[16:24])


# catalog


def test_catalog_documented_shape(gw: Gateway) -> None:
    models = {m["id"]: m for m in gw.get("/v1/models").json()["models"]}
    assert len(models) >= 20
    documented = {
        "id",
        "name",
        "description",
        "provider",
        "inputPrice",
        "outputPrice",
        "context_window",
        "max_output",
        "categories",
        "available",
    }
    for model in models.values():
        assert documented <= model.keys()
        assert set(model["categories"]) <= {
            "chat",
            "reasoning",
            "coding",
            "vision",
            "image",
            "video",
        }
    assert models["openai/gpt-5.2"]["inputPrice"] > 0
    assert models["openai/gpt-5.2"]["provider"] == "openai"
    assert models["nvidia/gpt-oss-120b"]["inputPrice"] == 0
    assert models["nvidia/gpt-oss-120b"]["outputPrice"] == 0
    assert models["openai/gpt-image-1"]["flatPrice"] == 0.021
    assert models["openai/gpt-image-2"]["sizePrices"]["1536x1024"] == 0.126
    assert models["xai/grok-imagine-video"]["pricePerSecond"] == 0.05
    assert models["xai/grok-imagine-video"]["max_duration_seconds"] > 5


def test_catalog_data_shape_by_query_and_by_state(gw: Gateway) -> None:
    by_query = gw.get("/v1/models?shape=data").json()
    assert "models" not in by_query
    data = {m["id"]: m for m in by_query["data"]}
    assert data["anthropic/claude-opus-4.7"]["pricing"] == {"input": 5.0, "output": 25.0}
    assert data["zai/cogview-4"]["pricing"]["flat"] == 0.015
    assert data["bytedance/seedance-1.5-pro"]["pricing"]["per_second"] == 0.092
    gw.state.catalog_shape = "data"
    assert gw.get("/v1/models").json() == by_query


def test_catalog_answers_the_same_list_as_models_and_data(gw: Gateway) -> None:
    # BlockRun's docs read `models`; both official SDKs' list_models read `data`.
    body = gw.get("/v1/models").json()
    assert body["models"] == body["data"] and len(body["models"]) >= 50
    for entry in body["data"]:
        assert entry["pricing"]["input"] == entry["inputPrice"]
        assert entry["pricing"]["output"] == entry["outputPrice"]
        assert entry["owned_by"] == entry["provider"]
    assert gw.get("/pricing").json() == body  # blockrun-llm's wallet-free list_models reads it


# errors


def test_error_bodies_carry_the_message_every_client_reads(gw: Gateway) -> None:
    from blockrun_llm.validation import sanitize_error_response

    response = gw.post(CHAT, {"model": "openai/gpt-9", "messages": HELLO["messages"]})
    assert response.status_code == 400
    body = response.json()
    sentence = body["message"]
    assert "unknown model 'openai/gpt-9'" in sentence
    assert body["code"] == "INVALID_REQUEST"
    assert body["error"] == {
        "message": sentence,
        "type": "invalid_request_error",
        "code": "INVALID_REQUEST",
    }
    # blockrun-llm shows the sentence; @blockrun/llm takes `message` as the detail when it
    # differs from `error` (see .ci/ts-sdk-check.mjs for the SDK itself).
    assert sanitize_error_response(body) == {
        "message": sentence,
        "code": "INVALID_REQUEST",
        "type": "invalid_request_error",
    }
    gw.state.set_faults(status_before_payment=503)
    fault = gw.post(CHAT, HELLO).json()
    assert fault["message"] == "Simulated gateway failure (HTTP 503)"
    assert fault["error"]["type"] == "server_error" and fault["code"] == "SANDBOX_FAULT"


def test_unknown_route_is_a_json_error_with_a_message(gw: Gateway) -> None:
    response = gw.get("/v1/no-such-endpoint")
    assert response.status_code == 404
    assert response.json()["message"] == response.json()["error"]["message"] == "Not Found"


# 402 terms and quotes


def test_402_terms_have_the_documented_shape(gw: Gateway) -> None:
    response = gw.post(CHAT, HELLO)
    terms = terms_of(response)
    assert response.headers["X-Payment-Required"] == response.headers["PAYMENT-REQUIRED"]
    assert terms["x402Version"] == 2
    assert terms["resource"]["url"] == gw.url + CHAT
    assert terms["resource"]["mimeType"] == "application/json"
    (requirement,) = terms["accepts"]
    assert set(requirement) == REQUIREMENT_KEYS
    assert requirement == {
        "scheme": "exact",
        "network": "eip155:8453",
        "amount": str(HELLO_ATOMIC),
        "asset": BASE.usdc,
        "payTo": gw.state.treasury,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    body = response.json()
    assert body["price"] == {"amount": "0.001517", "currency": "USD"}
    assert body["paymentInfo"]["network"] == "base"
    assert gw.state.issued_terms == [requirement]


def test_sepolia_sandbox_issues_sepolia_terms() -> None:
    with SandboxServer(SandboxState(network="base-sepolia")) as server:
        response = httpx2.post(server.base_url + CHAT, json=HELLO)
    requirement = terms_of(response)["accepts"][0]
    assert requirement["network"] == BASE_SEPOLIA.caip2
    assert requirement["asset"] == BASE_SEPOLIA.usdc
    assert requirement["extra"] == {"name": "USDC", "version": "2"}
    assert response.json()["paymentInfo"]["network"] == "base-sepolia"


def quoted(gw: Gateway, path: str, body: dict[str, Any]) -> int:
    return int(terms_of(gw.post(path, body))["accepts"][0]["amount"])


def test_quote_formula_for_known_prompts(gw: Gateway) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},  # 14 chars: 4 + 4 tokens
        {"role": "user", "content": "Explain x402 in one sentence."},  # 29 chars: 8 + 4
    ]
    # 20 tokens * $5 + 10% of 4000 * $25 = 10100 per million; +5% = $0.010605
    opus = {"model": "anthropic/claude-opus-4.7", "messages": messages, "max_tokens": 4000}
    assert quoted(gw, CHAT, opus) == 10605
    # Text parts are concatenated: "abc" + "defgh" = 8 chars = 2 + 4 tokens.
    parts = [{"type": "text", "text": "abc"}, {"type": "text", "text": "defgh"}]
    sonnet = {
        "model": "anthropic/claude-sonnet-4.6",
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": 100,
    }
    assert quoted(gw, CHAT, sonnet) == 1000  # (6*3 + 10*15) / 1e6 * 1.05 < $0.001 minimum
    sonnet["max_tokens"] = 2000  # (18 + 200*15) * 1.05 = 3168.9 -> 3169
    assert quoted(gw, CHAT, sonnet) == 3169
    assert quoted(gw, CHAT, HELLO) == HELLO_ATOMIC  # default max_tokens 1024


def test_image_and_video_quotes_use_the_published_tables(gw: Gateway) -> None:
    images = "/v1/images/generations"
    assert quoted(gw, images, {"model": "openai/gpt-image-1", "prompt": "a cat"}) == 21_000
    two_wide = {"model": "openai/gpt-image-2", "prompt": "a cat", "size": "1536x1024", "n": 2}
    assert quoted(gw, images, two_wide) == 252_000
    assert quoted(gw, images, {"model": "openai/dall-e-3", "prompt": "x"}) == 42_000
    wide = {"model": "openai/dall-e-3", "prompt": "x", "size": "1792x1024"}
    assert quoted(gw, images, wide) == 84_000
    cog = {"model": "zai/cogview-4", "prompt": "x", "size": "1440x1440"}
    assert quoted(gw, images, cog) == 20_000
    videos = "/v1/videos/generations"
    assert quoted(gw, videos, {"model": "xai/grok-imagine-video", "prompt": "waves"}) == 250_000
    seedance = {"model": "bytedance/seedance-1.5-pro", "prompt": "x", "duration_seconds": 4}
    response = gw.post(videos, seedance)
    assert terms_of(response)["accepts"][0]["amount"] == "368000"
    assert terms_of(response)["accepts"][0]["maxTimeoutSeconds"] >= 600


@pytest.mark.parametrize(
    ("model", "text_to_video", "image_to_video"),
    [
        ("bytedance/seedance-2.0", 1_490_000, 910_000),  # $1.49 / $0.91 per 5 s clip
        ("bytedance/seedance-2.0-fast", 1_190_000, 700_000),  # $1.19 / $0.70
        ("bytedance/seedance-1.5-pro", 460_000, 460_000),  # "flat"
    ],
)
def test_seedance_quotes_less_from_an_input_image(
    gw: Gateway, model: str, text_to_video: int, image_to_video: int
) -> None:
    videos = "/v1/videos/generations"
    clip = {"model": model, "prompt": "waves", "duration_seconds": 5}
    assert quoted(gw, videos, clip) == text_to_video
    from_image = {**clip, "image_url": "https://example.com/first-frame.png"}
    assert quoted(gw, videos, from_image) == image_to_video


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "hi"}]}, "no 'model'"),
        (CHAT, {"model": "openai/gpt-9", "messages": [{"role": "user", "content": "hi"}]}, "gpt-9"),
        (CHAT, {**HELLO, "max_tokens": 0}, "max_tokens"),
        (CHAT, {**HELLO, "max_tokens": "many"}, "max_tokens"),
        (CHAT, {**HELLO, "max_tokens": 1.5}, "max_tokens"),
        (CHAT, {**HELLO, "max_tokens": 200_000}, "maximum output"),
        (CHAT, {**HELLO, "temperature": 3}, "temperature"),
        (CHAT, {"model": "openai/gpt-5.2", "messages": []}, "messages"),
        (
            CHAT,
            {"model": "openai/gpt-image-1", "messages": [{"role": "user", "content": "x"}]},
            "image",
        ),
        ("/v1/responses", {"model": "anthropic/claude-haiku-4.5", "input": "hi"}, "OpenAI"),
        ("/v1/images/generations", {"model": "openai/gpt-image-1"}, "prompt"),
        ("/v1/images/generations", {"model": "openai/gpt-image-1", "prompt": "x", "n": 5}, "'n'"),
        (
            "/v1/images/generations",
            {"model": "zai/cogview-4", "prompt": "x", "size": "big"},
            "size",
        ),
        ("/v1/images/image2image", {"model": "openai/gpt-image-1", "prompt": "x"}, "image"),
        (
            "/v1/videos/generations",
            {"model": "xai/grok-imagine-video", "prompt": "x", "duration_seconds": 60},
            "duration_seconds",
        ),
    ],
)
def test_invalid_bodies_are_400_before_any_402(
    gw: Gateway, path: str, body: dict[str, Any], fragment: str
) -> None:
    response = gw.post(path, body)
    assert response.status_code == 400, response.text
    assert "PAYMENT-REQUIRED" not in response.headers
    assert fragment in response.json()["message"]
    assert gw.state.issued_terms == []


def test_unparseable_json_is_400(gw: Gateway) -> None:
    response = gw.client.post(gw.url + CHAT, content=b"{nope", headers={"content-type": "x"})
    assert response.status_code == 400
    assert "JSON" in response.json()["message"]


def test_unknown_model_error_suggests_close_ids(gw: Gateway) -> None:
    body = {"model": "anthropic/claude-sonet-4.6", "messages": [{"role": "user", "content": "x"}]}
    assert "anthropic/claude-sonnet-4.6" in gw.post(CHAT, body).json()["message"]


def test_free_model_answers_at_once(gw: Gateway) -> None:
    body = {"model": "nvidia/gpt-oss-120b", "messages": [{"role": "user", "content": "free?"}]}
    response = gw.post(CHAT, body)
    assert response.status_code == 200
    assert "free?" in response.json()["choices"][0]["message"]["content"]
    assert "PAYMENT-RESPONSE" not in response.headers
    assert gw.state.issued_terms == [] and gw.state.settlements == []


# paying


def test_paid_chat_settles_once_with_receipt(gw: Gateway, funded_account: Any) -> None:
    _, header, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": body["choices"][0]["message"]["content"],
    }
    assert body["choices"][0]["message"]["content"].startswith("[sandbox openai/gpt-5.2] ")
    assert '"Hello"' in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}

    (settlement,) = gw.state.settlements
    assert settlement.payer == funded_account.address
    assert settlement.amount_atomic == HELLO_ATOMIC
    assert settlement.endpoint.endswith(CHAT)
    assert settlement.nonce == decode(header)["payload"]["authorization"]["nonce"]
    assert settlement.tx_hash.startswith("0x") and len(settlement.tx_hash) == 66
    receipt = decode(response.headers["PAYMENT-RESPONSE"])
    assert receipt == {
        "success": True,
        "transaction": settlement.tx_hash,
        "network": "eip155:8453",
        "payer": funded_account.address,
        "amount": str(HELLO_ATOMIC),
    }
    assert response.headers["X-Payment-Receipt"] == settlement.tx_hash
    assert gw.state.balance_usd(funded_account.address) == pytest.approx(10 - 0.001517)
    assert gw.state.settled_total_atomic() == HELLO_ATOMIC
    assert gw.state.payments_seen == [decode(header)]
    assert gw.state.requests_seen == [("POST", "/api" + CHAT, False), ("POST", "/api" + CHAT, True)]


class _StubFacilitatorSigner:
    """Just enough chain for the x402 reference facilitator to verify offline."""

    def __init__(self, payer: str) -> None:
        self.payer = payer.lower()

    def get_addresses(self) -> list[str]:
        return ["0x0000000000000000000000000000000000000001"]

    def get_code(self, address: str) -> bytes:
        return b"" if address.lower() == self.payer else b"\x60\x80"

    def read_contract(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_accepted_payments_pass_the_x402_reference_facilitator(
    gw: Gateway, funded_account: Any
) -> None:
    from x402.http.utils import decode_payment_signature_header
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme
    from x402.schemas import PaymentRequirements

    _, _, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 200
    facilitator = ExactEvmFacilitatorScheme(_StubFacilitatorSigner(funded_account.address))
    for seen in gw.state.payments_seen:
        payload = decode_payment_signature_header(encode(seen))
        requirements = PaymentRequirements.model_validate(seen["accepted"])
        assert requirements.model_dump(by_alias=True, exclude_none=True) == seen["accepted"]
        verdict = facilitator.verify(payload, requirements)
        assert verdict.is_valid, verdict.invalid_reason


def test_replayed_header_is_payment_replay(gw: Gateway, funded_account: Any) -> None:
    _, header, first = gw.pay(funded_account, CHAT, HELLO)
    assert first.status_code == 200
    code, message = rejection(gw.post(CHAT, HELLO, header))
    assert code == "PAYMENT_REPLAY"
    assert "nonce" in message
    assert len(gw.state.settlements) == 1


def assert_invalid(gw: Gateway, header: str, check: str) -> None:
    """The sandbox refuses the payment as PAYMENT_INVALID, saying `check`, and settles nothing."""
    code, message = rejection(gw.post(CHAT, HELLO, header))
    assert code == "PAYMENT_INVALID"
    assert check in message
    assert gw.state.settlements == []


def test_wrong_amount_is_invalid(gw: Gateway, funded_account: Any) -> None:
    terms = terms_of(gw.post(CHAT, HELLO))
    cheap = sign(funded_account, terms, amount="1")
    assert_invalid(gw, cheap, "'accepted' does not match")  # the client changed the terms
    assert_invalid(gw, with_accepted(cheap, terms["accepts"][0]), "authorization.value")


def test_wrong_pay_to_is_invalid(gw: Gateway, funded_account: Any) -> None:
    terms = terms_of(gw.post(CHAT, HELLO))
    elsewhere = sign(funded_account, terms, pay_to=funded_account.address)
    assert_invalid(gw, with_accepted(elsewhere, terms["accepts"][0]), "authorization.to")


def test_expired_authorization_is_invalid(gw: Gateway, funded_account: Any) -> None:
    terms = terms_of(gw.post(CHAT, HELLO))
    expired = sign(funded_account, terms, timeout=-5)  # validBefore = now - 5
    assert_invalid(gw, with_accepted(expired, terms["accepts"][0]), "expired")


def test_too_long_authorization_is_invalid(gw: Gateway, funded_account: Any) -> None:
    terms = terms_of(gw.post(CHAT, HELLO))
    forever = sign(funded_account, terms, timeout=3600)
    assert_invalid(gw, with_accepted(forever, terms["accepts"][0]), "validBefore")


def test_signature_over_another_domain_is_invalid(gw: Gateway, funded_account: Any) -> None:
    terms = terms_of(gw.post(CHAT, HELLO))
    sepolia_signed = sign(funded_account, terms, network=BASE_SEPOLIA.caip2)
    assert_invalid(gw, with_accepted(sepolia_signed, terms["accepts"][0]), "signature")


def test_tampered_signature_is_invalid(gw: Gateway, funded_account: Any) -> None:
    payload = decode(sign(funded_account, terms_of(gw.post(CHAT, HELLO))))
    signature = payload["payload"]["signature"]
    payload["payload"]["signature"] = (
        signature[:10] + ("0" if signature[10] != "0" else "1") + (signature[11:])
    )
    assert_invalid(gw, encode(payload), "signature")


def test_accepted_must_be_terms_issued_for_this_request(gw: Gateway, funded_account: Any) -> None:
    other = {**HELLO, "max_tokens": 10}
    terms_of(gw.post(CHAT, other))
    terms = terms_of(gw.post(CHAT, HELLO))
    header = sign(funded_account, terms)
    # The same signed payment, sent with a different body than it was quoted for.
    code, message = rejection(gw.post(CHAT, other, header))
    assert code == "PAYMENT_INVALID" and "different request" in message
    assert gw.state.settlements == []


def test_wrong_version_and_garbage_headers_are_invalid(gw: Gateway, funded_account: Any) -> None:
    payload = decode(sign(funded_account, terms_of(gw.post(CHAT, HELLO))))
    assert_invalid(gw, encode({**payload, "x402Version": 1}), "x402Version")
    assert_invalid(gw, "not-base64!!", "decoded")
    assert_invalid(gw, encode({**payload, "payload": {"signature": "0x12"}}), "signature")


def test_unfunded_payer_is_payment_unfunded(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_balance(funded_account.address, 0.001)
    _, _, response = gw.pay(funded_account, CHAT, HELLO)
    code, message = rejection(response)
    assert code == "PAYMENT_UNFUNDED"
    assert funded_account.address in message
    assert gw.state.settlements == []
    assert gw.state.balance_usd(funded_account.address) == 0.001


def test_balance_runs_out_after_paid_calls(funded_account: Any) -> None:
    state = SandboxState(starting_balance_usd=0.004)
    with SandboxServer(state) as server, httpx2.Client() as client:
        gw = Gateway(server, client)
        statuses = [gw.pay(funded_account, CHAT, HELLO)[2].status_code for _ in range(3)]
    assert statuses == [200, 200, 402]
    assert state.balances[funded_account.address] == 4000 - 2 * HELLO_ATOMIC


# answers


def test_max_tokens_truncates_with_finish_reason_length(gw: Gateway, funded_account: Any) -> None:
    _, _, response = gw.pay(funded_account, CHAT, {**HELLO, "max_tokens": 3})
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) == 12
    assert response.json()["usage"]["completion_tokens"] == 3


def test_answers_are_deterministic(gw: Gateway, funded_account: Any) -> None:
    first = gw.pay(funded_account, CHAT, HELLO)[2].json()["choices"][0]["message"]["content"]
    second = gw.pay(funded_account, CHAT, HELLO)[2].json()["choices"][0]["message"]["content"]
    assert first == second


@pytest.mark.parametrize("model", ["anthropic/claude-opus-4.7", "anthropic/claude-opus-4.8"])
def test_opus_refusal_is_content_filter(gw: Gateway, funded_account: Any, model: str) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "please [[refuse]] this"}],
    }
    _, _, response = gw.pay(funded_account, CHAT, body)
    choice = response.json()["choices"][0]
    assert response.status_code == 200
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == ""
    assert len(gw.state.settlements) == 1


@pytest.mark.parametrize("model", ["anthropic/claude-opus-4.7", "anthropic/claude-opus-4.8"])
def test_opus_sampling_parameters_are_dropped_not_refused(
    gw: Gateway, funded_account: Any, model: str
) -> None:
    # Out of range on purpose: for other models temperature 3 is a 400 (see above); these
    # models never see it, the gateway strips it, so the call goes through.
    sampled = {"temperature": 3, "top_p": 0.5, "top_k": 40}
    body = {"model": model, "messages": HELLO["messages"], **sampled}
    _, _, response = gw.pay(funded_account, CHAT, body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    assert gw.state.bodies_seen[-1] == ("/api" + CHAT, body)  # what the client sent, as sent


def read_events(response: httpx2.Response) -> list[Any]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_streamed_chat_is_paid_before_the_stream(gw: Gateway, funded_account: Any) -> None:
    body = {**HELLO, "stream": True}
    header = sign(funded_account, terms_of(gw.post(CHAT, body)))
    with gw.client.stream(
        "POST", gw.url + CHAT, json=body, headers={"PAYMENT-SIGNATURE": header}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert len(gw.state.settlements) == 1  # settled before the first byte
        assert response.headers["X-Payment-Receipt"] == gw.state.settlements[0].tx_hash
        events = read_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content.startswith("[sandbox openai/gpt-5.2] ")
    assert len(chunks) >= 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["prompt_tokens"] == 6


def test_responses_api_for_openai_models(gw: Gateway, funded_account: Any) -> None:
    body = {
        "model": "openai/gpt-5.2",
        "input": "Summarise x402",
        "instructions": "Be brief.",
        "max_output_tokens": 2000,
    }
    terms, _, response = gw.pay(funded_account, "/v1/responses", body)
    assert response.status_code == 200
    result = response.json()
    assert result["object"] == "response" and result["status"] == "completed"
    assert "Summarise x402" in result["output_text"]
    assert result["output"][0]["content"][0]["text"] == result["output_text"]
    # 9 chars -> 3+4, 14 chars -> 4+4 = 15 tokens; (15*1.75 + 200*14) * 1.05 = 2967.56
    assert terms["accepts"][0]["amount"] == "2968"


# images and video


def test_gpt_image_answers_with_a_png_data_uri(gw: Gateway, funded_account: Any) -> None:
    body = {"model": "openai/gpt-image-1", "prompt": "a red fox", "n": 2}
    _, _, response = gw.pay(funded_account, "/v1/images/generations", body)
    assert response.status_code == 200
    data = response.json()["data"]
    assert len(data) == 2
    for item in data:
        prefix = "data:image/png;base64,"
        assert item["url"].startswith(prefix)
        assert png_size(base64.b64decode(item["url"].removeprefix(prefix))) == (16, 16)
    assert data[0]["url"] != data[1]["url"]
    assert gw.state.settlements[0].amount_atomic == 42_000


def test_other_image_models_answer_with_downloadable_urls(gw: Gateway, funded_account: Any) -> None:
    body = {"model": "openai/dall-e-3", "prompt": "a lighthouse"}
    _, _, response = gw.pay(funded_account, "/v1/images/generations", body)
    (item,) = response.json()["data"]
    assert item["url"].startswith(gw.url + "/media/")
    assert "a lighthouse" in item["revised_prompt"]
    image = gw.get(item["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert png_size(image.content) == (16, 16)
    assert gw.get("/media/nothing-here.png").status_code == 404


def test_image_edit(gw: Gateway, funded_account: Any) -> None:
    body = {
        "model": "google/nano-banana",
        "prompt": "add a hat",
        "image": "data:image/png;base64,AA",
    }
    _, _, response = gw.pay(funded_account, "/v1/images/image2image", body)
    assert response.status_code == 200
    assert gw.get(response.json()["data"][0]["url"]).content.startswith(b"\x89PNG")
    assert gw.state.settlements[0].amount_atomic == 53_000


VIDEO = {"model": "xai/grok-imagine-video", "prompt": "waves at dusk", "duration_seconds": 2}


def test_video_settles_on_the_first_completed_poll_only(gw: Gateway, funded_account: Any) -> None:
    _, header, submitted = gw.pay(funded_account, "/v1/videos/generations", VIDEO)
    assert submitted.status_code == 202
    job = submitted.json()
    assert job["status"] == "queued"
    assert job["poll_url"] == f"{gw.url}/v1/videos/generations/{job['id']}"
    assert gw.state.settlements == []
    # Resending the submit (its 202 lost) gives the same job, not a second one.
    assert gw.post("/v1/videos/generations", VIDEO, header).json()["id"] == job["id"]

    code, _ = rejection(gw.get(job["poll_url"]))
    assert code == "PAYMENT_INVALID"
    other = sign(funded_account, terms_of(gw.post("/v1/videos/generations", VIDEO)))
    assert rejection(gw.get(job["poll_url"], other))[0] == "PAYMENT_INVALID"

    statuses = []
    for _ in range(2):
        poll = gw.get(job["poll_url"], header)
        statuses.append((poll.status_code, poll.json()["status"]))
        assert gw.state.settlements == []
    assert statuses == [(202, "queued"), (202, "in_progress")]

    done = gw.get(job["poll_url"], header)
    assert done.status_code == 200
    assert done.json()["status"] == "completed"
    (settlement,) = gw.state.settlements
    assert settlement.amount_atomic == 100_000  # 2 s at $0.05
    assert done.headers["X-Payment-Receipt"] == settlement.tx_hash
    video = gw.get(done.json()["data"][0]["url"])
    assert video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"

    again = gw.get(job["poll_url"], header)
    assert again.json() == done.json()
    assert len(gw.state.settlements) == 1
    assert rejection(gw.post("/v1/videos/generations", VIDEO, header))[0] == "PAYMENT_REPLAY"


def test_unknown_video_job_is_404(gw: Gateway) -> None:
    assert gw.get("/v1/videos/generations/vid_nope").status_code == 404


def test_video_settlement_needs_funds_at_completion(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(video_polls_before_done=0)
    _, header, submitted = gw.pay(funded_account, "/v1/videos/generations", VIDEO)
    gw.state.set_balance(funded_account.address, 0)
    code, _ = rejection(gw.get(submitted.json()["poll_url"], header))
    assert code == "PAYMENT_UNFUNDED"
    assert gw.state.settlements == []


# faults


def test_status_before_payment_hits_times_then_stops(gw: Gateway) -> None:
    gw.state.set_faults(status_before_payment=503, times=2)
    assert [gw.post(CHAT, HELLO).status_code for _ in range(3)] == [503, 503, 402]
    assert gw.state.faults == Faults()


def test_fault_endpoints_scope_the_faults(gw: Gateway) -> None:
    gw.state.set_faults(status_before_payment=503, endpoints=["/v1/images/generations"])
    assert gw.post(CHAT, HELLO).status_code == 402
    image = {"model": "openai/gpt-image-1", "prompt": "x"}
    assert gw.post("/v1/images/generations", image).status_code == 503


def test_status_after_payment_leaves_the_header_reusable(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(status_after_payment=502, times=1)
    _, header, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 502
    assert gw.state.settlements == []
    assert gw.post(CHAT, HELLO, header).status_code == 200
    assert len(gw.state.settlements) == 1


def test_status_after_settlement_loses_the_answer(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(status_after_settlement=503)
    _, header, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 503
    assert len(gw.state.settlements) == 1
    gw.state.clear_faults()
    assert rejection(gw.post(CHAT, HELLO, header))[0] == "PAYMENT_REPLAY"
    assert len(gw.state.settlements) == 1


def test_drop_after_settlement_cuts_the_connection(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(drop_after_settlement=True, times=1)
    terms = terms_of(gw.post(CHAT, HELLO))
    header = sign(funded_account, terms)
    with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
        gw.post(CHAT, HELLO, header)
    assert len(gw.state.settlements) == 1
    assert rejection(gw.post(CHAT, HELLO, header))[0] == "PAYMENT_REPLAY"


def test_delay_slows_paid_requests_only(gw: Gateway, funded_account: Any) -> None:
    # A delay far above any 402's own time (milliseconds), so a busy machine cannot blur them.
    gw.state.set_faults(delay_seconds=1.5)
    started = time.monotonic()
    terms = terms_of(gw.post(CHAT, HELLO))
    unpaid = time.monotonic() - started
    started = time.monotonic()
    assert gw.post(CHAT, HELLO, sign(funded_account, terms)).status_code == 200
    paid = time.monotonic() - started
    assert paid >= 1.5 and unpaid < 1.5


def test_delay_past_the_client_timeout_still_settles(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(delay_seconds=0.4)
    header = sign(funded_account, terms_of(gw.post(CHAT, HELLO)))
    with pytest.raises(httpx2.ReadTimeout):
        gw.post(CHAT, HELLO, header, timeout=0.1)
    deadline = time.monotonic() + 2
    while not gw.state.settlements and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(gw.state.settlements) == 1  # like a real gateway: the client gave up, it charged


def test_model_latency_slows_every_chat(gw: Gateway) -> None:
    gw.state.set_faults(model_latency_seconds=0.25)
    started = time.monotonic()
    free = {"model": "nvidia/gpt-oss-20b", "messages": HELLO["messages"]}
    assert gw.post(CHAT, free).status_code == 200
    assert time.monotonic() - started >= 0.25


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("kind", ["garbage", "not_json", "no_accepts", "deep", "missing"])
def test_malformed_402(gw: Gateway, kind: str) -> None:
    gw.state.set_faults(malformed_402=kind, times=1)
    response = gw.post(CHAT, HELLO)
    assert response.status_code == 402
    header = response.headers.get("PAYMENT-REQUIRED")
    if kind == "garbage":
        with pytest.raises(ValueError):
            base64.b64decode(header, validate=True)
    elif kind == "not_json":
        with pytest.raises(ValueError):
            json.loads(base64.b64decode(header))
    elif kind == "no_accepts":
        assert decode(header)["accepts"] == []
    elif kind == "deep":
        assert _depth(decode(header)) > 100
    else:
        assert header is None and "X-Payment-Required" not in response.headers
        assert "accepts" not in response.json()
    assert gw.state.issued_terms == []
    assert "accepts" in decode(gw.post(CHAT, HELLO).headers["PAYMENT-REQUIRED"])  # times=1


def test_malformed_402_huge_header() -> None:
    state = SandboxState()
    state.set_faults(malformed_402="huge")

    async def probe() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=create_app(state))
        async with httpx2.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            return await client.post("/api" + CHAT, json=HELLO)

    response = anyio.run(probe)
    assert response.status_code == 402
    assert len(response.headers["PAYMENT-REQUIRED"]) >= 200 * 1024


@pytest.mark.parametrize(
    ("kind", "field", "expected"),
    [
        ("wrong_asset", "asset", lambda honest: honest != BASE.usdc),
        ("wrong_domain", "extra", lambda value: value == {"name": "USDC", "version": "2"}),
        ("wrong_version", "extra", lambda value: value == {"name": "USD Coin", "version": "1"}),
        ("wrong_network", "network", lambda value: value == BASE_SEPOLIA.caip2),
        ("upto_only", "scheme", lambda value: value == "upto"),
        ("overpriced", "amount", lambda value: value == str(HELLO_ATOMIC * 100)),
        ("long_timeout", "maxTimeoutSeconds", lambda value: value == 86_400),
    ],
)
def test_hostile_terms(gw: Gateway, kind: str, field: str, expected: Any) -> None:
    gw.state.set_faults(hostile_terms=kind)
    requirement = terms_of(gw.post(CHAT, HELLO))["accepts"][0]
    assert set(requirement) == REQUIREMENT_KEYS
    assert expected(requirement[field])


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("wrong_asset", "asset"),
        ("wrong_domain", "extra"),
        ("wrong_version", "extra"),
        ("wrong_network", "network"),
        ("upto_only", "scheme"),
    ],
)
def test_payments_on_hostile_terms_never_settle(
    gw: Gateway, funded_account: Any, kind: str, check: str
) -> None:
    gw.state.set_faults(hostile_terms=kind)
    terms = terms_of(gw.post(CHAT, HELLO))
    honest = sign(funded_account, terms, network=BASE.caip2)  # a signature that would settle
    code, message = rejection(gw.post(CHAT, HELLO, with_accepted(honest, terms["accepts"][0])))
    assert code == "PAYMENT_INVALID" and check in message
    assert gw.state.settlements == []


def test_overpriced_terms_settle_if_signed(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(hostile_terms="overpriced")
    _, _, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 200
    assert gw.state.settlements[0].amount_atomic == HELLO_ATOMIC * 100


def test_long_timeout_terms_accept_a_long_authorization(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(hostile_terms="long_timeout")
    _, header, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 200
    valid_before = int(decode(header)["payload"]["authorization"]["validBefore"])
    assert valid_before > time.time() + 80_000


def test_payto_changes_on_every_402(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(hostile_terms="payto_changes")
    first = terms_of(gw.post(CHAT, HELLO))["accepts"][0]["payTo"]
    terms = terms_of(gw.post(CHAT, HELLO))
    second = terms["accepts"][0]["payTo"]
    assert len({first, second, gw.state.treasury}) == 3
    assert gw.post(CHAT, HELLO, sign(funded_account, terms)).status_code == 200
    assert gw.state.settlements[0].pay_to == second


def test_v1_server_works_end_to_end(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(hostile_terms="v1")
    response = gw.post(CHAT, HELLO)
    assert response.status_code == 402
    assert "PAYMENT-REQUIRED" not in response.headers
    body = response.json()
    assert body["x402Version"] == 1
    (requirement,) = body["accepts"]
    assert requirement["network"] == "base"
    assert requirement["maxAmountRequired"] == str(HELLO_ATOMIC)
    assert requirement["resource"] == gw.url + CHAT
    v2 = decode(
        create_payment_payload(
            funded_account,
            recipient=requirement["payTo"],
            amount=requirement["maxAmountRequired"],
            network=BASE.caip2,
            max_timeout_seconds=requirement["maxTimeoutSeconds"],
        )
    )
    v1 = {"x402Version": 1, "scheme": "exact", "network": "base", "payload": v2["payload"]}
    # A v1 server does not read PAYMENT-SIGNATURE: it asks again.
    assert gw.post(CHAT, HELLO, encode(v1)).json()["x402Version"] == 1
    paid = gw.client.post(gw.url + CHAT, json=HELLO, headers={"X-PAYMENT": encode(v1)})
    assert paid.status_code == 200, paid.text
    receipt = decode(paid.headers["X-PAYMENT-RESPONSE"])
    assert receipt["success"] is True and receipt["payer"] == funded_account.address
    assert receipt["transaction"] == gw.state.settlements[0].tx_hash
    assert "PAYMENT-RESPONSE" not in paid.headers
    replay = gw.client.post(gw.url + CHAT, json=HELLO, headers={"X-PAYMENT": encode(v1)})
    assert rejection(replay)[0] == "PAYMENT_REPLAY"


@pytest.mark.parametrize("code", ["PAYMENT_INVALID", "PAYMENT_UNFUNDED", "PAYMENT_REPLAY"])
def test_force_payment_code(gw: Gateway, funded_account: Any, code: str) -> None:
    gw.state.set_faults(force_payment_code=code, times=1)
    _, header, response = gw.pay(funded_account, CHAT, HELLO)
    assert rejection(response)[0] == code
    assert gw.state.settlements == []
    assert gw.post(CHAT, HELLO, header).status_code == 200


def test_malformed_success_body(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(malformed_success_body=True)
    _, _, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert response.headers["X-Payment-Receipt"] == gw.state.settlements[0].tx_hash


def test_omit_receipt(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(omit_receipt=True)
    _, _, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 200 and response.json()["choices"]
    assert "PAYMENT-RESPONSE" not in response.headers
    assert "X-Payment-Receipt" not in response.headers
    assert len(gw.state.settlements) == 1


def test_stream_cut_after_chunks(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(stream_cut_after_chunks=2)
    body = {**HELLO, "stream": True}
    header = sign(funded_account, terms_of(gw.post(CHAT, body)))
    events: list[str] = []
    with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):  # noqa: SIM117
        with gw.client.stream(
            "POST", gw.url + CHAT, json=body, headers={"PAYMENT-SIGNATURE": header}
        ) as response:
            assert response.status_code == 200
            events.extend(line for line in response.iter_lines() if line.startswith("data: "))
    assert len(events) == 2
    assert len(gw.state.settlements) == 1


def test_stream_cut_fault_answers_524_to_unstreamed_requests(
    gw: Gateway, funded_account: Any
) -> None:
    gw.state.set_faults(stream_cut_after_chunks=0)
    _, header, response = gw.pay(funded_account, CHAT, HELLO)
    assert response.status_code == 524
    assert len(gw.state.settlements) == 1
    assert rejection(gw.post(CHAT, HELLO, header))[0] == "PAYMENT_REPLAY"


def test_video_fail_mid_poll_charges_nothing(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(video_fail_mid_poll=True)
    _, header, submitted = gw.pay(funded_account, "/v1/videos/generations", VIDEO)
    poll_url = submitted.json()["poll_url"]
    first = gw.get(poll_url, header)
    assert (first.status_code, first.json()["status"]) == (202, "in_progress")
    failed = gw.get(poll_url, header)
    assert failed.status_code == 200
    assert failed.json()["status"] == "failed" and failed.json()["error"]
    assert gw.get(poll_url, header).json()["status"] == "failed"
    assert gw.state.settlements == []
    assert gw.state.balance_usd(funded_account.address) == 10


def test_video_polls_before_done(gw: Gateway, funded_account: Any) -> None:
    gw.state.set_faults(video_polls_before_done=0)
    _, header, submitted = gw.pay(funded_account, "/v1/videos/generations", VIDEO)
    assert gw.get(submitted.json()["poll_url"], header).json()["status"] == "completed"
    assert len(gw.state.settlements) == 1


def test_set_faults_rejects_unknown_switches(gw: Gateway) -> None:
    with pytest.raises(ValueError):
        gw.state.set_faults(drop_everything=True)
    gw.state.set_faults(omit_receipt=True)
    gw.state.set_faults(delay_seconds=0.01)
    assert gw.state.faults.omit_receipt and gw.state.faults.delay_seconds == 0.01


# test controls over HTTP


def test_sandbox_admin_endpoints(gw: Gateway, funded_account: Any) -> None:
    admin = gw.url.removesuffix("/api") + "/_sandbox"
    assert gw.client.post(admin + "/faults", json={"status_before_payment": 503}).status_code == 200
    assert gw.post(CHAT, HELLO).status_code == 503
    assert gw.client.post(admin + "/faults", json={"bogus": 1}).status_code == 400
    assert (
        gw.client.post(admin + "/faults", json={"status_before_payment": None}).status_code == 200
    )

    funded = {"address": funded_account.address, "usd": 0.5}
    assert gw.client.post(admin + "/balance", json=funded).json()["balance_usd"] == 0.5
    assert gw.pay(funded_account, CHAT, HELLO)[2].status_code == 200

    snapshot = gw.client.get(admin + "/state").json()
    assert snapshot["counts"]["settlements"] == 1
    assert snapshot["settlements"][0]["payer"] == funded_account.address
    assert snapshot["balances"][funded_account.address] == 500_000 - HELLO_ATOMIC
    assert snapshot["settled_total_atomic"] == HELLO_ATOMIC
    assert snapshot["treasury"] == gw.state.treasury

    assert gw.client.post(admin + "/reset").status_code == 200
    assert gw.client.get(admin + "/state").json()["counts"]["settlements"] == 0
    assert gw.state.settlements == [] and gw.state.requests_seen == []


# the official SDK, end to end


@pytest.fixture
def sdk_home(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """blockrun-llm with its caches and cost log under tmp_path, on the wallet rail."""
    import blockrun_llm.cache

    for name in ("CACHE_DIR", "DATA_DIR"):
        monkeypatch.setattr(blockrun_llm.cache, name, tmp_path / name)
    monkeypatch.setattr(blockrun_llm.cache, "COST_LOG_PATH", tmp_path / "cost_log.jsonl")
    for variable in ("BLOCKRUN_API_KEY", "BLOCKRUN_TX_LOG", "BLOCKRUN_PAYMENT_SCHEME"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.usefixtures("sdk_home")
def test_blockrun_sdk_pays_the_sandbox(sandbox: SandboxServer, funded_account: Any) -> None:
    from blockrun_llm import LLMClient

    client = LLMClient(private_key=funded_account.key.hex(), api_url=sandbox.base_url)
    reply = client.chat_completion("openai/gpt-5.2", [{"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content.startswith("[sandbox openai/gpt-5.2]")
    (settlement,) = sandbox.state.settlements
    assert settlement.payer == funded_account.address
    assert settlement.amount_atomic == HELLO_ATOMIC
    assert reply.cost_usd == pytest.approx(HELLO_ATOMIC / 1e6)


@pytest.mark.usefixtures("sdk_home")
def test_blockrun_sdk_lists_the_catalog_and_pays_its_models(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    # Issue 12: the SDK read an empty catalog, then got "400 unknown model" for these two.
    from blockrun_llm import LLMClient, list_models

    client = LLMClient(private_key=funded_account.key.hex(), api_url=sandbox.base_url)
    models = {m["id"]: m for m in client.list_models()}
    assert models["openai/gpt-5.4-nano"]["inputPrice"] == 0.05
    assert models["anthropic/claude-sonnet-4.6"]["pricing"]["output"] == 15.0
    assert {m["id"] for m in list_models(api_url=sandbox.base_url)} == set(models)
    assert "google/nano-banana-pro" in {m["id"] for m in client.list_image_models()}

    for model, input_price, output_price in [
        ("openai/gpt-5.4-nano", 0.05, 0.40),
        ("anthropic/claude-sonnet-4.6", 3.0, 15.0),
    ]:
        messages = [{"role": "user", "content": "Hello"}]
        reply = client.chat_completion(model, messages, max_tokens=4000)
        assert reply.choices[0].message.content.startswith(f"[sandbox {model}]")
        # (4 + 2 tokens at the input price + 400 at the output price) + 5%, at least $0.001
        expected = max((6 * input_price + 400 * output_price) / 1e6 * 1.05, 0.001)
        assert sandbox.state.settlements[-1].amount_atomic == math.ceil(expected * 1e6)
        assert reply.cost_usd == pytest.approx(sandbox.state.settlements[-1].amount_atomic / 1e6)
    assert len(sandbox.state.settlements) == 2

    with pytest.raises(APIError) as failure:
        client.chat_completion("openai/gpt-5-nano", [{"role": "user", "content": "Hello"}])
    assert failure.value.status_code == 400
    assert "unknown model 'openai/gpt-5-nano'" in str(failure.value)  # the gateway's sentence
    assert "openai/gpt-5.4-nano" in str(failure.value)  # and its suggestion


def test_server_runs_under_async_with() -> None:
    async def main() -> int:
        async with SandboxServer() as server:
            async with httpx2.AsyncClient() as client:
                response = await client.get(server.base_url + "/v1/models")
            return response.status_code

    assert anyio.run(main) == 200


def test_server_starts_and_frees_its_port() -> None:
    # How fast it starts is not a test's business (shared machines); that it serves and lets go is.
    with SandboxServer() as server:
        port = server.port
        assert httpx2.get(server.base_url + "/v1/models").status_code == 200
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"http://127.0.0.1:{port}/api/v1/models")
