"""delegate: a cheaper model works a task on its own, reading the workspace, within a ceiling.

Against the sandbox's scripted model (sandbox/scripted.py: `[[call NAME ARGS]]` lines in the
task, one step each; `[[loop ...]]` forever; without directives a default script that lists,
searches and reads), through a real MCP client of each era. Every payment is checked by the
x402 SDK; every request the sandbox received is searched for what must never leave.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.payer import assert_every_payment_valid
from tests.support.server import CHEAP_MODEL, FREE_MODEL, nonces_seen, open_server

pytestmark = pytest.mark.anyio

CONFIG_SOURCE = '''"""Settings."""

def parse_config(path):
    """Reads the config: every option below."""
    options = {"timeout": 30, "retries": 3}
    return options
'''
SECRET = "SECRET-MARKER-d41d8cd98f00b204"
IGNORED = "IGNORED-MARKER-9e107d9d372bb682"
OUTSIDE = "OUTSIDE-MARKER-e4d909c290d0fb1c"


def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "config.py").write_text(CONFIG_SOURCE)
    (root / "src" / "main.py").write_text("from config import parse_config\n\nparse_config('x')\n")
    (root / "README.md").write_text("# Demo\n\nA demo project.\n")
    (root / ".env").write_text(f"API_KEY={SECRET}\n")
    (root / ".gitignore").write_text("build/\n")
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text(f"{IGNORED}\n")
    outside = tmp_path / "outside.txt"
    outside.write_text(f"{OUTSIDE}\n")
    os.symlink(outside, root / "link.txt")
    return root


def bodies(sandbox: Any) -> str:
    """Every request body the sandbox received, as text."""
    with sandbox.state.lock:
        return "\n".join(json.dumps(body, default=str) for _, body in sandbox.state.bodies_seen)


def paid_chats(sandbox: Any) -> int:
    return len(set(nonces_seen(sandbox.state)))


async def test_the_model_lists_searches_and_reads_by_itself(sandbox, tmp_path):
    root = project(tmp_path)
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok(
            "delegate",
            {
                "task": "have deepseek find where we parse the config and list what each "
                "option does",
                "model": CHEAP_MODEL,
            },
            progress_callback=on_progress,
        )
    assert result["stopped"] == "answered"
    assert [step["tool"] for step in result["steps"]] == ["list_files", "search", "read_file"]
    assert "src/config.py" in result["files_read"]
    assert "def parse_config" in result["answer"]  # what the model read went back to it
    # Four paid requests (three tool steps, then the answer), one nonce each, all valid.
    assert result["requests"] == 4 and paid_chats(sandbox) == 4
    assert_every_payment_valid(sandbox.state)
    assert result["cost_usd"] > 0 and result["thread_id"]
    assert result["workspace"] == [str(root.resolve())]
    assert any("read_file" in text for text in progress)
    sent = bodies(sandbox)
    for marker in (SECRET, IGNORED, OUTSIDE):
        assert marker not in sent


async def test_escapes_secrets_and_ignored_files_are_refused_inside_the_loop(sandbox, tmp_path):
    root = project(tmp_path)
    task = "\n".join(
        [
            "Try everything.",
            '[[call read_file {"path": "../outside.txt"}]] [[call read_file {"path": ".env"}]]',
            f'[[call read_file {{"path": "{tmp_path / "outside.txt"}"}}]]',
            '[[call read_file {"path": "link.txt"}]] [[call read_file {"path": "build/out.txt"}]]',
            '[[call search {"query": "MARKER"}]] [[call list_files {"pattern": "**/*"}]]',
            "[[call read_file not json]] [[call rm_rf {}]]",
        ]
    )
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok("delegate", {"task": task, "model": CHEAP_MODEL})
    assert result["stopped"] == "answered"
    refused = [step for step in result["steps"] if step["refused"]]
    assert len(refused) == 7  # the five reads, the bad JSON, the unknown tool
    assert not [s for s in result["steps"] if not s["refused"] and s["tool"] == "read_file"]
    sent = bodies(sandbox) + json.dumps(result)
    for marker in (SECRET, IGNORED, OUTSIDE):
        assert marker not in sent
    assert ".env" not in "".join(
        line for line in result["answer"].splitlines() if line.startswith("- list_files")
    )
    assert_every_payment_valid(sandbox.state)


async def test_max_steps_stops_a_model_that_never_answers(sandbox, tmp_path):
    root = project(tmp_path)
    task = 'Loop. [[loop list_files {"pattern": "*.md"}]]'
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok("delegate", {"task": task, "model": CHEAP_MODEL, "max_steps": 3})
    assert result["stopped"] == "max_steps" and result["requests"] == 3
    assert paid_chats(sandbox) == 3 and "max_steps" in result["note"]
    assert_every_payment_valid(sandbox.state)


async def test_max_cost_stops_it_with_the_sum_signed_within_the_ceiling(sandbox, tmp_path):
    root = project(tmp_path)
    task = 'Loop. [[loop read_file {"path": "src/config.py"}]]'
    ceiling = 0.0035  # room for a few steps of the cheap model, not for 30
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok(
            "delegate",
            {"task": task, "model": CHEAP_MODEL, "max_steps": 30, "max_cost_usd": ceiling},
        )
        spent = round((await harness.ok("budget"))["session_spent_usd"] * 1_000_000)
    assert result["stopped"] == "max_cost", result
    assert 1 <= result["requests"] < 30
    signed = sum(int(p["amount"]) for p in _signed_payments(sandbox))
    assert signed <= ceiling * 1_000_000 and signed == round(result["cost_usd"] * 1_000_000)
    assert spent == signed
    # The step that could not fit was never asked for: two requests a paid step (402, then paid).
    with sandbox.state.lock:
        assert len(sandbox.state.bodies_seen) == 2 * result["requests"]
    assert_every_payment_valid(sandbox.state)


async def test_a_quote_above_our_estimate_is_held_to_what_is_left(sandbox, tmp_path):
    root = project(tmp_path)
    # The gateway quotes 40% over the formula: our estimate of each step is low, so only the
    # check of each quote against what is left of the ceiling keeps the sum within it.
    sandbox.state.set_faults(quote_percent=140)
    task = 'Loop. [[loop read_file {"path": "src/config.py"}]]'
    ceiling = 0.0052  # after three steps at $0.0014, $0.001 is left: our estimate, below the quote
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok(
            "delegate",
            {"task": task, "model": CHEAP_MODEL, "max_steps": 30, "max_cost_usd": ceiling},
        )
    assert result["stopped"] == "max_cost" and "max_cost_usd" in result["note"]
    signed = sum(int(p["amount"]) for p in _signed_payments(sandbox))
    assert 0 < signed <= ceiling * 1_000_000
    assert_every_payment_valid(sandbox.state)


def _signed_payments(sandbox: Any) -> list[dict[str, Any]]:
    """Each distinct authorization the gateway received (a retry resends the same one)."""
    with sandbox.state.lock:
        found = {
            p["payload"]["authorization"]["nonce"]: p["payload"]["authorization"]
            for p in sandbox.state.payments_seen
        }
    return [{"amount": authorization["value"]} for authorization in found.values()]


async def test_a_free_model_delegates_at_no_cost_even_with_budget_zero(sandbox, tmp_path):
    root = project(tmp_path)
    env = {"BLOCKRUN_SESSION_BUDGET_USD": "0"}
    async with open_server(tmp_path, sandbox, roots=[root], env=env) as harness:
        free = await harness.ok("delegate", {"task": "find the config", "model": FREE_MODEL})
        paid = await harness.fail("delegate", {"task": "find the config", "model": CHEAP_MODEL})
    assert free["stopped"] == "answered" and free["cost_usd"] == 0
    assert "budget" in paid.lower() and "nothing" in paid.lower()
    assert paid_chats(sandbox) == 0


async def test_cancelling_mid_loop_signs_nothing_more(sandbox, tmp_path):
    root = project(tmp_path)
    sandbox.state.set_faults(model_latency_seconds=0.3)
    task = 'Loop. [[loop list_files {"pattern": "*.md"}]]'
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        with anyio.move_on_after(1.0):
            await harness.client.call_tool(
                "delegate", {"task": task, "model": CHEAP_MODEL, "max_steps": 30}
            )
        signed_at_cancel = paid_chats(sandbox)
        await anyio.sleep(1.0)  # a loop still running would sign again within this
        assert paid_chats(sandbox) == signed_at_cancel
    assert 1 <= signed_at_cancel < 30
    assert_every_payment_valid(sandbox.state)


def recording(action: str = "accept") -> Any:
    from mcp_types import ElicitResult

    async def callback(context: Any, params: Any) -> ElicitResult:
        callback.asked.append(params.message)  # type: ignore[attr-defined]
        content = {"approve": True} if action == "accept" else None
        return ElicitResult(action=action, content=content)

    callback.asked = []  # type: ignore[attr-defined]
    return callback


async def test_approval_is_asked_once_for_the_whole_ceiling(sandbox, tmp_path):
    root = project(tmp_path)
    env = {"BLOCKRUN_CONFIRM_ABOVE_USD": "0.0005"}
    callback = recording()
    task = 'Loop. [[loop list_files {"pattern": "*.md"}]]'
    arguments = {"task": task, "model": CHEAP_MODEL, "max_steps": 4, "max_cost_usd": 0.05}
    async with open_server(
        tmp_path, sandbox, roots=[root], env=env, elicitation=callback
    ) as harness:
        result = await harness.ok("delegate", arguments)
    (question,) = callback.asked  # one question, in either era, for four paid steps
    assert "$0.050000" in question and "delegation" in question
    assert result["requests"] == 4 and paid_chats(sandbox) == 4
    assert_every_payment_valid(sandbox.state)


async def test_a_declined_delegation_signs_nothing(sandbox, tmp_path):
    root = project(tmp_path)
    env = {"BLOCKRUN_CONFIRM_ABOVE_USD": "0.0005"}
    async with open_server(
        tmp_path, sandbox, roots=[root], env=env, elicitation=recording("decline")
    ) as harness:
        refused = await harness.fail("delegate", {"task": "find it", "model": CHEAP_MODEL})
    assert "declined" in refused and "Nothing was signed" in refused
    assert paid_chats(sandbox) == 0
    with sandbox.state.lock:
        assert not sandbox.state.bodies_seen  # not even a request for a quote


async def test_the_delegation_is_a_thread_ask_model_continues(sandbox, tmp_path):
    root = project(tmp_path)
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok("delegate", {"task": "find the config", "model": CHEAP_MODEL})
        listed = await harness.ok("threads", {"thread_id": result["thread_id"]})
        follow = await harness.ok(
            "ask_model",
            {"prompt": "and then?", "model": CHEAP_MODEL, "thread_id": result["thread_id"]},
        )
    assert listed["turns"][0]["prompt"] == "find the config"
    assert listed["turns"][0]["answer"] == result["answer"]
    assert follow["thread_id"] == result["thread_id"]
    with sandbox.state.lock:
        last = sandbox.state.bodies_seen[-1][1]
    # The follow-up carried the task and the delegation's answer as the turn before it.
    assert last["messages"][0] == {"role": "user", "content": "find the config"}
    assert last["messages"][1] == {"role": "assistant", "content": result["answer"]}


async def test_a_flood_of_tool_calls_in_one_step_is_cut(sandbox, tmp_path):
    from blockrun_mcp.gateway import MAX_TOOL_CALLS

    root = project(tmp_path)
    flood = " ".join('[[call list_files {"pattern": "*.md"}]]' for _ in range(40))
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok("delegate", {"task": f"Flood.\n{flood}", "model": CHEAP_MODEL})
    assert len(result["steps"]) == MAX_TOOL_CALLS
    assert result["stopped"] == "answered"
    assert_every_payment_valid(sandbox.state)


async def test_bad_arguments_are_refused_before_anything_is_paid(sandbox, tmp_path):
    root = project(tmp_path)
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        for arguments, words in [
            ({"task": ""}, "task"),
            ({"task": "x", "max_steps": 0}, "max_steps"),
            ({"task": "x", "max_steps": 31}, "max_steps"),
            ({"task": "x", "max_cost_usd": -1}, "max_cost_usd"),
            ({"task": "x", "model": "no/such-model"}, "no/such-model"),
        ]:
            assert words in await harness.fail("delegate", arguments)
    with sandbox.state.lock:
        assert not sandbox.state.bodies_seen


async def test_with_effort_an_openai_model_works_through_the_responses_endpoint(sandbox, tmp_path):
    root = project(tmp_path)
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok(
            "delegate", {"task": "find the config", "model": CHEAP_MODEL, "effort": "low"}
        )
        refused = await harness.fail(
            "delegate", {"task": "find the config", "model": FREE_MODEL, "effort": "low"}
        )
    assert result["stopped"] == "answered" and result["requests"] == 4
    assert "src/config.py" in result["files_read"]
    with sandbox.state.lock:
        paths = [path for path, _ in sandbox.state.bodies_seen]
        bodies = [body for _, body in sandbox.state.bodies_seen]
    assert all(path.endswith("/v1/responses") for path in paths)
    assert all(body["reasoning"] == {"effort": "low"} for body in bodies)
    # The last request carried every call and its output back, as Responses items.
    kinds = [item.get("type", "message") for item in bodies[-1]["input"]]
    assert kinds.count("function_call") == 3 and kinds.count("function_call_output") == 3
    assert "does not take a reasoning effort" in refused
    assert_every_payment_valid(sandbox.state)


async def test_a_stream_cut_after_paying_keeps_the_payment_counted_and_says_so(sandbox, tmp_path):
    root = project(tmp_path)
    # Every answer is cut after its role chunk: the first step's tool calls never arrive.
    sandbox.state.set_faults(stream_cut_after_chunks=1)
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok("delegate", {"task": "find the config", "model": CHEAP_MODEL})
        spent = (await harness.ok("budget"))["session_spent_usd"]
    assert result["requests"] == 1 and result["steps"] == []
    assert "cut off" in result["note"]
    assert result["cost_usd"] > 0 and spent == pytest.approx(result["cost_usd"])
    assert_every_payment_valid(sandbox.state)


async def test_tool_results_together_stop_at_their_cap(sandbox, tmp_path, monkeypatch):
    from blockrun_mcp.service import delegate

    root = project(tmp_path)
    (root / "big.txt").write_text("".join(f"line {n} {'x' * 60}\n" for n in range(300)))
    monkeypatch.setattr(delegate, "MAX_TOTAL_TOOL_BYTES", 40_000)
    task = 'Loop. [[loop read_file {"path": "big.txt"}]]'
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        result = await harness.ok("delegate", {"task": task, "model": FREE_MODEL, "max_steps": 6})
    sizes = [step["bytes"] for step in result["steps"]]
    assert sum(sizes) <= 40_000 + 1024  # the last refusal's own few bytes
    assert result["steps"][-1]["refused"] and not result["steps"][0]["refused"]
    with sandbox.state.lock:
        last = sandbox.state.bodies_seen[-1][1]
    assert "reached their cap of 40000 bytes" in last["messages"][-1]["content"]


async def test_over_http_the_model_reads_only_the_operators_workspace(sandbox, tmp_path):
    from tests.support.server import http_server, make_service
    from tests.test_payers import as_person, error, ok, people

    root = project(tmp_path)
    tokens, token = people(tmp_path)
    service, _ = make_service(tmp_path, sandbox, env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)})
    with http_server(service) as url, anyio.fail_after(60):
        async with as_person(url, token["alice"]) as alice:
            refused = error(await alice.call_tool("delegate", {"task": "find the config"}))
    assert "BLOCKRUN_WORKSPACE" in refused and paid_chats(sandbox) == 0
    service, _ = make_service(
        tmp_path,
        sandbox,
        env={"BLOCKRUN_HTTP_TOKENS_FILE": str(tokens), "BLOCKRUN_WORKSPACE": str(root)},
    )
    with http_server(service) as url, anyio.fail_after(60):
        async with as_person(url, token["alice"]) as alice:
            result = ok(
                await alice.call_tool("delegate", {"task": "find the config", "model": CHEAP_MODEL})
            )
    assert result["workspace"] == [str(root.resolve())]
    assert "src/config.py" in result["files_read"]
    assert_every_payment_valid(sandbox.state)


async def test_a_ceiling_of_zero_pays_nothing(sandbox, tmp_path):
    root = project(tmp_path)
    async with open_server(tmp_path, sandbox, roots=[root]) as harness:
        refused = await harness.fail(
            "delegate", {"task": "find it", "model": CHEAP_MODEL, "max_cost_usd": 0}
        )
    assert "max_cost_usd" in refused and paid_chats(sandbox) == 0
