"""ask_model: one question to one chat model, paid within the budget."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blockrun_mcp import pricing
from blockrun_mcp.gateway_models import ChatMessage, ChatRequest
from blockrun_mcp.results import AskResult, Usage
from blockrun_mcp.service import arguments
from blockrun_mcp.service.failures import Failures, ToolFailure

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.service.core import BlockrunService

REFUSED = "The model refused to answer (content_filter). Rephrase, or ask another model."
CUT_OFF = "The answer was cut off before the model finished; what arrived is shown."


class Chat:
    def __init__(self, service: BlockrunService) -> None:
        self.service = service

    async def ask(
        self,
        budget: SessionBudget,
        prompt: str,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AskResult:
        service = self.service
        async with Failures(budget) as failures:
            arguments.require_text(prompt, "prompt")
            arguments.optional_text(system, "system")
            entry = await service.model(model, "chat")
            tokens = arguments.max_tokens_for(max_tokens, entry)
            arguments.temperature(temperature)
            messages = ([ChatMessage(role="system", content=system)] if system else []) + [
                ChatMessage(role="user", content=prompt)
            ]
            texts = [m.content for m in messages]
            prompt_tokens = pricing.estimate_input_tokens(texts)
            if entry.context_window and prompt_tokens + tokens > entry.context_window:
                raise ToolFailure(
                    f"The prompt (about {prompt_tokens} tokens) plus max_tokens {tokens} exceeds "
                    f"{entry.id}'s context window of {entry.context_window} tokens. Shorten it or "
                    "pick a model with a larger context_window."
                )
            request = ChatRequest(
                model=entry.id, messages=messages, max_tokens=tokens, temperature=temperature
            )
            failures.call = call = service.paid_call(
                budget,
                tool="ask_model",
                model=entry.id,
                estimate_usd=pricing.chat_cost_usd(entry, texts, tokens),
            )
            async with (
                call,
                call.deadline(service.config.call_timeout_s, "BLOCKRUN_CALL_TIMEOUT_S"),
            ):
                answer, _ = await service.gateway.paid_by(call).chat(request, stream=True)
            refused = answer.finish_reason == "content_filter"
            return AskResult(
                model=answer.model,
                content=answer.content,
                finish_reason=answer.finish_reason,
                refused=refused,
                usage=Usage(
                    prompt_tokens=answer.usage.prompt_tokens,
                    completion_tokens=answer.usage.completion_tokens,
                    total_tokens=answer.usage.total_tokens,
                ),
                cost_usd=call.cost_usd,
                budget_remaining_usd=budget.remaining_usd(),
                transaction=call.tx_hash,
                note=REFUSED if refused else (None if answer.complete else CUT_OFF),
            )
