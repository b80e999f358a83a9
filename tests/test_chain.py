"""blockrun_mcp.chain against the sandbox's stand-in chain (POST /rpc), and against hostile nodes.

The reader decides whether signed money is released, so every unusable answer must raise
ChainUnavailable: never a quiet False (that would release money that may have moved).
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx2
import pytest

from blockrun_mcp.chain import (
    AUTHORIZATION_STATE,
    BALANCE_OF,
    MAX_ANSWER_BYTES,
    BalanceUnavailable,
    ChainReader,
    ChainUnavailable,
    usdc_balance_atomic,
)
from blockrun_mcp.sandbox import SandboxServer, SandboxState
from blockrun_mcp.x402.codec import parse_payment_required
from blockrun_mcp.x402.networks import BASE, BASE_SEPOLIA
from blockrun_mcp.x402.signer import SignedPayment, sign_payment
from tests.support.payer import chat_request

pytestmark = pytest.mark.anyio

STARTING_ATOMIC = 10_000_000  # the sandbox funds every unseen payer with $10
VIDEO = {"model": "xai/grok-imagine-video", "prompt": "waves", "duration_seconds": 1}


@pytest.fixture
async def reader(sandbox: SandboxServer) -> AsyncIterator[ChainReader]:
    chain = ChainReader(sandbox.rpc_url, BASE.usdc)
    yield chain
    await chain.aclose()


def random_nonce() -> str:
    return "0x" + secrets.token_hex(32)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/rpc"


async def pay(
    http: httpx2.AsyncClient, url: str, body: Any, account: Any
) -> tuple[SignedPayment, httpx2.Response]:
    """Ask, sign the first option with our signer, resend: (the payment, the answer)."""
    unpaid = await http.post(url, json=body)
    assert unpaid.status_code == 402, unpaid.text
    terms = parse_payment_required(unpaid.headers, unpaid.content)
    payment = sign_payment(account, terms, terms.accepts[0], BASE)
    paid = await http.post(url, json=body, headers={payment.header_name: payment.header_value})
    return payment, paid


async def rpc(http: httpx2.AsyncClient, url: str, payload: Any) -> httpx2.Response:
    return await http.post(url, content=json.dumps(payload).encode())


# --- the reader against the sandbox's chain ------------------------------------------------


async def pay_chat(sandbox: SandboxServer, account: Any) -> SignedPayment:
    async with httpx2.AsyncClient(timeout=10) as http:
        url = f"{sandbox.base_url}/v1/chat/completions"
        payment, paid = await pay(http, url, chat_request().wire(stream=False), account)
    assert paid.status_code == 200, paid.text
    return payment


async def test_a_settled_authorization_reads_used_for_its_authorizer_only(
    sandbox, reader, funded_account
):
    state = sandbox.state
    payment = await pay_chat(sandbox, funded_account)
    (settlement,) = state.settlements
    assert (settlement.payer, settlement.nonce) == (funded_account.address, payment.nonce)
    payer, nonce = settlement.payer, settlement.nonce
    assert await reader.authorization_used(payer, nonce) is True
    assert await reader.authorization_used(payer.lower(), nonce.upper().replace("0X", "0x"))
    assert await reader.authorization_used(payer, random_nonce()) is False
    other = "0x" + secrets.token_hex(20)
    assert await reader.authorization_used(other, nonce) is False
    # Each question reached the chain once, and none of them counts as a gateway request.
    assert state.rpc_calls == [("eth_call", AUTHORIZATION_STATE)] * 4
    assert all(not path.endswith("/rpc") for _, path, _ in state.requests_seen)


async def test_balance_of_drops_by_exactly_the_settled_amount(sandbox, reader, funded_account):
    address = funded_account.address
    assert await reader.balance_of(address) == STARTING_ATOMIC
    payment = await pay_chat(sandbox, funded_account)
    (settlement,) = sandbox.state.settlements
    assert settlement.amount_atomic == payment.amount_atomic > 0
    assert await reader.balance_of(address) == STARTING_ATOMIC - payment.amount_atomic
    assert await reader.balance_of(address.lower()) == STARTING_ATOMIC - payment.amount_atomic
    assert sandbox.state.rpc_calls[-1] == ("eth_call", BALANCE_OF)


async def test_block_timestamp_follows_the_chain_clock(sandbox, reader):
    before = int(time.time())
    now = await reader.block_timestamp()
    assert before <= now <= int(time.time())
    sandbox.state.set_faults(chain_time_offset_seconds=3600)
    later = await reader.block_timestamp()
    assert before + 3600 <= later <= int(time.time()) + 3600
    assert later <= sandbox.state.chain_now() <= later + 1  # a second may tick between them


async def test_the_chain_clock_never_runs_backwards(sandbox, reader):
    state = sandbox.state
    state.set_faults(chain_time_offset_seconds=3600)
    ahead = await reader.block_timestamp()
    state.set_faults(chain_time_offset_seconds=0)
    assert await reader.block_timestamp() >= ahead
    state.reset()
    assert await reader.block_timestamp() <= int(time.time())


async def test_an_authorization_past_validbefore_on_chain_never_settles(
    sandbox, reader, funded_account
):
    state = sandbox.state
    url = f"{sandbox.base_url}/v1/chat/completions"
    body = chat_request().wire(stream=False)
    async with httpx2.AsyncClient(timeout=10) as http:
        unpaid = await http.post(url, json=body)
        terms = parse_payment_required(unpaid.headers, unpaid.content)
        payment = sign_payment(funded_account, terms, terms.accepts[0], BASE)
        header = {payment.header_name: payment.header_value}
        state.set_faults(chain_time_offset_seconds=terms.accepts[0].maxTimeoutSeconds + 30)
        assert await reader.block_timestamp() > payment.valid_before
        refused = await http.post(url, json=body, headers=header)
        assert refused.status_code == 402
        assert refused.json()["code"] == "PAYMENT_INVALID"
        assert "expired" in refused.json()["message"]
        # Turning the offset back does not bring the authorization back to life.
        state.set_faults(chain_time_offset_seconds=0)
        again = await http.post(url, json=body, headers=header)
        assert again.status_code == 402 and again.json()["code"] == "PAYMENT_INVALID"
    assert not state.settlements
    assert await reader.authorization_used(funded_account.address, payment.nonce) is False
    assert await reader.balance_of(funded_account.address) == STARTING_ATOMIC


async def test_a_verified_video_payment_cannot_settle_once_the_chain_passed_it(
    sandbox, reader, funded_account
):
    # Settle's own check: the payment was verified at submit, the chain moved on before the
    # completing poll.
    state = sandbox.state
    state.set_faults(video_polls_before_done=0)
    async with httpx2.AsyncClient(timeout=10) as http:
        payment, submitted = await pay(
            http, f"{sandbox.base_url}/v1/videos/generations", VIDEO, funded_account
        )
        assert submitted.status_code == 202
        state.set_faults(chain_time_offset_seconds=payment.valid_before - int(time.time()) + 5)
        poll = await http.get(
            submitted.json()["poll_url"], headers={payment.header_name: payment.header_value}
        )
    assert poll.status_code == 402
    assert poll.json()["code"] == "PAYMENT_INVALID"
    assert "expired before it could be settled" in poll.json()["message"]
    assert not state.settlements
    assert await reader.authorization_used(funded_account.address, payment.nonce) is False
    assert await reader.balance_of(funded_account.address) == STARTING_ATOMIC


async def test_the_cli_balance_reads_the_sandbox_chain(sandbox, funded_account):
    atomic = await anyio.to_thread.run_sync(
        usdc_balance_atomic, sandbox.rpc_url, BASE.usdc, funded_account.address
    )
    assert atomic == STARTING_ATOMIC
    assert issubclass(BalanceUnavailable, ChainUnavailable)
    with pytest.raises(ChainUnavailable):
        await anyio.to_thread.run_sync(
            usdc_balance_atomic, closed_port_url(), BASE.usdc, funded_account.address
        )


# --- a node that cannot be used raises, it never answers "unused" ---------------------------


async def test_rpc_down_raises_for_every_read(sandbox, reader, funded_account):
    sandbox.state.set_faults(rpc_down=True)
    for read in _reads(funded_account.address):
        with pytest.raises(ChainUnavailable, match="HTTP 503"):
            await read(reader)
    assert len(sandbox.state.rpc_calls) == 3  # asked, and refused


async def test_rpc_garbage_raises_for_every_read(sandbox, reader, funded_account):
    sandbox.state.set_faults(rpc_garbage=True)
    for read in _reads(funded_account.address):
        with pytest.raises(ChainUnavailable):
            await read(reader)


def _reads(address: str) -> list[Callable[[ChainReader], Any]]:
    nonce = random_nonce()
    return [
        lambda chain: chain.authorization_used(address, nonce),
        lambda chain: chain.balance_of(address),
        lambda chain: chain.block_timestamp(),
    ]


async def test_an_unreachable_node_raises(funded_account):
    async with ChainReader(closed_port_url(), BASE.usdc, timeout=2) as chain:
        with pytest.raises(ChainUnavailable, match="ConnectError"):
            await chain.authorization_used(funded_account.address, random_nonce())


WORD = "0x" + "00" * 32


def _answer(result: Any) -> Callable[[dict[str, Any]], httpx2.Response]:
    return lambda request: httpx2.Response(
        200, json={"jsonrpc": "2.0", "id": request["id"], "result": result}
    )


async def _endless(head: bytes, filler: bytes) -> AsyncIterator[bytes]:
    yield head
    while True:
        yield filler


Respond = Callable[[dict[str, Any]], httpx2.Response]
NOT_A_WORD = "not one 32-byte word"

# Each hostile answer, and the reason the reader must give for refusing it.
HOSTILE_NODES: dict[str, tuple[Respond, str]] = {
    "not JSON": (lambda r: httpx2.Response(200, html="<html>502 Bad Gateway</html>"), "not JSON"),
    "a JSON list": (
        lambda r: httpx2.Response(200, json=[{"id": r["id"], "result": WORD}]),
        "not a JSON-RPC object",
    ),
    "an error object": (
        lambda r: httpx2.Response(
            200, json={"jsonrpc": "2.0", "id": r["id"], "error": {"code": -32000, "message": "x"}}
        ),
        "eth_call failed",
    ),
    "an error beside a result": (
        lambda r: httpx2.Response(200, json={"id": r["id"], "result": WORD, "error": {"code": 1}}),
        "eth_call failed",
    ),
    "no result": (
        lambda r: httpx2.Response(200, json={"jsonrpc": "2.0", "id": r["id"]}),
        "has no result",
    ),
    "another id": (
        lambda r: httpx2.Response(200, json={"id": r["id"] + 1, "result": WORD}),
        "the answer is to request",
    ),
    "a null result": (_answer(None), NOT_A_WORD),
    "a number": (_answer(0), NOT_A_WORD),
    "0x": (_answer("0x"), NOT_A_WORD),
    "0x02": (_answer("0x02"), NOT_A_WORD),
    "a short 0x01": (_answer("0x01"), NOT_A_WORD),
    "63 hex digits": (_answer("0x" + "0" * 63), NOT_A_WORD),
    "65 hex digits": (_answer("0x" + "0" * 65), NOT_A_WORD),
    "no 0x": (_answer("00" * 32), NOT_A_WORD),
    "spaces": (_answer(" " + WORD + " "), NOT_A_WORD),
    "underscores": (_answer("0x" + "0" * 62 + "_0"), NOT_A_WORD),
    "non-ASCII digits": (_answer("0x" + "٠" * 64), NOT_A_WORD),
    "a word of 2": (_answer("0x" + "00" * 31 + "02"), "not a bool"),
    "a word with high bits": (_answer("0x01" + "00" * 30 + "01"), "not a bool"),
    "HTTP 500 with a good body": (
        lambda r: httpx2.Response(500, json={"jsonrpc": "2.0", "id": r["id"], "result": WORD}),
        "HTTP 500",
    ),
    "a redirect": (
        lambda r: httpx2.Response(302, headers={"Location": "http://10.0.0.1/"}),
        "HTTP 302",
    ),
    "a declared huge body": (
        lambda r: httpx2.Response(
            200, headers={"Content-Length": str(MAX_ANSWER_BYTES + 1)}, content=b"{}"
        ),
        f"over {MAX_ANSWER_BYTES} bytes",
    ),
    "a huge body": (
        lambda r: httpx2.Response(
            200, json={"id": r["id"], "result": WORD, "pad": "x" * MAX_ANSWER_BYTES}
        ),
        f"over {MAX_ANSWER_BYTES} bytes",
    ),
    "a huge body without a length": (
        lambda r: httpx2.Response(200, content=_endless(b'{"id": 1, "pad": "', b"x" * 4096)),
        f"over {MAX_ANSWER_BYTES} bytes",
    ),
    "gzip": (
        lambda r: httpx2.Response(
            200,
            headers={"Content-Encoding": "gzip"},
            content=gzip.compress(json.dumps({"id": r["id"], "result": WORD}).encode()),
        ),
        "gzip-encoded",
    ),
    "deep nesting": (lambda r: httpx2.Response(200, content=b"[" * 50_000), "not JSON"),
}


def _mock(respond: Respond) -> httpx2.AsyncClient:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return respond(json.loads(request.content))

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


@pytest.mark.parametrize("kind", list(HOSTILE_NODES))
async def test_an_unusable_answer_is_never_read_as_unused(kind, funded_account):
    respond, reason = HOSTILE_NODES[kind]
    async with _mock(respond) as http:
        chain = ChainReader("http://node.example/v2/SECRET-KEY", BASE.usdc, http=http)
        with pytest.raises(ChainUnavailable) as raised:
            await chain.authorization_used(funded_account.address, random_nonce())
        message = str(raised.value)
        assert message.startswith("the RPC node http://node.example/…: ")
        assert reason in message
        assert "SECRET-KEY" not in message and len(message) < 300


async def test_a_good_answer_through_the_mock_reads_as_it_says(funded_account):
    # The control for the table above: the same mock path does read exact 0 and 1.
    for word, expected in ((WORD, False), ("0x" + "00" * 31 + "01", True)):
        async with _mock(_answer(word)) as http:
            chain = ChainReader("http://node.example/", BASE.usdc, http=http)
            assert await chain.authorization_used(funded_account.address, random_nonce()) is (
                expected
            )


async def test_unusable_blocks_raise():
    for block in (None, "0x10", {"number": "0x1"}, {"timestamp": 12}, {"timestamp": "0x"}):
        async with _mock(_answer(block)) as http:
            chain = ChainReader("http://node.example/", BASE.usdc, http=http)
            with pytest.raises(ChainUnavailable):
                await chain.block_timestamp()


async def test_a_node_that_dribbles_its_answer_times_out(funded_account):
    async def dribble() -> AsyncIterator[bytes]:
        for byte in json.dumps({"id": 1, "result": WORD}).encode():
            yield bytes([byte])
            await anyio.sleep(0.05)

    async with _mock(lambda r: httpx2.Response(200, content=dribble())) as http:
        chain = ChainReader("http://node.example/", BASE.usdc, timeout=0.3, http=http)
        started = time.monotonic()
        with pytest.raises(ChainUnavailable, match=r"no answer within 0\.3 s"):
            await chain.authorization_used(funded_account.address, random_nonce())
        assert time.monotonic() - started < 2


async def test_requests_are_plain_json_rpc_without_redirects(funded_account):
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        body = json.loads(request.content)
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": WORD})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        chain = ChainReader("http://node.example/", BASE.usdc, http=http)
        nonce = random_nonce()
        await chain.authorization_used(funded_account.address, nonce)
        await chain.balance_of(funded_account.address)
        await chain.aclose()
        assert not http.is_closed  # the caller's client stays the caller's
    first, second = (json.loads(r.content) for r in seen)
    assert seen[0].headers["user-agent"] == "blockrun-mcp"
    assert first["method"] == "eth_call" and first["id"] != second["id"]
    call = first["params"][0]
    assert call["to"] == BASE.usdc
    address_word = funded_account.address[2:].lower().rjust(64, "0")
    assert call["data"] == AUTHORIZATION_STATE + address_word + nonce[2:].lower()
    assert second["params"][0]["data"] == BALANCE_OF + address_word


async def test_a_reader_closes_only_the_client_it_made(sandbox, funded_account):
    chain = ChainReader(sandbox.rpc_url, BASE.usdc)
    assert await chain.balance_of(funded_account.address) == STARTING_ATOMIC
    assert len(sandbox.state.rpc_calls) == 1
    await chain.aclose()
    # Its own client is closed: nothing more is sent (httpx refuses a closed client's requests).
    with pytest.raises(RuntimeError, match="closed"):
        await chain.balance_of(funded_account.address)
    assert len(sandbox.state.rpc_calls) == 1


# --- inputs ---------------------------------------------------------------------------------

BAD_ADDRESSES = ["", "0x", "0x123", "1" * 40, "0x" + "g" * 40, "0x" + "1" * 41, "0x" + "٣" * 40]
BAD_NONCES = ["", "0x" + "1" * 63, "0x" + "1" * 65, "1" * 64, "0x" + "z" * 64, "0x" + "٣" * 64]


async def test_malformed_inputs_are_value_errors_and_never_reach_the_chain(
    sandbox, reader, funded_account
):
    for address in [*BAD_ADDRESSES, None, 12]:
        with pytest.raises(ValueError):
            await reader.authorization_used(address, random_nonce())
        with pytest.raises(ValueError):
            await reader.balance_of(address)
    for nonce in [*BAD_NONCES, None, 7]:
        with pytest.raises(ValueError):
            await reader.authorization_used(funded_account.address, nonce)
    with pytest.raises(ValueError):
        ChainReader(sandbox.rpc_url, "0xnot-a-contract")
    assert sandbox.state.rpc_calls == []


# --- the sandbox's JSON-RPC node, to a plain HTTP client ------------------------------------


async def test_sandbox_rpc_answers_chain_id_blocks_and_errors(sandbox):
    state = sandbox.state
    url = sandbox.rpc_url
    assert url == sandbox.base_url.removesuffix("/api") + "/rpc"
    async with httpx2.AsyncClient(timeout=10) as http:

        async def ask(method: str, params: Any = None, request_id: Any = 7) -> dict[str, Any]:
            payload = {"jsonrpc": "2.0", "id": request_id, "method": method}
            if params is not None:
                payload["params"] = params
            response = await rpc(http, url, payload)
            assert response.status_code == 200
            answer = response.json()
            assert answer["id"] == request_id and answer["jsonrpc"] == "2.0"
            return answer

        assert (await ask("eth_chainId"))["result"] == hex(8453)
        first = int((await ask("eth_blockNumber", []))["result"], 16)
        block = (await ask("eth_getBlockByNumber", ["latest", False]))["result"]
        assert int(block["number"], 16) >= first
        assert abs(int(block["timestamp"], 16) - time.time()) < 5
        state.set_faults(chain_time_offset_seconds=600)
        assert int((await ask("eth_blockNumber", []))["result"], 16) >= first + 290
        future = hex(int(block["number"], 16) + 10_000)
        assert (await ask("eth_getBlockByNumber", [future, False]))["result"] is None

        errors = {
            "unknown method": await ask("eth_sendRawTransaction", ["0x00"]),
            "params not a list": await ask("eth_call", {"to": BASE.usdc}),
            "call without data": await ask("eth_call", [{"to": BASE.usdc}, "latest"]),
            "bad block tag": await ask("eth_getBlockByNumber", ["yesterday", False]),
            "another contract": await ask(
                "eth_call", [{"to": "0x" + "11" * 20, "data": BALANCE_OF + "00" * 32}]
            ),
            "unknown selector": await ask("eth_call", [{"to": BASE.usdc, "data": "0x18160ddd"}]),
            "short arguments": await ask(
                "eth_call", [{"to": BASE.usdc, "data": AUTHORIZATION_STATE + "00" * 32}]
            ),
            "dirty address": await ask(
                "eth_call", [{"to": BASE.usdc, "data": BALANCE_OF + "ff" * 32}]
            ),
        }
        codes = {name: answer["error"]["code"] for name, answer in errors.items()}
        assert codes == {
            "unknown method": -32601,
            "params not a list": -32602,
            "call without data": -32602,
            "bad block tag": -32602,
            "another contract": -32000,
            "unknown selector": -32000,
            "short arguments": -32000,
            "dirty address": -32000,
        }
        assert all("result" not in answer for answer in errors.values())

        malformed = await http.post(url, content=b"{not json")
        assert malformed.json()["error"]["code"] == -32700
        batch = await rpc(http, url, [{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}])
        assert batch.json()["error"]["code"] == -32600
        # The contract address is matched without regard to case.
        lower = await ask(
            "eth_call", [{"to": BASE.usdc.lower(), "data": BALANCE_OF + "00" * 32}, "latest"]
        )
        assert int(lower["result"], 16) == STARTING_ATOMIC

    methods = [method for method, _ in state.rpc_calls]
    assert methods[:4] == [
        "eth_chainId",
        "eth_blockNumber",
        "eth_getBlockByNumber",
        "eth_blockNumber",
    ]
    assert ("eth_call", "0x18160ddd") in state.rpc_calls
    assert ("", "") in state.rpc_calls  # the malformed one, logged all the same
    assert state.requests_seen == []
    assert state.snapshot()["counts"]["rpc_calls"] == len(state.rpc_calls)


async def test_sepolia_sandbox_is_a_sepolia_chain():
    server = SandboxServer(SandboxState(network="base-sepolia"))
    async with server, httpx2.AsyncClient(timeout=10) as http:
        chain_id = await rpc(
            http, server.rpc_url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
        )
        assert chain_id.json()["result"] == hex(84532)
        async with ChainReader(server.rpc_url, BASE.usdc) as mainnet:
            with pytest.raises(ChainUnavailable, match="execution reverted"):
                await mainnet.balance_of("0x" + "11" * 20)
        async with ChainReader(server.rpc_url, BASE_SEPOLIA.usdc) as sepolia:
            assert await sepolia.balance_of("0x" + "11" * 20) == STARTING_ATOMIC


def test_the_sandbox_command_prints_its_rpc_url_and_that_url_answers():
    code = "from blockrun_mcp.sandbox import run_sandbox; run_sandbox('127.0.0.1', 0)"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        printed = process.stdout.readline() + process.stdout.readline()
        match = re.search(r"export BLOCKRUN_RPC_URL=(http://127\.0\.0\.1:\d+/rpc)", printed)
        assert match, printed
        assert "export BLOCKRUN_API_URL=http://127.0.0.1:" in printed
        answer = httpx2.post(
            match.group(1), json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=10
        )
        assert answer.json()["result"] == hex(8453)
    finally:
        process.terminate()
        process.wait(timeout=10)
