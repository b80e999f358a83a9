"""A malicious or buggy gateway, through the MCP tools: hostile terms, hostile answers, hostile URLs.

Hostile 402 terms must never be signed (the sandbox receives no payment, the ledger holds no
signed row). Hostile answers must be size-capped as they are read, their media URLs must be
refused before any connection unless they point at the gateway itself, and nothing they carry
may choose where a file is written.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from blockrun_mcp.sandbox.media import png_bytes
from tests.support.payer import assert_every_payment_valid
from tests.support.security import (
    assert_budget_consistent,
    error_text,
    reconcile,
    sandbox_view,
    structured,
)
from tests.support.server import (
    DATA_URI_IMAGE_MODEL,
    OPUS,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    open_server,
)

pytestmark = pytest.mark.anyio

CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "ask_model": ("ask_model", {"prompt": "hostile?", "model": OPUS, "max_tokens": 300}),
    "generate_image": ("generate_image", {"prompt": "hostile cat", "model": URL_IMAGE_MODEL}),
    "generate_video": (
        "generate_video",
        {"prompt": "hostile waves", "model": VIDEO_MODEL, "duration_seconds": 2},
    ),
}
# 100x these honest quotes is over the default $0.50 per-call cap.
OVER_CAP_CALLS = {
    **CALLS,
    "ask_model": ("ask_model", {"prompt": "hostile?", "model": OPUS, "max_tokens": 20_000}),
}
# Caps high enough that 100x the quote passes them: only the estimate can catch it.
GENEROUS = {"BLOCKRUN_MAX_PER_CALL_USD": "20", "BLOCKRUN_SESSION_BUDGET_USD": "50"}


# --- hostile 402 terms: nothing is ever signed -------------------------------------------

HOSTILE_TERMS: dict[str, tuple[dict[str, Any], dict[str, str], str]] = {
    # name: (faults, env, what the refusal says)
    "wrong_asset": ({"hostile_terms": "wrong_asset"}, {}, "is not USDC"),
    "wrong_chain": ({"hostile_terms": "wrong_network"}, {}, "is not the configured base"),
    "wrong_domain_name": ({"hostile_terms": "wrong_domain"}, {}, "EIP-712 domain name"),
    "wrong_domain_version": ({"hostile_terms": "wrong_version"}, {}, "EIP-712 domain version"),
    "upto_scheme": ({"hostile_terms": "upto_only"}, {}, 'scheme "upto"'),
    "amount_over_the_cap": ({"hostile_terms": "overpriced"}, {}, "per-call cap"),
    "amount_far_above_the_estimate": ({"hostile_terms": "overpriced"}, GENEROUS, "suspicious"),
    "validity_window_too_long": ({"hostile_terms": "long_timeout"}, {}, "maxTimeoutSeconds"),
    "huge_header": ({"malformed_402": "huge"}, {}, "nothing was signed"),
    "deeply_nested_header": ({"malformed_402": "deep"}, {}, "nested deeper"),
}
TERMS_CASES = [(tool, kind) for kind in HOSTILE_TERMS for tool in CALLS]


@pytest.mark.parametrize("tool, kind", TERMS_CASES, ids=[f"{t}-{k}" for t, k in TERMS_CASES])
async def test_hostile_terms_are_never_signed(sandbox, tmp_path, tool, kind):
    faults, env, says = HOSTILE_TERMS[kind]
    name, arguments = (OVER_CAP_CALLS if kind == "amount_over_the_cap" else CALLS)[tool]
    state = sandbox.state
    async with open_server(tmp_path, sandbox, env=env) as h:
        state.set_faults(**faults)
        text = error_text(await h.call(name, arguments), name)
        assert says in text, text
        assert "othing was signed" in text
        # The gateway offered terms (or tried to), and received no payment at all.
        assert state.requests_seen and not state.payments_seen and not state.settlements
        assert not [row for row in h.ledger.payments() if row.status != "released"]
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == 0
        # Honest terms again: the same call pays, once.
        state.clear_faults()
        structured(await h.call(name, arguments))
        assert len(sandbox_view(state)[1]) == 1
        assert_every_payment_valid(state)
        reconcile(h.ledger, state, logical_requests=1)


@pytest.mark.parametrize("tool", list(CALLS))
async def test_payto_changing_between_quote_and_retry_is_never_signed(sandbox, tmp_path, tool):
    """The paid request is answered with a fresh 402 naming another payTo: it is not paid."""
    name, arguments = CALLS[tool]
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        h.service.payer.retry_delay_seconds = 0.01
        state.set_faults(hostile_terms="payto_changes", requote_after_payment=True)
        text = error_text(await h.call(name, arguments), name)
        assert "402" in text and "counted as spent" in text
        with state.lock:
            pay_tos = [term["payTo"] for term in state.issued_terms]
            signed_to = {p["payload"]["authorization"]["to"] for p in state.payments_seen}
        assert len(pay_tos) == 2 and pay_tos[0] != pay_tos[1]  # the quote, then the "retry"
        # One signature, for the first quote only; the changed payTo got nothing.
        assert signed_to == {pay_tos[0]}
        received, settled = sandbox_view(state)
        assert len(set(received)) == 1 and not settled
        rows = reconcile(h.ledger, state, logical_requests=1)
        # A code-less 402 proves nothing about the signed payment: it stays counted.
        assert [row.status for row in rows] == ["signed"]
        assert_budget_consistent(await h.ok("budget"), rows)


# --- hostile success bodies ---------------------------------------------------------------

HUGE_BYTES = 64 * 1024 * 1024


@pytest.mark.parametrize(
    "tool, says",
    [("ask_model", "event larger than"), ("generate_image", "larger than 8388608 bytes")],
)
async def test_a_huge_answer_is_capped_while_it_is_read(sandbox, tmp_path, tool, says):
    name, arguments = CALLS[tool]
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        state.set_faults(huge_success_body_bytes=HUGE_BYTES)
        with anyio.fail_after(30):
            text = error_text(await h.call(name, arguments), name)
        assert says in text and "counted as spent" in text
        await anyio.sleep(0.2)  # the sandbox notices the closed connection
        with state.lock:
            sent = state.huge_bytes_sent
        # The client stopped reading near its cap: far less than the body the gateway offered.
        assert 0 < sent < HUGE_BYTES // 2, sent
        rows = reconcile(h.ledger, state, logical_requests=1)
        assert [row.status for row in rows] == ["settled"]  # the 200 said it settled
        assert_budget_consistent(await h.ok("budget"), rows)
        state.clear_faults()
        structured(await h.call(name, arguments))  # and the server carries on


@pytest.fixture
def idle_listener() -> Iterator[socket.socket]:
    """A loopback port other than the gateway's. Nothing may ever connect to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _assert_never_connected(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


def _hosts_file_name() -> str | None:
    """A name /etc/hosts maps to a non-public address (resolved from the file: no DNS traffic)."""
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#")[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            continue
        for name in fields[1:]:
            if not address.is_global and "localhost" not in name and not name.endswith(".local"):
                return name
    return None


def _hostile_urls(listener_port: int) -> dict[str, str]:
    other = f"127.0.0.1:{listener_port}"
    return {
        "file": "file:///etc/passwd",
        "ftp": f"ftp://{other}/cat.png",
        "javascript": "javascript:alert(document.cookie)",
        "loopback_other_port": f"http://{other}/cat.png",
        "loopback_decimal": f"http://2130706433:{listener_port}/cat.png",
        "loopback_short": f"http://127.1:{listener_port}/cat.png",
        "loopback_ipv6": f"http://[::1]:{listener_port}/cat.png",
        "localhost_name": f"http://localhost:{listener_port}/cat.png",
        "private_10": "http://10.0.0.1/cat.png",
        "private_192": "http://192.168.1.1/cat.png",
        "cloud_metadata": "http://169.254.169.254/latest/meta-data/iam/",
        "bad_port": "http://127.0.0.1:99999/cat.png",
    }


URL_KINDS = list(_hostile_urls(1))


def _guard(h: Any, sandbox: Any) -> list[str]:
    """Record every URL the gateway client is about to request, refusing any host but the
    sandbox's: the test itself never lets traffic leave loopback."""
    seen: list[str] = []
    allowed = (sandbox.host, sandbox.port)

    async def hook(request: httpx2.Request) -> None:
        seen.append(str(request.url))
        if (request.url.host, request.url.port) != allowed:
            raise RuntimeError(f"the client tried to reach {request.url}")

    gateway = h.service.gateway
    for client in (gateway.http, gateway.media_http):  # API calls, and media downloads
        client.event_hooks["request"].append(hook)
    return seen


@pytest.mark.parametrize("kind", URL_KINDS)
@pytest.mark.parametrize("tool", ["generate_image", "generate_video"])
async def test_hostile_media_urls_are_refused_before_connecting(
    sandbox, tmp_path, idle_listener, tool, kind
):
    url = _hostile_urls(idle_listener.getsockname()[1])[kind]
    name, arguments = CALLS[tool]
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        seen = _guard(h, sandbox)
        state.set_faults(media_url=url, video_polls_before_done=0)
        data = structured(await h.call(name, arguments))
        note = data["note"] or ""
        assert "Saving failed" in note and "Refused to download media" in note, note
        if tool == "generate_image":
            assert data["images"] == [{"path": None, "url": url}]
        else:
            assert data["status"] == "completed" and data["path"] is None
        # The media was paid for (the gateway delivered its answer), and that is accounted.
        assert data["cost_usd"] > 0
        rows = reconcile(h.ledger, state, logical_requests=1)
        assert [row.status for row in rows] == ["settled"]
        assert_budget_consistent(await h.ok("budget"), rows)
        # No request went anywhere but the gateway, and nothing knocked on the other port.
        assert all(u.startswith(sandbox.base_url) for u in seen), seen
        _assert_never_connected(idle_listener)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


async def test_a_dns_name_resolving_to_a_private_address_is_refused(sandbox, tmp_path):
    host = _hosts_file_name()
    if host is None:
        pytest.skip("no /etc/hosts name maps to a private address here (a test never uses DNS)")
    url = f"http://{host}:9/cat.png"
    async with open_server(tmp_path, sandbox) as h:
        seen = _guard(h, sandbox)
        sandbox.state.set_faults(media_url=url)
        data = structured(await h.call(*CALLS["generate_image"]))
        assert "resolves to a private or loopback address" in data["note"], data["note"]
        assert all(u.startswith(sandbox.base_url) for u in seen), seen


def _files_under(root: Path) -> set[Path]:
    return {Path(d, f) for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize(
    "media",
    [
        "data_uri_mime_traversal",
        "url_path_traversal",
        "content_type_traversal",
        "html_as_image",
    ],
)
async def test_a_hostile_answer_cannot_choose_where_files_are_written(sandbox, tmp_path, media):
    state = sandbox.state
    png = png_bytes("hostile")
    out = (tmp_path / "out").resolve()
    name = "hostile.png"
    if media == "data_uri_mime_traversal":
        url = "data:image/../../../../escape;base64," + base64.b64encode(png).decode()
    elif media == "url_path_traversal":
        url = f"{sandbox.base_url}/media/..%2F..%2F..%2Fescape.png"
    elif media == "content_type_traversal":
        state.store_media(name, png, 'image/png; name="../../escape.sh"')
        url = f"{sandbox.base_url}/media/{name}"
    else:
        state.store_media(name, b"<script>alert(1)</script>", "text/html")
        url = f"{sandbox.base_url}/media/{name}"
    before = _files_under(tmp_path)
    async with open_server(tmp_path, sandbox) as h:
        state.set_faults(media_url=url)
        data = structured(
            await h.call(
                "generate_image", {"prompt": "../../escape", "model": DATA_URI_IMAGE_MODEL}
            )
        )
        created = _files_under(tmp_path) - before
        # Only the ledger (and its journal) and at most one file in the output dir appear.
        outside = {p for p in created if p.resolve().parent != out and "data" not in p.parts}
        assert not outside, outside
        (image,) = data["images"]
        if image["path"] is not None:
            path = Path(image["path"])
            assert path.resolve().parent == out and path.is_file()
            assert path.name.isascii() and ".." not in path.name
            assert path.suffix in (".png", ".bin")
        else:
            assert "Saving failed" in data["note"]
        assert not list(tmp_path.rglob("escape*"))


@pytest.mark.parametrize("where", ["loopback_other_port", "another_site", "private_address"])
async def test_a_poll_url_away_from_the_gateway_never_gets_the_payment(
    sandbox, tmp_path, idle_listener, where
):
    """Every poll carries the payment header: it must never be sent to another host."""
    url = {
        "loopback_other_port": f"http://127.0.0.1:{idle_listener.getsockname()[1]}/poll",
        "another_site": "https://evil.example/api/v1/videos/generations/vid_1",
        "private_address": "http://10.0.0.1/poll",
    }[where]
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        seen = _guard(h, sandbox)
        state.set_faults(poll_url=url)
        text = error_text(await h.call(*CALLS["generate_video"]), "generate_video")
        assert "points away from the gateway" in text
        assert all(u.startswith(sandbox.base_url) for u in seen), seen
        _assert_never_connected(idle_listener)
        # The submit was paid for; the job holds the payment unsettled, so it stays counted.
        rows = reconcile(h.ledger, state, logical_requests=1)
        assert [row.status for row in rows] == ["signed"] and not state.settlements
        assert_budget_consistent(await h.ok("budget"), rows)


async def test_media_downloads_never_follow_a_redirect(sandbox, tmp_path, idle_listener):
    """A redirect from the gateway's own origin to anywhere else is not followed."""
    from urllib.parse import quote

    target = f"http://127.0.0.1:{idle_listener.getsockname()[1]}/cat.png"
    root = sandbox.base_url.removesuffix("/api")
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        seen = _guard(h, sandbox)
        state.set_faults(media_url=f"{root}/_sandbox/redirect?to={quote(target, safe='')}")
        data = structured(await h.call(*CALLS["generate_image"]))
        assert "failed with HTTP 302" in data["note"], data["note"]
        assert data["images"][0]["path"] is None and data["cost_usd"] > 0
        assert all(u.startswith(root) for u in seen), seen
        assert seen[-1].startswith(f"{root}/_sandbox/redirect") and len(seen) == 4, seen
        _assert_never_connected(idle_listener)
