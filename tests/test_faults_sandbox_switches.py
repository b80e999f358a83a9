"""The sandbox switches added for the fault matrix and the hostile-answer tests, checked directly.

The tool-level tests only see these through our client; here each switch is shown to do exactly
what it says to a plain HTTP client paying with our payer.
"""

from __future__ import annotations

import base64
import json

import httpx2
import pytest

from blockrun_mcp.gateway_models import ImageRequest, VideoRequest
from blockrun_mcp.x402.errors import PaidRequestFailed
from tests.payer_support import chat_request

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
    images, _ = await gateway.generate_images(ImageRequest(model="openai/dall-e-3", prompt="p"))
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
