"""The sandbox's stand-in chain: a JSON-RPC node at POST /rpc that answers from what it settled.

Only what a payment reconciler and the CLI ask: the chain id, the latest block (its timestamp is
the sandbox's chain clock) and two read-only calls of the USDC contract, `balanceOf` and EIP-3009's
`authorizationState`. The answers are honest: a nonce reads as used exactly when the sandbox
settled it, and a balance is what the sandbox's ledger holds. `rpc_down` and `rpc_garbage` make
the node unreachable or nonsensical, never a liar.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from blockrun_mcp.sandbox.state import SandboxState

BALANCE_OF = "0x70a08231"  # keccak("balanceOf(address)")[:4]
AUTHORIZATION_STATE = "0xe94a0102"  # keccak("authorizationState(address,bytes32)")[:4]
BLOCK_SECONDS = 2  # Base's block time: block numbers follow the chain clock
BLOCK_TAGS = frozenset({"latest", "pending", "safe", "finalized"})

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
EXECUTION_ERROR = -32000

# What rpc_garbage answers instead: too short, not a bool, not hex.
GARBAGE_CALL_RESULT = "0x02"
GARBAGE_HEX = "0xnot-hex"

_WORD = r"[0-9a-fA-F]{64}"
_ADDRESS_ARG = re.compile(r"0{24}([0-9a-fA-F]{40})")
_HEX_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")


class RpcError(Exception):
    """A JSON-RPC error object to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_answer(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def parse(raw: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the request, None) or (None, the error answer) for a raw POST /rpc body."""
    try:
        request = json.loads(raw)
    except (ValueError, RecursionError):
        return None, error_answer(None, PARSE_ERROR, "Parse error")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        # Batches are valid JSON-RPC but nothing here sends them.
        return None, error_answer(None, INVALID_REQUEST, "Invalid Request")
    return request, None


def selector_of(request: dict[str, Any]) -> str:
    """The 4-byte selector of an eth_call, for the call log; "" for anything else."""
    if request.get("method") != "eth_call":
        return ""
    params = request.get("params")
    call = params[0] if isinstance(params, list) and params else None
    data = _call_data(call) if isinstance(call, dict) else None
    return data[:10].lower() if data else ""


def answer(
    state: SandboxState, request: dict[str, Any], *, garbage: bool = False
) -> dict[str, Any]:
    """The JSON-RPC answer to one request, from the state as it stands."""
    request_id = request.get("id")
    method = request["method"]
    params = request.get("params", [])
    try:
        if not isinstance(params, list):
            raise RpcError(INVALID_PARAMS, "params must be an array")
        result = _dispatch(state, method, params)
    except RpcError as exc:
        return error_answer(request_id, exc.code, exc.message)
    if garbage:
        result = _garbage(result)
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def _dispatch(state: SandboxState, method: str, params: list[Any]) -> Any:
    if method == "eth_chainId":
        return hex(state.network_spec.chain_id)
    if method == "eth_blockNumber":
        return hex(_latest_block(state)[0])
    if method == "eth_getBlockByNumber":
        return _block(state, params)
    if method == "eth_call":
        return _eth_call(state, params)
    raise RpcError(METHOD_NOT_FOUND, f"the method {method[:64]} does not exist/is not available")


def _latest_block(state: SandboxState) -> tuple[int, int]:
    """(number, timestamp) of the latest block: the chain clock, which never goes back."""
    now = state.chain_now()
    return now // BLOCK_SECONDS, now


def _block(state: SandboxState, params: list[Any]) -> dict[str, Any] | None:
    if not params or not isinstance(params[0], str):
        raise RpcError(INVALID_PARAMS, "expected [block tag or number, full transactions]")
    latest, now = _latest_block(state)
    tag = params[0]
    if tag in BLOCK_TAGS:
        number, timestamp = latest, now
    elif _HEX_QUANTITY.fullmatch(tag):
        number = int(tag, 16)
        if number > latest:
            return None  # a block not mined yet, as a real node answers
        timestamp = min(now, number * BLOCK_SECONDS)
    else:
        raise RpcError(INVALID_PARAMS, f"invalid block tag or number {tag[:32]!r}")
    digest = hashlib.sha256(f"sandbox-block:{number}".encode()).hexdigest()
    return {
        "number": hex(number),
        "hash": "0x" + digest,
        "timestamp": hex(timestamp),
        "transactions": [],
    }


def _call_data(call: dict[str, Any]) -> str | None:
    data = call.get("data", call.get("input"))
    return data if isinstance(data, str) else None


def _eth_call(state: SandboxState, params: list[Any]) -> str:
    call = params[0] if params else None
    if not isinstance(call, dict) or not isinstance(call.get("to"), str):
        raise RpcError(INVALID_PARAMS, "expected [{to, data}, block]")
    data = _call_data(call)
    if data is None or not re.fullmatch(r"0x(?:[0-9a-fA-F]{2})*", data):
        raise RpcError(INVALID_PARAMS, "call data must be 0x-prefixed hex bytes")
    if call["to"].lower() != state.network_spec.usdc.lower():
        # No other contract exists on this chain.
        raise RpcError(EXECUTION_ERROR, "execution reverted")
    selector, args = data[:10].lower(), data[10:]
    if selector == BALANCE_OF and re.fullmatch(_WORD, args):
        return _word(state.balance_atomic(_address(args[:64])))
    if selector == AUTHORIZATION_STATE and re.fullmatch(_WORD * 2, args):
        used = state.authorization_used(_address(args[:64]), "0x" + args[64:].lower())
        return _word(int(used))
    raise RpcError(EXECUTION_ERROR, "execution reverted")


def _address(word: str) -> str:
    # An address argument with dirty upper bytes makes the contract's ABI decoder revert.
    match = _ADDRESS_ARG.fullmatch(word)
    if match is None:
        raise RpcError(EXECUTION_ERROR, "execution reverted")
    return "0x" + match.group(1).lower()


def _word(value: int) -> str:
    return "0x" + format(value, "064x")


def _garbage(result: Any) -> Any:
    """rpc_garbage: what each method answers instead, each shape one a strict reader refuses."""
    if isinstance(result, dict):
        return {**result, "timestamp": GARBAGE_HEX}
    if isinstance(result, str) and len(result) == 66:  # an eth_call word
        return GARBAGE_CALL_RESULT
    return GARBAGE_HEX
