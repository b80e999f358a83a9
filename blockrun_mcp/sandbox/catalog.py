"""The sandbox's model catalog: realistic ids and prices, served in both shapes the gateway uses.

Per-token prices are USD per million tokens, before the 5% platform fee. Image and video prices
come from BlockRun's published tables (see the shared gateway notes) and are final per-image /
per-second prices.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal["chat", "image", "video"]
DEFAULT_IMAGE_SIZE = "1024x1024"


class ModelEntry(BaseModel):
    id: str
    name: str
    description: str
    kind: Kind = "chat"
    input_price: float = 0.0
    output_price: float = 0.0
    context_window: int = 0
    max_output: int = 0
    categories: list[str] = Field(default_factory=list)
    available: bool = True
    flat_price: float | None = Field(default=None, description="USD per image at the default size")
    size_prices: dict[str, float] = Field(
        default_factory=dict, description="USD per image for sizes priced apart from the default"
    )
    edits: bool = Field(default=False, description="served by /v1/images/image2image")
    price_per_second: float | None = None
    max_duration_seconds: int | None = None

    @property
    def provider(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def is_free(self) -> bool:
        return (
            self.kind == "chat"
            and self.input_price == 0
            and self.output_price == 0
            and not self.flat_price
        )

    def image_price(self, size: str) -> float:
        """USD per image at `size`. Sizes the tables do not list cost the default-size price."""
        return self.size_prices.get(size, self.flat_price or 0.0)

    def documented_shape(self) -> dict[str, Any]:
        """The `{"models": [...]}` entry of BlockRun's API docs, plus flat/per-second extras."""
        entry: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "provider": self.provider,
            "inputPrice": self.input_price,
            "outputPrice": self.output_price,
            "context_window": self.context_window,
            "max_output": self.max_output,
            "categories": list(self.categories),
            "available": self.available,
        }
        if self.flat_price is not None:
            entry["flatPrice"] = self.flat_price
            if self.size_prices:
                entry["sizePrices"] = dict(self.size_prices)
        if self.price_per_second is not None:
            entry["pricePerSecond"] = self.price_per_second
            entry["max_duration_seconds"] = self.max_duration_seconds
        return entry

    def data_shape(self) -> dict[str, Any]:
        """The `{"data": [...]}` entry the official SDK has also seen, prices under `pricing`."""
        pricing: dict[str, Any] = {"input": self.input_price, "output": self.output_price}
        if self.flat_price is not None:
            pricing["flat"] = self.flat_price
            if self.size_prices:
                pricing["sizes"] = dict(self.size_prices)
        if self.price_per_second is not None:
            pricing["per_second"] = self.price_per_second
        entry: dict[str, Any] = {
            "id": self.id,
            "object": "model",
            "name": self.name,
            "description": self.description,
            "owned_by": self.provider,
            "provider": self.provider,
            "context_window": self.context_window,
            "max_output": self.max_output,
            "categories": list(self.categories),
            "available": self.available,
            "pricing": pricing,
        }
        if self.max_duration_seconds is not None:
            entry["max_duration_seconds"] = self.max_duration_seconds
        return entry


def _chat(
    model_id: str,
    name: str,
    description: str,
    input_price: float,
    output_price: float,
    context_window: int,
    max_output: int,
    categories: list[str],
) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        name=name,
        description=description,
        input_price=input_price,
        output_price=output_price,
        context_window=context_window,
        max_output=max_output,
        categories=categories,
    )


_ENTRIES: list[ModelEntry] = [
    _chat(
        "openai/gpt-5.2",
        "GPT-5.2",
        "OpenAI's flagship model for reasoning, coding and agentic work.",
        1.75,
        14.0,
        400_000,
        128_000,
        ["chat", "reasoning", "coding", "vision"],
    ),
    _chat(
        "openai/gpt-5-mini",
        "GPT-5 mini",
        "A faster, cheaper GPT-5 for well-defined tasks.",
        0.25,
        2.0,
        400_000,
        128_000,
        ["chat", "reasoning", "coding", "vision"],
    ),
    _chat(
        "openai/gpt-5-nano",
        "GPT-5 nano",
        "The smallest GPT-5: classification, extraction, short answers.",
        0.05,
        0.40,
        400_000,
        128_000,
        ["chat"],
    ),
    _chat(
        "anthropic/claude-opus-4.7",
        "Claude Opus 4.7",
        "Anthropic's most capable model for hard reasoning and long coding tasks.",
        5.0,
        25.0,
        200_000,
        32_000,
        ["chat", "reasoning", "coding", "vision"],
    ),
    _chat(
        "anthropic/claude-sonnet-4.5",
        "Claude Sonnet 4.5",
        "Balanced Claude model, strong at coding and agents.",
        3.0,
        15.0,
        200_000,
        64_000,
        ["chat", "reasoning", "coding", "vision"],
    ),
    _chat(
        "anthropic/claude-haiku-4.5",
        "Claude Haiku 4.5",
        "Fast, inexpensive Claude model.",
        1.0,
        5.0,
        200_000,
        64_000,
        ["chat", "coding", "vision"],
    ),
    _chat(
        "google/gemini-2.5-pro",
        "Gemini 2.5 Pro",
        "Google's thinking model with a million-token context.",
        1.25,
        10.0,
        1_048_576,
        65_536,
        ["chat", "reasoning", "coding", "vision"],
    ),
    _chat(
        "google/gemini-2.5-flash",
        "Gemini 2.5 Flash",
        "Fast Gemini with a million-token context.",
        0.30,
        2.50,
        1_048_576,
        65_536,
        ["chat", "vision"],
    ),
    _chat(
        "deepseek/deepseek-chat",
        "DeepSeek V3.2 Chat",
        "DeepSeek's general chat model, very low cost.",
        0.28,
        0.42,
        128_000,
        8_192,
        ["chat", "coding"],
    ),
    _chat(
        "deepseek/deepseek-reasoner",
        "DeepSeek V3.2 Reasoner",
        "DeepSeek with visible chain-of-thought reasoning.",
        0.28,
        0.42,
        128_000,
        64_000,
        ["chat", "reasoning"],
    ),
    _chat(
        "zai/glm-4.6",
        "GLM-4.6",
        "Zhipu's open-weight model, good at coding.",
        0.60,
        2.20,
        200_000,
        128_000,
        ["chat", "coding"],
    ),
    _chat(
        "moonshot/kimi-k2",
        "Kimi K2",
        "Moonshot's mixture-of-experts model for agentic coding.",
        0.60,
        2.50,
        262_144,
        16_384,
        ["chat", "coding"],
    ),
    _chat(
        "xai/grok-4",
        "Grok 4",
        "xAI's reasoning model.",
        3.0,
        15.0,
        256_000,
        64_000,
        ["chat", "reasoning", "vision"],
    ),
    _chat(
        "nvidia/llama-3.3-nemotron-super-49b",
        "Llama 3.3 Nemotron Super 49B",
        "NVIDIA-hosted free tier model.",
        0.0,
        0.0,
        128_000,
        4_096,
        ["chat"],
    ),
    _chat(
        "nvidia/gpt-oss-120b",
        "gpt-oss-120b",
        "OpenAI's open-weight model, NVIDIA-hosted free tier.",
        0.0,
        0.0,
        128_000,
        8_192,
        ["chat", "reasoning", "coding"],
    ),
    ModelEntry(
        id="openai/gpt-image-1",
        name="GPT Image 1",
        description="OpenAI image generation and editing; answers with a data URI.",
        kind="image",
        categories=["image"],
        flat_price=0.021,
        edits=True,
    ),
    ModelEntry(
        id="openai/gpt-image-2",
        name="GPT Image 2",
        description="OpenAI's newer image model; answers with a data URI.",
        kind="image",
        categories=["image"],
        flat_price=0.063,
        size_prices={"1536x1024": 0.126, "1024x1536": 0.126},
        edits=True,
    ),
    ModelEntry(
        id="google/nano-banana",
        name="Nano Banana",
        description="Gemini image generation and editing.",
        kind="image",
        categories=["image"],
        flat_price=0.053,
        edits=True,
    ),
    ModelEntry(
        id="openai/dall-e-3",
        name="DALL-E 3",
        description="OpenAI's DALL-E 3; URLs expire after about an hour.",
        kind="image",
        categories=["image"],
        flat_price=0.042,
        size_prices={"1792x1024": 0.084, "1024x1792": 0.084},
    ),
    ModelEntry(
        id="zai/cogview-4",
        name="CogView-4",
        description="Zhipu's text-to-image model.",
        kind="image",
        categories=["image"],
        flat_price=0.015,
        size_prices={"1440x1440": 0.02},
    ),
    ModelEntry(
        id="xai/grok-imagine-video",
        name="Grok Imagine Video",
        description="xAI text/image to video.",
        kind="video",
        categories=["video"],
        price_per_second=0.05,
        max_duration_seconds=15,
    ),
    ModelEntry(
        id="bytedance/seedance-1.5-pro",
        name="Seedance 1.5 Pro",
        description="ByteDance text/image to video with audio.",
        kind="video",
        categories=["video"],
        price_per_second=0.092,
        max_duration_seconds=12,
    ),
]

CATALOG: dict[str, ModelEntry] = {entry.id: entry for entry in _ENTRIES}


def find_model(model_id: str) -> ModelEntry | None:
    return CATALOG.get(model_id)


def catalog_body(shape: str) -> dict[str, Any]:
    """The /v1/models body in the documented shape (`models`) or the SDK-seen one (`data`)."""
    if shape == "data":
        return {"object": "list", "data": [entry.data_shape() for entry in _ENTRIES]}
    return {"models": [entry.documented_shape() for entry in _ENTRIES]}
