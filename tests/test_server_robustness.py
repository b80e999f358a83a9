"""No argument crashes the server: nasty input is a readable tool error and costs nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from blockrun_mcp.server import TOOL_NAMES
from tests.support.payer import assert_every_payment_valid
from tests.support.server import (
    CHEAP_MODEL,
    DATA_URI_IMAGE_MODEL,
    FREE_MODEL,
    PYTHON,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    assert_ledger_matches_sandbox,
    open_server,
    paid_posts,
    subprocess_env,
)

pytestmark = pytest.mark.anyio

HUGE = "x" * 5_000_000

NASTY: list[tuple[str, dict[str, Any], str]] = [
    # huge strings
    ("ask_model", {"prompt": HUGE}, "prompt"),
    ("ask_model", {"prompt": "hi", "system": HUGE}, "system"),
    ("ask_model", {"prompt": "hi", "model": "m" * 10_000}, "model"),
    ("generate_image", {"prompt": HUGE}, "prompt"),
    ("generate_video", {"prompt": HUGE}, "prompt"),
    ("estimate_cost", {"model": "m" * 10_000}, "model"),
    # numbers that are not numbers, or out of range
    ("ask_model", {"prompt": "hi", "temperature": "nan"}, "temperature"),
    ("ask_model", {"prompt": "hi", "temperature": "-inf"}, "temperature"),
    ("ask_model", {"prompt": "hi", "temperature": True}, "temperature"),
    ("ask_model", {"prompt": "hi", "max_tokens": 2**70}, "max_tokens"),
    ("ask_model", {"prompt": "hi", "max_tokens": "1e3"}, "max_tokens"),
    ("generate_video", {"prompt": "p", "duration_seconds": -3}, "duration_seconds"),
    ("generate_video", {"prompt": "p", "duration_seconds": 0}, "duration_seconds"),
    ("generate_video", {"prompt": "p", "duration_seconds": "nan"}, "duration_seconds"),
    ("generate_video", {"prompt": "p", "duration_seconds": 1e308}, "duration_seconds"),
    ("generate_video", {"prompt": "p", "duration_seconds": True}, "duration_seconds"),
    ("estimate_cost", {"model": VIDEO_MODEL, "duration_seconds": "inf"}, "duration_seconds"),
    ("estimate_cost", {"model": CHEAP_MODEL, "max_tokens": -1}, "max_tokens"),
    ("budget", {"set_session_limit_usd": "nan"}, "set_session_limit_usd"),
    ("budget", {"set_session_limit_usd": "inf"}, "set_session_limit_usd"),
    ("budget", {"set_session_limit_usd": True}, "set_session_limit_usd"),
    # path tricks and injection where a name or URL is expected
    ("ask_model", {"prompt": "hi", "model": "../../etc/passwd"}, "Unknown"),
    ("generate_image", {"prompt": "p", "size": "../../../etc/passwd"}, "size"),
    ("generate_image", {"prompt": "p", "size": "1024x1024/../../x"}, "size"),
    ("generate_image", {"prompt": "p", "model": "../" * 50}, "model"),
    ("generate_image", {"prompt": "p", "model": CHEAP_MODEL}, "Unknown image model"),
    ("generate_video", {"prompt": "p", "image_url": "file:///etc/passwd"}, "image_url"),
    ("generate_video", {"prompt": "p", "image_url": "javascript:alert(1)"}, "image_url"),
    ("generate_video", {"job_id": "../../../ledger.sqlite3"}, "job_id"),
    ("generate_video", {"job_id": "vid_1\n DROP TABLE payments"}, "job_id"),
    # wrong types
    ("ask_model", {"prompt": 123}, "prompt"),
    ("ask_model", {"prompt": None}, "prompt"),
    ("ask_model", {"prompt": ["a", "b"]}, "prompt"),
    ("ask_model", {"prompt": {"role": "user"}}, "prompt"),
    ("ask_model", {}, "prompt"),
    ("ask_model", {"prompt": "hi", "model": ["openai/gpt-5-mini"]}, "model"),
    ("generate_image", {"prompt": "p", "size": 1024}, "size"),
    ("generate_video", {"job_id": 12345}, "job_id"),
    ("generate_video", {}, "prompt"),
    ("estimate_cost", {}, "model"),
    ("estimate_cost", {"model": None}, "model"),
    ("list_models", {"category": {"$ne": None}}, "category"),
    ("no_such_tool", {}, "no_such_tool"),
]


@pytest.mark.parametrize(
    "tool, arguments, says", NASTY, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(NASTY)]
)
async def test_nasty_arguments_are_readable_errors_costing_nothing(
    sandbox, tmp_path, tool, arguments, says
):
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail(tool, arguments)
        assert says in text
        assert len(text) < 2_000  # an error never echoes a huge argument back
        state = sandbox.state
        assert not paid_posts(state) and not state.payments_seen and not state.issued_terms
        assert h.ledger.payments() == []
        # The server keeps answering, its budget untouched.
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == 0 and budget["session_limit_usd"] == 1.0
        assert (await h.ok("wallet"))["address"] == h.address


async def test_one_server_survives_every_nasty_call_in_a_row(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        for tool, arguments, says in NASTY:
            assert says in await h.fail(tool, arguments)
        answer = await h.ok("ask_model", {"prompt": "still here?", "model": CHEAP_MODEL})
        assert "still here?" in answer["content"]
        assert len(sandbox.state.settlements) == 1
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


@pytest.mark.parametrize(
    "prompt",
    [
        "../../../../etc/passwd",
        "..\\..\\windows\\system32",
        "/absolute/path/evil.png",
        "name\x00with-nul.png",
        "🔥🔥🔥",
        "..",
        "a" * 10_000,
    ],
)
async def test_prompts_cannot_steer_where_images_are_saved(sandbox, tmp_path, prompt):
    out = (tmp_path / "out").resolve()
    async with open_server(tmp_path, sandbox) as h:
        for model in (DATA_URI_IMAGE_MODEL, URL_IMAGE_MODEL):
            image = await h.ok("generate_image", {"prompt": prompt, "model": model})
            path = Path(image["images"][0]["path"])
            assert path.resolve().parent == out and path.is_file()
            assert path.name.isascii() and "/" not in path.name and "\\" not in path.name
            assert len(path.name) < 100 and not path.name.startswith(".")
        assert sorted(p.resolve().parent for p in out.iterdir()) == [out, out]
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_extra_arguments_are_refused_with_the_tools_own_list(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail("list_models", {"category": "video", "secret_flag": True})
        assert "list_models has no argument 'secret_flag'" in text
        assert "list_models's arguments: category, provider." in text
        text = await h.fail("estimate_cost", {"model": CHEAP_MODEL, "stream": False, "n": 9})
        assert "has no arguments 'stream', 'n';" in text
        assert not sandbox.state.requests_seen
        for tool in h.tools.values():  # and the schemas say so up front
            assert tool.input_schema["additionalProperties"] is False


# --- raw JSON-RPC over stdio: what a well-behaved client cannot send ---------------------


class RawStdio:
    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.buffer = b""
        self.responses: dict[int, dict[str, Any]] = {}

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line.encode() + b"\n")

    async def request(self, request_id: int, method: str, params_json: str) -> None:
        await self.send(
            f'{{"jsonrpc":"2.0","id":{request_id},"method":"{method}","params":{params_json}}}'
        )

    async def response(self, request_id: int) -> dict[str, Any]:
        assert self.process.stdout is not None
        while request_id not in self.responses:
            while b"\n" not in self.buffer:
                self.buffer += await self.process.stdout.receive()
            line, self.buffer = self.buffer.split(b"\n", 1)
            message = json.loads(line)
            if "id" in message:
                self.responses[message["id"]] = message
        return self.responses.pop(request_id)


async def test_raw_nan_and_garbage_over_stdio(tmp_path):
    command = [PYTHON, "-m", "blockrun_mcp", "serve", "--sandbox"]
    with anyio.fail_after(60):
        async with await anyio.open_process(command, env=subprocess_env(tmp_path)) as process:
            raw = RawStdio(process)
            try:
                await raw.request(
                    1,
                    "initialize",
                    '{"protocolVersion":"2025-11-25","capabilities":{},'
                    '"clientInfo":{"name":"raw","version":"1"}}',
                )
                assert (await raw.response(1))["result"]["protocolVersion"] == "2025-11-25"
                await raw.send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
                call = '{{"name":"{}","arguments":{}}}'
                await raw.request(
                    2, "tools/call", call.format("ask_model", '{"prompt":"hi","temperature":NaN}')
                )
                await raw.request(
                    3, "tools/call", call.format("budget", '{"set_session_limit_usd":NaN}')
                )
                await raw.send("this line is not JSON at all {")
                await raw.request(
                    4,
                    "tools/call",
                    call.format("ask_model", '{"prompt":"hi","max_tokens":Infinity}'),
                )
                await raw.request(
                    5,
                    "tools/call",
                    call.format("generate_video", '{"prompt":"p","duration_seconds":-Infinity}'),
                )
                for request_id, says in (
                    (2, "temperature"),
                    (3, "set_session_limit_usd"),
                    (4, "max_tokens"),
                    (5, "duration_seconds"),
                ):
                    result = (await raw.response(request_id))["result"]
                    assert result["isError"] is True, result
                    assert says in result["content"][0]["text"]
                # Still serving, and nothing was spent.
                await raw.request(6, "tools/call", call.format("budget", "{}"))
                budget = (await raw.response(6))["result"]["structuredContent"]
                assert budget["session_spent_usd"] == 0 and budget["recent"] == []
                await raw.request(7, "tools/list", "{}")
                tools = (await raw.response(7))["result"]["tools"]
                assert len(tools) == len(TOOL_NAMES)
                # A lone UTF-16 surrogate escape is valid JSON syntax that the SDK's parser
                # refuses (it would drop the request unanswered): it arrives as U+FFFD, like
                # invalid UTF-8, and an emoji sent as a surrogate pair arrives whole.
                prompt = r'{"prompt":"lone \ud800 pair \ud83d\ude00","model":"MODEL"}'
                prompt = prompt.replace("MODEL", FREE_MODEL)
                await raw.request(8, "tools/call", call.format("ask_model", prompt))
                answer = (await raw.response(8))["result"]
                assert answer["isError"] is False, answer
                assert "lone \ufffd pair \U0001f600" in answer["structuredContent"]["content"]
            finally:
                process.terminate()
                await process.wait()
