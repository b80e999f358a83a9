"""The MCP server: thin tools over BlockrunService, each a typed result or a plain error."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.request_state import RequestStateSecurity
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from blockrun_mcp import __version__
from blockrun_mcp.asking import InputRequired, Rounds
from blockrun_mcp.budget import SessionBudget
from blockrun_mcp.dashboard import mcp_app
from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.identities import Identities, Identity
from blockrun_mcp.ledger import DEFAULT_IDENTITY
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.results import (
    AskResult,
    BudgetResult,
    ConsultResult,
    DelegateResult,
    Estimate,
    ImageResult,
    ModelList,
    ThreadsResult,
    VideoResult,
    WalletResult,
)
from blockrun_mcp.schemas import compact, inline_single_refs, shallow, without_required
from blockrun_mcp.service import BlockrunService
from blockrun_mcp.service.caller import Caller, Payer
from blockrun_mcp.sessions import IssuedSessions
from blockrun_mcp.tool_arguments import ToolParameters

INSTRUCTIONS = (
    "Ask other AI models (GPT, Claude, Gemini, DeepSeek, GLM, Kimi, free NVIDIA models), hand a "
    "cheaper one a subtask that reads the workspace itself (delegate), and make images and "
    "videos. Each paid call costs USDC within the user's budgets; results carry "
    "cost_usd and budget_remaining_usd. estimate_cost is free."
)

log = logging.getLogger("blockrun_mcp")
STATE_TTL_SECONDS = 600.0
IDENTITY_HEADER = "x-blockrun-identity"  # set by transports.IdentityAuth, never by a client

TOOL_NAMES = frozenset(
    {
        "ask_model",
        "ask_models",
        "delegate",
        "threads",
        "list_models",
        "estimate_cost",
        "generate_image",
        "generate_video",
        "budget",
        "wallet",
    }
)

# The spec's defaults (not read-only, not idempotent, open world) go unsaid: every byte of the
# tool list is sent on every turn. A paid call spends, but destroys nothing.
PAID = ToolAnnotations(destructiveHint=False)
LOCAL = ToolAnnotations(readOnlyHint=True)


class LeanMCPServer(MCPServer):
    _parameters: dict[str, ToolParameters] | None = None

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """The SDK's call, with argument mistakes refused in plain sentences (tool_arguments)."""
        if self._parameters is None:
            self._parameters = {
                tool.name: ToolParameters.from_schema(tool.name, tool.input_schema)
                for tool in await super().list_tools()
            }
        parameters = self._parameters.get(name)
        if parameters is not None and (unknown := parameters.unknown(arguments)):
            return _error(unknown)
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            invalid = isinstance(exc.__cause__, ValidationError)
            if parameters is None or not invalid or isinstance(exc, UnexpectedToolError):
                raise
            return _error(parameters.invalid(exc.__cause__))

    async def list_tools(self) -> Any:
        tools = await super().list_tools()
        for tool in tools:
            tool.input_schema = compact(tool.input_schema, optional_inputs=True)
            # Said up front, as call_tool enforces it: an unknown argument is refused.
            tool.input_schema["additionalProperties"] = False
            if tool.output_schema is not None:
                tool.output_schema = shallow(
                    without_required(inline_single_refs(compact(tool.output_schema)))
                )
        return tools

    async def run_stdio_async(self) -> None:
        """The SDK's stdio loop, fed by pipes polled on the event loop (see stdio_pipes), its
        era not decided by a probe the host gave up on (see era_probe)."""
        from mcp.server.stdio import stdio_server

        from blockrun_mcp.era_probe import serve_connection
        from blockrun_mcp.stdio_pipes import claimed_pipes

        with claimed_pipes() as wire:
            streams = stdio_server() if wire is None else stdio_server(wire.lines, wire.writer)  # type: ignore[arg-type]
            async with streams as (read_stream, write_stream):
                server = self._lowlevel_server
                await serve_connection(
                    server, read_stream, write_stream, server.create_initialization_options()
                )


def _reject_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1: `max_tokens: true` would buy a one-token answer.
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


NotBool = BeforeValidator(_reject_bool)


def _ok(result: BaseModel) -> CallToolResult:
    # Structured content keeps its nulls (the schema promises the fields); the text copy, which
    # the host's model reads, drops them to save tokens.
    data = result.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=result.model_dump_json(exclude_none=True))],
        structured_content=data,
    )


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def payer_of(
    ctx: Context,
    stdio_session: str,
    sessions: IssuedSessions | None,
    *,
    shared_ledger: bool = False,
) -> Payer:
    """Who pays for this request, and which session budget it draws on (README, "Session
    budgets"): the stdio process; over HTTP, an MCP session this server issued to this very
    identity; or, without one, the identity on this server since it started. Never one bucket
    for two identities.

    The Mcp-Session-Id header is the client's word. It names a budget only when this server
    issued that id to the same identity and the request came through the handshake era's
    sessions, where the SDK routed it to that very session; a made-up id, another identity's,
    or any id on a session-less (2026-07-28) request, is the identity's session-less budget.
    """
    headers = ctx.headers
    if headers is None:
        return Payer(scope=stdio_session)
    name = identity_name(ctx)
    if shared_ledger:
        # A team's instances on one ledger: the identity's day is the budget, on every instance.
        return Payer(identity=name, scope="team", per_session=False, remote=True)
    session_id = headers.get("mcp-session-id")
    if (
        session_id
        and sessions is not None
        and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
        and sessions.knows(session_id)
        and sessions.owner(session_id) == name
    ):
        return Payer(identity=name, scope=f"http-{session_id}", remote=True)
    return Payer(identity=name, scope=f"{stdio_session}-http-{name}", remote=True)


def payer_principal(request_context: Any) -> str | None:
    """Whom a sealed request_state belongs to: the identity the HTTP transport authenticated
    (None on stdio, where the process is one person's)."""
    headers = getattr(request_context.request, "headers", None)
    return headers.get(IDENTITY_HEADER) if headers is not None else None


def identity_name(ctx: Context) -> str:
    """Who is calling: the identity the HTTP transport's authentication found (it sets this
    header itself, after removing any a client sent), else the one local user."""
    headers = ctx.headers
    name = headers.get(IDENTITY_HEADER) if headers is not None else None
    return name or DEFAULT_IDENTITY


Work = Callable[[Rounds], Awaitable[BaseModel]]


async def answer(call: Awaitable[BaseModel]) -> CallToolResult:
    """A call that never asks its client anything: its result, or its error as one sentence."""
    try:
        return _ok(await call)
    except BlockrunError as failure:
        return _error(failure.message)


async def run(ctx: Context, work: Work) -> CallToolResult | InputRequiredResult:
    """One tool call: its result, its error as one sentence, or (2026-07-28) the question its
    client must answer before it can go on, with nothing signed."""
    rounds = Rounds.of(ctx)
    try:
        return _ok(await work(rounds))
    except InputRequired as needed:
        return rounds.ask_later(needed)
    except BlockrunError as failure:
        return _error(failure.message)


def build_server(
    service: BlockrunService,
    stdio_session: str | None = None,
    *,
    sessions: IssuedSessions | None = None,
    identities: Identities | None = None,
    state_key: bytes | None = None,
) -> MCPServer:
    stdio_key = stdio_session or service.new_session_key()

    @asynccontextmanager
    async def lifespan(server: MCPServer) -> Any:
        async with anyio.create_task_group() as background:
            background.start_soon(service.open_ledger_early)
            background.start_soon(service.reconcile_periodically)
            try:
                yield {}
            finally:
                background.cancel_scope.cancel()
                await service.aclose()

    mcp = LeanMCPServer(
        "blockrun",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
        lifespan=lifespan,
        # What a 2026-07-28 client brings back between rounds (the roots, the sum asked about)
        # is sealed for this tool, these arguments and this payer, for ten minutes.
        request_state_security=RequestStateSecurity(
            keys=[state_key or os.urandom(32)],
            ttl=STATE_TTL_SECONDS,
            bind_principal=payer_principal,
        ),
    )

    def payer_here(ctx: Context) -> Payer:
        return payer_of(ctx, stdio_key, sessions, shared_ledger=service.config.shared_ledger)

    def identity_of(payer: Payer) -> Identity | None:
        return identities.get(payer.identity) if identities is not None else None

    def budget_of(caller: Caller) -> SessionBudget:
        return service.budget(caller.payer, identity_of(caller.payer))

    async def caller_of(ctx: Context, rounds: Rounds, *, files: bool = False) -> Caller:
        """What the service knows of this call's caller, with who pays, computed once here.
        Raises InputRequired when the client's roots must be asked for first (2026-07-28)."""
        payer = payer_here(ctx)

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        return Caller(
            payer=payer,
            # Over HTTP a client's roots name its own disk: never read here.
            roots=await rounds.roots() if files and not payer.remote else None,
            workspace=service.remote_workspace(identity_of(payer)) if payer.remote else None,
            confirm=rounds.confirm(),
            progress=progress,
        )

    @mcp.tool(
        description="Ask another AI model a question; paid in USDC within budget.", annotations=PAID
    )
    async def ask_model(
        prompt: str,
        ctx: Context,
        model: Annotated[str | None, Field(description="default: a cheap capable model")] = None,
        system: str | None = None,
        max_tokens: Annotated[int | None, Field(description="default 1024"), NotBool] = None,
        temperature: Annotated[float | None, Field(description="0-2"), NotBool] = None,
        files: Annotated[list[str] | None, Field(description="workspace paths or globs")] = None,
        thread_id: Annotated[str | None, Field(description="continue this conversation")] = None,
        effort: Annotated[
            Literal["low", "medium", "high"] | None, Field(description="reasoning (OpenAI)")
        ] = None,
    ) -> Annotated[CallToolResult, AskResult]:
        async def work(rounds: Rounds) -> AskResult:
            caller = await caller_of(ctx, rounds, files=bool(files))
            budget = budget_of(caller)
            return await service.chat.ask(
                budget,
                prompt,
                model,
                system,
                max_tokens,
                temperature,
                files,
                thread_id,
                effort,
                caller,
            )

        return await run(ctx, work)

    @mcp.tool(
        description="Ask 2-8 models at once; every quote checked before paying.",
        annotations=PAID,
    )
    async def ask_models(
        prompt: str,
        models: list[str],
        ctx: Context,
        system: str | None = None,
        files: list[str] | None = None,
        max_tokens: Annotated[int | None, NotBool] = None,
        effort: Literal["low", "medium", "high"] | None = None,
        synthesize_with: Annotated[
            str | None, Field(description="model to compare answers")
        ] = None,
        max_cost_usd: Annotated[float | None, NotBool] = None,
    ) -> Annotated[CallToolResult, ConsultResult]:
        async def work(rounds: Rounds) -> ConsultResult:
            caller = await caller_of(ctx, rounds, files=bool(files))
            budget = budget_of(caller)
            return await service.consult.ask(
                budget,
                prompt,
                models,
                system,
                files,
                max_tokens,
                effort,
                synthesize_with,
                max_cost_usd,
                caller,
            )

        return await run(ctx, work)

    @mcp.tool(
        description="A cheaper model does a task alone, reading the workspace; paid per step.",
        annotations=PAID,
    )
    async def delegate(
        task: str,
        ctx: Context,
        model: str | None = None,
        files: Annotated[list[str] | None, Field(description="start context")] = None,
        max_steps: Annotated[int | None, Field(description="default 8, max 30"), NotBool] = None,
        max_cost_usd: Annotated[
            float | None, Field(description="whole task; default per-call cap"), NotBool
        ] = None,
        effort: Literal["low", "medium", "high"] | None = None,
    ) -> Annotated[CallToolResult, DelegateResult]:
        async def work(rounds: Rounds) -> DelegateResult:
            caller = await caller_of(ctx, rounds, files=True)
            return await service.delegation.run(
                budget_of(caller), task, model, files, max_steps, max_cost_usd, effort, caller
            )

        return await run(ctx, work)

    @mcp.tool(
        description="List recent conversations, or one's turns by thread_id.", annotations=LOCAL
    )
    async def threads(
        ctx: Context,
        thread_id: str | None = None,
    ) -> Annotated[CallToolResult, ThreadsResult]:
        payer = payer_here(ctx)
        return await answer(service.account.threads(thread_id, payer.identity))

    @mcp.tool(description="List models with USD prices per 1M tokens.", annotations=LOCAL)
    async def list_models(
        category: Annotated[
            str | None, Field(description="chat, reasoning, coding, vision, image, video")
        ] = None,
        provider: Annotated[str | None, Field(description="e.g. openai, anthropic, google")] = None,
    ) -> Annotated[CallToolResult, ModelList]:
        return await answer(service.models.list(category, provider))

    @mcp.tool(description="Estimate a call's cost in USD, free and offline.", annotations=LOCAL)
    async def estimate_cost(
        model: str,
        ctx: Context,
        prompt: str | None = None,
        max_tokens: Annotated[int | None, NotBool] = None,
        size: Annotated[str | None, Field(description="e.g. 1024x1024")] = None,
        duration_seconds: Annotated[float | None, NotBool] = None,
        files: list[str] | None = None,
    ) -> Annotated[CallToolResult, Estimate]:
        async def work(rounds: Rounds) -> Estimate:
            caller = await caller_of(ctx, rounds, files=bool(files))
            return await service.models.estimate(
                model, prompt, max_tokens, size, duration_seconds, files, caller
            )

        return await run(ctx, work)

    @mcp.tool(
        description="Generate an image; saves it locally and returns the path.", annotations=PAID
    )
    async def generate_image(
        prompt: str,
        ctx: Context,
        model: str | None = None,
        size: Annotated[str | None, Field(description="e.g. 1024x1024")] = None,
    ) -> Annotated[CallToolResult, ImageResult]:
        async def work(rounds: Rounds) -> ImageResult:
            caller = await caller_of(ctx, rounds)
            return await service.images.generate(budget_of(caller), prompt, model, size, caller)

        return await run(ctx, work)

    @mcp.tool(
        description="Generate a video and save it. If it returns status running, call again with job_id (no new payment).",
        annotations=PAID,
    )
    async def generate_video(
        ctx: Context,
        prompt: str | None = None,
        model: str | None = None,
        duration_seconds: Annotated[float | None, NotBool] = None,
        image_url: Annotated[str | None, Field(description="start frame")] = None,
        job_id: Annotated[str | None, Field(description="resume this job")] = None,
    ) -> Annotated[CallToolResult, VideoResult]:
        async def work(rounds: Rounds) -> VideoResult:
            caller = await caller_of(ctx, rounds)
            return await service.video.generate(
                budget_of(caller), prompt, model, duration_seconds, image_url, job_id, caller
            )

        return await run(ctx, work)

    @mcp.tool(
        description="Budget limits, spend and recent receipts; can lower the session limit.",
        meta=mcp_app.TOOL_META,  # MCP Apps hosts show the dashboard beside the result
    )
    async def budget(
        ctx: Context,
        set_session_limit_usd: Annotated[
            float | None, Field(description="lower only"), NotBool
        ] = None,
    ) -> Annotated[CallToolResult, BudgetResult]:
        payer = payer_here(ctx)
        view: list[dict[str, Any] | None] = []

        async def report() -> BudgetResult:
            budget = service.budget(payer, identity_of(payer))
            result = await off_loop(service.account.budget, budget, set_session_limit_usd)
            view.append(await off_loop(mcp_app.result_meta, service, budget))
            return result

        answered = await answer(report())
        if view and view[0] is not None:
            # The page's data, beside what the SDK may put there; hosts keep _meta from the model.
            answered.meta = {**(answered.meta or {}), **view[0]}
        return answered

    @mcp.resource(
        mcp_app.URI,
        name="dashboard",
        title="blockrun spend dashboard",
        description="The budget tool's view: limits, spend per day, pending payments, receipts.",
        mime_type=mcp_app.MIME_TYPE,
        meta=mcp_app.RESOURCE_META,
    )
    def dashboard() -> str:
        return mcp_app.app_page()

    @mcp.tool(
        description="The paying wallet's address and network, and how to fund it.",
        annotations=LOCAL,
    )
    async def wallet() -> Annotated[CallToolResult, WalletResult]:
        try:
            return _ok(service.account.wallet())
        except BlockrunError as failure:
            return _error(failure.message)

    return mcp
