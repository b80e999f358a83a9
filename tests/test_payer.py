"""Our x402 payer against the sandbox over real HTTP; every payment re-judged by the x402 SDK."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from blockrun_mcp.gateway import GatewayError
from blockrun_mcp.gateway_models import ImageRequest, VideoRequest
from blockrun_mcp.x402.errors import (
    MalformedTerms,
    PaidRequestFailed,
    PaymentInvalid,
    PaymentRefused,
    PaymentReplay,
    PaymentUnfunded,
)
from blockrun_mcp.x402.payer import Quote
from tests.support.payer import (
    FREE_MODEL,
    HoldRecorder,
    assert_every_payment_valid,
    chat_request,
    decode,
    make_gateway,
    verify_header,
    verify_v1_header,
)

pytestmark = pytest.mark.anyio


def nonces(state) -> list[str]:
    return [p["payload"]["authorization"]["nonce"] for p in state.payments_seen]


@pytest.mark.parametrize("stream", [True, False])
async def test_paid_chat_settles_once_with_receipt(sandbox, gateway, funded_account, stream):
    holds = HoldRecorder()
    answer, paid = await gateway.paid_by(holds).chat(chat_request("Hello there"), stream=stream)
    state = sandbox.state
    assert "Hello there" in answer.content
    assert answer.finish_reason == "stop" and answer.complete
    assert answer.usage.completion_tokens > 0
    assert len(state.settlements) == 1
    settlement = state.settlements[0]
    assert settlement.nonce == paid.payment.nonce
    assert settlement.amount_atomic == paid.cost_atomic == int(state.issued_terms[-1]["amount"])
    assert paid.receipt is not None and paid.receipt.transaction == settlement.tx_hash
    assert settlement.payer == funded_account.address
    assert holds.holds[0].events == ["signed", "settle"]
    assert holds.holds[0].quote.amount_atomic == settlement.amount_atomic
    assert_every_payment_valid(state)


async def test_the_judge_rejects_a_broken_domain_or_amount(sandbox, gateway):
    _, paid = await gateway.chat(chat_request())
    issued = sandbox.state.issued_terms[-1]
    header = paid.payment.header_value
    assert verify_header(header, issued) == (True, None)
    broken_name = {**issued, "extra": {"name": "USDC", "version": "2"}}
    assert verify_header(header, broken_name)[0] is False
    broken_amount = {**issued, "amount": str(int(issued["amount"]) + 1)}
    assert verify_header(header, broken_amount)[0] is False


async def test_accepted_is_echoed_exactly(sandbox, gateway):
    _, paid = await gateway.chat(chat_request())
    sent = decode(paid.payment.header_value)
    assert sent["accepted"] == sandbox.state.issued_terms[-1]
    assert sent["x402Version"] == 2
    auth = sent["payload"]["authorization"]
    assert all(isinstance(v, str) for v in auth.values())
    assert len(sent["payload"]["signature"]) == 2 + 130


async def test_free_model_answers_without_payment(sandbox, gateway):
    holds = HoldRecorder()
    answer, paid = await gateway.paid_by(holds).chat(chat_request(model=FREE_MODEL))
    assert answer.content and paid.payment is None
    assert not holds.holds and not sandbox.state.payments_seen and not sandbox.state.settlements


@pytest.mark.parametrize(
    "hostile",
    ["wrong_asset", "wrong_domain", "wrong_version", "wrong_network", "upto_only", "long_timeout"],
)
async def test_hostile_terms_are_never_signed(sandbox, gateway, hostile):
    sandbox.state.set_faults(hostile_terms=hostile)
    holds = HoldRecorder()
    with pytest.raises(PaymentRefused) as info:
        await gateway.paid_by(holds).chat(chat_request())
    assert "Nothing was signed" in str(info.value)
    assert not holds.holds, "the approval hook must not even be asked"
    assert not sandbox.state.payments_seen and not sandbox.state.settlements


async def test_overpriced_quote_is_refused_by_the_cap(sandbox, funded_account):
    normal = make_gateway(sandbox.base_url, funded_account, cap_usd=0.05)
    _, paid = await normal.chat(chat_request())
    assert paid.payment is not None  # the honest quote fits under the cap
    sandbox.state.set_faults(hostile_terms="overpriced")
    before = len(sandbox.state.payments_seen)
    with pytest.raises(PaymentRefused) as info:
        await normal.chat(chat_request())
    await normal.aclose()
    assert info.value.limit == "per-call cap"
    assert len(sandbox.state.payments_seen) == before


async def test_payto_changing_between_quotes_is_never_mixed(sandbox, gateway):
    sandbox.state.set_faults(hostile_terms="payto_changes")
    _answer, paid = await gateway.chat(chat_request())
    # Each payment goes to the payTo of the 402 it answers, echoed exactly.
    sent = decode(paid.payment.header_value)
    assert sent["payload"]["authorization"]["to"] == sent["accepted"]["payTo"]
    assert_every_payment_valid(sandbox.state)


@pytest.mark.parametrize("malformed", ["garbage", "not_json", "no_accepts", "deep", "missing"])
async def test_malformed_402_gets_a_clear_error_and_no_signature(sandbox, gateway, malformed):
    sandbox.state.set_faults(malformed_402=malformed)
    with pytest.raises(MalformedTerms) as info:
        await gateway.chat(chat_request())
    assert "could not be read" in str(info.value)
    assert not sandbox.state.payments_seen


async def test_huge_402_header_is_refused_by_the_http_layer(sandbox, gateway):
    sandbox.state.set_faults(malformed_402="huge")
    with pytest.raises(GatewayError) as info:
        await gateway.chat(chat_request())
    assert "nothing was signed" in str(info.value)
    assert not sandbox.state.payments_seen


async def test_v1_server_is_paid_with_x_payment(sandbox, gateway):
    sandbox.state.set_faults(hostile_terms="v1")
    answer, paid = await gateway.chat(chat_request("v1 please"), stream=False)
    assert paid.payment.header_name == "X-PAYMENT"
    assert "v1 please" in answer.content
    assert len(sandbox.state.settlements) == 1
    issued_v1 = sandbox.state.issued_terms[-1]
    assert verify_v1_header(paid.payment.header_value, issued_v1) == (True, None)


async def test_5xx_before_payment_signs_nothing(sandbox, gateway):
    sandbox.state.set_faults(status_before_payment=503)
    with pytest.raises(GatewayError) as info:
        await gateway.chat(chat_request())
    assert info.value.status == 503 and info.value.money_moved is False
    assert not sandbox.state.payments_seen


@pytest.mark.parametrize("status", [502, 503])
async def test_retry_after_5xx_resends_the_same_header(sandbox, gateway, status):
    sandbox.state.set_faults(status_after_payment=status, times=1)
    holds = HoldRecorder()
    _answer, _paid = await gateway.paid_by(holds).chat(chat_request())
    seen = nonces(sandbox.state)
    assert len(seen) == 2 and len(set(seen)) == 1, "one nonce per logical request"
    assert len(sandbox.state.settlements) == 1
    assert holds.holds[0].events == ["signed", "settle"]
    assert_every_payment_valid(sandbox.state)


async def test_persistent_5xx_after_payment_keeps_the_payment_held(sandbox, gateway):
    sandbox.state.set_faults(status_after_payment=503)
    holds = HoldRecorder()
    with pytest.raises(GatewayError) as info:
        await gateway.paid_by(holds).chat(chat_request())
    assert info.value.status == 503  # what the payment came to is the hold's to say
    assert len(set(nonces(sandbox.state))) == 1 and len(sandbox.state.payments_seen) == 3
    assert holds.holds[0].events == ["signed"], "unknown outcome: neither settled nor released"
    assert not sandbox.state.settlements


async def test_answer_lost_after_settlement_is_a_replay_not_a_second_charge(sandbox, gateway):
    sandbox.state.set_faults(status_after_settlement=502, times=1)
    holds = HoldRecorder()
    with pytest.raises(PaymentReplay) as info:
        await gateway.paid_by(holds).chat(chat_request())
    assert info.value.money_moved is None and "may have been charged" in str(info.value)
    assert len(sandbox.state.settlements) == 1
    assert len(set(nonces(sandbox.state))) == 1
    assert holds.holds[0].events == ["signed", "claim:the gateway said PAYMENT_REPLAY"]


async def test_dropped_connection_after_payment_retries_same_header(sandbox, gateway):
    sandbox.state.set_faults(drop_after_settlement=True, times=1)
    with pytest.raises(PaymentReplay):
        await gateway.chat(chat_request(), stream=False)
    assert len(sandbox.state.settlements) == 1
    assert len(sandbox.state.payments_seen) == 2 and len(set(nonces(sandbox.state))) == 1


async def test_unreachable_gateway_after_signing_releases(funded_account):
    with anyio.fail_after(10):
        gateway = make_gateway("http://127.0.0.1:9/api", funded_account)
        with pytest.raises(GatewayError) as info:
            await gateway.chat(chat_request())
        assert "could not be reached" in str(info.value)
        await gateway.aclose()


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("PAYMENT_INVALID", PaymentInvalid),
        ("PAYMENT_UNFUNDED", PaymentUnfunded),
        ("PAYMENT_REPLAY", PaymentReplay),
    ],
)
async def test_rejection_codes_become_distinct_errors(sandbox, gateway, code, error):
    sandbox.state.set_faults(force_payment_code=code)
    holds = HoldRecorder()
    with pytest.raises(error) as info:
        await gateway.paid_by(holds).chat(chat_request())
    assert code in str(info.value)
    assert not sandbox.state.settlements
    # The gateway has the signature whatever it says: its claim is recorded, nothing released.
    events = holds.holds[0].events
    assert not any(e.startswith("release") for e in events), events
    assert events == ["signed", f"claim:the gateway said {code}"]


async def test_real_unfunded_wallet_says_where_to_send_usdc(sandbox, gateway, funded_account):
    sandbox.state.set_balance(funded_account.address, 0)
    with pytest.raises(PaymentUnfunded) as info:
        await gateway.chat(chat_request())
    assert funded_account.address in str(info.value) and "base" in str(info.value)
    assert not sandbox.state.settlements


async def test_slow_answer_past_the_timeout_never_pays_twice(sandbox, funded_account):
    gateway = make_gateway(sandbox.base_url, funded_account, paid_attempts=2)
    gateway.http.timeout = httpx2.Timeout(5.0, read=0.3)
    sandbox.state.set_faults(delay_seconds=1.0)
    try:
        with pytest.raises((PaidRequestFailed, PaymentReplay)):
            await gateway.chat(chat_request(), stream=False)
    finally:
        await gateway.aclose()
    await anyio.sleep(1.5)  # let the sandbox finish the requests the client gave up on
    assert len(sandbox.state.payments_seen) == 2
    assert len(set(nonces(sandbox.state))) == 1
    assert len(sandbox.state.settlements) == 1, "the late first send settles; its retry cannot"


async def test_approval_hook_can_refuse(sandbox, gateway):
    async def refuse(quote: Quote):
        raise PaymentRefused(f"${quote.amount_usd:.4f} is over budget", limit="budget")

    with pytest.raises(PaymentRefused, match="over budget"):
        await gateway.paid_by(refuse).chat(chat_request())
    assert not sandbox.state.payments_seen


async def test_per_call_cap_refuses_before_signing(sandbox, funded_account):
    gateway = make_gateway(sandbox.base_url, funded_account, cap_usd=0.0001)
    with pytest.raises(PaymentRefused) as info:
        await gateway.chat(chat_request(model="anthropic/claude-opus-4.7"))
    await gateway.aclose()
    assert info.value.limit == "per-call cap"
    assert not sandbox.state.payments_seen


async def test_images_as_data_uri_and_url(sandbox, gateway):
    data_uri = (
        await gateway.generate_images(ImageRequest(model="openai/gpt-image-1", prompt="a cat"))
    ).images
    assert data_uri[0].url.startswith("data:image/png;base64,")
    url_images = (
        await gateway.generate_images(ImageRequest(model="google/nano-banana", prompt="a dog"))
    ).images
    assert url_images[0].url.startswith("http")
    downloaded = b"".join([chunk async for chunk in gateway.stream_bytes(url_images[0].url)])
    assert downloaded.startswith(b"\x89PNG")
    assert len(sandbox.state.settlements) == 2
    assert_every_payment_valid(sandbox.state)


async def test_video_polls_with_the_same_header_and_settles_on_completion(sandbox, gateway):
    holds = HoldRecorder()
    job = await gateway.paid_by(holds).submit_video(
        VideoRequest(model="xai/grok-imagine-video", prompt="waves", duration_seconds=2)
    )
    assert not sandbox.state.settlements, "video settles on the first completed poll, not at submit"
    polls = []

    async def on_poll(status, n):
        polls.append(status.status)

    status = await gateway.wait_for_job(
        job, deadline=job.poll_deadline, on_poll=on_poll, interval=0.05
    )
    assert status.status == "completed" and status.urls
    assert polls[-1] == "completed" and len(polls) >= 2
    assert len(sandbox.state.settlements) == 1
    assert len(set(nonces(sandbox.state))) == 1, "every poll carries the submit's payment"
    # The gateway client books nothing: the completing poll's receipt goes to the caller.
    assert holds.holds[0].events == ["signed"]
    assert status.receipt is not None
    assert status.receipt.transaction == sandbox.state.settlements[0].tx_hash
    # a repeated poll does not settle again
    again = await gateway.poll_video(job)
    assert again.status == "completed" and len(sandbox.state.settlements) == 1
    assert_every_payment_valid(sandbox.state)


async def test_video_failing_mid_poll_is_reported_and_nothing_is_released(sandbox, gateway):
    sandbox.state.set_faults(video_fail_mid_poll=True)
    holds = HoldRecorder()
    job = await gateway.paid_by(holds).submit_video(
        VideoRequest(model="xai/grok-imagine-video", prompt="x")
    )
    status = await gateway.wait_for_job(job, deadline=job.poll_deadline, interval=0.05)
    assert status.status == "failed" and status.error and status.receipt is None
    assert not sandbox.state.settlements
    # "failed" is the gateway's word; the gateway client neither settles nor releases.
    assert holds.holds[0].events == ["signed"]


async def test_concurrent_payments_use_distinct_nonces(sandbox, gateway):
    results = []

    async def one(i: int) -> None:
        _answer, paid = await gateway.chat(chat_request(f"question {i}"))
        results.append(paid.payment.nonce)

    async with anyio.create_task_group() as group:
        for i in range(20):
            group.start_soon(one, i)
    assert len(set(results)) == 20
    assert len(sandbox.state.settlements) == 20
    assert {s.nonce for s in sandbox.state.settlements} == set(results)
    assert_every_payment_valid(sandbox.state)
