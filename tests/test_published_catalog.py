"""The maintainer's refresh of tests/data/published_catalog.json, run on page excerpts kept here.

The excerpts copy the shapes of BlockRun's pages as they were read (table cells run together,
one cell a line in the Image generation page's Pricing table), one row of each kind the parser
must understand; tests read nothing outside the repository.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.published_catalog import (
    DATA,
    PAGES,
    ChatRow,
    ImageRow,
    PageChanged,
    PriceRow,
    PublishedCatalog,
    VideoRow,
    load,
    main,
    parse_pages,
    render,
    to_json,
)

MODELS_PAGE = """BlockRun

Models

Example Response

{
  "models": [
    {
      "id": "openai/gpt-5.5",
      "name": "GPT-5.5",
      "inputPrice": 5.00,
      "context_window": 1050000
    }
  ]
}

Available Models (50+ across chat / image / video / voice)

OpenAI GPT-5.4 Family

Model IDNameInput PriceOutput PriceContext
openai/gpt-5.4-miniGPT-5.4 Mini$0.75/M$4.50/M400K
openai/o1-minio1-mini$1.10/M$4.40/M128K

Anthropic Claude

anthropic/claude-opus-4.7Claude Opus 4.7$5.00/M$25.00/M1M
Opus 4.7 / 4.8 behavior

NVIDIA (Free Tier)

nvidia/gpt-oss-20bGPT-OSS 20BFREEFREE128K

Image Generation

Model IDNamePrice
openai/gpt-image-1GPT Image 1$0.02-0.04/image
google/nano-bananaNano Banana$0.05/image

Video Generation

Model IDNamePrice (5s 720p default)
xai/grok-imagine-videoGrok Imagine Video$0.05/sec (8s = $0.40)
bytedance/seedance-1.5-proSeedance 1.5 Pro~$0.092/sec ($0.46 / 5s clip; flat)
bytedance/seedance-2.0-fastSeedance 2.0 Fast~$0.238/sec ($1.19 / 5s clip t2v; $0.70 with image input)

Model Categories

  • chat - General conversation
"""

IMAGES_PAGE = """You signed in with another tab or window. Reload to refresh your session.
-d '{"model":"zai/cogview-4","prompt":"a futuristic city at night","size":"1024x1024"}'
model="openai/dall-e-3",
Pricing
Model
Size
Price
CogView-4
up to 1440x1440
$0.015
ChatGPT Images 2.0
1536x1024 / 1024x1536
$0.126
Error Codes
Code
Description
Image editing (img2img)
openai/gpt-image-1 or openai/gpt-image-2
"""

CHAT_PAGE = """Sampling params on Claude Opus 4.7 / 4.8

temperature, top_p, and top_k are not honored for anthropic/claude-opus-4.7 and \
anthropic/claude-opus-4.8 — these models reject sampling params upstream.
"""

READ_ON = {key: "2026-12-06" for key in PAGES}

EXPECTED = PublishedCatalog(
    pages={
        key: {"url": page.url, "copy": page.file, "read_on": "2026-12-06"}
        for key, page in PAGES.items()
    },
    chat_models=(
        ChatRow("openai/gpt-5.4-mini", "GPT-5.4 Mini", 0.75, 4.5, 400, 1_000),
        ChatRow("openai/o1-mini", "o1-mini", 1.1, 4.4, 128, 1_000),
        ChatRow("anthropic/claude-opus-4.7", "Claude Opus 4.7", 5.0, 25.0, 1, 1_000_000),
        ChatRow("nvidia/gpt-oss-20b", "GPT-OSS 20B", 0.0, 0.0, 128, 1_000),
    ),
    image_models=(
        ImageRow("openai/gpt-image-1", "GPT Image 1", 0.02, 0.04),
        ImageRow("google/nano-banana", "Nano Banana", 0.05, 0.05),
    ),
    video_models=(
        VideoRow("xai/grok-imagine-video", "Grok Imagine Video", 0.05, 8, 0.4, 0.4),
        VideoRow("bytedance/seedance-1.5-pro", "Seedance 1.5 Pro", 0.092, 5, 0.46, 0.46),
        VideoRow("bytedance/seedance-2.0-fast", "Seedance 2.0 Fast", 0.238, 5, 1.19, 0.7),
    ),
    example_model={
        "id": "openai/gpt-5.5",
        "name": "GPT-5.5",
        "inputPrice": 5.0,
        "context_window": 1_050_000,
    },
    image_prices=(
        PriceRow("CogView-4", "up to 1440x1440", ("1024x1024",), 0.015),
        PriceRow("ChatGPT Images 2.0", "1536x1024 / 1024x1536", ("1536x1024", "1024x1536"), 0.126),
    ),
    # zai/cogview-4 is not: no zai model is in this excerpt's catalog, so "zai/" is no provider
    ids_named_on_images_page=("openai/dall-e-3", "openai/gpt-image-1", "openai/gpt-image-2"),
    sampling_dropped_for=("anthropic/claude-opus-4.7", "anthropic/claude-opus-4.8"),
)


def test_every_kind_of_row_is_read_from_the_excerpts() -> None:
    assert parse_pages(MODELS_PAGE, IMAGES_PAGE, CHAT_PAGE, READ_ON) == EXPECTED


@pytest.mark.parametrize(
    ("models", "images", "chat", "reason"),
    [
        (
            MODELS_PAGE.replace(
                "Model Categories", "meta/llama-5Llama 5$1/request\nModel Categories"
            ),
            IMAGES_PAGE,
            CHAT_PAGE,
            "cannot read",
        ),
        (
            MODELS_PAGE + "nvidia/gpt-oss-20bGPT-OSS 20BFREEFREE128K\n",  # after the tables
            IMAGES_PAGE,
            CHAT_PAGE,
            None,  # rows after "Model Categories" are not the catalog: still parses
        ),
        (
            MODELS_PAGE.replace(
                "Model Categories", "nvidia/gpt-oss-20bGPT-OSS 20BFREEFREE128K\nModel Categories"
            ),
            IMAGES_PAGE,
            CHAT_PAGE,
            "twice",
        ),
        (MODELS_PAGE.replace("Example Response", "Example"), IMAGES_PAGE, CHAT_PAGE, "section"),
        (MODELS_PAGE, IMAGES_PAGE.replace("Pricing", "Prices"), CHAT_PAGE, "Pricing table"),
        (MODELS_PAGE, IMAGES_PAGE.replace("$0.126\n", ""), CHAT_PAGE, "triplets"),
        (MODELS_PAGE, IMAGES_PAGE, CHAT_PAGE.replace("not honored", "ignored"), "sampling"),
        (MODELS_PAGE.replace(" / 4.8 behavior", ""), IMAGES_PAGE, CHAT_PAGE, "Opus"),
    ],
)
def test_a_page_that_no_longer_reads_as_expected_is_an_error(
    models: str, images: str, chat: str, reason: str | None
) -> None:
    if reason is None:
        assert parse_pages(models, images, chat, READ_ON) == EXPECTED
        return
    with pytest.raises(PageChanged, match=reason):
        parse_pages(models, images, chat, READ_ON)


def _write_pages(docs: Path, models: str = MODELS_PAGE) -> None:
    docs.mkdir(exist_ok=True)
    texts = {"models": models, "images": IMAGES_PAGE, "chat_completions": CHAT_PAGE}
    read = datetime(2026, 12, 6, 15, 18, tzinfo=UTC).timestamp()
    for key, page in PAGES.items():
        (docs / page.file).write_text(texts[key], encoding="utf-8")
        os.utime(docs / page.file, (read, read))


def test_the_refresh_command_writes_what_the_tests_load_and_check_says_when_stale(
    tmp_path: Path,
) -> None:
    docs, output = tmp_path / "gateway-docs", tmp_path / "catalog.json"
    _write_pages(docs)
    assert main(["--check", str(docs), "--output", str(output)]) == 1  # nothing written yet
    assert main(["--refresh", str(docs), "--output", str(output)]) == 0
    assert load(output) == EXPECTED  # the read dates are the copies' modification dates
    assert main(["--check", str(docs), "--output", str(output)]) == 0
    _write_pages(docs, MODELS_PAGE.replace("$0.75/M$4.50/M", "$0.80/M$4.50/M"))
    assert main(["--check", str(docs), "--output", str(output)]) == 1
    assert main(["--refresh", str(tmp_path / "nowhere"), "--output", str(output)]) == 2


def test_the_kept_file_is_exactly_what_the_refresh_writes() -> None:
    """Not edited by hand: loading it and writing it again gives the same bytes."""
    kept = load()
    assert DATA.read_text(encoding="utf-8") == render(to_json(kept))
    assert all(page["read_on"] for page in kept.pages.values())
