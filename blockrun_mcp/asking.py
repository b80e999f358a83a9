"""How a tool call asks its client for something, on both MCP protocol eras.

Two things a call may need from the host: the person's yes to a payment above
BLOCKRUN_CONFIRM_ABOVE_USD, and the host's workspace roots (for `files` on stdio).

- Handshake era (<= 2025-11-25): the server sends `elicitation/create` or `roots/list` in the
  middle of the call and waits for the answer.
- 2026-07-28: there is no back-channel. The call ends with an `input_required` result carrying
  the questions and a sealed `request_state` (the SDK's RequestStateBoundary encrypts it and binds
  it to this tool, these arguments and this payer); the client retries the same call with the
  answers, and the call runs again from the start.

The price is known only in the middle of the call (the gateway's 402, after the files are read
and the thread loaded), so the body itself drives the rounds rather than the SDK's resolvers,
which run before the body and would need a second quote: on the retry the gateway quotes again,
and the payment goes ahead only if that quote is within the amount the person approved; a higher
quote is asked about again. A "no" is final for the call. Nothing is signed in any round that
ends with a question.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from mcp.server.elicitation import render_elicitation_schema
from mcp.server.mcpserver import Context
from mcp_types import (
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
)
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.money import usd_text
from blockrun_mcp.payments import Confirm
from blockrun_mcp.x402.errors import PaymentRefused

log = logging.getLogger("blockrun_mcp")

SESSIONLESS_VERSION = "2026-07-28"  # the first protocol without server-initiated requests
ROOTS_TIMEOUT_SECONDS = 10.0
APPROVAL_KEY = "blockrun_approve_payment"
ROOTS_KEY = "blockrun_workspace_roots"
STATE_VERSION = 1


# What the person answers when a payment above BLOCKRUN_CONFIRM_ABOVE_USD is shown. (No
# docstring: pydantic would make it the form's description, and a host shows it to the person.)
class PaymentApproval(BaseModel):
    model_config = ConfigDict(title="Payment approval")

    approve: bool = Field(description="pay it")


class InputRequired(BlockrunError):
    """Not a failure: the call needs the client's answer first (2026-07-28). Nothing was signed.

    A BlockrunError so every layer that stops a call on a refusal stops it on this too; the
    tool turns it into the `input_required` result instead of an error."""

    def __init__(self, key: str, request: ElicitRequest | ListRootsRequest, **state: Any) -> None:
        super().__init__("waiting for the client's answer; nothing was signed")
        self.key = key
        self.request = request
        self.state = state


def uses_round_trips(ctx: Context) -> bool:
    """True on 2026-07-28 and later: questions go back in an `input_required` result."""
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, SESSIONLESS_VERSION)


@dataclass
class Rounds:
    """One call's exchanges with its client: what earlier rounds established (sealed state)
    and what the client answered to the last round's question."""

    ctx: Context
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx: Context) -> Rounds:
        rounds = cls(ctx)
        if uses_round_trips(ctx) and ctx.request_state:
            # Sealed and verified by the SDK's boundary: only what this server minted, for this
            # tool, these arguments and this payer, within its time to live.
            try:
                state = json.loads(ctx.request_state)
            except ValueError:
                state = None
            if isinstance(state, dict) and state.get("v") == STATE_VERSION:
                rounds.state = state
        return rounds

    @property
    def round_trips(self) -> bool:
        return uses_round_trips(self.ctx)

    def _answer(self, key: str) -> Any:
        responses = self.ctx.input_responses or {}
        return responses.get(key)

    def ask_later(self, needed: InputRequired) -> InputRequiredResult:
        """The result that ends this round: the question, and the state the retry brings back."""
        state = {**self.state, **needed.state, "v": STATE_VERSION}
        return InputRequiredResult(
            input_requests={needed.key: needed.request},
            request_state=json.dumps(state, separators=(",", ":")),
        )

    # --- workspace roots ------------------------------------------------------------------

    async def roots(self) -> list[str] | None:
        """The workspace roots the client offers (file:// URIs), or None when it offers none.

        Raises InputRequired on 2026-07-28 when they have not been asked for yet."""
        capabilities = self.ctx.client_capabilities
        if capabilities is None or capabilities.roots is None:
            return None
        if not self.round_trips:
            return await _roots_in_the_call(self.ctx)
        if "roots" in self.state:
            return list(self.state["roots"])
        answer = self._answer(ROOTS_KEY)
        if answer is None:
            raise InputRequired(ROOTS_KEY, ListRootsRequest())
        try:
            listed = _read_as(ListRootsResult, answer)
        except ValidationError:
            log.warning("the client's roots answer was not a roots list; using the server's")
            return None
        roots = [str(root.uri) for root in listed.roots]
        self.state["roots"] = roots
        return roots

    # --- approving a payment --------------------------------------------------------------

    def confirm(self) -> Confirm | None:
        """How this call asks the person to approve a payment (see payments.Confirm), or None
        when the client cannot ask: then a payment needing approval is refused, unsigned."""
        capabilities = self.ctx.client_capabilities
        elicitation = capabilities.elicitation if capabilities is not None else None
        # A bare `elicitation: {}` means form support; url-only clients cannot show ours.
        if elicitation is None or (elicitation.form is None and elicitation.url is not None):
            return None
        if self.round_trips:
            return self._confirm_by_round_trip
        return self._confirm_in_the_call

    async def _confirm_in_the_call(self, question: str, amount_atomic: int, what: str) -> bool:
        answer = await self.ctx.elicit(question, schema=PaymentApproval)
        if answer.action == "cancel":
            raise Unanswered(amount_atomic, what)
        return answer.action == "accept" and answer.data.approve

    async def _confirm_by_round_trip(self, question: str, amount_atomic: int, what: str) -> bool:
        """Yes when the person approved, in the round just answered, at least this amount for
        the same thing; no when they said no; otherwise the question goes to the client."""
        asked = self.state.get("asked")
        answer = self._answer(APPROVAL_KEY)
        if isinstance(asked, dict) and asked.get("what") == what and answer is not None:
            decided = _approved(answer)
            if decided is None and _cancelled(answer):
                raise Unanswered(amount_atomic, what)
            if decided is False:
                return False
            if decided and amount_atomic <= int(asked.get("amount", -1)):
                return True
        request = ElicitRequest(
            params=ElicitRequestFormParams(
                message=question, requested_schema=render_elicitation_schema(PaymentApproval)
            )
        )
        raise InputRequired(APPROVAL_KEY, request, asked={"amount": amount_atomic, "what": what})


def _cancelled(answer: Any) -> bool:
    try:
        return _read_as(ElicitResult, answer).action == "cancel"
    except ValidationError:
        return False


class Unanswered(PaymentRefused):
    """The approval question was cancelled, not answered: nobody said yes. Nothing was signed."""

    def __init__(self, amount_atomic: int, what: str) -> None:
        super().__init__(
            f"the question whether to pay {usd_text(amount_atomic)} for {what} was cancelled, "
            "not answered (a headless host, such as `claude -p`, cancels every question: answer "
            "it in an interactive session, let a hook accept it, or raise "
            "BLOCKRUN_CONFIRM_ABOVE_USD)",
            limit="declined",
        )


Model = TypeVar("Model", bound=BaseModel)


def _read_as(model: type[Model], answer: Any) -> Model:
    """A client's input response as `model`: the SDK parses each response into whichever input
    result type fits first, so an answer is re-read as the kind its question asked for."""
    wire = (
        answer.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(answer, BaseModel)
        else answer
    )
    return model.model_validate(wire)


def _approved(answer: Any) -> bool | None:
    """True for a yes, False for a no (declined, or approve=false), None when the question was
    cancelled or the answer is not an elicitation answer at all (then it is asked again)."""
    try:
        result = _read_as(ElicitResult, answer)
    except ValidationError:
        return None
    if result.action == "cancel":
        return None
    if result.action != "accept":
        return False
    try:
        return PaymentApproval.model_validate(result.content or {}).approve
    except ValidationError:
        return False


async def _roots_in_the_call(ctx: Context) -> list[str] | None:
    """`roots/list` in the middle of the call (the handshake era)."""
    try:
        with warnings.catch_warnings(), anyio.fail_after(ROOTS_TIMEOUT_SECONDS):
            warnings.simplefilter("ignore")  # deprecated by 2026-07-28, still the way here
            listed = await ctx.session.list_roots()
    except Exception as exc:  # the client failed to answer: fall back, and say so in the log
        log.warning("roots/list failed (%s); using the server's workspace", exc)
        return None
    return [str(root.uri) for root in listed.roots]
