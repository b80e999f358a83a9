"""Reading USDC's state from a JSON-RPC node.

`usdc_balance_atomic` is the CLI's courtesy balance: one synchronous `eth_call` of `balanceOf`, any
failure reported as "unknown" rather than blocking a command.

`ChainReader` is what money decisions rest on: whether an EIP-3009 authorization was used
(`authorizationState`), the latest block's time, a balance. Its parsing is strict: an answer that
is not exactly what the contract returns raises ChainUnavailable, never a default, because reading
an unusable answer as "unused" would release money that may already have moved.
"""

from __future__ import annotations

import itertools
import re
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import httpx2

from blockrun_mcp import safe_json
from blockrun_mcp.errors import BlockrunError

BALANCE_OF = "0x70a08231"  # keccak("balanceOf(address)")[:4]
AUTHORIZATION_STATE = "0xe94a0102"  # keccak("authorizationState(address,bytes32)")[:4]
TIMEOUT_SECONDS = 4.0
USER_AGENT = "blockrun-mcp"
# A JSON-RPC answer to these calls is a few hundred bytes; a hostile node must not make us
# read megabytes (and compressed answers are refused, so this caps what is decoded too).
MAX_ANSWER_BYTES = 64 * 1024
SHOWN_CHARS = 200  # of an unusable answer, in an error message

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"0x[0-9a-fA-F]{64}")
# [0-9a-fA-F], not \d or int(..., 16) alone: those also take "٣", "_" and surrounding spaces.
_WORD = re.compile(r"0x[0-9a-fA-F]{64}")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")


class ChainUnavailable(BlockrunError):
    """The RPC node could not be reached or gave an unusable answer."""


class BalanceUnavailable(ChainUnavailable):
    """The CLI's balance could not be read (kept for its callers; a ChainUnavailable)."""


def usdc_balance_atomic(
    rpc_url: str, usdc_contract: str, address: str, timeout: float = TIMEOUT_SECONDS
) -> int:
    """The address's USDC balance in atomic units (6 decimals)."""
    data = BALANCE_OF + address.lower().removeprefix("0x").rjust(64, "0")
    payload = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_call",
        "params": [{"to": usdc_contract, "data": data}, "latest"],
    }
    try:
        response = httpx2.post(
            rpc_url,
            json=payload,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        response.raise_for_status()
        answer = safe_json.loads(response.content)
    except (httpx2.HTTPError, ValueError) as exc:
        raise BalanceUnavailable(f"{shown_url(rpc_url)}: {type(exc).__name__}") from None
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, str) or not result.startswith("0x"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise BalanceUnavailable(
            f"{shown_url(rpc_url)}: unexpected answer {str(error or answer)[:120]}"
        )
    try:
        return int(result, 16) if result != "0x" else 0
    except ValueError:
        raise BalanceUnavailable(f"{shown_url(rpc_url)}: result is not a number") from None


def shown_url(url: str) -> str:
    """The node's URL as an error message may show it: scheme, host and port only.

    Hosted RPC URLs carry their API key in the path or query (…/v2/KEY), and these messages
    end up in logs and tool answers.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<an unparseable RPC URL>"
    if ":" in host:
        host = f"[{host}]"
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def _shown(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _address_word(address: str, what: str) -> str:
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise ValueError(f"{what} must be a 0x-prefixed 20-byte hex address, got {address!r:.60}")
    return address[2:].lower().rjust(64, "0")


def _nonce_word(nonce: str) -> str:
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise ValueError(f"the nonce must be 0x-prefixed 32-byte hex, got {nonce!r:.80}")
    return nonce[2:].lower()


class ChainReader:
    """Read-only calls of the USDC contract over JSON-RPC, every answer checked to the byte.

    A reconciler deciding that an expired authorization was never used should read the block
    time first and authorizationState after it: once a block past validBefore exists, no later
    block can use the nonce, so the second answer is final.
    """

    def __init__(
        self,
        rpc_url: str,
        usdc_contract: str,
        *,
        timeout: float = TIMEOUT_SECONDS,
        http: httpx2.AsyncClient | None = None,
    ) -> None:
        _address_word(usdc_contract, "usdc_contract")
        self.rpc_url = rpc_url
        self.usdc_contract = usdc_contract
        self.timeout = timeout
        self._owns_http = http is None
        self._http = http or httpx2.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._ids = itertools.count(1)

    async def authorization_used(self, authorizer: str, nonce: str) -> bool:
        """USDC's authorizationState(authorizer, nonce): True once the nonce was used (or
        cancelled) on chain. Anything but an exact 0 or 1 raises ChainUnavailable."""
        data = AUTHORIZATION_STATE + _address_word(authorizer, "authorizer") + _nonce_word(nonce)
        value = await self._call_usdc(data, "authorizationState")
        if value not in (0, 1):
            raise self._unavailable(f"authorizationState answered {value:#x}, not a bool")
        return value == 1

    async def balance_of(self, address: str) -> int:
        """The address's USDC balance in atomic units (6 decimals)."""
        return await self._call_usdc(BALANCE_OF + _address_word(address, "address"), "balanceOf")

    async def block_timestamp(self) -> int:
        """The latest block's timestamp (Unix seconds): the chain's own clock."""
        block = await self._call("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, dict):
            raise self._unavailable(f"the latest block is not an object: {_shown(block)}")
        timestamp = block.get("timestamp")
        if not isinstance(timestamp, str) or not _QUANTITY.fullmatch(timestamp):
            raise self._unavailable(f"the block timestamp is not hex: {_shown(timestamp)}")
        return int(timestamp, 16)

    async def aclose(self) -> None:
        """Close the HTTP client if this reader made it (a client passed in is the caller's)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # JSON-RPC
    async def _call_usdc(self, data: str, what: str) -> int:
        """An eth_call of the USDC contract whose answer must be exactly one 32-byte word."""
        call = {"to": self.usdc_contract, "data": data}
        result = await self._call("eth_call", [call, "latest"])
        if not isinstance(result, str) or not _WORD.fullmatch(result):
            raise self._unavailable(f"{what} answered {_shown(result)}, not one 32-byte word")
        return int(result, 16)

    async def _call(self, method: str, params: list[Any]) -> Any:
        """The `result` of one JSON-RPC call; anything else raises ChainUnavailable."""
        request_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            # One deadline for the whole exchange: a node dribbling bytes must not outlast it.
            with anyio.fail_after(self.timeout):
                body = await self._post(payload)
        except TimeoutError:
            raise self._unavailable(f"no answer within {self.timeout:g} s") from None
        except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError) as exc:
            # The name only: httpx's messages can quote the URL, and with it an API key.
            raise self._unavailable(type(exc).__name__) from None
        try:
            answer = safe_json.loads(body)
        except (ValueError, RecursionError):
            raise self._unavailable(f"the answer is not JSON: {_shown(body)}") from None
        if not isinstance(answer, dict):
            raise self._unavailable(f"the answer is not a JSON-RPC object: {_shown(body)}")
        if "error" in answer:
            raise self._unavailable(f"{method} failed: {_shown(answer['error'])}")
        if answer.get("id") != request_id:
            raise self._unavailable(f"the answer is to request {_shown(answer.get('id'))}")
        if "result" not in answer:
            raise self._unavailable(f"the answer has no result: {_shown(body)}")
        return answer["result"]

    async def _post(self, payload: dict[str, Any]) -> bytes:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        async with self._http.stream(
            "POST",
            self.rpc_url,
            json=payload,
            headers=headers,
            timeout=self.timeout,
            follow_redirects=False,
        ) as response:
            if response.status_code != 200:
                raise self._unavailable(f"HTTP {response.status_code}")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise self._unavailable(f"the answer is {_shown(encoding)}-encoded")
            declared = response.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
                raise self._unavailable(f"the answer is over {MAX_ANSWER_BYTES} bytes")
            chunks: list[bytes] = []
            size = 0
            # Decoded bytes, but nothing is decoded: a Content-Encoding was refused above.
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise self._unavailable(f"the answer is over {MAX_ANSWER_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

    def _unavailable(self, what: str) -> ChainUnavailable:
        return ChainUnavailable(f"the RPC node {shown_url(self.rpc_url)}: {what}")
