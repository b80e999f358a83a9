"""The sandbox's catalog against BlockRun's published pages: when the pages change, this fails.

The pages' facts (model ids, names, prices, context windows, image and video prices) are kept in
tests/data/published_catalog.json, with each page's address and the date it was read, so a clone
of the repository passes on its own. A maintainer refreshes that file from the pages with
`python -m tests.support.published_catalog --refresh DOCS` (see tests/support/published_catalog.py,
the only code that reads the pages; tests/test_published_catalog.py tests it). Nothing here
repeats a price or an id, and nothing comes from the sandbox's own catalog code: every
expectation is the pages', and the sandbox is asked over HTTP, as a client would ask it.

Where the sandbox serves more than a page states, the test says why it is allowed:
- the Models page prices images as provider rates ("$0.10-0.15/image") and BlockRun adds 5%; the
  Image generation page's table has the charged prices, which must match to its tenth of a cent;
- gpt-image-1's large sizes carry the top of its range (see the comment in sandbox/catalog.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from blockrun_mcp.sandbox import SandboxServer
from blockrun_mcp.sandbox.bodies import parse_chat
from blockrun_mcp.sandbox.replies import REFUSAL_MARKER, answer
from tests.support.published_catalog import DEFAULT_SIZE, PAGES, PriceRow, load

PUBLISHED = load()
PLATFORM_FEE = 1.05
CENT_TENTH = 0.0005 + 1e-9  # the page's prices are rounded to a tenth of a cent


# the sandbox, asked as a client asks it


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer() as running:
        yield running


@pytest.fixture(scope="module")
def served(server: SandboxServer) -> dict[str, dict[str, Any]]:
    body = httpx2.get(server.base_url + "/v1/models").json()
    return {entry["id"]: entry for entry in body["models"]}


def served_image_prices(entry: dict[str, Any]) -> dict[str, float]:
    """Per-image price by size: flatPrice is the default size's (and any size not listed)."""
    return {DEFAULT_SIZE: entry["flatPrice"], **entry.get("sizePrices", {})}


def image_model_named(row: PriceRow, served: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The served image model a table row is about: the longest served name it starts with
    ("Nano Banana Pro 4K" is Nano Banana Pro, "DALL-E 3 Wide" is DALL-E 3)."""
    images = [e for e in served.values() if "image" in e["categories"]]
    named = [e for e in images if row.name == e["name"] or row.name.startswith(e["name"] + " ")]
    assert named, f"no served image model is named like the table's {row.name!r}"
    return max(named, key=lambda e: len(e["name"]))


def quote(server: SandboxServer, path: str, body: dict[str, Any]) -> float:
    response = httpx2.post(server.base_url + path, json=body)
    assert response.status_code == 402, response.text
    return float(response.json()["price"]["amount"])


# the pages' facts, as kept


def test_the_kept_facts_name_their_pages_and_each_model_once() -> None:
    data = PUBLISHED
    assert set(data.pages) == set(PAGES)
    for page in data.pages.values():
        assert page["url"].startswith("https://") and page["read_on"], page
    rows = [*data.chat_models, *data.image_models, *data.video_models]
    assert len(data.listed_ids) == len(rows), "a model id appears twice in the kept facts"
    assert data.chat_models and data.image_models and data.video_models and data.image_prices


# the Models page


def test_every_chat_model_is_served_with_the_pages_name_prices_and_context(
    served: dict[str, dict[str, Any]],
) -> None:
    problems = []
    for row in PUBLISHED.chat_models:
        entry = served.get(row.id)
        if entry is None:
            problems.append(f"{row.id}: not served")
            continue
        wanted = {
            "name": row.name,
            "inputPrice": row.input_usd_per_m,
            "outputPrice": row.output_usd_per_m,
        }
        got = {key: entry[key] for key in wanted}
        if got != wanted:
            problems.append(f"{row.id}: serves {got}, the page says {wanted}")
        # "1M" for 1,050,000 (the page's own example): the page truncates to its unit.
        if entry["context_window"] // row.context_unit != row.context:
            problems.append(f"{row.id}: context {entry['context_window']}, the page says {row}")
        if "chat" not in entry["categories"] or entry["max_output"] <= 0:
            problems.append(f"{row.id}: not a usable chat model: {entry}")
    assert not problems, "\n".join(problems)


def test_the_pages_example_response_is_served_as_printed(
    served: dict[str, dict[str, Any]],
) -> None:
    example = PUBLISHED.example_model
    entry = served[example["id"]]
    assert {key: entry[key] for key in example} == example


def test_the_free_tier_is_free_and_needs_no_payment(
    server: SandboxServer, served: dict[str, dict[str, Any]]
) -> None:
    free = [
        row for row in PUBLISHED.chat_models if row.input_usd_per_m == row.output_usd_per_m == 0
    ]
    assert free, "the Models page lists no free model"
    for row in free:
        assert (served[row.id]["inputPrice"], served[row.id]["outputPrice"]) == (0, 0)
        chat = {"model": row.id, "messages": [{"role": "user", "content": "free?"}]}
        response = httpx2.post(server.base_url + "/v1/chat/completions", json=chat)
        assert response.status_code == 200, f"{row.id}: {response.status_code} {response.text}"
        assert "PAYMENT-REQUIRED" not in response.headers
    assert not server.state.settlements


def test_image_models_cost_the_models_pages_range_plus_the_fee(
    served: dict[str, dict[str, Any]],
) -> None:
    problems = []
    for row in PUBLISHED.image_models:
        entry = served.get(row.id)
        if entry is None or "image" not in entry["categories"]:
            problems.append(f"{row.id}: not served as an image model")
            continue
        prices = served_image_prices(entry).values()
        for which, page, got in [
            ("lowest", row.low_usd, min(prices)),
            ("highest", row.high_usd, max(prices)),
        ]:
            if abs(got - page * PLATFORM_FEE) > CENT_TENTH:
                problems.append(f"{row.id}: {which} price {got}, the page says ${page} + 5%")
        if entry["name"] != row.name:
            problems.append(f"{row.id}: named {entry['name']!r}, the page says {row.name!r}")
    assert not problems, "\n".join(problems)


def test_video_models_cost_the_pages_per_second_and_clip_prices(
    server: SandboxServer, served: dict[str, dict[str, Any]]
) -> None:
    problems = []
    for row in PUBLISHED.video_models:
        entry = served.get(row.id)
        if entry is None or "video" not in entry["categories"]:
            problems.append(f"{row.id}: not served as a video model")
            continue
        if (entry["name"], entry["pricePerSecond"]) != (row.name, row.usd_per_second):
            problems.append(f"{row.id}: serves {entry['name']!r} at {entry['pricePerSecond']}/s")
        clip = {"model": row.id, "prompt": "waves", "duration_seconds": row.clip_seconds}
        from_image = {**clip, "image_url": "https://example.com/first-frame.png"}
        for body, page in [(clip, row.clip_usd), (from_image, row.image_clip_usd)]:
            got = quote(server, "/v1/videos/generations", body)
            if abs(got - page) > CENT_TENTH:
                problems.append(f"{row.id}: {body} quotes ${got}, the page says ${page}")
    assert not problems, "\n".join(problems)


# the Image generation page


def test_every_image_price_of_the_size_table_is_charged(
    server: SandboxServer, served: dict[str, dict[str, Any]]
) -> None:
    problems = []
    for row in PUBLISHED.image_prices:
        entry = image_model_named(row, served)
        for size in row.sizes:
            got = served_image_prices(entry).get(size, entry["flatPrice"])
            if got != row.usd:
                problems.append(f"{row.name} {size}: serves {got}, the page says {row.usd}")
            body = {"model": entry["id"], "prompt": "a cat", "size": size}
            if quote(server, "/v1/images/generations", body) != row.usd:
                problems.append(f"{row.name} {size}: a 402 quotes otherwise than {row.usd}")
    assert not problems, "\n".join(problems)


def test_no_image_size_is_priced_that_the_pages_do_not_price(
    served: dict[str, dict[str, Any]],
) -> None:
    ranges = {row.id: row for row in PUBLISHED.image_models}
    table: dict[str, set[str]] = {}
    for row in PUBLISHED.image_prices:
        table.setdefault(image_model_named(row, served)["id"], set()).update(row.sizes)
    problems = []
    for model_id, entry in served.items():
        if "image" not in entry["categories"]:
            continue
        for size, price in served_image_prices(entry).items():
            if size in table.get(model_id, set()):
                continue
            page = ranges.get(model_id)  # else: within the Models page's range for the model
            if (
                page is None
                or not page.low_usd * PLATFORM_FEE <= price <= page.high_usd * PLATFORM_FEE
            ):
                problems.append(f"{model_id}: {size} at {price} is on no page")
    assert not problems, "\n".join(problems)


# nothing else


def test_nothing_is_served_that_the_pages_do_not_list(
    served: dict[str, dict[str, Any]],
) -> None:
    listed = PUBLISHED.listed_ids | set(PUBLISHED.ids_named_on_images_page)
    listed |= {image_model_named(row, served)["id"] for row in PUBLISHED.image_prices}
    assert set(served) - listed == set(), "served, but on no page"
    assert listed - set(served) == set(), "on a page, but not served"


# documented behaviours


def test_opus_4_7_and_4_8_drop_sampling_parameters_and_may_refuse() -> None:
    assert PUBLISHED.sampling_dropped_for, "the Chat Completions page names no such model"
    for model in PUBLISHED.sampling_dropped_for:
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        # temperature 3 is out of range: it would be a 400 if it were not dropped first
        parsed = parse_chat({**chat, "temperature": 3, "top_p": 0.5, "top_k": 40})
        body = parsed.body.model_dump()
        assert body["temperature"] is None and body["top_p"] is None and "top_k" not in body
        refused = answer(model, [{"role": "user", "content": REFUSAL_MARKER}], 100)
        assert (refused.finish_reason, refused.content) == ("content_filter", "")
