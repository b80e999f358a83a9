"""Request bodies of the paid endpoints, validated before any 402 is issued (as the gateway does).

Each `parse_*` returns a typed request carrying its catalog entry and its price, or raises
`BadRequest` with a sentence naming the field at fault.
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from blockrun_mcp.sandbox import quotes
from blockrun_mcp.sandbox.catalog import (
    ADAPTIVE_THINKING_MODELS,
    CATALOG,
    DEFAULT_IMAGE_SIZE,
    Kind,
    ModelEntry,
    find_model,
)

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


class ResponsesBody(_Body):
    input: str | list[Any]
    instructions: str | None = None
    max_output_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: Literal[False] = False


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


def _max_tokens(entry: ModelEntry, requested: int | None) -> int:
    max_tokens = requested if requested is not None else quotes.DEFAULT_MAX_TOKENS
    if max_tokens > entry.max_output:
        raise BadRequest(
            f"max_tokens {max_tokens} exceeds {entry.id}'s maximum output of {entry.max_output}"
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


def responses_messages(body: ResponsesBody) -> list[dict[str, Any]]:
    """The Responses API input as chat messages, so it is quoted by the same formula."""
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        messages.append({"role": "user", "content": body.input})
    else:
        for item in body.input:
            if isinstance(item, dict):
                messages.append({"role": item.get("role", "user"), "content": item.get("content")})
            elif isinstance(item, str):
                messages.append({"role": "user", "content": item})
    if not messages:
        raise BadRequest("invalid 'input': it holds no messages")
    return messages


def parse_responses(raw: Any) -> PricedRequest:
    if isinstance(raw, dict) and raw.get("stream") is True:
        raise BadRequest(
            "the sandbox serves /v1/responses unstreamed; stream with /v1/chat/completions"
        )
    body = _validate(ResponsesBody, raw)
    entry = _model(body.model, "chat")
    if entry.provider != "openai":
        raise BadRequest(
            f"/v1/responses serves OpenAI models only; use /v1/chat/completions for {entry.id}"
        )
    max_tokens = _max_tokens(entry, body.max_output_tokens)
    messages = responses_messages(body)
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
