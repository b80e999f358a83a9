"""The sandbox's model catalog: BlockRun's published catalog, served in the shapes clients read.

The source of truth is BlockRun's own pages (the Models page, models.txt, and the Image generation
page, images.txt); tests/test_sandbox_catalog.py parses them and fails when this table drifts.

- Per-token prices are USD per million tokens, the provider rates the Models page lists; the 5%
  platform fee is added by the quote (quotes.py). Context windows are the page's figures ("400K"
  is 400,000) except GPT-5.5, whose exact 1,050,000 the page's example response gives.
- Max outputs: the page gives GPT-5.5's only (128K). The others are not published with the
  pages; they are plausible figures, mostly those of BlockRun's model-catalog repository
  (github.com/BlockRunAI/model-catalog), and nothing checks them. Opus 4.7 keeps the 32,000 the
  sandbox always had (the budget tests spend Opus at exactly its maximum output).
- Categories: the page's example gives GPT-5.5's; the others are chosen from each model's
  description, within the page's four (chat, reasoning, coding, vision).
- Image prices are the Image generation page's per-size table (fee included, as charged). Video
  prices are the Models page's per-second figures, fee included (they match the clip prices it
  quotes); Seedance 2.0 and 2.0 Fast cost less with an input image, as the page says.
- Not served: models the pages do not list. The old sandbox's openai/gpt-5-nano (superseded by
  openai/gpt-5.4-nano at the same $0.05/$0.40 per M, which the tests now use), claude-sonnet-4.5,
  glm-4.6, kimi-k2, grok-4 and nemotron-super-49b are gone. BlockRun keeps superseded ids routable
  but hides them from the catalog; which ids those are is not published, so the sandbox, whose
  clients look every model up in the catalog first, does not guess.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal["chat", "image", "video"]
DEFAULT_IMAGE_SIZE = "1024x1024"

# Category sets of the Models page ("chat", "reasoning", "coding", "vision").
ALL_ROUND = ["chat", "reasoning", "coding", "vision"]
REASONING_CODER = ["chat", "reasoning", "coding"]
CODER_WITH_VISION = ["chat", "coding", "vision"]

# Opus 4.7 and 4.8 reject sampling parameters upstream, so the gateway strips them (and the call
# succeeds); they may also refuse with finish_reason "content_filter" (see replies.py).
ADAPTIVE_THINKING_MODELS = frozenset({"anthropic/claude-opus-4.7", "anthropic/claude-opus-4.8"})


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
    image_input_price_per_second: float | None = Field(
        default=None, description="USD per second when the video starts from an input image"
    )
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

    def video_price_per_second(self, *, image_input: bool) -> float:
        """USD per second; an input image uses the cheaper image-to-video rate where one exists."""
        if image_input and self.image_input_price_per_second is not None:
            return self.image_input_price_per_second
        return self.price_per_second or 0.0

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

    def pricing(self) -> dict[str, Any]:
        """Prices under `pricing`, as the official SDKs have seen them."""
        pricing: dict[str, Any] = {"input": self.input_price, "output": self.output_price}
        if self.flat_price is not None:
            pricing["flat"] = self.flat_price
            if self.size_prices:
                pricing["sizes"] = dict(self.size_prices)
        if self.price_per_second is not None:
            pricing["per_second"] = self.price_per_second
        return pricing

    def data_shape(self) -> dict[str, Any]:
        """The `{"data": [...]}` entry the official SDK has also seen, prices under `pricing`."""
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
            "pricing": self.pricing(),
        }
        if self.max_duration_seconds is not None:
            entry["max_duration_seconds"] = self.max_duration_seconds
        return entry

    def listing(self) -> dict[str, Any]:
        """One entry every reader understands: the documented fields plus `object`, `owned_by`
        and `pricing`, so the docs' readers and the SDKs' `pricing` readers agree on prices."""
        return {
            **self.documented_shape(),
            "object": "model",
            "owned_by": self.provider,
            "pricing": self.pricing(),
        }


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
        categories=list(categories),
    )


def _image(
    model_id: str,
    name: str,
    description: str,
    price: float,
    size_prices: dict[str, float] | None = None,
    *,
    edits: bool = False,
) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        name=name,
        description=description,
        kind="image",
        categories=["image"],
        flat_price=price,
        size_prices=size_prices or {},
        edits=edits,
    )


def _video(
    model_id: str,
    name: str,
    description: str,
    per_second: float,
    max_seconds: int,
    image_input_per_second: float | None = None,
) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        name=name,
        description=description,
        kind="video",
        categories=["video"],
        price_per_second=per_second,
        image_input_price_per_second=image_input_per_second,
        max_duration_seconds=max_seconds,
    )


_OPENAI: list[ModelEntry] = [
    _chat(
        "openai/gpt-5.5",
        "GPT-5.5",
        # The page's example response, word for word (its categories too).
        "OpenAI's flagship — first fully retrained base since GPT-4.5; 1M context, 128K output, "
        "native agent + computer use",
        5.00,
        30.00,
        1_050_000,
        128_000,
        CODER_WITH_VISION,
    ),
    _chat(
        "openai/gpt-5.4",
        "GPT-5.4",
        "Frontier GPT-5.4 with a 1M context, computer use and thinking mode.",
        2.50,
        15.00,
        1_000_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "openai/gpt-5.4-pro",
        "GPT-5.4 Pro",
        "GPT-5.4 with maximum compute for the hardest problems.",
        30.00,
        180.00,
        1_000_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "openai/gpt-5.4-mini",
        "GPT-5.4 Mini",
        "The strongest mini model, for coding, computer use and subagents.",
        0.75,
        4.50,
        400_000,
        128_000,
        CODER_WITH_VISION,
    ),
    _chat(
        "openai/gpt-5.4-nano",
        "GPT-5.4 Nano",
        "The fastest, cheapest GPT-5.4: classification, extraction, short answers.",
        0.05,
        0.40,
        128_000,
        128_000,
        ["chat"],
    ),
    _chat(
        "openai/gpt-5.3",
        "GPT-5.3",
        "GPT-5.3 for reasoning, coding and agentic work.",
        2.00,
        12.00,
        400_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "openai/gpt-5.3-codex",
        "GPT-5.3 Codex",
        "Agentic coding model: reasoning, tool use and long execution.",
        2.00,
        12.00,
        400_000,
        128_000,
        REASONING_CODER,
    ),
    _chat(
        "openai/gpt-5.2",
        "GPT-5.2",
        "OpenAI's flagship model for reasoning, coding and agentic work.",
        1.75,
        14.00,
        400_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "openai/gpt-5.2-pro",
        "GPT-5.2 Pro",
        "GPT-5.2 with more compute for consistently better answers.",
        21.00,
        168.00,
        400_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "openai/gpt-5-mini",
        "GPT-5 Mini",
        "A faster, cheaper GPT-5 for well-defined tasks.",
        0.25,
        2.00,
        200_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "openai/o1",
        "o1",
        "Reasoning model for complex tasks.",
        15.00,
        60.00,
        200_000,
        100_000,
        REASONING_CODER,
    ),
    _chat(
        "openai/o1-mini",
        "o1-mini",
        "A smaller, faster o1 for coding and STEM.",
        1.10,
        4.40,
        128_000,
        65_536,
        REASONING_CODER,
    ),
    _chat(
        "openai/o3",
        "o3",
        "Reasoning model for multi-step problems.",
        2.00,
        8.00,
        200_000,
        100_000,
        REASONING_CODER,
    ),
    _chat(
        "openai/o3-mini",
        "o3-mini",
        "Efficient reasoning model for STEM tasks.",
        1.10,
        4.40,
        128_000,
        100_000,
        REASONING_CODER,
    ),
]

_ANTHROPIC: list[ModelEntry] = [
    _chat(
        "anthropic/claude-opus-4.8",
        "Claude Opus 4.8",
        "Anthropic's most capable Opus; adaptive thinking, sampling parameters are dropped.",
        5.00,
        25.00,
        1_000_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "anthropic/claude-opus-4.7",
        "Claude Opus 4.7",
        "Anthropic's Opus for hard reasoning and long coding tasks; adaptive thinking.",
        5.00,
        25.00,
        1_000_000,
        32_000,
        ALL_ROUND,
    ),
    _chat(
        "anthropic/claude-opus-4.6",
        "Claude Opus 4.6",
        "Opus 4.6 with a 1M context.",
        5.00,
        25.00,
        1_000_000,
        128_000,
        ALL_ROUND,
    ),
    _chat(
        "anthropic/claude-opus-4.5",
        "Claude Opus 4.5",
        "Opus 4.5 for reasoning and creative work.",
        5.00,
        25.00,
        200_000,
        64_000,
        ALL_ROUND,
    ),
    _chat(
        "anthropic/claude-sonnet-4.6",
        "Claude Sonnet 4.6",
        "The best balance of intelligence, speed and cost; strong at coding and agents.",
        3.00,
        15.00,
        200_000,
        64_000,
        ALL_ROUND,
    ),
    _chat(
        "anthropic/claude-haiku-4.5",
        "Claude Haiku 4.5",
        "Fast, inexpensive Claude model.",
        1.00,
        5.00,
        200_000,
        64_000,
        CODER_WITH_VISION,
    ),
]

_GOOGLE: list[ModelEntry] = [
    _chat(
        "google/gemini-3.1-pro",
        "Gemini 3.1 Pro",
        "Google's latest Pro: improved thinking and agentic coding.",
        2.00,
        12.00,
        1_000_000,
        65_536,
        ALL_ROUND,
    ),
    _chat(
        "google/gemini-3-pro-preview",
        "Gemini 3 Pro Preview",
        "Gemini 3 Pro, preview release.",
        1.50,
        10.00,
        1_000_000,
        65_536,
        ALL_ROUND,
    ),
    _chat(
        "google/gemini-3-flash-preview",
        "Gemini 3 Flash Preview",
        "Pro-level intelligence at Flash speed, with thinking mode.",
        0.50,
        3.00,
        1_000_000,
        65_536,
        ALL_ROUND,
    ),
    _chat(
        "google/gemini-2.5-pro",
        "Gemini 2.5 Pro",
        "Google's thinking model with a million-token context.",
        1.25,
        10.00,
        1_000_000,
        65_536,
        ALL_ROUND,
    ),
    _chat(
        "google/gemini-2.5-flash",
        "Gemini 2.5 Flash",
        "Fast Gemini with a million-token context.",
        0.30,
        2.50,
        1_000_000,
        65_536,
        ["chat", "vision"],
    ),
    _chat(
        "google/gemini-3.1-flash-lite",
        "Gemini 3.1 Flash Lite",
        "Ultra-fast, lightweight Gemini 3.1 with thinking mode.",
        0.10,
        0.40,
        1_000_000,
        65_536,
        ["chat", "reasoning"],
    ),
    _chat(
        "google/gemini-2.5-flash-lite",
        "Gemini 2.5 Flash Lite",
        "The most economical Gemini.",
        0.10,
        0.40,
        1_000_000,
        65_536,
        ["chat"],
    ),
]

_OPEN_WEIGHT: list[ModelEntry] = [
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
        "zai/glm-5.2",
        "GLM-5.2 (flagship)",
        "Z.AI's flagship with a 1M context, strong at long-horizon coding.",
        1.40,
        4.40,
        1_000_000,
        131_072,
        REASONING_CODER,
    ),
    _chat(
        "zai/glm-5.1",
        "GLM-5.1",
        "Z.AI's GLM-5.1 for long autonomous coding runs.",
        1.40,
        4.40,
        200_000,
        128_000,
        REASONING_CODER,
    ),
    _chat(
        "zai/glm-5",
        "GLM-5",
        "Z.AI's foundation model: reasoning and agentic work.",
        0.60,
        1.92,
        200_000,
        128_000,
        REASONING_CODER,
    ),
    _chat(
        "zai/glm-5-turbo",
        "GLM-5 Turbo",
        "GLM-5 with faster inference.",
        1.20,
        4.00,
        200_000,
        128_000,
        ["chat", "reasoning"],
    ),
    _chat(
        "moonshot/kimi-k2.7",
        "Kimi K2.7 (flagship)",
        "Moonshot's flagship: image, video and text input, returns reasoning_content.",
        0.95,
        4.00,
        256_000,
        32_768,
        ALL_ROUND,
    ),
    _chat(
        "moonshot/kimi-k2.6",
        "Kimi K2.6",
        "Moonshot's previous multi-modal generation.",
        0.95,
        4.00,
        256_000,
        32_768,
        ALL_ROUND,
    ),
    _chat(
        "moonshot/kimi-k2.5",
        "Kimi K2.5 (legacy)",
        "Still routable, superseded by K2.6 and K2.7.",
        0.60,
        3.00,
        262_000,
        32_768,
        ["chat", "coding"],
    ),
    _chat(
        "minimax/minimax-m2.7",
        "MiniMax M2.7",
        "MiniMax's reasoning model, good value for complex tasks.",
        0.30,
        1.20,
        204_000,
        16_384,
        REASONING_CODER,
    ),
]

# The free tier: no payment, the first request answers 200.
_NVIDIA_FREE: list[ModelEntry] = [
    _chat(
        "nvidia/gpt-oss-120b",
        "GPT-OSS 120B",
        "OpenAI's open-weight model, hosted free by NVIDIA.",
        0.0,
        0.0,
        128_000,
        8_192,
        REASONING_CODER,
    ),
    _chat(
        "nvidia/gpt-oss-20b",
        "GPT-OSS 20B",
        "The smaller open-weight GPT-OSS, hosted free by NVIDIA.",
        0.0,
        0.0,
        128_000,
        8_192,
        ["chat", "reasoning"],
    ),
    _chat(
        "nvidia/kimi-k2.5",
        "Kimi K2.5 (NVIDIA)",
        "Kimi K2.5, hosted free by NVIDIA.",
        0.0,
        0.0,
        1_000_000,
        16_384,
        ["chat", "coding"],
    ),
]

_IMAGES: list[ModelEntry] = [
    _image(
        "openai/gpt-image-1",
        "GPT Image 1",
        "OpenAI image generation and editing; answers with a data URI.",
        0.021,
        # The Models page says $0.02-0.04 and the size table prices 1024x1024 only; as for
        # gpt-image-2 ($0.06-0.12), the top of the range is taken to be the two large sizes.
        {"1536x1024": 0.042, "1024x1536": 0.042},
        edits=True,
    ),
    _image(
        "openai/gpt-image-2",
        "ChatGPT Images 2.0",
        "OpenAI's newer image model, good at text in images; answers with a data URI.",
        0.063,
        {"1536x1024": 0.126, "1024x1536": 0.126},
        edits=True,
    ),
    _image(
        "google/nano-banana",
        "Nano Banana",
        "Gemini image generation and editing, fast and reliable.",
        0.053,
        edits=True,
    ),
    _image(
        "google/nano-banana-pro",
        "Nano Banana Pro",
        "Gemini's highest-quality image model, up to 4K.",
        0.105,
        {"4096x4096": 0.158},
        edits=True,
    ),
    _image(
        "openai/dall-e-3",
        "DALL-E 3",
        "OpenAI's DALL-E 3; URLs expire after about an hour.",
        0.042,
        {"1792x1024": 0.084},
    ),
    _image(
        "zai/cogview-4",
        "CogView-4",
        "Zhipu's text-to-image model, the cheapest; good with Chinese prompts.",
        0.015,
        {"1440x1440": 0.02},
    ),
    _image(
        "xai/grok-imagine-image",
        "Grok Imagine",
        "xAI's image generation.",
        0.021,
    ),
    _image(
        "xai/grok-imagine-image-pro",
        "Grok Imagine Pro",
        "xAI's premium image generation.",
        0.074,
    ),
]

_VIDEOS: list[ModelEntry] = [
    _video(
        "xai/grok-imagine-video",
        "Grok Imagine Video",
        "xAI text/image to video.",
        0.05,
        15,
    ),
    _video(
        "bytedance/seedance-1.5-pro",
        "Seedance 1.5 Pro",
        "ByteDance text/image to video with audio; one price with or without an input image.",
        0.092,
        12,
    ),
    _video(
        "bytedance/seedance-2.0-fast",
        "Seedance 2.0 Fast",
        "ByteDance fast video at 720p with synced audio.",
        0.238,
        15,
        image_input_per_second=0.14,  # "$0.70 with image input" for a 5 s clip
    ),
    _video(
        "bytedance/seedance-2.0",
        "Seedance 2.0 Pro",
        "ByteDance premium video at 720p with synced audio.",
        0.298,
        15,
        image_input_per_second=0.182,  # "$0.91 with image input" for a 5 s clip
    ),
]

_ENTRIES: list[ModelEntry] = [
    *_OPENAI,
    *_ANTHROPIC,
    *_GOOGLE,
    *_OPEN_WEIGHT,
    *_NVIDIA_FREE,
    *_IMAGES,
    *_VIDEOS,
]

CATALOG: dict[str, ModelEntry] = {entry.id: entry for entry in _ENTRIES}


def find_model(model_id: str) -> ModelEntry | None:
    return CATALOG.get(model_id)


def catalog_body(shape: str) -> dict[str, Any]:
    """The /v1/models body.

    By default the same list under both `models` (what BlockRun's docs and its Python SDK's
    /pricing reader use) and `data` (what both official SDKs' list_models read from /v1/models),
    each entry carrying the documented fields and `pricing`. `shape="data"` answers `data` alone,
    in the SDK-seen entry shape, for tests of a client's fallback to it.
    """
    if shape == "data":
        return {"object": "list", "data": [entry.data_shape() for entry in _ENTRIES]}
    listing = [entry.listing() for entry in _ENTRIES]
    return {"object": "list", "models": listing, "data": listing}
