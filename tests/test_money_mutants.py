"""Money decisions that a mutation pass over the money code found unpinned.

Each test here fails when one small, realistic bug is put into the money code (named in its
docstring) and passes on the real code. As everywhere: a real server over the sandbox through a
real MCP client, judged by what the sandbox (gateway and chain) received and the ledger file holds.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client

from blockrun_mcp.ledger import Ledger
from blockrun_mcp.payments import FINALITY_MARGIN_SECONDS
from blockrun_mcp.sandbox import SandboxServer, SandboxState
from tests.support.eras import is_sessionless, mcp_client
from tests.support.security import expire_on_chain
from tests.support.server import (
    CHEAP_MODEL,
    PYTHON,
    REPO_ROOT,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    http_server,
    make_service,
    new_key,
    open_ledger,
    open_server,
    paid_posts,
)

pytestmark = pytest.mark.anyio

WEEK = 7 * 24 * 3600


def signed_nonces(state: SandboxState) -> set[str]:
    with state.lock:
        return {str(p["payload"]["authorization"]["nonce"]).lower() for p in state.payments_seen}


async def rejected_payment(h: Any, state: SandboxState) -> Any:
    """One ask_model the gateway answers PAYMENT_INVALID after receiving the signature: the
    ledger row it leaves is signed, outcome unknown, and the chain never saw its nonce."""
    state.set_faults(force_payment_code="PAYMENT_INVALID")
    await h.fail("ask_model", {"prompt": "rejected", "model": CHEAP_MODEL})
    state.clear_faults()
    (row,) = h.ledger.payments()
    assert row.status == "signed" and row.valid_before is not None
    assert signed_nonces(state) == {row.nonce.lower()}
    return row


# --- the reconciler's clocks and the chain's answers --------------------------------------


async def test_our_clock_running_ahead_of_the_chains_releases_nothing(sandbox, tmp_path):
    """Mutant: reconcile uses our clock alone instead of min(chain, ours). The authorization is
    still valid on chain, so the gateway can still submit it: it must stay counted."""
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        row = await rejected_payment(h, state)
        h.service.options.clock = lambda: time.time() + WEEK  # ours says: next week
        found = await h.service.reconcile()
        assert [o.result for o in found.outcomes] == ["pending"] and not found.chain_error
        assert "may still settle" in found.outcomes[0].reason
        assert h.ledger.payment(row.id).status == "signed"
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(row.amount_atomic / 1e6)
        # The control: once the chain's clock agrees, the same pass releases it.
        await expire_on_chain(h, state)
        assert h.ledger.payment(row.id).status == "released"


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """Serve a loopback stand-in in a thread for the block's duration."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class SpoilingNode:
    """A JSON-RPC node on loopback in front of the sandbox's chain that answers the methods in
    `spoiled` with a JSON-RPC error and forwards everything else: a node (or the proxy before it)
    that answers one call and fails another."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.spoiled: set[str] = set()
        self.calls: list[str] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = json.loads(body)
                node.calls.append(request["method"])
                if request["method"] in node.spoiled:
                    answer = json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": request["id"],
                            "error": {"code": -32000, "message": "header not found"},
                        }
                    ).encode()
                else:
                    answer = httpx2.post(node.upstream, content=body, timeout=10).content
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/rpc"

    @contextmanager
    def running(self) -> Iterator[SpoilingNode]:
        with serving(self._server):
            yield self


def past_expiry_on_both_clocks(h: Any, state: SandboxState, row: Any) -> None:
    ahead = row.valid_before + FINALITY_MARGIN_SECONDS + 10 - int(time.time())
    state.set_faults(chain_time_offset_seconds=ahead)
    h.service.options.clock = lambda: time.time() + ahead


@pytest.mark.parametrize("spoiled", ["eth_call", "eth_getBlockByNumber"])
async def test_a_node_failing_one_of_the_two_reads_releases_nothing(sandbox, tmp_path, spoiled):
    """Mutants: a ChainUnavailable from authorizationState read as "unused" (eth_call spoiled),
    and an unreadable chain clock replaced by ours alone (eth_getBlockByNumber spoiled). The
    sandbox's own rpc_down / rpc_garbage spoil both reads at once, so they cannot tell."""
    state = sandbox.state
    with SpoilingNode(sandbox.rpc_url).running() as node:
        async with open_server(tmp_path, sandbox, env={"BLOCKRUN_RPC_URL": node.url}) as h:
            row = await rejected_payment(h, state)
            past_expiry_on_both_clocks(h, state, row)
            node.spoiled.add(spoiled)
            found = await h.service.reconcile()
            assert found.chain_error and "header not found" in found.chain_error
            assert [o.result for o in found.outcomes] == ["pending"]
            assert h.ledger.payment(row.id).status == "signed"
            assert spoiled in node.calls
            # The control: the same node answering both reads releases it.
            node.spoiled.clear()
            found = await h.service.reconcile()
            assert [o.result for o in found.outcomes] == ["released"] and not found.chain_error
            assert h.ledger.payment(row.id).status == "released"


async def test_a_payment_signed_on_another_network_is_never_judged_by_this_chain(sandbox, tmp_path):
    """Mutant: reconcile drops its network check. A payment the mainnet gateway settled (its
    answer lost) is asked of the Sepolia chain after the user switched BLOCKRUN_NETWORK; that
    chain never saw the nonce, so it would be released while the USDC had really moved."""
    state = sandbox.state
    key = new_key()
    async with open_server(tmp_path, sandbox, key=key) as h:
        h.service.payer.retry_delay_seconds = 0.01
        state.set_faults(status_after_settlement=503, times=1)  # settled; the answer is lost
        text = await h.fail("ask_model", {"prompt": "lost answer", "model": CHEAP_MODEL})
        assert "PAYMENT_REPLAY" in text
        (row,) = h.ledger.payments()
        assert row.status == "signed" and row.network == "base"
        with state.lock:
            (settlement,) = state.settlements
        assert settlement.nonce.lower() == row.nonce.lower()
    with SandboxServer(SandboxState(network="base-sepolia")) as sepolia:
        env = {"BLOCKRUN_NETWORK": "base-sepolia"}
        async with open_server(tmp_path, sepolia, key=key, env=env) as h:
            past_expiry_on_both_clocks(h, sepolia.state, row)
            found = await h.service.reconcile()
            assert [o.result for o in found.outcomes] == ["pending"]
            assert "signed on base" in found.outcomes[0].reason
            assert h.ledger.payment(row.id).status == "signed"
    # Back on mainnet, the chain that saw it books it settled, at the signed amount.
    async with open_server(tmp_path, sandbox, key=key) as h:
        found = await expire_on_chain(h, state)
        assert [o.result for o in found.outcomes] == ["settled"]
        settled = h.ledger.payment(row.id)
        assert settled.status == "settled" and settled.settled_atomic == settlement.amount_atomic


# --- a reservation of a live process ---------------------------------------------------------

RESERVER = """
import sys
from pathlib import Path
from blockrun_mcp.ledger import Ledger

ledger = Ledger(Path(sys.argv[1]))
payment_id = ledger.reserve(
    session="other-host", tool="ask_model", model="m", amount_atomic=40_000, network="base",
    session_limit_atomic=1_000_000, daily_limit_atomic=None,
)
print(payment_id, flush=True)
sys.stdin.readline()  # held between approval and signing until the test says go
signed = ledger.mark_signed(
    payment_id, "0x" + "22" * 32, payer="0x" + "ab" * 20, pay_to="0x" + "cd" * 20,
    valid_before=4102444800,
)
print("signed" if signed else "lost", flush=True)
"""


@contextmanager
def reserving_process(ledger_file: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        [PYTHON, "-c", RESERVER, str(ledger_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""},
    )
    try:
        assert process.stdout is not None
        yield process, int(process.stdout.readline())
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def test_a_starting_server_leaves_a_live_processs_reservation_alone(sandbox, tmp_path):
    """Mutant: the start-up clean-up releases reservations of other processes without asking
    whether they are alive. Another host's server, between approving and signing, would then
    lose its reservation (its call fails), and the day's total would drop under it meanwhile."""
    ledger_file = tmp_path / "data" / "ledger.sqlite3"
    Ledger(ledger_file).close()
    env = {"BLOCKRUN_DAILY_BUDGET_USD": "0.10"}
    with reserving_process(ledger_file) as (other, payment_id):
        async with open_server(tmp_path, sandbox, env=env) as h:
            row = h.ledger.payment(payment_id)
            assert row is not None and row.status == "reserved"
            budget = await h.ok("budget")
            assert budget["daily_spent_usd"] == pytest.approx(0.04)
            assert budget["budget_remaining_usd"] == pytest.approx(0.06)
            assert other.stdin is not None and other.stdout is not None
            other.stdin.write("go\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "signed"
            assert h.ledger.payment(payment_id).status == "signed"
    # The control: a reservation whose process died before signing is released at start-up.
    with reserving_process(ledger_file) as (other, dead_id):
        other.kill()
        other.wait(timeout=10)
        async with open_server(tmp_path, sandbox, env=env) as h:
            assert h.ledger.payment(dead_id).status == "released"
            assert h.ledger.payment(payment_id).status == "signed"
            assert (await h.ok("budget"))["daily_spent_usd"] == pytest.approx(0.04)


# --- HTTP sessions -----------------------------------------------------------------------------

TOKEN = "money-mutants-token-" + "d" * 24


async def test_a_refused_delete_does_not_end_a_sessions_budget(sandbox, tmp_path):
    """Mutant: SessionWatch takes any DELETE answered below 500 as the session's end. A DELETE the
    SDK refuses (405 for a bad protocol version) leaves the session alive; forgetting its budget
    would move it to the shared session-less budget, out from under the limit it lowered."""
    env = {"BLOCKRUN_HTTP_TOKEN": TOKEN, "BLOCKRUN_SESSION_BUDGET_USD": "1.00"}
    service, _ = make_service(tmp_path, sandbox, env=env)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    issued: list[str] = []

    async def remember(response: httpx2.Response) -> None:
        if "mcp-session-id" in response.headers:
            issued.append(response.headers["mcp-session-id"])

    with http_server(service) as url:
        async with (
            httpx2.AsyncClient(
                headers=auth, timeout=60, event_hooks={"response": [remember]}
            ) as http,
            mcp_client(streamable_http_client(url, http_client=http)) as client,
        ):
            lowered = await client.call_tool("budget", {"set_session_limit_usd": 0.05})
            assert lowered.structured_content["session_limit_usd"] == 0.05
            paid = await client.call_tool("ask_model", {"prompt": "hi", "model": CHEAP_MODEL})
            spent = paid.structured_content["cost_usd"]
            assert not paid.is_error and spent > 0
            # (2026-07-28 opens no session: the DELETE names one anyway, and must not end the
            # identity's session-less budget either.)
            session_id = issued[0] if issued else "no-such-session"
            assert bool(issued) != is_sessionless()
            async with httpx2.AsyncClient(headers=auth, timeout=30) as other:
                refused = await other.request(
                    "DELETE",
                    url,
                    headers={"mcp-session-id": session_id, "mcp-protocol-version": "1999-01-01"},
                )
            assert 400 <= refused.status_code < 500
            after = (await client.call_tool("budget", {})).structured_content
            assert after["session_limit_usd"] == 0.05
            assert after["session_spent_usd"] == pytest.approx(spent)
    ledger = open_ledger(service.config)
    try:
        (row,) = ledger.payments()
        if is_sessionless():
            assert row.session.endswith(f"-http-{row.identity}")
        else:
            assert row.session == f"http-{session_id}"
    finally:
        ledger.close()


# --- calls cut short ---------------------------------------------------------------------------


async def test_a_call_cut_while_the_gateway_holds_its_signature_stays_counted(sandbox, tmp_path):
    """Mutant: BLOCKRUN_CALL_TIMEOUT_S releases the call's signed holds instead of keeping them.
    (The trickling-answer test cannot tell: that payment has settled before the cut.) Here the
    gateway sits on the signed request, so the cut comes between signing and any answer."""
    state = sandbox.state
    state.set_faults(delay_seconds=3)
    env = {"BLOCKRUN_CALL_TIMEOUT_S": "1", "BLOCKRUN_SESSION_BUDGET_USD": "0.30"}
    async with open_server(tmp_path, sandbox, env=env) as h:
        with anyio.fail_after(20):
            text = await h.fail("ask_model", {"prompt": "slow gateway", "model": CHEAP_MODEL})
        assert "BLOCKRUN_CALL_TIMEOUT_S" in text and "stays counted" in text
        assert [paid for _, _, paid in paid_posts(state)] == [False, True]  # the header left
        (row,) = h.ledger.payments()
        assert row.status == "signed" and row.counted_atomic == row.amount_atomic > 0
        assert "cut by BLOCKRUN_CALL_TIMEOUT_S" in row.note
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(row.amount_atomic / 1e6)
        # Whatever the gateway did with it, only the chain decides, and it agrees with the sandbox.
        state.clear_faults()
        await anyio.sleep(3)
        found = await expire_on_chain(h, state)
        with state.lock:
            settled = {s.nonce.lower() for s in state.settlements}
        expected = "settled" if row.nonce.lower() in settled else "released"
        assert [o.result for o in found.outcomes] == [expected]


async def test_a_video_whose_last_poll_went_unanswered_stays_resumable(sandbox, tmp_path):
    """Mutant: the "last poll unanswered" branch of _wait_video is dropped, so the job is marked
    failed. It may have completed and settled meanwhile: marked failed, the user could never
    fetch the video the payment bought (a resume would answer "already ended")."""
    state = sandbox.state
    # A 15 s authorization (polling stops at once) and a poll that never finishes answering.
    state.set_faults(
        video_timeout_seconds=15, video_polls_before_done=0, trickle_seconds=0.2, trickle_at="poll"
    )
    async with open_server(tmp_path, sandbox, video_wait_seconds=1) as h:
        h.service.options.video_poll_timeout = 0.3
        with anyio.fail_after(30):
            video = await h.ok(
                "generate_video", {"prompt": "p", "model": VIDEO_MODEL, "duration_seconds": 1}
            )
        assert video["status"] == "running" and video["cost_usd"] == 0
        assert "last poll" in video["note"] and "counts as spent" in video["note"]
        job_id = video["job_id"]
        assert h.ledger.video_job(job_id).status == "running"
        (row,) = h.ledger.payments()
        assert row.status == "signed"
        # The gateway answers again: the resumed poll gets the video and settles the payment.
        state.set_faults(trickle_seconds=None)
        with anyio.fail_after(30):
            resumed = await h.ok("generate_video", {"job_id": job_id})
        assert resumed["status"] == "completed" and resumed["path"]
        assert resumed["cost_usd"] == pytest.approx(row.amount_atomic / 1e6)
        assert h.ledger.payment(row.id).status == "settled"
        assert len(signed_nonces(state)) == 1


# --- limits to the micro-dollar ------------------------------------------------------------


async def test_a_quote_exactly_at_the_per_call_cap_is_signed(sandbox, tmp_path):
    """Mutant: the signing policy's cap `amount > max` becomes `>=`. The budget layer's own
    boundary is pinned in test_budget.py; the policy's was not. "Above the cap" is refused,
    at it is allowed."""
    state = sandbox.state
    question = {"prompt": "the same question", "model": CHEAP_MODEL}
    async with open_server(tmp_path / "probe", sandbox) as h:
        await h.ok("ask_model", question)
    with state.lock:
        quote = int(state.issued_terms[-1]["amount"])
    cap = f"{quote / 1e6:.6f}"
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_MAX_PER_CALL_USD": cap}) as h:
        answer = await h.ok("ask_model", question)
        assert answer["cost_usd"] == pytest.approx(quote / 1e6)
        with state.lock:
            assert int(state.issued_terms[-1]["amount"]) == quote
        (row,) = h.ledger.payments()
        assert row.amount_atomic == quote and row.status == "settled"
    below = f"{(quote - 1) / 1e6:.6f}"
    async with open_server(tmp_path / "2", sandbox, env={"BLOCKRUN_MAX_PER_CALL_USD": below}) as h:
        before = len(signed_nonces(state))
        text = await h.fail("ask_model", question)
        assert "per-call cap" in text and len(signed_nonces(state)) == before


@pytest.mark.parametrize("limit", ["2.01", "4.10", "0.000249"])
async def test_limits_are_exact_to_the_micro_dollar(sandbox, tmp_path, limit):
    """Mutant: usd_to_atomic truncates (int) instead of rounding: 2.01 * 10**6 is 2009999.99...,
    so the budget would report (and enforce) a limit a micro-dollar short of the one set."""
    env = {"BLOCKRUN_SESSION_BUDGET_USD": limit, "BLOCKRUN_DAILY_BUDGET_USD": limit}
    async with open_server(tmp_path, sandbox, env=env) as h:
        budget = await h.ok("budget")
        assert budget["budget_remaining_usd"] == float(limit)
        assert budget["session_limit_usd"] == budget["daily_limit_usd"] == float(limit)


# --- an image gateway that answers with a job ------------------------------------------------

HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "content-encoding", "keep-alive"}


class ImageJobGateway:
    """A gateway on loopback in front of the sandbox that answers a paid image request the way an
    asynchronous gateway does: 202 and a job, whose poll (carrying the payment header, as every
    poll does) answers `job_status` with the images the sandbox delivered. Everything else,
    the 402 and the media downloads included, is the sandbox's own answer (the Host header is
    kept, so the sandbox's URLs name this gateway)."""

    def __init__(self, sandbox: SandboxServer) -> None:
        self.upstream = sandbox.origin
        self.job_status = "completed"
        self.delivered: list[Any] = []
        self.polls: list[bool] = []  # whether each poll carried the payment header
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/api/v1/images/jobs/"):
                    gateway.polls.append("payment-signature" in self.headers)
                    answer: dict[str, Any] = {"id": "img-job-1", "status": gateway.job_status}
                    if gateway.job_status == "completed":
                        answer["data"] = gateway.delivered
                    else:
                        answer["error"] = "the renderer gave up"
                    self._answer(200, {"Content-Type": "application/json"}, answer)
                    return
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Accept-Encoding"] = "identity"
                upstream = httpx2.request(
                    self.command,
                    gateway.upstream + self.path,
                    headers=headers,
                    content=body,
                    timeout=30,
                )
                paid_image = (
                    self.command == "POST"
                    and self.path.endswith("/v1/images/generations")
                    and upstream.status_code == 200
                )
                if paid_image:
                    gateway.delivered = upstream.json()["data"]
                    job = {"id": "img-job-1", "poll_url": "/api/v1/images/jobs/img-job-1"}
                    self._answer(202, {"Content-Type": "application/json"}, job)
                    return
                kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                self._answer(upstream.status_code, kept, upstream.content)

            def _answer(self, status: int, headers: dict[str, str], body: Any) -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/api"

    @contextmanager
    def running(self) -> Iterator[ImageJobGateway]:
        with serving(self._server):
            yield self


async def test_an_image_job_listing_a_hundred_urls_saves_one(sandbox, tmp_path):
    """Mutant: the asynchronous image path drops its `[: request.n]` slice (the synchronous
    path's is pinned by test_money_rule). One image asked, one downloaded and written."""
    state = sandbox.state
    state.set_faults(image_count=100)
    with ImageJobGateway(sandbox).running() as gateway:
        async with open_server(tmp_path, sandbox, api_url=gateway.base_url) as h:
            result = await h.ok("generate_image", {"prompt": "one cat", "model": URL_IMAGE_MODEL})
            assert len(gateway.delivered) == 100 and gateway.polls == [True]
            assert len(result["images"]) == 1 and Path(result["images"][0]["path"]).is_file()
            out = Path(h.config.output_dir)
            assert len([p for p in out.rglob("*") if p.is_file()]) == 1
            with state.lock:
                downloads = [r for r in state.requests_seen if "/media/" in r[1]]
            assert len(downloads) == 1
            (row,) = h.ledger.payments()
            assert row.status == "settled" and result["cost_usd"] == row.amount_atomic / 1e6


async def test_a_failed_image_job_is_an_error_and_stays_counted(sandbox, tmp_path):
    """Mutant: the asynchronous image path returns whatever a job that did not complete
    carried, as a success. A failed job is the gateway's word: an error, the payment counted."""
    state = sandbox.state
    with ImageJobGateway(sandbox).running() as gateway:
        gateway.job_status = "failed"
        async with open_server(tmp_path, sandbox, api_url=gateway.base_url) as h:
            text = await h.fail("generate_image", {"prompt": "a cat", "model": URL_IMAGE_MODEL})
            assert "ended as failed" in text and "stays counted" in text
            assert not list(Path(h.config.output_dir).rglob("*.png"))
            (row,) = h.ledger.payments()
            assert row.status == "signed" and "the gateway said the job failed" in row.note
            budget = await h.ok("budget")
            assert budget["session_spent_usd"] == pytest.approx(row.amount_atomic / 1e6)
            # The sandbox settled it before the job "failed": the chain says so, and is believed.
            found = await expire_on_chain(h, state)
            assert [o.result for o in found.outcomes] == ["settled"]


# --- the finality boundary, and terms the policy must read itself ----------------------------


async def test_release_waits_exactly_the_finality_margin_past_valid_before(sandbox, tmp_path):
    """Mutants: the margin dropped, or `now < validBefore + margin` turned into `<=`. With both
    clocks at validBefore + margin - 1 the payment is kept; at validBefore + margin, released."""
    state = sandbox.state
    async with open_server(tmp_path, sandbox) as h:
        row = await rejected_payment(h, state)
        boundary = row.valid_before + FINALITY_MARGIN_SECONDS
        state.set_faults(chain_time_offset_seconds=boundary + 60 - int(time.time()))
        h.service.options.clock = lambda: boundary - 1  # ours is the earlier clock: it decides
        found = await h.service.reconcile()
        assert [o.result for o in found.outcomes] == ["pending"]
        h.service.options.clock = lambda: boundary
        found = await h.service.reconcile()
        assert [o.result for o in found.outcomes] == ["released"]
        assert h.ledger.payment(row.id).status == "released"


GOOD_OPTION: dict[str, Any] = {
    "scheme": "exact",
    "network": "eip155:8453",
    "amount": "25685",
    "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    "payTo": "0x" + "cd" * 20,
    "maxTimeoutSeconds": 300,
    "extra": {"name": "USD Coin", "version": "2"},
}


def terms(*accepts: dict[str, Any]) -> Any:
    """Terms in a v2 PAYMENT-REQUIRED header listing `accepts`, as the payer parses them."""
    from blockrun_mcp.x402.codec import encode_header, parse_payment_required

    header = encode_header({"x402Version": 2, "resource": {"url": "u"}, "accepts": list(accepts)})
    return parse_payment_required({"PAYMENT-REQUIRED": header}, b"")


def test_an_unpinned_policy_refuses_a_payto_that_is_not_an_address():
    """Mutant: the policy's own payTo check dropped. The terms tests run with a pinned payee,
    whose check refuses a malformed payTo too; without a pin (the default) only this check does,
    before the signer would fail on it as an internal error."""
    from blockrun_mcp.x402.errors import PaymentRefused
    from blockrun_mcp.x402.networks import BASE
    from blockrun_mcp.x402.policy import SigningPolicy

    policy = SigningPolicy(network=BASE, max_atomic=500_000)
    good = GOOD_OPTION
    for pay_to in ("not-an-address", "0x1234", "0x" + "zz" * 20, "0x" + "11" * 21, "cd" * 21):
        with pytest.raises(PaymentRefused, match="is not an address"):
            policy.choose(terms({**good, "payTo": pay_to}))
    assert policy.choose(terms({**good, "payTo": "0x1234"}, good)).payTo == good["payTo"]


def test_terms_listing_too_many_options_are_refused():
    """Mutant: the MAX_ACCEPTS bound dropped (each option is parsed and checked: a gateway could
    make every paid call do thousands of times the work)."""
    from blockrun_mcp.x402.codec import MAX_ACCEPTS
    from blockrun_mcp.x402.errors import MalformedTerms

    assert len(terms(*[GOOD_OPTION] * MAX_ACCEPTS).accepts) == MAX_ACCEPTS
    for count in (MAX_ACCEPTS + 1, 100):
        with pytest.raises(MalformedTerms, match=f"lists {count} payment options"):
            terms(*[GOOD_OPTION] * count)


async def test_a_quote_exactly_two_cents_above_the_estimate_is_not_suspicious(tmp_path):
    """Mutant: the suspicious-quote margin `>` becomes `>=`. test_budget.py's boundary case
    (estimate $0.01, quote $0.03) cannot tell: in floats 0.03 - 0.01 is 0.01999..., below the
    margin either way. $0.04 - $0.02 is exactly 0.02: more than 1.5x, but not more than $0.02
    above, so it is allowed; a micro-dollar more is refused. Judged by the ledger file."""
    from blockrun_mcp.budget import Limits, SessionBudget
    from blockrun_mcp.payments import PaidCall
    from blockrun_mcp.x402.errors import PaymentRefused
    from blockrun_mcp.x402.payer import Quote

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    budget = SessionBudget(ledger, "s", Limits(1.0, 0.5, None), "base")
    approve = PaidCall(budget, tool="ask_model", model="m", estimate_atomic=20_000)
    requirement = terms(GOOD_OPTION).accepts[0]
    with pytest.raises(PaymentRefused) as refused:
        await approve(Quote(40_001, requirement, "POST", "https://gateway.example/api"))
    assert refused.value.limit == "suspicious quote"
    await approve(Quote(40_000, requirement, "POST", "https://gateway.example/api"))
    assert [row.amount_atomic for row in ledger.payments()] == [40_000]
    ledger.close()
