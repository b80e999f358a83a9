"""A local BlockRun look-alike gateway speaking x402 v2, with fault switches, for tests and demos.

    with SandboxServer() as sandbox:
        client = SomeClient(api_url=sandbox.base_url)   # http://127.0.0.1:PORT/api
        sandbox.state.set_faults(status_after_settlement=503, times=1)

Payments are verified as strictly as a facilitator would, then "settled" against in-memory
balances; no chain, no real money. A stand-in chain at `sandbox.rpc_url` answers JSON-RPC
(balanceOf, authorizationState, the latest block) from those settlements and the sandbox's
chain clock.
"""

from blockrun_mcp.sandbox.app import create_app
from blockrun_mcp.sandbox.faults import Faults
from blockrun_mcp.sandbox.runner import SandboxServer, run_sandbox
from blockrun_mcp.sandbox.state import TREASURY, SandboxState, Settlement, VideoJob

__all__ = [
    "TREASURY",
    "Faults",
    "SandboxServer",
    "SandboxState",
    "Settlement",
    "VideoJob",
    "create_app",
    "run_sandbox",
]
