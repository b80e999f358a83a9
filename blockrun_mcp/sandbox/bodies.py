"""Request bodies of the paid endpoints, validated before any 402 is issued (as the gateway does).

Each `parse_*` returns a typed request carrying its catalog entry and its price, or raises
`BadRequest` with a sentence naming the field at fault.
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from blockrun_mcp.sandbox import quotes
from blockrun_mcp.sandbox.catalog import (
    ADAPTIVE_THINKING_MODELS,
    CATALOG,
    DEFAULT_IMAGE_SIZE,
    Kind,
    ModelEntry,
    find_model,
)
from blockrun_mcp.sandbox.replies import REASONING_EFFORTS

MAX_IMAGES = 4
SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
_B = TypeVar("_B", bound=BaseModel)
_SIZE = re.compile(r"^\d{2,5}x\d{2,5}$")


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Body(BaseModel):
    # Gateways forward fields they do not know, so unknown keys are allowed, not rejected.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Any] | None = None


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    effort: str | None = None  # checked against REASONING_EFFORTS before validation
    summary: str | None = None


class ResponsesBody(_Body):
    input: str | list[Any]
    instructions: str | None = None
    max_output_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: StrictBool = False
    store: StrictBool | None = None  # only false (or absent): see STATELESS_REFUSALS
    background: StrictBool | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None

    @property
    def effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning else None


class ImageBody(_Body):
    prompt: str = Field(min_length=1)
    size: str = DEFAULT_IMAGE_SIZE
    n: StrictInt = Field(default=1, ge=1, le=MAX_IMAGES)
    quality: str | None = None


class Image2ImageBody(ImageBody):
    image: str | None = None
    image_url: str | None = None


class VideoBody(_Body):
    prompt: str = Field(min_length=1)
    duration_seconds: float = Field(default=quotes.DEFAULT_VIDEO_SECONDS, gt=0)
    image_url: str | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    generate_audio: bool | None = None


class PricedRequest(BaseModel):
    """A validated request: what was asked, of which model, for how much."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    entry: ModelEntry
    body: Any
    messages: list[dict[str, Any]] = Field(default_factory=list)
    max_tokens: int = quotes.DEFAULT_MAX_TOKENS
    price_usd: Decimal

    @property
    def amount_atomic(self) -> int:
        return quotes.to_atomic(self.price_usd) if self.price_usd > 0 else 0

    @property
    def is_free(self) -> bool:
        return self.amount_atomic == 0


def _validate(model: type[_B], raw: Any) -> _B:
    if not isinstance(raw, dict):
        raise BadRequest("the request body must be a JSON object")
    if not raw.get("model"):
        raise BadRequest("the request body has no 'model'")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadRequest(f"invalid '{where}': {first['msg']}") from None


def _model(model_id: str, kind: Kind) -> ModelEntry:
    entry = find_model(model_id)
    if entry is None:
        same_kind = [m for m, e in CATALOG.items() if e.kind == kind]
        close = difflib.get_close_matches(model_id, same_kind, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BadRequest(f"unknown model '{model_id}'.{hint} GET /v1/models lists them all.")
    if entry.kind != kind:
        raise BadRequest(f"model '{model_id}' is a {entry.kind} model, not a {kind} model")
    if not entry.available:
        raise BadRequest(f"model '{model_id}' is not available right now")
    return entry


def _max_tokens(entry: ModelEntry, requested: int | None, field: str = "max_tokens") -> int:
    max_tokens = requested if requested is not None else quotes.DEFAULT_MAX_TOKENS
    if max_tokens > entry.max_output:
        raise BadRequest(
            f"{field} {max_tokens} exceeds {entry.id}'s maximum output of {entry.max_output}"
        )
    return max_tokens


def without_dropped_sampling(raw: Any) -> Any:
    """The body as the gateway forwards it: Opus 4.7/4.8 reject sampling parameters upstream, so
    the gateway strips them (before any check of their values) and the call succeeds."""
    if isinstance(raw, dict) and raw.get("model") in ADAPTIVE_THINKING_MODELS:
        return {key: value for key, value in raw.items() if key not in SAMPLING_PARAMETERS}
    return raw


def parse_chat(raw: Any) -> PricedRequest:
    body = _validate(ChatBody, without_dropped_sampling(raw))
    entry = _model(body.model, "chat")
    max_tokens = _max_tokens(entry, body.max_tokens)
    messages = [m.model_dump() for m in body.messages]
    price = quotes.chat_quote_usd(entry, messages, max_tokens)
    return PricedRequest(
        entry=entry, body=body, messages=messages, max_tokens=max_tokens, price_usd=price
    )


# BlockRun's Responses page: upstream calls share one org key, so server-side state is off and
# these are refused with a 400 before any quote, each with the page's reason. The flags are
# refused when true (store: false is fine), the others when present with any value but null.
STATELESS_REFUSALS: dict[str, str] = {
    "store": "store: true is not supported: responses are never retained upstream "
    "(store: false is enforced on every request)",
    "previous_response_id": "previous_response_id is not supported: there are no stored "
    "responses to reference; resend the full context in 'input'",
    "conversation": "conversation is not supported: there is no server-side conversation "
    "state; resend the full context in 'input'",
    "prompt": "prompt is not supported: there are no stored prompt templates",
    "background": "background: true is not supported: background jobs complete after the "
    "HTTP exchange, so there is nothing to bill against",
}
REFUSED_WHEN_TRUE = ("store", "background")
MESSAGE_ROLES = ("user", "assistant", "system", "developer")


def _refuse_stateful(raw: dict[str, Any]) -> None:
    """The stateless gateway's refusals (STATELESS_REFUSALS), in the page's order."""
    for name, why in STATELESS_REFUSALS.items():
        value = raw.get(name)
        refused = (value is True) if name in REFUSED_WHEN_TRUE else (value is not None)
        if refused:
            raise BadRequest(why)


def _check_effort(raw: dict[str, Any]) -> None:
    reasoning = raw.get("reasoning")
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise BadRequest('invalid \'reasoning\': send an object such as {"effort": "high"}')
    effort = reasoning.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        allowed = ", ".join(REASONING_EFFORTS)
        raise BadRequest(f"invalid 'reasoning.effort' {effort!r}: use one of {allowed}")


def _input_item(index: int, item: Any) -> dict[str, Any] | None:
    """One Responses input item as a chat message (None: an item carrying no text to quote)."""
    where = f"input.{index}"
    if isinstance(item, str):
        return {"role": "user", "content": item}
    if not isinstance(item, dict):
        raise BadRequest(f"invalid '{where}': an input item is a string or an object")
    kind = item.get("type", "message")
    if kind == "function_call_output":
        output = item.get("output")
        return {"role": "tool", "content": output if isinstance(output, str | list) else ""}
    if kind != "message":
        return None  # reasoning replays, function calls, ...: accepted, not quoted
    role, content = item.get("role"), item.get("content")
    if role not in MESSAGE_ROLES:
        raise BadRequest(f"invalid '{where}.role' {role!r}: use one of {', '.join(MESSAGE_ROLES)}")
    if not isinstance(content, str | list):
        raise BadRequest(f"invalid '{where}.content': a string or a list of content parts")
    if isinstance(content, list):
        for number, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise BadRequest(
                    f"invalid '{where}.content.{number}': a part is an object with a 'type' "
                    "(input_text, input_image, input_file, output_text)"
                )
    return {"role": role, "content": content}


def responses_messages(body: ResponsesBody) -> list[dict[str, Any]]:
    """The Responses API input as chat messages, so it is quoted by the same formula."""
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        messages.append({"role": "user", "content": body.input})
    else:
        for index, item in enumerate(body.input):
            message = _input_item(index, item)
            if message is not None:
                messages.append(message)
    if not messages:
        raise BadRequest("invalid 'input': it holds no messages")
    return messages


def _responses_model(model_id: str) -> ModelEntry:
    """The page: "the openai/ prefix is optional"; other providers go to Chat Completions."""
    if find_model(model_id) is None and "/" not in model_id:
        model_id = f"openai/{model_id}"
    entry = _model(model_id, "chat")
    if entry.provider != "openai":
        raise BadRequest(
            f"/v1/responses serves OpenAI models only; use /v1/chat/completions for {entry.id}"
        )
    return entry


def parse_responses(raw: Any) -> PricedRequest:
    if isinstance(raw, dict):
        _refuse_stateful(raw)
        _check_effort(raw)
    body = _validate(ResponsesBody, raw)
    entry = _responses_model(body.model)
    max_tokens = _max_tokens(entry, body.max_output_tokens, "max_output_tokens")
    messages = responses_messages(body)
    # The documented quote, whatever the reasoning effort: effort changes what is used, not
    # what is signed (the quote already prices a tenth of max_output_tokens as output).
    price = quotes.chat_quote_usd(entry, messages, max_tokens)
    return PricedRequest(
        entry=entry, body=body, messages=messages, max_tokens=max_tokens, price_usd=price
    )


def _image(raw: Any, model: type[ImageBody], *, edit: bool) -> PricedRequest:
    body = _validate(model, raw)
    entry = _model(body.model, "image")
    if not _SIZE.match(body.size):
        raise BadRequest(f"invalid 'size' {body.size!r}: use WIDTHxHEIGHT such as 1024x1024")
    if edit:
        assert isinstance(body, Image2ImageBody)
        if not entry.edits:
            raise BadRequest(f"model '{entry.id}' does not edit images")
        if not (body.image or body.image_url):
            raise BadRequest("the request body has no 'image' to edit")
    price = quotes.image_quote_usd(entry, body.size, body.n)
    return PricedRequest(entry=entry, body=body, price_usd=price)


def parse_image(raw: Any) -> PricedRequest:
    return _image(raw, ImageBody, edit=False)


def parse_image_edit(raw: Any) -> PricedRequest:
    return _image(raw, Image2ImageBody, edit=True)


def parse_video(raw: Any) -> PricedRequest:
    body = _validate(VideoBody, raw)
    entry = _model(body.model, "video")
    limit = entry.max_duration_seconds or 0
    if body.duration_seconds > limit:
        raise BadRequest(
            f"duration_seconds {body.duration_seconds:g} exceeds {entry.id}'s limit of {limit}"
        )
    price = quotes.video_quote_usd(
        entry, body.duration_seconds, image_input=body.image_url is not None
    )
    return PricedRequest(entry=entry, body=body, price_usd=price)
