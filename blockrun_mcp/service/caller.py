"""What a tool call knows of its caller: the workspace roots its client offers, the identity
that owns its threads, and how to ask the person (MCP elicitation) or report progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from blockrun_mcp.payments import Confirm

ProgressCallback = Callable[[float, float | None, str], Awaitable[None]]


@dataclass(frozen=True)
class Caller:
    roots: list[str] | None = None  # file:// URIs from roots/list; None: the server's workspace
    owner: str = "default"
    confirm: Confirm | None = None  # None: the client cannot ask the person anything
    progress: ProgressCallback | None = None


NOBODY_IN_PARTICULAR = Caller()
