"""delegate: a cheaper model works a subtask on its own, reading the workspace, within a ceiling.

The server runs the loop. Each step is one paid chat request offering the model three read-only
tools (workspace_tools: list_files, read_file, search); the calls it makes are run here, with
exactly the confinement of `files`, and their results sent back on the next step. It ends when
the model answers without calling a tool, at max_steps, or when the next step's quote does not
fit what is left of max_cost_usd (or of the budgets).

Money. Every step is a payment through the one payment owner (PaidCall): its quote is checked
against the per-call cap, our own estimate and what is left of the ceiling, and reserved within
the session and daily budgets, before it is signed. The approval threshold asks once, before
the first step, for the whole ceiling: nothing past it is ever signed, so nothing more is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blockrun_mcp import pricing
from blockrun_mcp.budget import UNKNOWN_REMAINING
from blockrun_mcp.gateway_models import (
    CatalogEntry,
    ChatAnswer,
    ResponsesToolRequest,
    ToolChatRequest,
)
from blockrun_mcp.money import usd_text, usd_to_atomic
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.payments import NO_APPROVAL, PaidCall
from blockrun_mcp.results import DelegateResult, DelegateStep
from blockrun_mcp.service import arguments
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR, Caller
from blockrun_mcp.service.chat import (
    CUT_OFF,
    check_fits,
    conversation,
    no_effort,
    record_turn,
    takes_effort,
    with_files,
)
from blockrun_mcp.service.failures import Failures, ToolFailure
from blockrun_mcp.workspace import Selection
from blockrun_mcp.workspace_tools import (
    MAX_RESULT_BYTES,
    MIN_RESULT_BYTES,
    REFUSED,
    TOOL_DEFINITIONS,
    ToolOutcome,
    WorkspaceTools,
)
from blockrun_mcp.x402.errors import PaymentRefused

if TYPE_CHECKING:
    from blockrun_mcp.budget import SessionBudget
    from blockrun_mcp.gateway import GatewayClient
    from blockrun_mcp.service.core import BlockrunService

DEFAULT_STEPS, MAX_STEPS = 8, 30
STEP_MAX_TOKENS = 2048  # each step's answer: a few tool calls, or the final answer
# What the tool results of one delegation may add up to: well inside any model's context window
# (the window is checked too), and a bound on what one delegation can send anywhere.
MAX_TOTAL_TOOL_BYTES = 512 * 1024
CHARS_PER_TOKEN = 4
INSTRUCTIONS = (
    "You are doing a task for another AI agent, in a read-only workspace. Use the tools "
    "list_files, read_file and search to find what the task needs, and read only that. When "
    "you know the answer, reply with it (no tool call): it goes back to the agent as it is. "
    "Cite paths and line numbers. You have at most {steps} requests."
)
STOPPED_EARLY = {
    "max_steps": "It stopped at max_steps ({steps}) before the model answered; what it said last "
    "is shown. Continue with ask_model and this thread_id, or delegate again with more steps.",
    "max_cost": "It stopped because the next step's quote did not fit what was left of "
    "max_cost_usd ({ceiling}).",
    "budget": "It stopped because the next step did not fit the budget: {why}.",
}


@dataclass(frozen=True)
class Limits:
    """What bounds one delegation's loop."""

    steps: int
    ceiling: int  # atomic USDC: max_cost_usd
    tokens: int  # each step's max output
    room: int  # bytes all tool results together may come to
    effort: str | None  # OpenAI's reasoning effort: the Responses endpoint, where tools go with it


@dataclass
class Progress:
    """What the loop has done so far: what goes into the result."""

    steps: list[DelegateStep] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)
    tool_bytes: int = 0
    requests: int = 0

    def read(self, labels: tuple[str, ...] | list[str]) -> None:
        for label in labels:
            if label not in self.files_read:
                self.files_read.append(label)


class Delegation:
    def __init__(self, service: BlockrunService) -> None:
        self.service = service

    async def run(
        self,
        budget: SessionBudget,
        task: str,
        model: str | None = None,
        files: list[str] | None = None,
        max_steps: int | None = None,
        max_cost_usd: float | None = None,
        effort: str | None = None,
        caller: Caller = NOBODY_IN_PARTICULAR,
    ) -> DelegateResult:
        service = self.service
        async with Failures(budget) as failures:
            arguments.require_text(task, "task")
            steps = _steps(max_steps)
            arguments.max_cost_usd(max_cost_usd)  # (0 is a ceiling too: nothing paid)
            ceiling = usd_to_atomic(budget.per_call_usd if max_cost_usd is None else max_cost_usd)
            arguments.effort(effort)
            entry = await service.model(model, "chat")
            if effort is not None and not takes_effort(entry):
                raise ToolFailure(await no_effort(service, entry))
            roots = service.workspace_roots(caller)
            workspace = await off_loop(service.workspace, roots)  # the tools' and the files'
            selection = await off_loop(workspace.select, files) if files else Selection()
            tokens = min(STEP_MAX_TOKENS, entry.max_output or STEP_MAX_TOKENS)
            context = conversation([], None, selection.files, task)
            await check_fits(service, entry, context, tokens)
            messages: list[dict[str, Any]] = [
                {"role": "system", "content": INSTRUCTIONS.format(steps=steps)},
                {"role": "user", "content": with_files(selection.files, task)},
            ]
            progress = Progress()
            progress.read([file.path for file in selection.files])
            if not entry.is_free:
                # Once, for the whole ceiling: every step is then held within it.
                await service.approval(caller).ask(
                    ceiling,
                    f"a delegation to {entry.id} (up to {steps} requests)",
                    budget.aremaining_atomic,
                )
            failures.call = call = PaidCall(
                budget, tool="delegate", model=entry.id, estimate_atomic=None, approval=NO_APPROVAL
            )
            room = _room(entry, tokens)
            async with call:
                answer, stopped, why = await self._loop(
                    call,
                    caller,
                    entry,
                    messages,
                    WorkspaceTools(workspace),
                    progress,
                    Limits(steps, ceiling, tokens, room, effort),
                )
            thread_id, unsaved = await record_turn(
                service, None, caller, entry, effort, context, task, answer, call
            )
            notes = [
                None if answer.complete else CUT_OFF,
                STOPPED_EARLY[stopped].format(steps=steps, ceiling=usd_text(ceiling), why=why)
                if stopped in STOPPED_EARLY
                else None,
                call.booking_note(),
                unsaved,
            ]
            remaining = await budget.remaining_after_paying()
            notes.append(UNKNOWN_REMAINING if remaining is None else None)
            return DelegateResult(
                answer=answer.content,
                stopped=stopped,
                model=entry.id,
                steps=progress.steps,
                files_read=progress.files_read,
                requests=progress.requests,
                cost_usd=call.cost_usd,
                budget_remaining_usd=remaining,
                thread_id=thread_id,
                workspace=[str(root) for root in roots],
                note=" ".join(note for note in notes if note) or None,
            )

    async def _loop(
        self,
        call: PaidCall,
        caller: Caller,
        entry: CatalogEntry,
        messages: list[dict[str, Any]],
        tools: WorkspaceTools,
        progress: Progress,
        limits: Limits,
    ) -> tuple[ChatAnswer, str, str]:
        """Steps until the model answers or a limit stops it: the last answer, why it stopped
        (answered, max_steps, max_cost, budget) and the refusal that stopped it, if one did."""
        service = self.service
        gateway = service.gateway.paid_by(call)
        answer = ChatAnswer(model=entry.id, content="", finish_reason=None)
        steps = limits.steps
        for step in range(steps):
            left = limits.ceiling - call.cost_atomic
            estimate = pricing.chat_cost_atomic(
                entry, pricing.priced_texts(messages, TOOL_DEFINITIONS), limits.tokens
            )
            if step and estimate > left:
                return answer, "max_cost", ""  # the next step cannot fit: nothing more is asked
            call.estimate_atomic = estimate
            call.limit_atomic = left
            if caller.progress is not None:
                await caller.progress(step, steps, f"step {step + 1}: asking {entry.id}")
            try:
                async with call.deadline(service.config.call_timeout_s, "BLOCKRUN_CALL_TIMEOUT_S"):
                    answer = await _ask(gateway, entry, messages, limits)
            except PaymentRefused as refused:
                if not step:
                    raise  # nothing was done yet: the refusal is the answer
                stopped = "max_cost" if refused.limit == "max_cost_usd" else "budget"
                return answer, stopped, refused.message
            progress.requests += 1
            if not answer.tool_calls:
                return answer, "answered", ""
            messages.append(
                {
                    "role": "assistant",
                    "content": answer.content or None,
                    "tool_calls": [tool_call.wire() for tool_call in answer.tool_calls],
                }
            )
            for tool_call in answer.tool_calls:
                outcome = await self._run_tool(
                    tools, tool_call.name, tool_call.arguments, progress, limits.room
                )
                messages.append(
                    {"role": "tool", "tool_call_id": tool_call.id, "content": outcome.text}
                )
                if caller.progress is not None:
                    shown = f"{outcome.tool}({outcome.target or ''})"
                    await caller.progress(step + 1, steps, f"step {step + 1}: {shown}")
        return answer, "max_steps", ""

    @staticmethod
    async def _run_tool(
        tools: WorkspaceTools, name: str, arguments_json: str, progress: Progress, room: int
    ) -> ToolOutcome:
        """One tool call, within what is left of the delegation's total for tool results."""
        left = room - progress.tool_bytes
        if left < MIN_RESULT_BYTES:
            text = (
                f"{REFUSED}the tool results of this delegation reached their cap of {room} bytes "
                "in all; answer with what you have."
            )
            outcome = ToolOutcome(text, True, name[:100], None, (), len(text.encode()))
        else:
            tools.max_result_bytes = min(MAX_RESULT_BYTES, left)
            outcome = await off_loop(tools.run, name, arguments_json)
        progress.tool_bytes += outcome.bytes_returned
        progress.read(outcome.files_read)
        progress.steps.append(
            DelegateStep(
                tool=outcome.tool,
                target=outcome.target,
                refused=outcome.refused,
                bytes=outcome.bytes_returned,
            )
        )
        return outcome


async def _ask(
    gateway: GatewayClient, entry: CatalogEntry, messages: list[dict[str, Any]], limits: Limits
) -> ChatAnswer:
    """One step's paid request, streamed: chat completions, or the Responses endpoint when an
    effort is asked (OpenAI takes tools with reasoning only there)."""
    if limits.effort is None:
        request = ToolChatRequest(
            model=entry.id, messages=messages, tools=TOOL_DEFINITIONS, max_tokens=limits.tokens
        )
        answer, _ = await gateway.chat(request, stream=True)
        return answer
    answer, _ = await gateway.respond(
        ResponsesToolRequest(
            model=entry.id,
            messages=messages,
            tools=TOOL_DEFINITIONS,
            max_output_tokens=limits.tokens,
            effort=limits.effort,
        )
    )
    return answer


def _steps(max_steps: int | None) -> int:
    if max_steps is None:
        return DEFAULT_STEPS
    if isinstance(max_steps, bool) or not 1 <= max_steps <= MAX_STEPS:
        raise ToolFailure(f"max_steps must be a whole number from 1 to {MAX_STEPS}.")
    return max_steps


def _room(entry: CatalogEntry, tokens: int) -> int:
    """Bytes the tool results of one delegation may add up to: MAX_TOTAL_TOOL_BYTES, less where
    the model's context window is smaller (with room for the task and each step's answer)."""
    if not entry.context_window:
        return MAX_TOTAL_TOOL_BYTES
    window = (entry.context_window - tokens * 2) * CHARS_PER_TOKEN * 3 // 4
    return max(MIN_RESULT_BYTES, min(MAX_TOTAL_TOOL_BYTES, window))
