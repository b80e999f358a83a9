"""The sandbox's catalog against BlockRun's published pages: when the pages change, this fails.

The pages are read as published (gateway-docs/models.txt and images.txt, whose table cells ran
together in the copy), from $BLOCKRUN_GATEWAY_DOCS or ../shared/gateway-docs. Nothing here
repeats a price or an id: every expectation is parsed from the pages, and the sandbox is asked
over HTTP, as a client would ask it.

Where the sandbox serves more than a page states, the test says why it is allowed:
- the Models page prices images as provider rates ("$0.10-0.15/image") and BlockRun adds 5%; the
  Image generation page's table has the charged prices, which must match to its tenth of a cent;
- gpt-image-1's large sizes carry the top of its range (see the comment in sandbox/catalog.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from blockrun_mcp.sandbox import SandboxServer
from blockrun_mcp.sandbox.bodies import parse_chat
from blockrun_mcp.sandbox.replies import REFUSAL_MARKER, answer

# ../shared beside the repository, as CI lays it out, unless BLOCKRUN_GATEWAY_DOCS says otherwise.
DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "shared" / "gateway-docs"
DOCS = Path(os.environ.get("BLOCKRUN_GATEWAY_DOCS") or DEFAULT_DOCS)
PLATFORM_FEE = 1.05
CENT_TENTH = 0.0005 + 1e-9  # the page's prices are rounded to a tenth of a cent
DEFAULT_SIZE = "1024x1024"  # what a request without `size` gets, and how the sandbox prices it
UNITS = {"K": 1_000, "M": 1_000_000}


@pytest.fixture(autouse=True)
def _the_pages_are_here() -> None:
    """Failing, not skipping: a catalog check that quietly does not run checks nothing."""
    if not (DOCS / "models.txt").is_file():
        pytest.fail(f"BlockRun's published pages are not at {DOCS}; set BLOCKRUN_GATEWAY_DOCS")


_ROW_START = re.compile(r"^[a-z0-9-]+/[a-z0-9]")
_CHAT_ROW = re.compile(
    r"^(?P<head>.+?)(?P<input>\$[\d.]+/M|FREE)(?P<output>\$[\d.]+/M|FREE)"
    r"(?P<context>\d+)(?P<unit>[KM])$"
)
_IMAGE_ROW = re.compile(r"^(?P<head>.+?)\$(?P<low>[\d.]+)(?:-(?P<high>[\d.]+))?/image$")
_VIDEO_ROW = re.compile(r"^(?P<head>.+?)~?\$(?P<per_second>[\d.]+)/sec \((?P<note>.*)\)$")
_CLIP = re.compile(r"(?P<s1>\d+)s = \$(?P<c1>[\d.]+)|\$(?P<c2>[\d.]+) / (?P<s2>\d+)s clip")
_IMAGE_CLIP = re.compile(r"\$(?P<usd>[\d.]+) with image input")


# the pages, parsed


@dataclass(frozen=True)
class ChatRow:
    id: str
    name: str
    input_price: float
    output_price: float
    context: int  # in `unit`s, as printed ("400K" is 400)
    unit: int


@dataclass(frozen=True)
class ImageRow:
    id: str
    name: str
    low: float  # provider rate per image, before the 5% fee
    high: float


@dataclass(frozen=True)
class VideoRow:
    id: str
    name: str
    per_second: float
    clip_seconds: int
    clip_usd: float
    image_clip_usd: float  # a clip of the same length from an input image ("flat": the same)


@dataclass(frozen=True)
class PriceRow:
    name: str  # as the Image generation page's table prints it ("DALL-E 3 Wide")
    sizes: tuple[str, ...]  # "up to 1440x1440" reads as the default size's price
    usd: float


def split_id_and_name(head: str) -> tuple[str, str]:
    """'openai/gpt-5.4-nanoGPT-5.4 Nano' -> id and name; 'openai/o1-minio1-mini' too."""
    provider, rest = head.split("/", 1)
    for cut in range(1, len(rest)):
        if rest[:cut] == rest[cut:]:  # o-series: the name repeats the id's model part
            return f"{provider}/{rest[:cut]}", rest[cut:]
    cut = next(i for i, char in enumerate(rest) if char.isupper())
    return f"{provider}/{rest[:cut]}", rest[cut:]


def _usd(cell: str) -> float:
    return 0.0 if cell == "FREE" else float(cell.strip("$").removesuffix("/M"))


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end)]


def models_page() -> str:
    return (DOCS / "models.txt").read_text(encoding="utf-8")


def catalog_rows() -> list[str]:
    """Every table row of the Models page's catalog (they start with a model id)."""
    section = _section(models_page(), "Available Models", "Model Categories")
    return [line.strip() for line in section.splitlines() if _ROW_START.match(line.strip())]


def chat_rows() -> list[ChatRow]:
    rows = []
    for line in catalog_rows():
        if match := _CHAT_ROW.match(line):
            model_id, name = split_id_and_name(match["head"])
            rows.append(
                ChatRow(
                    model_id,
                    name,
                    _usd(match["input"]),
                    _usd(match["output"]),
                    int(match["context"]),
                    UNITS[match["unit"]],
                )
            )
    return rows


def image_rows() -> list[ImageRow]:
    rows = []
    for line in catalog_rows():
        if match := _IMAGE_ROW.match(line):
            model_id, name = split_id_and_name(match["head"])
            low = float(match["low"])
            rows.append(ImageRow(model_id, name, low, float(match["high"] or low)))
    return rows


def video_rows() -> list[VideoRow]:
    rows = []
    for line in catalog_rows():
        if not (match := _VIDEO_ROW.match(line)):
            continue
        model_id, name = split_id_and_name(match["head"])
        clip = _CLIP.search(match["note"])
        assert clip, f"no clip price in {line!r}"
        seconds = int(clip["s1"] or clip["s2"])
        clip_usd = float(clip["c1"] or clip["c2"])
        image = _IMAGE_CLIP.search(match["note"])
        image_usd = float(image["usd"]) if image else clip_usd
        rows.append(
            VideoRow(model_id, name, float(match["per_second"]), seconds, clip_usd, image_usd)
        )
    return rows


def example_entry() -> dict[str, Any]:
    """The single entry of the Models page's example /v1/models response."""
    block = _section(models_page(), "Example Response", "Available Models")
    (entry,) = json.loads(block.removeprefix("Example Response"))["models"]
    return entry


def images_page() -> str:
    return (DOCS / "images.txt").read_text(encoding="utf-8")


def price_table() -> list[PriceRow]:
    """The Image generation page's Pricing table: Model / Size / Price, one cell a line."""
    lines = [line.strip() for line in images_page().splitlines()]
    start = next(
        i
        for i in range(len(lines) - 3)
        if lines[i : i + 4] == ["Pricing", "Model", "Size", "Price"]
    )
    cells = lines[start + 4 : lines.index("Error Codes", start)]
    assert len(cells) % 3 == 0, f"the Pricing table is not Model/Size/Price triplets: {cells}"
    rows = []
    for name, size, price in zip(cells[::3], cells[1::3], cells[2::3], strict=True):
        if size.startswith("up to "):
            sizes: tuple[str, ...] = (DEFAULT_SIZE,)
        else:
            sizes = tuple(part.strip() for part in size.split("/"))
        rows.append(PriceRow(name, sizes, float(price.strip("$"))))
    return rows


def ids_named_in(text: str) -> set[str]:
    """Model ids written out in a page's prose and examples, of the providers the catalog has."""
    providers = {row.split("/", 1)[0] for row in catalog_rows()}
    pattern = rf"\b(?:{'|'.join(map(re.escape, providers))})/[a-z0-9][a-z0-9.-]*[a-z0-9]"
    return set(re.findall(pattern, text))


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


# every row of the pages is read


def test_every_catalog_row_of_the_models_page_is_understood() -> None:
    rows = catalog_rows()
    patterns = (_CHAT_ROW, _IMAGE_ROW, _VIDEO_ROW)
    not_parsed = [line for line in rows if not any(p.match(line) for p in patterns)]
    assert not not_parsed, f"rows this test cannot read (did the page change?): {not_parsed}"
    parsed = {row.id for row in chat_rows() + image_rows() + video_rows()}
    assert len(parsed) == len(rows), "a model id appears twice in the Models page's tables"
    assert chat_rows() and image_rows() and video_rows() and price_table()


# the Models page


def test_every_chat_model_is_served_with_the_pages_name_prices_and_context(
    served: dict[str, dict[str, Any]],
) -> None:
    problems = []
    for row in chat_rows():
        entry = served.get(row.id)
        if entry is None:
            problems.append(f"{row.id}: not served")
            continue
        wanted = {"name": row.name, "inputPrice": row.input_price, "outputPrice": row.output_price}
        got = {key: entry[key] for key in wanted}
        if got != wanted:
            problems.append(f"{row.id}: serves {got}, the page says {wanted}")
        # "1M" for 1,050,000 (the page's own example): the page truncates to its unit.
        if entry["context_window"] // row.unit != row.context:
            problems.append(f"{row.id}: context {entry['context_window']}, the page says {row}")
        if "chat" not in entry["categories"] or entry["max_output"] <= 0:
            problems.append(f"{row.id}: not a usable chat model: {entry}")
    assert not problems, "\n".join(problems)


def test_the_pages_example_response_is_served_as_printed(
    served: dict[str, dict[str, Any]],
) -> None:
    example = example_entry()
    entry = served[example["id"]]
    assert {key: entry[key] for key in example} == example


def test_the_free_tier_is_free_and_needs_no_payment(
    server: SandboxServer, served: dict[str, dict[str, Any]]
) -> None:
    free = [row for row in chat_rows() if row.input_price == row.output_price == 0]
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
    for row in image_rows():
        entry = served.get(row.id)
        if entry is None or "image" not in entry["categories"]:
            problems.append(f"{row.id}: not served as an image model")
            continue
        prices = served_image_prices(entry).values()
        for which, page, got in [
            ("lowest", row.low, min(prices)),
            ("highest", row.high, max(prices)),
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
    for row in video_rows():
        entry = served.get(row.id)
        if entry is None or "video" not in entry["categories"]:
            problems.append(f"{row.id}: not served as a video model")
            continue
        if (entry["name"], entry["pricePerSecond"]) != (row.name, row.per_second):
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
    for row in price_table():
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
    ranges = {row.id: row for row in image_rows()}
    table: dict[str, set[str]] = {}
    for row in price_table():
        table.setdefault(image_model_named(row, served)["id"], set()).update(row.sizes)
    problems = []
    for model_id, entry in served.items():
        if "image" not in entry["categories"]:
            continue
        for size, price in served_image_prices(entry).items():
            if size in table.get(model_id, set()):
                continue
            page = ranges.get(model_id)  # else: within the Models page's range for the model
            if page is None or not page.low * PLATFORM_FEE <= price <= page.high * PLATFORM_FEE:
                problems.append(f"{model_id}: {size} at {price} is on no page")
    assert not problems, "\n".join(problems)


# nothing else


def test_nothing_is_served_that_the_pages_do_not_list(
    served: dict[str, dict[str, Any]],
) -> None:
    listed = {row.id for row in chat_rows() + image_rows() + video_rows()}
    listed |= ids_named_in(images_page())
    listed |= {image_model_named(row, served)["id"] for row in price_table()}
    assert set(served) - listed == set(), "served, but on no page"
    assert listed - set(served) == set(), "on a page, but not served"


# documented behaviours


def test_opus_4_7_and_4_8_drop_sampling_parameters_and_may_refuse() -> None:
    page = (DOCS / "chat-completions.txt").read_text(encoding="utf-8")
    sentence = re.search(r"not honored for (\S+) and (\S+?) —", page)
    assert sentence, "the Chat Completions page no longer names the models that drop sampling"
    assert "Opus 4.7 / 4.8 behavior" in models_page()
    for model in sentence.groups():
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        # temperature 3 is out of range: it would be a 400 if it were not dropped first
        parsed = parse_chat({**chat, "temperature": 3, "top_p": 0.5, "top_k": 40})
        body = parsed.body.model_dump()
        assert body["temperature"] is None and body["top_p"] is None and "top_k" not in body
        refused = answer(model, [{"role": "user", "content": REFUSAL_MARKER}], 100)
        assert (refused.finish_reason, refused.content) == ("content_filter", "")
