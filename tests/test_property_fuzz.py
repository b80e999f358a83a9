"""Every tool fuzzed with generated arguments: huge and empty strings, odd unicode, negative, NaN
and huge numbers, wrong types, path tricks. The answer is always a clean tool error or a result
that matches the tool's output schema; nothing escapes the data dirs; spending stays reconciled;
and the server keeps answering.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import py_ecc  # noqa: F401  (raises the recursion limit on import: before hypothesis watches)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockrun_mcp.sandbox import SandboxServer
from tests.support.security import (
    MASKED_PREFIX,
    assert_budget_consistent,
    error_text,
    reconcile,
)
from tests.support.server import (
    CHEAP_MODEL,
    DATA_URI_IMAGE_MODEL,
    FREE_MODEL,
    VIDEO_MODEL,
    open_server,
)

PARAMETERS: dict[str, tuple[str, ...]] = {
    "ask_model": ("prompt", "model", "system", "max_tokens", "temperature"),
    "list_models": ("category", "provider"),
    "estimate_cost": ("model", "prompt", "max_tokens", "size", "duration_seconds"),
    "generate_image": ("prompt", "model", "size"),
    "generate_video": ("prompt", "model", "duration_seconds", "image_url", "job_id"),
    "budget": ("set_session_limit_usd",),
    "wallet": (),
}

PATH_TRICKS = st.sampled_from(
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..\\..\\windows\\win.ini",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "file:///etc/passwd",
        "~/.blockrun/.session",
        "../../../ledger.sqlite3",
        "vid_../../x",
        "1024x1024/../../x",
        "$(touch /tmp/pwned)",
        "'; DROP TABLE payments; --",
        "nul\x00byte",
        "CON",
    ]
)
ODD_UNICODE = st.sampled_from(
    [
        "\u202e\u200b\ufeff",
        "\ud800",
        "🔥" * 50,
        "ｆｕｌｌｗｉｄｔｈ",
        "\r\n\t",
        "é" * 3,
        "\U0010ffff",
    ]
)
TEXT = st.one_of(
    st.text(max_size=40),
    st.just(""),
    st.just("   "),
    st.just("x" * 5_000_000),
    st.just("y" * 5_000),
    ODD_UNICODE,
    PATH_TRICKS,
    st.sampled_from([CHEAP_MODEL, FREE_MODEL, DATA_URI_IMAGE_MODEL, VIDEO_MODEL, "1024x1024"]),
)
NUMBER = st.one_of(
    st.integers(-10, 10),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**64, 1e308, -1e-308, 5e-324, 0.5, 3]),
)
WRONG_TYPE = st.one_of(
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
VALUE = st.one_of(TEXT, NUMBER, WRONG_TYPE)


def arguments_for(tool: str) -> st.SearchStrategy[dict[str, Any]]:
    optional = {name: VALUE for name in PARAMETERS[tool]}
    optional["unexpected_argument"] = VALUE
    return st.fixed_dictionaries({}, optional=optional)


FUZZ = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def shared_sandbox():
    with SandboxServer() as server:
        yield server


def _files(root: Path) -> set[Path]:
    return {Path(d, f).resolve() for d, _, files in os.walk(root) for f in files}


async def check_one_call(sandbox: SandboxServer, tool: str, arguments: dict[str, Any], root: Path):
    """One fuzzed call: a clear error or a valid answer, the ledger reconciled, files in place."""
    state = sandbox.state
    state.reset()
    state.set_faults(video_polls_before_done=0)
    async with open_server(root, sandbox, video_wait_seconds=5) as h:
        with anyio.fail_after(30):
            result = await h.client.call_tool(tool, arguments)
        text = result.content[0].text if result.content else ""
        if result.is_error:
            assert len(text) < 5_000, "an error echoed a huge argument back"
            error_text(result, tool)  # argument mistakes too: our sentences, not pydantic's report
        else:
            jsonschema.validate(result.structured_content, h.tools[tool].output_schema)
        # Spending stays reconciled with the gateway, and the budget tool agrees.
        rows = reconcile(h.ledger, state, logical_requests=1)
        assert_budget_consistent(await h.ok("budget"), rows)
        # Whatever the arguments said, files were written only in the data and output dirs.
        allowed = {(root / "data").resolve(), (root / "out").resolve()}
        for path in _files(root):
            assert any(parent in allowed for parent in path.parents), path
        # The server is still up and its wallet intact.
        assert (await h.ok("wallet"))["address"] == h.address


@pytest.mark.parametrize("tool", list(PARAMETERS))
@FUZZ
@given(data=st.data())
def test_every_tool_survives_generated_arguments(shared_sandbox, tool, data):
    arguments = data.draw(arguments_for(tool), label="arguments")
    with tempfile.TemporaryDirectory() as root:
        anyio.run(check_one_call, shared_sandbox, tool, arguments, Path(root))


def test_one_server_survives_a_stream_of_generated_calls(shared_sandbox):
    """The same server takes fuzzed calls to every tool in a row, then still pays correctly."""

    @FUZZ
    @given(calls=st.lists(st.sampled_from(list(PARAMETERS)).flatmap(_call), max_size=6))
    def run(calls: list[tuple[str, dict[str, Any]]]) -> None:
        with tempfile.TemporaryDirectory() as root:
            anyio.run(check_calls_in_a_row, shared_sandbox, calls, Path(root))

    run()


def _call(tool: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return arguments_for(tool).map(lambda arguments: (tool, arguments))


async def check_calls_in_a_row(
    sandbox: SandboxServer, calls: list[tuple[str, dict[str, Any]]], root: Path
):
    """Fuzzed calls on one server, then a paid call still works and the ledger reconciles."""
    state = sandbox.state
    state.reset()
    state.set_faults(video_polls_before_done=0)
    async with open_server(root, sandbox, video_wait_seconds=5) as h:
        with anyio.fail_after(60):
            for tool, arguments in calls:
                result = await h.client.call_tool(tool, arguments)
                if result.is_error:
                    assert result.content[0].text.strip() != f"{MASKED_PREFIX} {tool}"
            final = await h.call("ask_model", {"prompt": "still here?", "model": CHEAP_MODEL})
        if final.is_error:  # only if a fuzzed `budget` call lowered the session limit to nothing
            assert "would exceed the budget" in error_text(final, "ask_model")
        else:
            assert "still here?" in final.structured_content["content"]
        rows = reconcile(h.ledger, state, logical_requests=len(calls) + 1)
        budget = await h.ok("budget")
        assert_budget_consistent(budget, rows)


BASE_ARGUMENTS: dict[str, dict[str, Any]] = {
    "ask_model": {"prompt": "hi", "model": CHEAP_MODEL},
    "list_models": {},
    "estimate_cost": {"model": CHEAP_MODEL},
    "generate_image": {"prompt": "p", "model": DATA_URI_IMAGE_MODEL},
    "generate_video": {"prompt": "p", "model": VIDEO_MODEL, "duration_seconds": 1},
}
STRING_PARAMETERS = [
    (tool, name)
    for tool, names in PARAMETERS.items()
    for name in names
    if name in ("prompt", "model", "system", "category", "provider", "size", "image_url", "job_id")
]
NASTY_TEXT = [
    "\ud800",
    "a\udfffb",
    "\u202e\u200b\ufeff",
    "\x00",
    "../../etc/passwd",
    "%2e%2e%2f",
    "file:///etc/passwd",
    "",
    " ",
]


@pytest.mark.anyio
async def test_every_string_parameter_takes_the_nastiest_text(shared_sandbox, tmp_path):
    """Each string parameter of each tool, with each of the values random draws rarely hit."""
    state = shared_sandbox.state
    state.reset()
    state.set_faults(video_polls_before_done=0)
    env = {"BLOCKRUN_SESSION_BUDGET_USD": "50"}
    async with open_server(tmp_path, shared_sandbox, env=env, video_wait_seconds=5) as h:
        calls = 0
        for tool, name in STRING_PARAMETERS:
            for value in NASTY_TEXT:
                arguments = {**BASE_ARGUMENTS.get(tool, {}), name: value}
                if name == "job_id":
                    arguments.pop("prompt")
                result = await h.call(tool, arguments)
                calls += 1
                if result.is_error:
                    text = error_text(result, tool)
                    assert len(text) < 2_000
                else:
                    jsonschema.validate(result.structured_content, h.tools[tool].output_schema)
        rows = reconcile(h.ledger, state, logical_requests=calls)
        assert_budget_consistent(await h.ok("budget"), rows)
        for path in _files(tmp_path):
            assert "data" in path.parts or "out" in path.parts, path
        answer = await h.ok("ask_model", {"prompt": "still here?", "model": CHEAP_MODEL})
        assert "still here?" in answer["content"]
