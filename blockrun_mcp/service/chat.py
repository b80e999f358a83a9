"""ask_model: a question to a chat model, paid within the budget; with files read from the
workspace, a thread that carries the conversation on, and reasoning effort for OpenAI models."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockrun_mcp import pricing
from blockrun_mcp.budget import UNKNOWN_REMAINING
from blockrun_mcp.catalog import kind_of
from blockrun_mcp.gateway_models import (
    CatalogEntry,
    ChatAnswer,
    ChatMessage,
    ChatRequest,
    ResponsesRequest,
)
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.results import AskResult, FileSent, Usage
from blockrun_mcp.service import arguments
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR, Caller
from blockrun_mcp.service.failures import Failures, ToolFailure
from blockrun_mcp.workspace import Selection, SentFile, fenced

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.payments import PaidCall
    from blockrun_mcp.service.core import BlockrunService
    from blockrun_mcp.threads import Turn

log = logging.getLogger("blockrun_mcp")

REFUSED = "The model refused to answer (content_filter). Rephrase, or ask another model."
CUT_OFF = "The answer was cut off before the model finished; what arrived is shown."


@dataclass(frozen=True)
class Context:
    """What one ask sends: the conversation so far, the files, and what it all costs in tokens."""

    messages: list[ChatMessage]
    system: str | None
    files: list[SentFile]
    prompt_tokens: int


def with_files(files: list[SentFile], prompt: str) -> str:
    """The user's message: the files first, each fenced and labelled, then the question."""
    return f"{fenced(files)}\n\n{prompt}" if files else prompt


def conversation(
    history: list[Turn], system: str | None, files: list[SentFile], prompt: str
) -> Context:
    """Every earlier turn again (the gateway keeps no state), then this one. Without a new
    system prompt, the thread's last one goes on applying."""
    system = system or next((t.system for t in reversed(history) if t.system), None)
    messages = [ChatMessage(role="system", content=system)] if system else []
    for turn in history:
        messages.append(ChatMessage(role="user", content=with_files(turn.files, turn.prompt)))
        messages.append(ChatMessage(role="assistant", content=turn.answer))
    messages.append(ChatMessage(role="user", content=with_files(files, prompt)))
    tokens = pricing.estimate_input_tokens(m.content for m in messages)
    return Context(messages, system, files, tokens)


def takes_effort(entry: CatalogEntry) -> bool:
    """OpenAI's models take reasoning effort, through the gateway's Responses endpoint."""
    return entry.provider == "openai" and kind_of(entry) == "chat" and not entry.is_free


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
        files: list[str] | None = None,
        thread_id: str | None = None,
        effort: str | None = None,
        caller: Caller = NOBODY_IN_PARTICULAR,
    ) -> AskResult:
        service = self.service
        async with Failures(budget) as failures:
            arguments.require_text(prompt, "prompt")
            arguments.optional_text(system, "system")
            arguments.temperature(temperature)
            arguments.effort(effort)
            threads = await service.thread_store()
            if thread_id is not None:  # before anything else: unknown costs nothing
                await off_loop(threads.check, thread_id, caller.owner)
            selection = await service.select_files(caller, files) if files else Selection()
            entry = await service.model(model, "chat")
            tokens = arguments.max_tokens_for(max_tokens, entry)
            if effort is not None and not takes_effort(entry):
                raise ToolFailure(await self._no_effort(entry))
            async with threads.taking_turn(thread_id) if thread_id else nullcontext():
                history = (
                    await off_loop(threads.turns, thread_id, caller.owner) if thread_id else []
                )
                context = conversation(history, system, selection.files, prompt)
                await self._fits(entry, context, tokens)
                texts = [m.content for m in context.messages]
                failures.call = call = service.paid_call(
                    budget,
                    caller,
                    tool="ask_model",
                    model=entry.id,
                    estimate_atomic=pricing.chat_cost_atomic(entry, texts, tokens),
                )
                async with (
                    call,
                    call.deadline(service.config.call_timeout_s, "BLOCKRUN_CALL_TIMEOUT_S"),
                ):
                    answer = await ask_one(
                        service, call, entry, context, tokens, effort, temperature
                    )
                thread_id, unsaved = await record_turn(
                    service, thread_id, caller, entry, effort, context, prompt, answer, call
                )
            refused = answer.finish_reason == "content_filter"
            notes = [REFUSED if refused else (None if answer.complete else CUT_OFF)]
            notes += [selection.skipped_note(), call.booking_note(), unsaved]
            remaining = await budget.remaining_after_paying()
            notes.append(UNKNOWN_REMAINING if remaining is None else None)
            return AskResult(
                model=answer.model,
                content=answer.content,
                finish_reason=answer.finish_reason,
                refused=refused,
                usage=Usage(
                    prompt_tokens=answer.usage.prompt_tokens,
                    completion_tokens=answer.usage.completion_tokens,
                    total_tokens=answer.usage.total_tokens,
                    reasoning_tokens=answer.usage.reasoning_tokens,
                ),
                cost_usd=call.cost_usd,
                budget_remaining_usd=remaining,
                thread_id=thread_id,
                files=[
                    FileSent(path=f.label, bytes=f.size, tokens=f.tokens) for f in selection.files
                ],
                workspace=selection.roots or None,
                transaction=call.tx_hash,
                note=" ".join(note for note in notes if note) or None,
            )

    async def _fits(self, entry: CatalogEntry, context: Context, max_tokens: int) -> None:
        await check_fits(self.service, entry, context, max_tokens)

    async def _no_effort(self, entry: CatalogEntry) -> str:
        return await no_effort(self.service, entry)


async def ask_one(
    service: BlockrunService,
    call: PaidCall,
    entry: CatalogEntry,
    context: Context,
    tokens: int,
    effort: str | None,
    temperature: float | None = None,
) -> ChatAnswer:
    """One paid question: chat, or the Responses endpoint when a reasoning effort is asked."""
    gateway = service.gateway.paid_by(call)
    if effort is None:
        request = ChatRequest(
            model=entry.id, messages=context.messages, max_tokens=tokens, temperature=temperature
        )
        answer, _ = await gateway.chat(request, stream=True)
    else:
        answer, _ = await gateway.respond(
            ResponsesRequest(
                model=entry.id, messages=context.messages, max_output_tokens=tokens, effort=effort
            )
        )
    return answer


# What free-model turns may make the ledger store per identity per UTC day (characters of
# prompts, answers and system prompts): paid turns are bounded by their budgets, free ones by this.
FREE_STORED_PER_DAY = 16_000_000


async def record_turn(
    service: BlockrunService,
    thread_id: str | None,
    caller: Caller,
    entry: CatalogEntry,
    effort: str | None,
    context: Context,
    prompt: str,
    answer: ChatAnswer,
    call: PaidCall,
) -> tuple[str | None, str | None]:
    """The answered turn, kept (a new thread when `thread_id` is None): the thread's id, and a
    note when it could not be kept. The answer is paid for: a store that fails now loses the
    thread's turn, never the answer (the thread stays as it was; a new one has no id)."""
    free = call.cost_atomic == 0 and not call.holds
    size = len(prompt) + len(answer.content or "") + len(context.system or "")
    try:
        store = await service.thread_store()
        if (
            free
            and await off_loop(store.free_stored_today, caller.owner) + size > FREE_STORED_PER_DAY
        ):
            # Free calls cost nothing, so nothing else bounds what they make the ledger keep.
            where = f"thread {thread_id} is as it was" if thread_id else "no thread was started"
            return thread_id, (
                f"This free turn was not saved to a thread: free-model turns stored for "
                f"{caller.owner} today reached {FREE_STORED_PER_DAY // 1_000_000} MB. {where}; "
                "paid models' turns are still kept, and the count starts again at 00:00 UTC."
            )
        saved = await off_loop(
            store.add_turn,
            thread_id,
            caller.owner,
            model=entry.id,
            effort=effort,
            system=context.system,
            files=context.files,
            prompt=prompt,
            answer=answer.content,
            finish_reason=answer.finish_reason,
            cost_atomic=call.cost_atomic,
            payment_id=call.holds[0].payment_id if call.holds else None,
        )
    except Exception as exc:  # whatever the store raised: the answer still goes back
        log.warning("a paid answer's thread turn was not saved", exc_info=exc)
        where = f"thread {thread_id} is as it was" if thread_id else "no thread was started"
        return thread_id, (
            f"This turn was not saved to a thread (the ledger failed: {type(exc).__name__}); "
            f"{where}, so a follow-up will not include it."
        )
    return saved, None


async def check_fits(
    service: BlockrunService, entry: CatalogEntry, context: Context, max_tokens: int
) -> None:
    """Refuse, before paying, a conversation the model's context window cannot hold, and
    name the cheapest model that can. Nothing is ever silently dropped."""
    needed = context.prompt_tokens + max_tokens
    if not entry.context_window or needed <= entry.context_window:
        return
    entries = (await service.catalog.snapshot()).entries
    fitting = [
        e
        for e in entries
        if kind_of(e) == "chat" and e.available and (e.context_window or 0) >= needed
    ]
    suggestion = min(fitting, key=lambda e: (e.input_price, e.id), default=None)
    raise ToolFailure(
        f"This would send about {context.prompt_tokens} tokens (the thread's earlier turns, "
        f"files and prompt) plus max_tokens {max_tokens}, over {entry.id}'s context window "
        f"of {entry.context_window} tokens; nothing was paid. "
        + (
            f"{suggestion.id} holds {suggestion.context_window} tokens."
            if suggestion
            else "No model's context window holds it: send fewer files or start a new thread."
        )
    )


async def no_effort(service: BlockrunService, entry: CatalogEntry) -> str:
    """Why `entry` cannot take `effort`, naming the models that can."""
    entries = (await service.catalog.snapshot()).entries
    able = sorted(e.id for e in entries if takes_effort(e) and e.available)
    return (
        f"{entry.id} does not take a reasoning effort; nothing was paid. effort works with "
        f"OpenAI's models: {', '.join(able)}."
    )
