"""Typed requests and answers of the BlockRun gateway, tolerant of both catalog shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blockrun_mcp.x402.models import SettlementReceipt


class CatalogEntry(BaseModel):
    """One model, normalized from either /v1/models shape. Prices in USD per million tokens."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str = ""
    description: str = ""
    provider: str = ""
    input_price: float = 0.0
    output_price: float = 0.0
    context_window: int | None = None
    max_output: int | None = None
    categories: list[str] = Field(default_factory=list)
    available: bool = True
    flat_price: float | None = None  # per image, when the catalog has one
    size_prices: dict[str, float] = Field(default_factory=dict)  # per image, by size
    price_per_second: float | None = None  # video
    max_duration_seconds: float | None = None

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
        pricing = item.get("pricing") if isinstance(item.get("pricing"), dict) else {}
        model_id = str(item.get("id", ""))
        provider = item.get("provider") or (model_id.split("/", 1)[0] if "/" in model_id else "")
        categories = item.get("categories")
        return cls(
            id=model_id,
            name=item.get("name") or model_id,
            description=item.get("description") or "",
            provider=str(provider),
            input_price=_first(item.get("inputPrice"), pricing.get("input"), default=0.0),
            output_price=_first(item.get("outputPrice"), pricing.get("output"), default=0.0),
            context_window=item.get("context_window") or item.get("contextWindow"),
            max_output=item.get("max_output") or item.get("maxOutput"),
            categories=[str(c) for c in categories] if isinstance(categories, list) else [],
            available=bool(item.get("available", True)),
            flat_price=_first(item.get("flatPrice"), pricing.get("flat"), default=None),
            price_per_second=_first(
                item.get("pricePerSecond"), pricing.get("per_second"), default=None
            ),
            size_prices=_size_prices(item.get("sizePrices") or pricing.get("sizes")),
            max_duration_seconds=item.get("max_duration_seconds") or item.get("maxDuration"),
        )


def _size_prices(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    prices = {}
    for size, price in value.items():
        number = _first(price, default=None)
        if number is not None and number >= 0:
            prices[str(size)] = number
    return prices


def _first(*values: Any, default: float | None) -> float | None:
    for value in values:
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return default


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


class ChatAnswer(BaseModel):
    model: str
    content: str
    finish_reason: str | None
    usage: Usage = Field(default_factory=Usage)
    complete: bool = True  # False when a stream ended before its finish


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
