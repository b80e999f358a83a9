"""What a tool call knows of its caller: who pays (identity and budget scope), where its
`files` may come from, and how to ask the person (approval) or report progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from blockrun_mcp.ledger import DEFAULT_IDENTITY
from blockrun_mcp.payments import Confirm

ProgressCallback = Callable[[float, float | None, str], Awaitable[None]]


@dataclass(frozen=True)
class Payer:
    """Who pays for a call, computed once per request from what the transport authenticated.

    Budgets, receipts, video jobs and threads are keyed by it and looked up through it: another
    payer's ids are simply unknown. `scope` names the session budget (see README, "Session
    budgets"): the stdio process; an MCP session over HTTP, of the identity that opened it; or,
    over HTTP without one, the identity on this server since it started.
    """

    identity: str = DEFAULT_IDENTITY
    scope: str = "local"
    per_session: bool = True  # False: a team's shared ledger, where the identity's day budgets
    remote: bool = False  # over HTTP: the client's machine is not this one (see Caller.workspace)


LOCAL_PAYER = Payer()


@dataclass(frozen=True)
class Caller:
    payer: Payer = LOCAL_PAYER
    # file:// URIs the client offers (stdio only: over HTTP they name the client's disk)
    roots: list[str] | None = None
    # Over HTTP: the operator's workspace for this identity (tokens file, else BLOCKRUN_WORKSPACE);
    # None there means `files` is refused. Locally: unused (the client's roots, the configured
    # workspace, then the start directory).
    workspace: list[Path] | None = None
    confirm: Confirm | None = None  # None: the client cannot ask the person anything
    progress: ProgressCallback | None = None

    @property
    def owner(self) -> str:
        """Whose threads these are."""
        return self.payer.identity


NOBODY_IN_PARTICULAR = Caller()
