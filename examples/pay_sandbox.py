"""Pay the sandbox gateway for one chat completion with blockrun-mcp's x402 payer, no MCP involved."""

import anyio
from eth_account import Account

from blockrun_mcp.gateway import GatewayClient
from blockrun_mcp.gateway_models import ChatMessage, ChatRequest
from blockrun_mcp.sandbox import SandboxServer
from blockrun_mcp.x402.networks import BASE
from blockrun_mcp.x402.payer import X402Payer
from blockrun_mcp.x402.policy import SigningPolicy


async def main() -> None:
    with SandboxServer() as sandbox:
        account = Account.create()
        payer = X402Payer(lambda: account, SigningPolicy(BASE, max_atomic=100_000))  # $0.10 cap
        gateway = GatewayClient(sandbox.base_url, payer)
        answer, paid = await gateway.chat(
            ChatRequest(
                model="openai/gpt-5-mini", messages=[ChatMessage(role="user", content="Hi")]
            )
        )
        print(answer.content, paid.cost_atomic / 1e6, paid.receipt.transaction)
        await gateway.aclose()


anyio.run(main)
