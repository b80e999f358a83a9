"""The sandbox switches added for the fault matrix and the hostile-answer tests, checked directly.

The tool-level tests only see these through our client; here each switch is shown to do exactly
what it says to a plain HTTP client paying with our payer.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import ValidationError

from blockrun_mcp.gateway_models import ImageRequest, VideoRequest
from blockrun_mcp.sandbox import Faults
from blockrun_mcp.x402.codec import encode_header, parse_payment_required
from blockrun_mcp.x402.errors import PaidRequestFailed
from blockrun_mcp.x402.networks import BASE
from blockrun_mcp.x402.signer import SignedPayment, sign_payment
from tests.support.payer import chat_request

pytestmark = pytest.mark.anyio


def _terms(response: httpx2.Response) -> dict:
    return json.loads(base64.b64decode(response.headers["PAYMENT-REQUIRED"]))


async def test_video_timeout_seconds_sets_only_video_quotes(sandbox, gateway):
    sandbox.state.set_faults(video_timeout_seconds=42)
    http = gateway.http
    video = await http.post(
        f"{sandbox.base_url}/v1/videos/generations",
        json={"model": "xai/grok-imagine-video", "prompt": "p", "duration_seconds": 1},
    )
    chat = await http.post(
        f"{sandbox.base_url}/v1/chat/completions", json=chat_request().wire(stream=False)
    )
    assert _terms(video)["accepts"][0]["maxTimeoutSeconds"] == 42
    assert _terms(chat)["accepts"][0]["maxTimeoutSeconds"] == 300


async def test_requote_after_payment_answers_a_paid_request_with_new_terms(sandbox, gateway):
    state = sandbox.state
    state.set_faults(requote_after_payment=True, hostile_terms="payto_changes")
    with pytest.raises(PaidRequestFailed):
        await gateway.chat(chat_request(), stream=False)
    assert len(state.payments_seen) == 1 and not state.settlements
    first, second = state.issued_terms
    assert first["payTo"] != second["payTo"]


async def test_media_url_replaces_image_and_video_urls(sandbox, gateway):
    state = sandbox.state
    state.set_faults(media_url="http://10.0.0.1/x.png", video_polls_before_done=0)
    images = (
        await gateway.generate_images(ImageRequest(model="openai/dall-e-3", prompt="p"))
    ).images
    assert [image.url for image in images] == ["http://10.0.0.1/x.png"]
    job = await gateway.submit_video(
        VideoRequest(model="xai/grok-imagine-video", prompt="p", duration_seconds=1)
    )
    status = await gateway.poll_video(job)
    assert status.status == "completed" and status.urls == ["http://10.0.0.1/x.png"]


async def test_huge_success_body_streams_exactly_that_many_bytes(sandbox, gateway):
    state = sandbox.state
    size = 3 * 65536 + 123
    state.set_faults(huge_success_body_bytes=size)
    request = gateway.http.build_request(
        "POST", f"{sandbox.base_url}/v1/chat/completions", json=chat_request().wire(stream=True)
    )
    paid = await gateway.payer.send(gateway.http, request, stream=True)
    received = 0
    async for chunk in paid.response.aiter_raw():
        received += len(chunk)
    assert paid.response.headers["content-type"].startswith("text/event-stream")
    assert received == size and state.huge_bytes_sent == size
    assert len(state.settlements) == 1  # paid and settled before the body began


async def test_video_submit_drop_keeps_the_job_for_the_same_payment(sandbox, gateway):
    state = sandbox.state
    state.set_faults(drop_after_settlement=True, times=1, video_polls_before_done=0)
    job = await gateway.submit_video(
        VideoRequest(model="xai/grok-imagine-video", prompt="p", duration_seconds=1)
    )
    # The first 202 was cut; the same header resent got the job created by the first send.
    assert len(state.jobs) == 1 and job.id in state.jobs
    assert len({p["payload"]["authorization"]["nonce"] for p in state.payments_seen}) == 1


@pytest.mark.parametrize(
    "fault, check",
    [
        ("omit_receipt", "no_receipt"),
        ("malformed_success_body", "html"),
        ("status_after_settlement", "503"),
        ("stream_cut_after_chunks", "524"),
    ],
)
async def test_after_settlement_faults_hit_the_poll_that_settles_a_video(
    sandbox, gateway, fault, check
):
    state = sandbox.state
    value = {"status_after_settlement": 503, "stream_cut_after_chunks": 0}.get(fault, True)
    job = await gateway.submit_video(
        VideoRequest(model="xai/grok-imagine-video", prompt="p", duration_seconds=1)
    )
    state.set_faults(**{fault: value, "video_polls_before_done": 0})
    header = {job.payment.header_name: job.payment.header_value}
    settling = await gateway.http.get(job.poll_url, headers=header)
    assert len(state.settlements) == 1  # it settled, whatever the answer looked like
    if check == "no_receipt":
        assert settling.status_code == 200 and "payment-response" not in settling.headers
    elif check == "html":
        assert settling.status_code == 200 and settling.text.startswith("<html>")
    else:
        assert settling.status_code == int(check)
    # The next poll with the same header is the clean completed answer, with its receipt.
    again = await gateway.http.get(job.poll_url, headers=header)
    assert again.status_code == 200 and again.json()["status"] == "completed"
    assert "payment-response" in again.headers
    assert len(state.settlements) == 1


async def test_new_switches_are_settable_over_http(sandbox):
    async with httpx2.AsyncClient() as http:
        root = sandbox.base_url.removesuffix("/api")
        response = await http.post(
            f"{root}/_sandbox/faults",
            json={
                "video_timeout_seconds": 20,
                "requote_after_payment": True,
                "media_url": "file:///etc/passwd",
                "huge_success_body_bytes": 10,
                "poll_url": "http://10.0.0.1/poll",
            },
        )
        assert response.status_code == 200
        assert response.json()["media_url"] == "file:///etc/passwd"
        assert response.json()["poll_url"] == "http://10.0.0.1/poll"
        redirect = await http.get(f"{root}/_sandbox/redirect", params={"to": "http://10.0.0.1/"})
        assert redirect.status_code == 302 and redirect.headers["location"] == "http://10.0.0.1/"
        bad = await http.post(f"{root}/_sandbox/faults", json={"huge_success_body_bytes": 0})
        assert bad.status_code == 400


async def test_poll_url_is_what_a_video_job_answer_carries(sandbox, gateway):
    sandbox.state.set_faults(poll_url="http://10.0.0.1/poll")
    response = await gateway.payer.send(
        gateway.http,
        gateway.http.build_request(
            "POST",
            f"{sandbox.base_url}/v1/videos/generations",
            json={"model": "xai/grok-imagine-video", "prompt": "p", "duration_seconds": 1},
        ),
    )
    assert response.response.status_code == 202
    assert response.response.json()["poll_url"] == "http://10.0.0.1/poll"


# --- the switches for the money rule's tests: receipts, image counts, option order, trickles,
# --- and the stand-in chain

CHAT_PATH = "/v1/chat/completions"
STARTING_ATOMIC = 10_000_000
VIDEO = {"model": "xai/grok-imagine-video", "prompt": "p", "duration_seconds": 1}


async def _pay(
    http: httpx2.AsyncClient, url: str, body: Any, account: Any, option: int = 0
) -> tuple[SignedPayment, httpx2.Response]:
    """Ask, sign `accepts[option]` with our signer, resend: (the payment, the paid answer)."""
    unpaid = await http.post(url, json=body)
    assert unpaid.status_code == 402, unpaid.text
    terms = parse_payment_required(unpaid.headers, unpaid.content)
    payment = sign_payment(account, terms, terms.accepts[option], BASE)
    paid = await http.post(url, json=body, headers={payment.header_name: payment.header_value})
    return payment, paid


def _receipt(response: httpx2.Response) -> dict:
    return json.loads(base64.b64decode(response.headers["PAYMENT-RESPONSE"]))


async def _honest_amount(http: httpx2.AsyncClient, url: str, body: Any) -> str:
    return _terms(await http.post(url, json=body))["accepts"][0]["amount"]


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    "path, body",
    [
        (CHAT_PATH, chat_request().wire(stream=False)),
        ("/v1/images/generations", {"model": "openai/dall-e-3", "prompt": "p"}),
    ],
)
async def test_receipt_amount_lies_in_the_receipt_while_the_full_amount_settles(
    sandbox, http, funded_account, path, body
):
    state = sandbox.state
    state.set_faults(receipt_amount="0")
    payment, paid = await _pay(http, sandbox.base_url + path, body, funded_account)
    assert paid.status_code == 200
    receipt = _receipt(paid)
    (settlement,) = state.settlements
    assert receipt["amount"] == "0" and receipt["transaction"] == settlement.tx_hash
    assert settlement.amount_atomic == payment.amount_atomic > 0
    assert state.balance_atomic(funded_account.address) == STARTING_ATOMIC - payment.amount_atomic


async def test_receipt_amount_lies_on_the_completed_video_poll(sandbox, http, funded_account):
    state = sandbox.state
    state.set_faults(video_polls_before_done=0)
    payment, submitted = await _pay(
        http, f"{sandbox.base_url}/v1/videos/generations", VIDEO, funded_account
    )
    state.set_faults(receipt_amount="1")
    header = {payment.header_name: payment.header_value}
    done = await http.get(submitted.json()["poll_url"], headers=header)
    assert done.json()["status"] == "completed" and _receipt(done)["amount"] == "1"
    (settlement,) = state.settlements
    assert settlement.amount_atomic == payment.amount_atomic == 50_000
    # Switched off, the same job's completed answer tells the truth again.
    state.set_faults(receipt_amount=None)
    again = await http.get(submitted.json()["poll_url"], headers=header)
    assert _receipt(again)["amount"] == "50000"


async def test_after_settlement_faults_answer_a_video_poll_as_a_chat_and_count_once(
    sandbox, http, funded_account
):
    """Both settled answers go through one fault sequence: the same garbage, one count each."""
    state = sandbox.state
    state.set_faults(video_polls_before_done=0)
    payment, submitted = await _pay(
        http, f"{sandbox.base_url}/v1/videos/generations", VIDEO, funded_account
    )
    state.set_faults(omit_receipt=True, malformed_success_body=True, times=2)
    header = {payment.header_name: payment.header_value}
    settling = await http.get(submitted.json()["poll_url"], headers=header)
    # Two faults met, one request counted: `times` has one left, for the chat.
    _, chat = await _pay(
        http, sandbox.base_url + CHAT_PATH, chat_request().wire(stream=False), funded_account
    )
    for answer in (settling, chat):
        assert answer.status_code == 200 and answer.text.startswith("<html>")
        assert answer.headers["content-type"].startswith("text/html")
        assert "payment-response" not in answer.headers
    assert len(state.settlements) == 2 and not state.faults.omit_receipt


async def test_image_count_answers_that_many_distinct_sandbox_urls(sandbox, http, funded_account):
    state = sandbox.state
    state.set_faults(image_count=5)
    url = f"{sandbox.base_url}/v1/images/generations"
    for model in ("openai/dall-e-3", "openai/gpt-image-1"):  # gpt-image-1 normally: a data URI
        payment, paid = await _pay(
            http, url, {"model": model, "prompt": "p", "n": 1}, funded_account
        )
        urls = [entry["url"] for entry in paid.json()["data"]]
        assert len(urls) == len(set(urls)) == 5
        assert all(u.startswith(f"{sandbox.base_url}/media/") for u in urls)
        for image_url in urls:
            image = await http.get(image_url)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert state.settlements[-1].amount_atomic == payment.amount_atomic  # the price of n=1
    assert [s.amount_atomic for s in state.settlements] == [42_000, 21_000]
    state.set_faults(media_url="http://10.0.0.1/x.png")
    _, paid = await _pay(http, url, {"model": "openai/dall-e-3", "prompt": "q"}, funded_account)
    assert [entry["url"] for entry in paid.json()["data"]] == ["http://10.0.0.1/x.png"] * 5


async def test_pricier_first_leads_with_a_dearer_option_and_both_are_payable(
    sandbox, http, funded_account
):
    state = sandbox.state
    url, body = sandbox.base_url + CHAT_PATH, chat_request().wire(stream=False)
    honest_amount = await _honest_amount(http, url, body)
    state.set_faults(hostile_terms="pricier_first")
    unpaid = await http.post(url, json=body)
    pricier, honest = _terms(unpaid)["accepts"]
    assert honest["amount"] == honest_amount
    assert int(pricier["amount"]) == math.ceil(int(honest_amount) * 1.4)
    assert {**pricier, "amount": honest_amount} == honest
    assert state.issued_terms[-2:] == [pricier, honest]
    assert unpaid.json()["price"]["amount"] == f"{int(honest_amount) / 1e6:.6f}"
    for option in (0, 1):
        payment, paid = await _pay(http, url, body, funded_account, option)
        assert paid.status_code == 200, paid.text
        assert state.settlements[-1].amount_atomic == payment.amount_atomic
    assert [s.amount_atomic for s in state.settlements] == [
        int(pricier["amount"]),
        int(honest_amount),
    ]


async def test_malformed_first_leads_with_non_ascii_digits_nobody_can_pay(
    sandbox, http, funded_account
):
    state = sandbox.state
    url, body = sandbox.base_url + CHAT_PATH, chat_request().wire(stream=False)
    honest_amount = await _honest_amount(http, url, body)
    state.set_faults(hostile_terms="malformed_first")
    malformed, honest = _terms(await http.post(url, json=body))["accepts"]
    assert honest["amount"] == honest_amount
    assert malformed["amount"] == honest_amount.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert not malformed["amount"].isascii() and int(malformed["amount"]) == int(honest_amount)
    assert {**malformed, "amount": honest_amount} == honest
    assert malformed not in state.issued_terms and honest in state.issued_terms
    # The honest option pays as usual.
    _, paid = await _pay(http, url, body, funded_account, option=1)
    assert paid.status_code == 200
    assert [s.amount_atomic for s in state.settlements] == [int(honest_amount)]
    # A payment that echoes the malformed option is refused: it was never a real offer.
    unpaid = await http.post(url, json=body)
    terms = parse_payment_required(unpaid.headers, unpaid.content)
    signed = sign_payment(funded_account, terms, terms.accepts[1], BASE)
    forged = json.loads(base64.b64decode(signed.header_value))
    forged["accepted"] = malformed
    refused = await http.post(url, json=body, headers={"PAYMENT-SIGNATURE": encode_header(forged)})
    assert refused.status_code == 402 and refused.json()["code"] == "PAYMENT_INVALID"
    assert len(state.settlements) == 1


async def _read_until(response: httpx2.Response, done: Callable[[bytes], bool]) -> bytes:
    received = b""
    async for chunk in response.aiter_raw():
        received += chunk
        if done(received):
            return received
    raise AssertionError(f"the trickled body ended after {len(received)} bytes")


def _json_then_spaces(received: bytes) -> bool:
    """A whole JSON document followed by at least 20 spaces: the body went on past its end."""
    document = received.rstrip(b" ")
    if len(received) - len(document) < 20:
        return False
    json.loads(document)
    return True


async def _stops_once_the_client_left(state: Any) -> None:
    await anyio.sleep(0.3)  # the server notices the disconnect
    sent = state.trickle_bytes_sent
    assert sent > 0
    await anyio.sleep(0.3)  # a stream still running would send 6 (at 50 ms) to 150 more bytes
    assert state.trickle_bytes_sent == sent


async def test_trickle_402_sends_the_terms_at_once_and_a_body_that_never_ends(sandbox, http):
    state = sandbox.state
    state.set_faults(trickle_seconds=0.002, trickle_at="402")
    with anyio.fail_after(8):
        async with http.stream(
            "POST", sandbox.base_url + CHAT_PATH, json=chat_request().wire(stream=False)
        ) as response:
            assert response.status_code == 402
            assert _terms(response)["accepts"][0]["scheme"] == "exact"
            received = await _read_until(response, _json_then_spaces)
    assert json.loads(received)["error"] == "Payment Required"
    assert not state.settlements
    await _stops_once_the_client_left(state)


async def test_trickle_answer_settles_then_dribbles_one_byte_at_a_time(
    sandbox, http, funded_account
):
    state = sandbox.state
    url, body = sandbox.base_url + CHAT_PATH, chat_request().wire(stream=False)
    unpaid = await http.post(url, json=body)
    terms = parse_payment_required(unpaid.headers, unpaid.content)
    payment = sign_payment(funded_account, terms, terms.accepts[0], BASE)
    state.set_faults(trickle_seconds=0.05)  # trickle_at defaults to "answer"
    with anyio.fail_after(8):
        async with http.stream(
            "POST", url, json=body, headers={payment.header_name: payment.header_value}
        ) as response:
            assert response.status_code == 200
            # The money moved before a byte of the answer.
            (settlement,) = state.settlements
            assert _receipt(response)["transaction"] == settlement.tx_hash
            started = time.monotonic()
            received = await _read_until(response, lambda got: len(got) >= 10)
            elapsed = time.monotonic() - started
    assert received == b'{"data":[{"url":"data:image/png;base64,'[: len(received)]
    assert elapsed >= 0.05 * (len(received) - 1) * 0.8  # a byte per 50 ms, not a burst
    await _stops_once_the_client_left(state)


async def test_trickle_poll_dribbles_every_video_poll_answer(sandbox, http, funded_account):
    state = sandbox.state
    state.set_faults(video_polls_before_done=1)
    payment, submitted = await _pay(
        http, f"{sandbox.base_url}/v1/videos/generations", VIDEO, funded_account
    )
    assert submitted.status_code == 202  # the submit itself is not trickled
    state.set_faults(trickle_seconds=0.002, trickle_at="poll")
    header = {payment.header_name: payment.header_value}
    answers = []
    with anyio.fail_after(8):
        for _ in range(2):
            async with http.stream("GET", submitted.json()["poll_url"], headers=header) as poll:
                answers.append((poll.status_code, "payment-response" in poll.headers))
                received = await _read_until(poll, _json_then_spaces)
                answers.append(json.loads(received)["status"])
    assert answers == [(202, False), "in_progress", (200, True), "completed"]
    assert len(state.settlements) == 1
    await _stops_once_the_client_left(state)


async def test_trickle_answer_leaves_the_unpaid_402_alone(sandbox, http):
    sandbox.state.set_faults(trickle_seconds=5.0)
    with anyio.fail_after(3):
        unpaid = await http.post(
            sandbox.base_url + CHAT_PATH, json=chat_request().wire(stream=False)
        )
    assert unpaid.status_code == 402 and unpaid.json()["error"] == "Payment Required"


async def test_rpc_switches_are_sandbox_wide_not_counted_and_reset(sandbox, http):
    state = sandbox.state
    root = sandbox.base_url.removesuffix("/api")
    chain_id = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
    switched = await http.post(
        f"{root}/_sandbox/faults",
        json={
            "rpc_down": True,
            "status_before_payment": 503,
            "times": 1,
            "endpoints": [CHAT_PATH],
        },
    )
    assert switched.status_code == 200 and switched.json()["rpc_down"] is True
    first = await http.post(sandbox.base_url + CHAT_PATH, json=chat_request().wire(stream=False))
    second = await http.post(sandbox.base_url + CHAT_PATH, json=chat_request().wire(stream=False))
    assert (first.status_code, second.status_code) == (503, 402)  # the counted fault ran out
    for _ in range(2):  # ... the chain stays down, outside the listed endpoints too
        assert (await http.post(sandbox.rpc_url, json=chain_id)).status_code == 503

    await http.post(f"{root}/_sandbox/faults", json={"rpc_down": False, "rpc_garbage": True})
    balance = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "eth_call",
        "params": [{"to": BASE.usdc, "data": "0x70a08231" + "00" * 32}, "latest"],
    }
    block = {"jsonrpc": "2.0", "id": 3, "method": "eth_getBlockByNumber", "params": ["latest", 0]}
    assert (await http.post(sandbox.rpc_url, json=balance)).json()["result"] == "0x02"
    garbled = (await http.post(sandbox.rpc_url, json=block)).json()["result"]
    assert garbled["timestamp"] == "0xnot-hex"
    assert (await http.post(sandbox.rpc_url, json=chain_id)).json()["result"] == "0xnot-hex"

    await http.post(f"{root}/_sandbox/faults", json={"chain_time_offset_seconds": 900})
    snapshot = (await http.get(f"{root}/_sandbox/state")).json()
    assert abs(snapshot["chain_now"] - (time.time() + 900)) < 5
    assert snapshot["counts"]["rpc_calls"] == 5

    assert (await http.post(f"{root}/_sandbox/reset")).status_code == 200
    assert (await http.post(sandbox.rpc_url, json=chain_id)).json()["result"] == hex(8453)
    assert abs(state.chain_now() - time.time()) < 5
    assert state.faults == Faults() and state.rpc_calls == [("eth_chainId", "")]


async def test_new_switches_validate_their_values(sandbox, http):
    root = sandbox.base_url.removesuffix("/api")
    good = {
        "receipt_amount": "0",
        "image_count": 1000,
        "trickle_seconds": 0.5,
        "trickle_at": "poll",
        "hostile_terms": "malformed_first",
        "chain_time_offset_seconds": -60,
        "rpc_garbage": True,
    }
    accepted = await http.post(f"{root}/_sandbox/faults", json=good)
    assert accepted.status_code == 200
    assert {name: accepted.json()[name] for name in good} == good
    for bad in (
        {"image_count": 0},
        {"image_count": 1001},
        {"trickle_seconds": 0},
        {"trickle_at": "body"},
        {"hostile_terms": "pricier_last"},
        {"rpc_lies": "unused"},
    ):
        refused = await http.post(f"{root}/_sandbox/faults", json=bad)
        assert refused.status_code == 400, bad
    with pytest.raises(ValidationError):
        sandbox.state.set_faults(trickle_seconds=-1)
