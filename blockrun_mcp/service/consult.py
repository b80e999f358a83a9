"""ask_models: one question to several models at once, priced as a whole before anything is
paid, answered blind and in parallel, optionally summed up by one more model.

The money side (every quote gathered, the total checked and approved, all or nothing) is
payments.Consult's; here the models are asked, each failure kept to its own answer, and the
synthesis written without model names so that it weighs the answers, not their authors.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from blockrun_mcp import pricing
from blockrun_mcp.asking import InputRequired
from blockrun_mcp.budget import UNKNOWN_REMAINING
from blockrun_mcp.gateway_models import CatalogEntry
from blockrun_mcp.money import atomic_to_usd, usd_to_atomic
from blockrun_mcp.payments import Consult, ConsultRefused, FollowUpApproval, PaidCall
from blockrun_mcp.results import ConsultAnswer, ConsultResult, Synthesis
from blockrun_mcp.service import arguments
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR, Caller
from blockrun_mcp.service.chat import (
    Context,
    ask_one,
    check_fits,
    conversation,
    no_effort,
    record_turn,
    takes_effort,
)
from blockrun_mcp.service.failures import Failures, ToolFailure
from blockrun_mcp.workspace import Selection
from blockrun_mcp.x402.errors import PaymentRefused

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.service.core import BlockrunService

MIN_MODELS, MAX_MODELS = 2, 8
LABELS = "ABCDEFGH"
SYNTHESIS_MAX_TOKENS = 2048
SYNTHESIS_ASK = (
    "Below are {count} answers to the same question, labelled {labels}, written independently "
    "by different AI models whose names are withheld. Say where they agree, where they differ "
    "(and which is right where you can tell), and what you recommend. Refer to them by label."
)


class Consulting:
    def __init__(self, service: BlockrunService) -> None:
        self.service = service

    async def ask(
        self,
        budget: SessionBudget,
        prompt: str,
        models: list[str],
        system: str | None = None,
        files: list[str] | None = None,
        max_tokens: int | None = None,
        effort: str | None = None,
        synthesize_with: str | None = None,
        max_cost_usd: float | None = None,
        caller: Caller = NOBODY_IN_PARTICULAR,
    ) -> ConsultResult:
        service = self.service
        async with Failures(budget):
            arguments.require_text(prompt, "prompt")
            arguments.optional_text(system, "system")
            wanted = _models(models)
            arguments.effort(effort)
            arguments.max_cost_usd(max_cost_usd)
            entries = [await service.model(model, "chat") for model in wanted]
            if effort is not None:
                for entry in entries:
                    if not takes_effort(entry):
                        raise ToolFailure(await no_effort(service, entry))
            synthesizer = await service.model(synthesize_with, "chat") if synthesize_with else None
            selection = await service.select_files(caller, files) if files else Selection()
            context = conversation([], system, selection.files, prompt)
            plans = []
            for entry in entries:
                tokens = arguments.max_tokens_for(max_tokens, entry)
                await check_fits(service, entry, context, tokens)
                plans.append((entry, tokens))
            synthesis_estimate = (
                _synthesis_estimate(synthesizer, context, [t for _, t in plans])
                if synthesizer
                else 0
            )
            consult = Consult(
                budget,
                tool="ask_models",
                members=[
                    (entry.id, pricing.chat_cost_atomic(entry, _texts(context), tokens))
                    for entry, tokens in plans
                ],
                extra_estimate_atomic=synthesis_estimate,
                max_cost_atomic=None if max_cost_usd is None else usd_to_atomic(max_cost_usd),
                approval=service.approval(caller),
            )
            answers = await self._ask_all(consult, plans, context, effort, caller, prompt)
            _raise_if_refused_as_a_whole(consult, answers)
            synthesis, synthesis_atomic, skipped = None, 0, None
            if synthesizer is not None and any(a.content for a in answers):
                try:
                    synthesis, synthesis_atomic = await self._synthesize(
                        budget, synthesizer, prompt, answers, consult, caller
                    )
                except InputRequired:
                    # The members are paid; a question now would end the call and lose their
                    # answers, so the synthesis is left out (2026-07-28 asks only between calls).
                    skipped = SYNTHESIS_NOT_APPROVED
            total = sum(call.cost_atomic for call in consult.calls) + synthesis_atomic
            failed = [a.model for a in answers if a.error]
            notes = (
                [f"{len(failed)} of {len(answers)} failed: {', '.join(failed)}."] if failed else []
            )
            if skipped:
                notes.append(skipped)
            remaining = await budget.remaining_after_paying()
            if remaining is None:
                notes.append(UNKNOWN_REMAINING)
            return ConsultResult(
                answers=answers,
                synthesis=synthesis,
                cost_usd=atomic_to_usd(total),
                budget_remaining_usd=remaining,
                workspace=selection.roots or None,
                note=" ".join(notes) or None,
            )

    async def _ask_all(
        self,
        consult: Consult,
        plans: list[tuple[CatalogEntry, int]],
        context: Context,
        effort: str | None,
        caller: Caller,
        prompt: str,
    ) -> list[ConsultAnswer]:
        """Every model at once; each one's failure stays its own."""
        answers: list[ConsultAnswer | None] = [None] * len(plans)
        done = 0

        async def one(index: int, entry: CatalogEntry, tokens: int) -> None:
            nonlocal done
            call = consult.calls[index]
            unpayable: list[str] = []
            try:
                answers[index] = await self._answer(
                    call, entry, tokens, context, effort, caller, prompt, unpayable.append
                )
            finally:
                await consult.ended_unquoted(index, unpayable[0] if unpayable else None)
            done += 1
            if caller.progress is not None:
                await caller.progress(done, len(plans), f"{entry.id} answered")

        async with anyio.create_task_group() as group:
            for index, (entry, tokens) in enumerate(plans):
                group.start_soon(one, index, entry, tokens)
        return [answer for answer in answers if answer is not None]

    async def _answer(
        self,
        call: PaidCall,
        entry: CatalogEntry,
        tokens: int,
        context: Context,
        effort: str | None,
        caller: Caller,
        prompt: str,
        unpayable: Callable[[str], None] | None = None,
    ) -> ConsultAnswer:
        """One model's answer, or its failure as a sentence (with what became of its money).
        A quote the signing policy refuses before it reaches the consult is told to
        `unpayable`: it refuses the whole consult, as a quote over the cap does."""
        service = self.service
        failures = Failures(call.budget)
        failures.call = call
        try:
            async with (
                failures,
                call,
                call.deadline(service.config.call_timeout_s, "BLOCKRUN_CALL_TIMEOUT_S"),
                _unpayable(call, unpayable),
            ):
                answer = await ask_one(service, call, entry, context, tokens, effort)
        except ToolFailure as failure:
            return ConsultAnswer(
                model=entry.id,
                content=None,
                cost_usd=call.cost_usd,
                error=failure.message,
            )
        thread_id, unsaved = await record_turn(
            service, None, caller, entry, effort, context, prompt, answer, call
        )
        refused = answer.finish_reason == "content_filter"
        notes = [call.booking_note(), unsaved]
        return ConsultAnswer(
            model=answer.model,
            content=answer.content,
            finish_reason=answer.finish_reason,
            cost_usd=call.cost_usd,
            thread_id=thread_id,
            error="The model refused to answer (content_filter)." if refused else None,
            note=" ".join(note for note in notes if note) or None,
        )

    async def _synthesize(
        self,
        budget: SessionBudget,
        entry: CatalogEntry,
        prompt: str,
        answers: list[ConsultAnswer],
        consult: Consult,
        caller: Caller,
    ) -> tuple[Synthesis, int]:
        """The synthesis, and what it cost in atomic units."""
        usable = [a for a in answers if a.content]
        labels = LABELS[: len(usable)]
        text = SYNTHESIS_ASK.format(count=len(usable), labels=", ".join(labels))
        text += f"\n\nThe question:\n{prompt}"
        for label, answer in zip(labels, usable, strict=True):
            text += f"\n\nAnswer {label}:\n{_anonymous(answer)}"
        tokens = min(SYNTHESIS_MAX_TOKENS, entry.max_output or SYNTHESIS_MAX_TOKENS)
        spent = sum(member.cost_atomic for member in consult.calls)
        cap = consult.max_cost_atomic
        limit = None if cap is None else max(0, cap - spent)
        call = PaidCall(
            budget,
            tool="ask_models",
            model=entry.id,
            estimate_atomic=pricing.chat_cost_atomic(entry, [text], tokens),
            # What was approved covers the members and the synthesis's estimate; a quote past
            # it is asked about again, never signed on the first yes.
            approval=FollowUpApproval(
                consult.approval, spent_atomic=spent, approved_atomic=consult.approved_atomic
            ),
            limit_atomic=limit,
        )
        context = conversation([], None, [], text)
        answer = await self._answer(call, entry, tokens, context, None, caller, text)
        synthesis = Synthesis.model_validate(answer.model_dump(exclude={"finish_reason"}))
        return synthesis, call.cost_atomic


@asynccontextmanager
async def _unpayable(call: PaidCall, report: Callable[[str], None] | None) -> AsyncIterator[None]:
    try:
        yield
    except ConsultRefused:
        raise
    except PaymentRefused as refused:
        if report is not None and not call.holds:  # refused before it was ever approved
            report(refused.reason)
        raise


def _anonymous(answer: ConsultAnswer) -> str:
    """The answer without its author's name in it (models do sign their answers now and then):
    the synthesis weighs what was said, not who said it."""
    names = {answer.model, answer.model.split("/", 1)[-1]}
    pattern = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.sub(pattern, "[a model]", answer.content or "", flags=re.IGNORECASE)


def _models(models: list[str]) -> list[str]:
    if not isinstance(models, list) or not MIN_MODELS <= len(models) <= MAX_MODELS:
        raise ToolFailure(f"models must list {MIN_MODELS} to {MAX_MODELS} model ids.")
    wanted = [arguments.model_id(m) if isinstance(m, str) else None for m in models]
    if any(m is None for m in wanted):
        raise ToolFailure("Each entry of models must be a model id from list_models.")
    if len(set(wanted)) != len(wanted):
        raise ToolFailure("models lists the same model twice; each model answers once.")
    return [m for m in wanted if m is not None]


def _texts(context: Context) -> list[str]:
    return [message.content for message in context.messages]


def _synthesis_estimate(entry: CatalogEntry, context: Context, answer_tokens: list[int]) -> int:
    """An upper bound: the question and every answer at its full max_tokens."""
    question = sum(len(text) for text in _texts(context))
    chars = question + 4 * sum(answer_tokens) + len(SYNTHESIS_ASK) + 20 * len(answer_tokens)
    tokens = min(SYNTHESIS_MAX_TOKENS, entry.max_output or SYNTHESIS_MAX_TOKENS)
    return pricing.chat_cost_atomic(entry, ["x" * chars], tokens)


SYNTHESIS_NOT_APPROVED = (
    "No synthesis: its quote brings the call above the sum you approved, and this client "
    "(MCP 2026-07-28) can only ask you again on a new call. Nothing was signed for it."
)


def _raise_if_refused_as_a_whole(consult: Consult, answers: list[ConsultAnswer]) -> None:
    """A consult refused before signing fails as one: nothing was paid, and the error says why
    with the breakdown per model."""
    refusal = consult.refusal
    if refusal is not None and not any(hold.nonce for call in consult.calls for hold in call.holds):
        if isinstance(refusal, InputRequired):
            raise refusal  # the sum goes to the person first (2026-07-28), nothing signed
        raise ToolFailure(refusal.message)
