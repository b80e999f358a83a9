"""Hostile model catalogs against every reader of the catalog: `blockrun-mcp models`,
`blockrun-mcp doctor`, and the `list_models` / `estimate_cost` tools.

The gateway is a real HTTP server on loopback serving one hostile catalog per path. No command
may show a traceback or die of a signal, and every one must say in a sentence what is wrong;
the tools must answer with a tool error (or a catalog with the hostile entries left out), and
the server must keep answering afterwards.

Deep nesting used to kill `doctor` with SIGSEGV: importing eth-account (doctor reads the key
first) lets py_ecc raise the recursion limit to 100,000, so json.loads of 100,000 `[` ran out
of C stack before it could raise RecursionError. Hence a key file in every doctor run, and a
`wallet` call before each catalog call in the server (the same import, in this process).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockrun_mcp import safe_json
from blockrun_mcp.gateway import MAX_ANSWER_BYTES, MAX_CATALOG_ENTRIES
from blockrun_mcp.safe_json import MAX_DEPTH
from tests.support.server import REPO_ROOT, open_server

KEY = "0x" + "5d" * 32
DEEP = 100_000


@dataclass
class Answer:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    sized: bool = True  # False: no Content-Length, the body runs until the connection closes
    encoding: str | None = None


def _entry(model_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": model_id, "name": model_id, "provider": model_id.split("/")[0], **fields}


GOOD = [
    _entry(
        "openai/gpt-5-mini",
        inputPrice=0.25,
        outputPrice=2.0,
        context_window=400_000,
        max_output=128_000,
        categories=["chat", "reasoning"],
    ),
    _entry("nvidia/gpt-oss-120b", inputPrice=0, outputPrice=0, categories=["chat", "free"]),
    _entry("openai/gpt-image-1", flatPrice=0.021, categories=["image"]),
]
GOOD_IDS = {e["id"] for e in GOOD}


def _catalog(entries: list[Any]) -> bytes:
    return json.dumps({"object": "list", "models": entries}).encode()


def _nested(depth: int, key: str | None = None) -> str:
    if key is None:
        return "[" * depth + "]" * depth
    return f'{{"{key}":' * depth + "1" + "}" * depth


# Entries whose fields have the wrong types: kept, with the odd field left out.
ODD_KEPT = {
    "acme/string-prices": '{"id":"acme/string-prices","inputPrice":"1.5","outputPrice":"3"}',
    "acme/odd-fields": (
        '{"id":"acme/odd-fields","inputPrice":1,"outputPrice":2,"categories":"chat",'
        '"context_window":"lots","max_output":-5,"name":7,"provider":{"x":1},"description":[1],'
        '"available":"yes"}'
    ),
    "acme/null-prices": '{"id":"acme/null-prices","inputPrice":null,"outputPrice":null}',
    "acme/image-sizes": (
        '{"id":"acme/image-sizes","flatPrice":0.04,"categories":["image"],'
        '"sizePrices":{"1024x1024":NaN,"512x512":0.02,"256x256":-1,"2048x2048":{"usd":1}}}'
    ),
    "acme/video": (
        '{"id":"acme/video","pricePerSecond":0.1,"maxDuration":Infinity,"categories":["video"]}'
    ),
    # Nesting within the limit, inside one entry: harmless, and ignored.
    "acme/nested": (
        '{"id":"acme/nested","inputPrice":1,"outputPrice":1,"categories":["chat",'
        + _nested(40)
        + '],"description":'
        + _nested(40, "a")
        + "}"
    ),
}
# Entries whose price is a number that cannot be a price: left out of the catalog.
BAD_PRICES = {
    "acme/nan": "NaN",
    "acme/infinity": "Infinity",
    "acme/minus-infinity": "-Infinity",
    "acme/overflow-float": "1e400",
    "acme/overflow-int": "1" + "0" * 400,
    "acme/huge": "1e300",
    "acme/negative": "-1",
    "acme/negative-string": '"-0.5"',
    "acme/nan-string": '"NaN"',
}
# Items that are not entries at all: left out.
NOT_ENTRIES = ['{"id":12345,"inputPrice":1}', '{"id":""}', '{"id":null}', '"acme/x"', "7", "null"]


def _wrong_types() -> bytes:
    items = [json.dumps(e) for e in GOOD] + list(ODD_KEPT.values()) + NOT_ENTRIES
    items += [
        f'{{"id":"{model_id}","inputPrice":1,"outputPrice":{price},"categories":["chat"]}}'
        for model_id, price in BAD_PRICES.items()
    ]
    return ('{"models":[' + ",".join(items) + "]}").encode()


def _deep_entry() -> bytes:
    entries = json.dumps(GOOD)[1:-1]
    return f'{{"models":[{entries},{{"id":"acme/deep","x":{_nested(DEEP)}}}]}}'.encode()


def _huge() -> bytes:
    pad = "x" * (9 * 1024 * 1024)
    return _catalog([*GOOD, _entry("acme/huge", description=pad)])


CATALOGS: dict[str, Answer] = {
    "huge": Answer(_huge()),
    "huge-unsized": Answer(_huge(), sized=False),
    "cut": Answer(_catalog(GOOD)[: len(_catalog(GOOD)) // 2]),
    "cut-in-string": Answer(b'{"models":[{"id":"openai/gpt-5-mi'),
    "html": Answer(
        b"<!doctype html><html><head><title>Welcome</title></head><body>{ Hello [</body></html>",
        content_type="text/html; charset=utf-8",
    ),
    "deep-list": Answer(_nested(DEEP).encode()),
    "deep-object": Answer(_nested(DEEP, "a").encode()),
    "deep-entry": Answer(_deep_entry()),
    "models-a-string": Answer(b'{"models":"lots"}'),
    "models-an-object": Answer(b'{"models":{"id":"openai/gpt-5-mini"},"data":7}'),
    "a-number": Answer(b"42"),
    "many": Answer(
        _catalog([{"id": f"acme/m{i}", "inputPrice": 1, "outputPrice": 2} for i in range(100_000)])
    ),
    "wrong-types": Answer(_wrong_types()),
    "not-utf8": Answer(b'{"models":[{"id":"\xff\xfe"}]}'),
    "bad-gzip": Answer(b"this is not gzip", encoding="gzip"),
    "error-deep": Answer(b"[" * 5000, status=500),
}
# What each says, in the CLI's message, doctor's gateway check and the tool error alike.
SAYS = {
    "huge": f"larger than {MAX_ANSWER_BYTES} bytes",
    "huge-unsized": f"larger than {MAX_ANSWER_BYTES} bytes",
    "cut": "is cut off",
    "cut-in-string": "is cut off",
    "html": "not JSON (it is text/html",
    "deep-list": f"nested more than {MAX_DEPTH} levels deep",
    "deep-object": f"nested more than {MAX_DEPTH} levels deep",
    "deep-entry": f"nested more than {MAX_DEPTH} levels deep",
    "models-a-string": "neither a `models` nor a `data` list",
    "models-an-object": "neither a `models` nor a `data` list",
    "a-number": "neither a `models` nor a `data` list",
    "many": f"lists 100000 models, more than the {MAX_CATALOG_ENTRIES}",
    "not-utf8": "not UTF-8",
    "bad-gzip": "could not be decoded",
    "error-deep": "HTTP 500: [[[",
}
FAILING = sorted(SAYS)


class HostileGateway:
    """GET /<catalog>/api/v1/models answers CATALOGS[catalog]; /switch/ answers `switch`."""

    def __init__(self) -> None:
        self.switch = Answer(_catalog(GOOD))
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name, _, rest = self.path.strip("/").partition("/")
                answer = gateway.switch if name == "switch" else CATALOGS.get(name)
                if answer is None or rest != "api/v1/models":
                    self.send_error(404)
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                if answer.encoding:
                    self.send_header("Content-Encoding", answer.encoding)
                if answer.sized:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                # The client may stop reading at its size limit.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def api_url(self, name: str) -> str:
        return f"{self.url}/{name}/api"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[HostileGateway]:
    server = HostileGateway()
    yield server
    server.close()


# --- the commands, as real processes ---------------------------------------------------------

# Doctor's stdio probe (not under test here) finds this stand-in on PATH instead of starting a
# whole server: it answers initialize at once.
STAND_IN = """#!/bin/sh
cat >/dev/null
echo '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25"}}'
"""
DOCTOR_CATALOGS = [
    "huge",
    "cut",
    "html",
    "deep-list",
    "deep-object",
    "deep-entry",
    "many",
    "wrong-types",
]


def _home(root: Path) -> dict[str, str]:
    """A whole environment, built from nothing, with a key file (as doctor reads it)."""
    key = root / ".blockrun" / ".session"
    key.parent.mkdir(parents=True)
    key.parent.chmod(0o700)
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "blockrun-mcp"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    return {
        "HOME": str(root),
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "BLOCKRUN_DATA_DIR": str(root / "data"),
        "BLOCKRUN_OUTPUT_DIR": str(root / "out"),
        "BLOCKRUN_RPC_URL": "http://127.0.0.1:9/",  # nobody listens: the balance is unknown
        "PYTHONPATH": str(REPO_ROOT),  # this tree's code, whatever is installed
    }


@pytest.fixture(scope="module")
def runs(
    gateway: HostileGateway, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    """Every command against every catalog it is run on, run side by side (they take a second
    each, mostly importing)."""
    env = _home(tmp_path_factory.mktemp("home"))
    jobs = [("models", name) for name in CATALOGS] + [("doctor", n) for n in DOCTOR_CATALOGS]
    jobs.append(("models --json", "wrong-types"))

    def run(job: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        command, name = job
        argv = ["doctor", "--json"] if command == "doctor" else command.split()
        return subprocess.run(
            [sys.executable, "-m", "blockrun_mcp", *argv],
            env={**env, "BLOCKRUN_API_URL": gateway.api_url(name)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(jobs, pool.map(run, jobs), strict=True))


def _no_crash(done: subprocess.CompletedProcess[str]) -> None:
    output = done.stdout + done.stderr
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert KEY[2:] not in output


@pytest.mark.parametrize("name", FAILING)
def test_models_command_says_what_is_wrong_with_a_hostile_catalog(runs, name):
    done = runs[("models", name)]
    _no_crash(done)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("blockrun-mcp: ") and SAYS[name] in line, line
    assert len(line) < 600


def test_models_command_lists_the_good_entries_of_a_catalog_with_wrong_types(runs):
    done = runs[("models", "wrong-types")]
    _no_crash(done)
    assert done.returncode == 0, done.stderr
    assert "nan" not in done.stdout.lower() and "inf" not in done.stdout.lower()
    for model_id in GOOD_IDS | set(ODD_KEPT):
        assert model_id in done.stdout
    listed = json.loads(runs[("models --json", "wrong-types")].stdout)["models"]
    assert {m["id"] for m in listed} == GOOD_IDS | set(ODD_KEPT)


@pytest.mark.parametrize("name", DOCTOR_CATALOGS)
def test_doctor_fails_only_its_gateway_check_on_a_hostile_catalog(runs, gateway, name):
    done = runs[("doctor", name)]
    _no_crash(done)
    report = json.loads(done.stdout)
    (check,) = [c for c in report["checks"] if c["area"] == "gateway"]
    url = f"{gateway.api_url(name)}/v1/models"
    statuses = {c["area"]: c["status"] for c in report["checks"]}
    assert statuses["key"] == "ok"  # the key was read: eth-account (and py_ecc) imported
    if name == "wrong-types":
        assert done.returncode == 0 and check["status"] == "ok"
        assert f"answered with {len(GOOD_IDS | set(ODD_KEPT))} models" in check["detail"]
        return
    assert done.returncode == 1
    assert check["status"] == "FAIL" and check["fix"]
    assert check["detail"].startswith(f"{url} is not a BlockRun model catalog: ")
    assert SAYS[name] in check["detail"], check["detail"]
    # Every later check still ran.
    assert [c["area"] for c in report["checks"]][-3:] == ["output dir", "stdio", "server"]


# --- the tools, through a real MCP client -----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("name", FAILING)
async def test_tools_answer_a_hostile_catalog_with_a_tool_error(gateway, tmp_path, name):
    async with open_server(tmp_path, None, api_url=gateway.api_url(name)) as h:
        # Shows the wallet first, importing eth-account as a signing server has: the recursion
        # limit is then py_ecc's 100,000, as in the doctor that died.
        assert (await h.ok("wallet"))["address"] == h.address
        for tool, arguments in (
            ("list_models", {}),
            ("list_models", {"category": "chat"}),
            ("estimate_cost", {"model": "openai/gpt-5-mini"}),
        ):
            text = await h.fail(tool, arguments)
            assert SAYS[name] in text, text
            assert len(text) < 600
        # The server still answers.
        assert (await h.ok("budget"))["session_spent_usd"] == 0
        assert h.ledger.payments() == []


@pytest.mark.anyio
async def test_tools_skip_the_unusable_entries_of_a_catalog_with_wrong_types(gateway, tmp_path):
    async with open_server(tmp_path, None, api_url=gateway.api_url("wrong-types")) as h:
        models = {m["id"]: m for m in (await h.ok("list_models"))["models"]}
        assert set(models) == GOOD_IDS | set(ODD_KEPT)
        for model in models.values():
            for field in ("input_price", "output_price", "image_price", "price_per_second"):
                price = model.get(field)
                assert price is None or (math.isfinite(price) and 0 <= price < 1e6), model
        strings = models["acme/string-prices"]
        assert (strings["input_price"], strings["output_price"]) == (1.5, 3.0)
        odd = models["acme/odd-fields"]
        assert odd["name"] == "acme/odd-fields" and odd["provider"] == "acme"
        assert odd["categories"] == [] and odd["context_window"] is None
        assert models["acme/image-sizes"]["image_price"] == 0.04  # the NaN size price is gone

        arguments = {"model": "acme/string-prices", "max_tokens": 1_000_000}
        estimate = await h.ok("estimate_cost", arguments)
        # The prices read from strings: 4 prompt tokens at $1.5/M + 10% of max_tokens at $3/M,
        # +5%.
        # The gateway's formula, rounded up to the atomic unit as its quote is.
        assert estimate["estimated_usd"] == math.ceil((4 * 1.5 + 100_000 * 3) * 1.05) / 1e6
        image = await h.ok("estimate_cost", {"model": "acme/image-sizes", "size": "1024x1024"})
        assert image["estimated_usd"] == 0.04
        video = await h.ok("estimate_cost", {"model": "acme/video", "duration_seconds": 4})
        assert video["estimated_usd"] == pytest.approx(0.4)
        for model_id in BAD_PRICES:
            text = await h.fail("estimate_cost", {"model": model_id})
            assert "Unknown chat model" in text and "list_models" in text, text
        assert (await h.ok("budget"))["session_spent_usd"] == 0


@pytest.mark.anyio
async def test_a_catalog_turning_hostile_leaves_the_last_good_one_in_use(gateway, tmp_path):
    gateway.switch = Answer(_catalog(GOOD))
    async with open_server(tmp_path, None, api_url=gateway.api_url("switch")) as h:
        assert (await h.ok("wallet"))["address"] == h.address
        first = await h.ok("list_models")
        assert {m["id"] for m in first["models"]} == GOOD_IDS and not first["stale"]
        for name in ("deep-list", "deep-entry", "html", "cut", "wrong-types"):
            gateway.switch = CATALOGS[name]
            snapshot = await h.service.catalog.snapshot(refresh=True)
            listed = await h.ok("list_models")
            if name == "wrong-types":  # a usable catalog: taken as it is
                assert {m["id"] for m in listed["models"]} == GOOD_IDS | set(ODD_KEPT)
                assert not snapshot.stale
                continue
            assert snapshot.stale and listed["stale"]
            assert {m["id"] for m in listed["models"]} == GOOD_IDS
            assert listed["note"].startswith("The catalog could not be refreshed (")
            assert SAYS[name] in listed["note"], listed["note"]
            estimate = await h.ok("estimate_cost", {"model": "openai/gpt-5-mini"})
            assert estimate["model"] == "openai/gpt-5-mini"
        gateway.switch = Answer(_catalog(GOOD))


# --- the depth guard itself -------------------------------------------------------------------

JSON_TEXT = st.text(alphabet='[]{}"\\/,:ab \n\u00e9\u2028', max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_TEXT, inner, max_size=3),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.integers(min_value=1, max_value=6), st.booleans())
def test_depth_guard_measures_nesting_as_the_parser_reads_it(value, limit, ascii_only):
    """Brackets, quotes and backslashes inside strings do not count; those outside do."""
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    if _depth(value) <= limit:
        assert safe_json.loads(data, max_depth=limit) == json.loads(data)
    else:
        with pytest.raises(safe_json.JsonTooDeep):
            safe_json.loads(data, max_depth=limit)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, None),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), safe_json.JsonTooDeep),
        ('{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH, None),
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), safe_json.JsonTooDeep),
        # `\\` does not escape the quote after it: the string ends, the brackets count.
        ('["\\\\",' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "]", safe_json.JsonTooDeep),
        ('["\\\\",' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "]", None),
        ('["\\\\\\"' + "[" * DEEP + '"]', None),  # `\"` does not end the string
        ('["\\"' + "[" * DEEP, safe_json.JsonUnbalanced),  # a string that never ends
        ('"' + "[" * DEEP + '"', None),
        ("[" * DEEP, safe_json.JsonUnbalanced),
        ("]" * DEEP + "[" * DEEP, safe_json.JsonUnbalanced),
        ("[[]]]" + "[" * DEEP, safe_json.JsonUnbalanced),
    ],
)
def test_depth_guard_never_lets_deep_nesting_reach_the_parser(text, error):
    if error is None:
        assert safe_json.loads(text.encode()) == json.loads(text)
    else:
        with pytest.raises(error):
            safe_json.loads(text.encode())
