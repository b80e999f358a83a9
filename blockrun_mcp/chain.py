"""Reading the wallet's USDC balance from a public JSON-RPC node, for the CLI only.

One `eth_call` of the USDC contract's `balanceOf`, with a short timeout: a balance is a
courtesy, so any failure is reported as "unknown" rather than blocking a command.
"""

from __future__ import annotations

import httpx2

BALANCE_OF = "0x70a08231"  # keccak("balanceOf(address)")[:4]
TIMEOUT_SECONDS = 4.0


class BalanceUnavailable(Exception):
    """The RPC node could not be reached or gave an unusable answer."""


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
            headers={"User-Agent": "blockrun-mcp"},
            follow_redirects=False,
        )
        response.raise_for_status()
        answer = response.json()
    except (httpx2.HTTPError, ValueError) as exc:
        raise BalanceUnavailable(f"{rpc_url}: {type(exc).__name__}") from None
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, str) or not result.startswith("0x"):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise BalanceUnavailable(f"{rpc_url}: unexpected answer {str(error or answer)[:120]}")
    try:
        return int(result, 16) if result != "0x" else 0
    except ValueError:
        raise BalanceUnavailable(f"{rpc_url}: result is not a number") from None
