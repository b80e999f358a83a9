"""Typed requests and answers of the BlockRun gateway, tolerant of both catalog shapes."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blockrun_mcp.x402.models import SettlementReceipt

# Far above any real price (per million tokens, per image, per second of video): a catalog
# saying more is broken or hostile, and its number must not reach an estimate or a budget.
MAX_PRICE_USD = 1_000_000.0
MAX_COUNT = 10**12  # tokens of context or output; more is not a real model
MAX_DURATION_SECONDS = 86_400.0

Price = Annotated[float, Field(ge=0, le=MAX_PRICE_USD, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class CatalogEntry(BaseModel):
    """One model, normalized from either /v1/models shape. Prices in USD per million tokens.

    Every price is a finite number from 0 to MAX_PRICE_USD: NaN, infinity or a negative number
    can never become a price, whoever builds the entry.
    """

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str = ""
    description: str = ""
    provider: str = ""
    input_price: Price = 0.0
    output_price: Price = 0.0
    context_window: Count | None = None
    max_output: Count | None = None
    categories: list[str] = Field(default_factory=list)
    available: bool = True
    flat_price: Price | None = None  # per image, when the catalog has one
    size_prices: dict[str, Price] = Field(default_factory=dict)  # per image, by size
    price_per_second: Price | None = None  # video
    max_duration_seconds: float | None = Field(
        None, gt=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False
    )

    @property
    def is_free(self) -> bool:
        return (
            self.input_price == 0
            and self.output_price == 0
            and not self.flat_price
            and not self.price_per_second
        )

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> CatalogEntry:
        """The entry of one catalog item. A field of the wrong type is left out (a price that is
        not a number at all is no price); a price that is a number but cannot be one (NaN,
        infinite, negative, absurdly large) raises ValueError: that entry is unusable.
        """
        pricing = item.get("pricing") if isinstance(item.get("pricing"), dict) else {}
        model_id = str(item.get("id", ""))
        provider = _text(item.get("provider")) or (
            model_id.split("/", 1)[0] if "/" in model_id else ""
        )
        categories = item.get("categories")
        return cls(
            id=model_id,
            name=_text(item.get("name")) or model_id,
            description=_text(item.get("description")),
            provider=provider,
            input_price=_first(item.get("inputPrice"), pricing.get("input"), default=0.0),
            output_price=_first(item.get("outputPrice"), pricing.get("output"), default=0.0),
            context_window=_count(item.get("context_window"), item.get("contextWindow")),
            max_output=_count(item.get("max_output"), item.get("maxOutput")),
            categories=[c for c in categories if isinstance(c, str)]
            if isinstance(categories, list)
            else [],
            available=bool(item.get("available", True)),
            flat_price=_first(item.get("flatPrice"), pricing.get("flat"), default=None),
            price_per_second=_first(
                item.get("pricePerSecond"), pricing.get("per_second"), default=None
            ),
            size_prices=_size_prices(item.get("sizePrices") or pricing.get("sizes")),
            max_duration_seconds=_seconds(
                item.get("max_duration_seconds"), item.get("maxDuration")
            ),
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _size_prices(value: Any) -> dict[str, float]:
    """The per-size prices that are possible prices; the others are left out."""
    if not isinstance(value, dict):
        return {}
    prices = {}
    for size, price in value.items():
        number = _number(price)
        if number is not None and 0 <= number <= MAX_PRICE_USD:
            prices[str(size)] = number
    return prices


def _first(*values: Any, default: float | None) -> float | None:
    """The first value that is a number (or a numeric string) as a price, else `default`.
    A number that cannot be a price raises ValueError rather than be passed over."""
    for value in values:
        number = _number(value)
        if number is None:
            continue
        if not 0 <= number <= MAX_PRICE_USD:  # also false for NaN
            raise ValueError(f"{number!r} is not a price")
        return number
    return default


def _count(*values: Any) -> int | None:
    """The first value that is a whole number from 1 to MAX_COUNT, else None."""
    for value in values:
        number = _number(value)
        if number is not None and 1 <= number <= MAX_COUNT and number == int(number):
            return int(number)
    return None


def _seconds(*values: Any) -> float | None:
    for value in values:
        number = _number(value)
        if number is not None and 0 < number <= MAX_DURATION_SECONDS:
            return number
    return None


def _number(value: Any) -> float | None:
    """`value` as a float when it is a number or a numeric string; None when it is not one.
    (NaN and the infinities come back as themselves; a number beyond a float is infinity.)"""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond any float
        return math.inf
    except ValueError:
        return None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model: str
    messages: list[ChatMessage]
    max_tokens: int = 1024
    temperature: float | None = None

    def wire(self, *, stream: bool) -> dict[str, Any]:
        body = self.model_dump(exclude_none=True)
        if stream:
            body["stream"] = True
        return body


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @property
    def reasoning_tokens(self) -> int:
        """completion_tokens_details.reasoning_tokens (chat) or output_tokens_details (Responses)."""
        for key in ("completion_tokens_details", "output_tokens_details"):
            details = (self.model_extra or {}).get(key)
            if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
                return max(0, details["reasoning_tokens"])
        return 0

    @classmethod
    def from_responses(cls, usage: dict[str, Any]) -> Usage:
        """The Responses API's usage (input/output tokens) in chat terms."""
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
        return cls.model_validate(
            {
                **usage,
                "prompt_tokens": prompt if isinstance(prompt, int) else 0,
                "completion_tokens": completion if isinstance(completion, int) else 0,
                "total_tokens": usage.get("total_tokens")
                if isinstance(usage.get("total_tokens"), int)
                else 0,
            }
        )


class ToolCall(BaseModel):
    """One function call a model asked for (OpenAI's `tool_calls` entry, or a Responses
    `function_call` item): its id to answer, the function's name, its arguments as sent."""

    id: str
    name: str
    arguments: str

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


class ChatAnswer(BaseModel):
    model: str
    content: str
    finish_reason: str | None
    usage: Usage = Field(default_factory=Usage)
    complete: bool = True  # False when a stream ended before its finish
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ToolChatRequest(BaseModel):
    """A chat request offering the model functions to call (OpenAI function calling). The
    messages are already in wire form: assistant turns with `tool_calls`, `tool` results."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    max_tokens: int = 1024

    def wire(self, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "tools": self.tools,
            "tool_choice": "auto",
            "max_tokens": self.max_tokens,
        }
        if stream:
            body["stream"] = True
        return body


EFFORTS = ("low", "medium", "high")


class ResponsesRequest(BaseModel):
    """POST /v1/responses (OpenAI models): reasoning effort, instructions, the turns as input."""

    model: str
    messages: list[ChatMessage]  # system messages become `instructions`
    max_output_tokens: int
    effort: str

    def wire(self, *, stream: bool) -> dict[str, Any]:
        return responses_body(
            self.model,
            [{"role": m.role, "content": m.content} for m in self.messages if m.role != "system"],
            "\n\n".join(m.content for m in self.messages if m.role == "system"),
            self.max_output_tokens,
            self.effort,
            stream=stream,
        )


def responses_body(
    model: str,
    items: list[dict[str, Any]],
    system: str,
    max_output_tokens: int,
    effort: str,
    *,
    stream: bool,
    **extra: Any,
) -> dict[str, Any]:
    """A /v1/responses body: the system prompt as `instructions`, nothing stored upstream."""
    body: dict[str, Any] = {
        "model": model,
        "input": items,
        **extra,
        "max_output_tokens": max_output_tokens,
        "reasoning": {"effort": effort},
        "store": False,  # the gateway keeps no state: every turn is resent
    }
    if system:
        body["instructions"] = system
    if stream:
        body["stream"] = True
    return body


class ResponsesToolRequest(BaseModel):
    """POST /v1/responses offering functions, with a reasoning effort: where OpenAI takes tools
    and reasoning together (chat completions refuses the pair). The messages are chat's wire
    form (as ToolChatRequest's), turned into Responses input items here."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]  # chat's shape: {"type": "function", "function": {...}}
    max_output_tokens: int
    effort: str

    def wire(self, *, stream: bool) -> dict[str, Any]:
        system = "\n\n".join(
            m["content"] for m in self.messages if m["role"] == "system" and m.get("content")
        )
        items: list[dict[str, Any]] = []
        for message in self.messages:
            role = message["role"]
            if role == "tool":
                items.append(
                    {
                        "type": "function_call_output",
                        "call_id": message["tool_call_id"],
                        "output": message["content"],
                    }
                )
            elif role != "system":
                if message.get("content"):
                    items.append({"role": role, "content": message["content"]})
                for call in message.get("tool_calls") or []:
                    items.append(
                        {
                            "type": "function_call",
                            "call_id": call["id"],
                            "name": call["function"]["name"],
                            "arguments": call["function"]["arguments"],
                        }
                    )
        return responses_body(
            self.model,
            items,
            system,
            self.max_output_tokens,
            self.effort,
            stream=stream,
            tools=[{"type": "function", **tool["function"]} for tool in self.tools],
            tool_choice="auto",
        )


class ImageRequest(BaseModel):
    model: str
    prompt: str
    size: str | None = None
    n: int = 1

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ImageData(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    revised_prompt: str | None = None


class VideoRequest(BaseModel):
    model: str
    prompt: str
    duration_seconds: float | None = None
    image_url: str | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class VideoStatus(BaseModel):
    """A poll's answer. status is one of queued, in_progress, completed, failed."""

    id: str
    status: str
    urls: list[str] = Field(default_factory=list)
    error: str | None = None
    receipt: SettlementReceipt | None = None  # the settlement receipt the poll carried


class ImageAnswer(BaseModel):
    """An image request's answer: the images, or (answered 202) the job to poll for them."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    images: list[ImageData]
    paid: Any = Field(exclude=True)  # the payer's PaidResponse
    job: Any = Field(default=None, exclude=True)  # a gateway.VideoJob
