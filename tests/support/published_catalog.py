"""BlockRun's published catalog, as test data: read from tests/data/published_catalog.json.

tests/test_sandbox_catalog.py checks the sandbox's catalog against the facts BlockRun publishes
(model ids, names, prices, context windows, image and video prices). Those facts are kept in the
repository, so a clone passes its own tests: the tests read nothing outside it. The JSON names each
page's address and the date it was read.

When the pages change, a maintainer refreshes the JSON from copies of them (the files of
gateway-docs: models.txt, images.txt and chat-completions.txt, as copied from the pages in PAGES),
from the repository's root:

    python -m tests.support.published_catalog --refresh /path/to/gateway-docs
    python -m tests.support.published_catalog --check /path/to/gateway-docs   # exit 1 if stale

then reviews the diff and runs tests/test_sandbox_catalog.py: what it now fails on is where the
sandbox (blockrun_mcp/sandbox/catalog.py) must follow the pages. The parsing here is the only
place that reads the pages; tests/test_published_catalog.py runs it on excerpts it embeds.

Nothing here imports the sandbox: the expectations come from the pages, never from the code
under test.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "published_catalog.json"
DEFAULT_SIZE = "1024x1024"  # what a request without `size` gets, and how the sandbox prices it
UNITS = {"K": 1_000, "M": 1_000_000}


@dataclass(frozen=True)
class Page:
    file: str  # its copy's name in the gateway-docs folder
    url: str  # where it is published


# The copies' headers carry no address: models.txt and chat-completions.txt are BlockRun's
# documentation site's pages; images.txt was copied from the same page's source on GitHub (its
# first line is GitHub's session banner).
PAGES = {
    "models": Page("models.txt", "https://blockrun.ai/docs/api-reference/models"),
    "images": Page(
        "images.txt",
        "https://github.com/BlockRunAI/awesome-blockrun/blob/main/docs/api-reference/"
        "image-generation.md",
    ),
    "chat_completions": Page(
        "chat-completions.txt", "https://blockrun.ai/docs/api-reference/chat-completions"
    ),
}


class PageChanged(ValueError):
    """A page no longer reads as the parser expects: look at it before refreshing."""


# --- the facts, as the tests use them ---------------------------------------------------------


@dataclass(frozen=True)
class ChatRow:
    id: str
    name: str
    input_usd_per_m: float  # per 1M tokens, as printed (the provider's rate; FREE is 0)
    output_usd_per_m: float
    context: int  # in `context_unit`s, as printed ("400K" is 400)
    context_unit: int  # 1,000 (K) or 1,000,000 (M)


@dataclass(frozen=True)
class ImageRow:
    id: str
    name: str
    low_usd: float  # provider rate per image, before the 5% fee
    high_usd: float


@dataclass(frozen=True)
class VideoRow:
    id: str
    name: str
    usd_per_second: float
    clip_seconds: int
    clip_usd: float
    image_clip_usd: float  # a clip of the same length from an input image ("flat": the same)


@dataclass(frozen=True)
class PriceRow:
    name: str  # as the Image generation page's table prints it ("DALL-E 3 Wide")
    size_printed: str  # the table's Size cell
    sizes: tuple[str, ...]  # "up to 1440x1440" reads as the default size's price
    usd: float  # charged, fee included


@dataclass(frozen=True)
class PublishedCatalog:
    pages: dict[str, dict[str, str]]  # PAGES' keys: the page's url, its copy's name, read_on
    chat_models: tuple[ChatRow, ...]
    image_models: tuple[ImageRow, ...]
    video_models: tuple[VideoRow, ...]
    example_model: dict[str, Any]  # the Models page's example /v1/models entry, as printed
    image_prices: tuple[PriceRow, ...]
    ids_named_on_images_page: tuple[str, ...]  # in its prose and examples
    sampling_dropped_for: tuple[str, ...]  # the models the Chat Completions page names

    @property
    def listed_ids(self) -> set[str]:
        return {row.id for row in (*self.chat_models, *self.image_models, *self.video_models)}


def load(path: Path = DATA) -> PublishedCatalog:
    """The committed facts (tests/data/published_catalog.json)."""
    return from_json(json.loads(path.read_text(encoding="utf-8")))


def from_json(data: Mapping[str, Any]) -> PublishedCatalog:
    return PublishedCatalog(
        pages={key: dict(page) for key, page in data["pages"].items()},
        chat_models=tuple(ChatRow(**row) for row in data["chat_models"]),
        image_models=tuple(ImageRow(**row) for row in data["image_models"]),
        video_models=tuple(VideoRow(**row) for row in data["video_models"]),
        example_model=dict(data["example_model"]),
        image_prices=tuple(
            PriceRow(**{**row, "sizes": tuple(row["sizes"])}) for row in data["image_prices"]
        ),
        ids_named_on_images_page=tuple(data["ids_named_on_images_page"]),
        sampling_dropped_for=tuple(data["sampling_dropped_for"]),
    )


# --- reading the pages (the maintainer's refresh) ---------------------------------------------

_ROW_START = re.compile(r"^[a-z0-9-]+/[a-z0-9]")
_CHAT_ROW = re.compile(
    r"^(?P<head>.+?)(?P<input>\$[\d.]+/M|FREE)(?P<output>\$[\d.]+/M|FREE)"
    r"(?P<context>\d+)(?P<unit>[KM])$"
)
_IMAGE_ROW = re.compile(r"^(?P<head>.+?)\$(?P<low>[\d.]+)(?:-(?P<high>[\d.]+))?/image$")
_VIDEO_ROW = re.compile(r"^(?P<head>.+?)~?\$(?P<per_second>[\d.]+)/sec \((?P<note>.*)\)$")
_CLIP = re.compile(r"(?P<s1>\d+)s = \$(?P<c1>[\d.]+)|\$(?P<c2>[\d.]+) / (?P<s2>\d+)s clip")
_IMAGE_CLIP = re.compile(r"\$(?P<usd>[\d.]+) with image input")
_SAMPLING = re.compile(r"not honored for (\S+) and (\S+?) —")
OPUS_SECTION = "Opus 4.7 / 4.8 behavior"


def split_id_and_name(head: str) -> tuple[str, str]:
    """'openai/gpt-5.4-nanoGPT-5.4 Nano' -> id and name; 'openai/o1-minio1-mini' too (the
    copy's table cells ran together)."""
    provider, rest = head.split("/", 1)
    for cut in range(1, len(rest)):
        if rest[:cut] == rest[cut:]:  # o-series: the name repeats the id's model part
            return f"{provider}/{rest[:cut]}", rest[cut:]
    cut = next((i for i, char in enumerate(rest) if char.isupper()), None)
    if cut is None:
        raise PageChanged(f"cannot tell the model id from its name in {head!r}")
    return f"{provider}/{rest[:cut]}", rest[cut:]


def _usd(cell: str) -> float:
    return 0.0 if cell == "FREE" else float(cell.strip("$").removesuffix("/M"))


def _section(text: str, start: str, end: str) -> str:
    try:
        return text[text.index(start) : text.index(end)]
    except ValueError:
        raise PageChanged(f"the page has no section from {start!r} to {end!r}") from None


def catalog_rows(models_page: str) -> list[str]:
    """Every table row of the Models page's catalog (they start with a model id)."""
    section = _section(models_page, "Available Models", "Model Categories")
    return [line.strip() for line in section.splitlines() if _ROW_START.match(line.strip())]


def chat_rows(models_page: str) -> list[ChatRow]:
    rows = []
    for line in catalog_rows(models_page):
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


def image_rows(models_page: str) -> list[ImageRow]:
    rows = []
    for line in catalog_rows(models_page):
        if match := _IMAGE_ROW.match(line):
            model_id, name = split_id_and_name(match["head"])
            low = float(match["low"])
            rows.append(ImageRow(model_id, name, low, float(match["high"] or low)))
    return rows


def video_rows(models_page: str) -> list[VideoRow]:
    rows = []
    for line in catalog_rows(models_page):
        if not (match := _VIDEO_ROW.match(line)):
            continue
        model_id, name = split_id_and_name(match["head"])
        clip = _CLIP.search(match["note"])
        if not clip:
            raise PageChanged(f"no clip price in {line!r}")
        seconds = int(clip["s1"] or clip["s2"])
        clip_usd = float(clip["c1"] or clip["c2"])
        image = _IMAGE_CLIP.search(match["note"])
        image_usd = float(image["usd"]) if image else clip_usd
        rows.append(
            VideoRow(model_id, name, float(match["per_second"]), seconds, clip_usd, image_usd)
        )
    return rows


def example_entry(models_page: str) -> dict[str, Any]:
    """The single entry of the Models page's example /v1/models response."""
    block = _section(models_page, "Example Response", "Available Models")
    try:
        (entry,) = json.loads(block.removeprefix("Example Response"))["models"]
    except (ValueError, KeyError, TypeError) as error:
        raise PageChanged(f"the example response is not one model's JSON: {error}") from None
    return dict(entry)


def price_table(images_page: str) -> list[PriceRow]:
    """The Image generation page's Pricing table: Model / Size / Price, one cell a line."""
    lines = [line.strip() for line in images_page.splitlines()]
    start = next(
        (
            i
            for i in range(len(lines) - 3)
            if lines[i : i + 4] == ["Pricing", "Model", "Size", "Price"]
        ),
        None,
    )
    if start is None or "Error Codes" not in lines[start:]:
        raise PageChanged("the Image generation page has no Pricing table before Error Codes")
    cells = lines[start + 4 : lines.index("Error Codes", start)]
    if len(cells) % 3:
        raise PageChanged(f"the Pricing table is not Model/Size/Price triplets: {cells}")
    rows = []
    for name, size, price in zip(cells[::3], cells[1::3], cells[2::3], strict=True):
        if size.startswith("up to "):
            sizes: tuple[str, ...] = (DEFAULT_SIZE,)
        else:
            sizes = tuple(part.strip() for part in size.split("/"))
        rows.append(PriceRow(name, size, sizes, float(price.strip("$"))))
    return rows


def ids_named_in(text: str, providers: set[str]) -> list[str]:
    """Model ids written out in a page's prose and examples, of the providers the catalog has."""
    pattern = rf"\b(?:{'|'.join(map(re.escape, sorted(providers)))})/[a-z0-9][a-z0-9.-]*[a-z0-9]"
    return sorted(set(re.findall(pattern, text)))


def sampling_dropped_for(chat_page: str, models_page: str) -> list[str]:
    """The models the Chat Completions page says drop sampling parameters."""
    sentence = _SAMPLING.search(chat_page)
    if not sentence:
        raise PageChanged("the Chat Completions page no longer names the models that drop sampling")
    if OPUS_SECTION not in models_page:
        raise PageChanged(f"the Models page has no {OPUS_SECTION!r} section any more")
    return list(sentence.groups())


def parse_pages(
    models_page: str, images_page: str, chat_page: str, read_on: Mapping[str, str]
) -> PublishedCatalog:
    """Every fact the catalog tests use, from the three pages' text (`read_on`: the date each
    of PAGES was read); PageChanged if a page no longer reads as expected (a row not understood
    is an error, never skipped)."""
    rows = catalog_rows(models_page)
    patterns = (_CHAT_ROW, _IMAGE_ROW, _VIDEO_ROW)
    not_parsed = [line for line in rows if not any(p.match(line) for p in patterns)]
    if not_parsed:
        raise PageChanged(f"Models page rows this parser cannot read: {not_parsed}")
    catalog = PublishedCatalog(
        pages={
            key: {"url": page.url, "copy": page.file, "read_on": read_on[key]}
            for key, page in PAGES.items()
        },
        chat_models=tuple(chat_rows(models_page)),
        image_models=tuple(image_rows(models_page)),
        video_models=tuple(video_rows(models_page)),
        example_model=example_entry(models_page),
        image_prices=tuple(price_table(images_page)),
        ids_named_on_images_page=tuple(
            ids_named_in(images_page, {row.split("/", 1)[0] for row in rows})
        ),
        sampling_dropped_for=tuple(sampling_dropped_for(chat_page, models_page)),
    )
    if len(catalog.listed_ids) != len(rows):
        raise PageChanged("a model id appears twice in the Models page's tables")
    empty = [
        name
        for name in ("chat_models", "image_models", "video_models", "image_prices")
        if not getattr(catalog, name)
    ]
    if empty:
        raise PageChanged(f"nothing found for {', '.join(empty)}")
    return catalog


def to_json(catalog: PublishedCatalog) -> dict[str, Any]:
    """The JSON document: the pages' addresses and read dates, then the facts."""
    return {
        "about": (
            "Facts from BlockRun's published pages that tests/test_sandbox_catalog.py checks the "
            "sandbox against. Written by `python -m tests.support.published_catalog --refresh "
            "DOCS` (tests/support/published_catalog.py says what each field is); not edited by "
            "hand."
        ),
        **asdict(catalog),  # tuples are written as JSON arrays
    }


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def from_pages(docs: Path) -> str:
    """The JSON file's text, from the page copies in `docs`; each page's read date is its
    copy's modification date (UTC), so the same copies always give the same file."""
    texts: dict[str, str] = {}
    read_on: dict[str, str] = {}
    for key, page in PAGES.items():
        path = docs / page.file
        texts[key] = path.read_text(encoding="utf-8")
        read_on[key] = datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()
    catalog = parse_pages(texts["models"], texts["images"], texts["chat_completions"], read_on)
    return render(to_json(catalog))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.published_catalog",
        description="Refresh (or check) tests/data/published_catalog.json from copies of "
        "BlockRun's published pages.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--refresh", type=Path, metavar="DOCS", help="write the JSON from the copies in DOCS"
    )
    action.add_argument(
        "--check",
        type=Path,
        metavar="DOCS",
        help="exit 1 if the JSON differs from what the copies in DOCS give",
    )
    parser.add_argument("--output", type=Path, default=DATA, help=f"default: {DATA}")
    args = parser.parse_args(argv)
    docs: Path = args.refresh or args.check
    try:
        text = from_pages(docs)
    except (OSError, PageChanged) as error:
        print(f"cannot read the pages in {docs}: {error}", file=sys.stderr)
        return 2
    if args.refresh:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
    if current != text:
        print(f"{args.output} differs from what {docs} gives: run --refresh", file=sys.stderr)
        return 1
    print(f"{args.output} is what {docs} gives", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
