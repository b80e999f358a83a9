"""Context without copy-paste: files read by the server, threads that survive restarts, and
reasoning effort, through a real MCP client against the sandbox.

What the model received is read from the sandbox's own log of request bodies; what was paid,
from the payments it received and the ledger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from blockrun_mcp.workspace import MAX_FILE_BYTES, MAX_PATTERN_FILES
from tests.support.security import wait_until
from tests.support.server import CHEAP_MODEL, NANO_MODEL, OPUS, open_ledger, open_server

pytestmark = pytest.mark.anyio

GPT = "openai/gpt-5.5"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small repository: sources, a .gitignore, and things that must never be sent."""
    root = tmp_path / "project"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "a.py").write_text("def a():\n    return 'alpha'\n")
    (root / "src" / "pkg" / "b.py").write_text("B = '```fenced```'\n")
    (root / "src" / "notes.md").write_text("# notes\n")
    (root / ".gitignore").write_text("build/\n*.log\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("generated = True\n")
    (root / "src" / "debug.log").write_text("noise\n")
    (root / ".git").mkdir()
    (root / ".git" / "config.py").write_text("never = True\n")
    (root / ".env").write_text("API_KEY=hunter2\n")
    (root / "src" / "server.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "src" / "blob.py").write_bytes(b"\x00\x01binary")
    return root


def env_with(project: Path, **extra: str) -> dict[str, str]:
    return {"BLOCKRUN_WORKSPACE": str(project), **extra}


def chat_bodies(state: Any, path: str = "/chat/completions") -> list[dict[str, Any]]:
    with state.lock:
        return [body for seen, body in state.bodies_seen if seen.endswith(path)]


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(
        message["content"] for message in body["messages"] if message["role"] == "user"
    )


def nothing_paid(h: Any, state: Any) -> None:
    assert not state.payments_seen and not h.ledger.payments()


# --- files ---------------------------------------------------------------------------------


async def test_files_are_read_by_the_server_fenced_and_labelled(sandbox, tmp_path, project):
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        answer = await h.ok(
            "ask_model",
            {"prompt": "review these", "model": CHEAP_MODEL, "files": ["src/**/*.py"]},
        )
        sent = {f["path"]: f for f in answer["files"]}
        assert set(sent) == {"src/a.py", "src/pkg/b.py"}
        assert sent["src/a.py"]["bytes"] == len("def a():\n    return 'alpha'\n")
        assert sent["src/a.py"]["tokens"] > 0
        # Skipped by the pattern, and said so: the binary, the key, and what git ignores.
        assert "skipped" in answer["note"] and "binary" in answer["note"]
        (body,) = chat_bodies(sandbox.state)[-1:]
        text = user_text(body)
        assert "File: src/a.py\n```\ndef a():" in text
        assert "File: src/pkg/b.py\n````\nB = '```fenced```'\n````" in text  # a longer fence
        assert text.index("File: src/a.py") < text.index("review these")  # files first
        for never in ("hunter2", "BEGIN PRIVATE KEY", "generated", "never = True", "binary"):
            assert never not in text
        estimate_with = await h.ok(
            "estimate_cost", {"model": OPUS, "prompt": "q", "files": ["src/a.py"]}
        )
        estimate_without = await h.ok("estimate_cost", {"model": OPUS, "prompt": "q"})
        assert estimate_with["estimated_usd"] > estimate_without["estimated_usd"]
        assert "1 file(s)" in estimate_with["basis"]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (".env", "looks like a secret"),
        ("src/server.pem", "looks like a secret"),
        ("src/blob.py", "binary"),
        ("../outside.txt", "outside the workspace"),
        ("link-out.txt", "outside the workspace"),
        ("loop", "looping symlink"),
        ("fifo", "not a regular file"),
        ("missing.py", "not found"),
        ("big.txt", "per file"),
    ],
)
async def test_every_refusal_is_an_error_and_costs_nothing(sandbox, tmp_path, project, spec, says):
    (tmp_path / "outside.txt").write_text("secret outside\n")
    (project / "link-out.txt").symlink_to(tmp_path / "outside.txt")
    (project / "loop").symlink_to(project / "loop")
    os.mkfifo(project / "fifo")  # opening it would block the server: it must never be opened
    (project / "big.txt").write_text("x" * (MAX_FILE_BYTES + 1))
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        with anyio.fail_after(10):
            text = await h.fail("ask_model", {"prompt": "q", "model": CHEAP_MODEL, "files": [spec]})
        assert says in text and "secret outside" not in text
        nothing_paid(h, sandbox.state)


async def test_an_absolute_path_outside_and_the_data_dir_are_refused(sandbox, tmp_path, project):
    # The workspace is the whole tmp dir here, so the data dir (with the ledger) is inside it.
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_WORKSPACE": str(tmp_path)}) as h:
        await h.ok("ask_model", {"prompt": "make a ledger", "model": CHEAP_MODEL})
        ledger = str(h.config.data_dir / "ledger.sqlite3")
        text = await h.fail("ask_model", {"prompt": "q", "files": [ledger]})
        assert "own files" in text
        key = tmp_path / ".blockrun" / ".session"
        key.parent.mkdir()
        key.write_text("0x" + "11" * 32)
        text = await h.fail("ask_model", {"prompt": "q", "files": [str(key)]})
        assert "11" * 32 not in text and ("own files" in text or "secret" in text)
        text = await h.fail("ask_model", {"prompt": "q", "files": ["/etc/hostname"]})
        assert "outside the workspace" in text
        assert len(h.ledger.payments()) == 1  # only the first, deliberate call


async def test_a_pattern_matching_too_much_names_the_count(sandbox, tmp_path, project):
    many = project / "many"
    many.mkdir()
    for index in range(MAX_PATTERN_FILES + 5):
        (many / f"f{index}.txt").write_text(f"{index}\n")
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        text = await h.fail("ask_model", {"prompt": "q", "files": ["many/*.txt"]})
        assert f"matches {MAX_PATTERN_FILES + 5} files" in text
        nothing_paid(h, sandbox.state)


async def test_the_clients_roots_win_over_the_configured_workspace(sandbox, tmp_path, project):
    offered = tmp_path / "offered"
    offered.mkdir()
    (offered / "mine.txt").write_text("from the client's root\n")
    async with open_server(tmp_path, sandbox, env=env_with(project), roots=[offered]) as h:
        answer = await h.ok(
            "ask_model", {"prompt": "q", "model": CHEAP_MODEL, "files": ["mine.txt"]}
        )
        assert answer["files"][0]["path"] == "mine.txt"
        # The result says where the files were read: the root the client offered, in either
        # era (2026-07-28 asks for the roots in a round trip, the handshake era mid-call).
        assert answer["workspace"] == [str(offered.resolve())]
        assert "from the client's root" in user_text(chat_bodies(sandbox.state)[-1])
        estimate = await h.ok(
            "estimate_cost", {"model": CHEAP_MODEL, "prompt": "q", "files": ["mine.txt"]}
        )
        assert f"read from {offered.resolve()}" in estimate["basis"]
        text = await h.fail("ask_model", {"prompt": "q", "files": ["src/a.py"]})
        assert "not found" in text  # the configured workspace no longer applies


# --- threads -------------------------------------------------------------------------------


async def test_a_thread_survives_a_restart_and_may_switch_models(sandbox, tmp_path, project):
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        first = await h.ok(
            "ask_model",
            {"prompt": "first question", "model": CHEAP_MODEL, "files": ["src/a.py"]},
        )
        thread_id = first["thread_id"]
        assert thread_id.startswith("thr_")
    (project / "src" / "a.py").write_text("changed after the first turn\n")
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        second = await h.ok(
            "ask_model",
            {"prompt": "what did you think?", "model": OPUS, "thread_id": thread_id},
        )
        assert second["thread_id"] == thread_id and second["model"] == OPUS
        body = chat_bodies(sandbox.state)[-1]
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["user", "assistant", "user"]
        # The earlier turn again, with the file as it was sent then.
        assert "def a():" in body["messages"][0]["content"]
        assert "changed after" not in json.dumps(body)
        assert body["messages"][1]["content"] == first["content"]
        listed = await h.ok("threads")
        (thread,) = [t for t in listed["threads"] if t["thread_id"] == thread_id]
        assert thread["turns"] == 2 and set(thread["models"]) == {CHEAP_MODEL, OPUS}
        assert thread["cost_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"])
        assert thread["title"] == "first question"
        turns = (await h.ok("threads", {"thread_id": thread_id}))["turns"]
        assert [t["model"] for t in turns] == [CHEAP_MODEL, OPUS]
        assert turns[0]["files"] == ["src/a.py"] and turns[1]["files"] == []


async def test_an_unknown_thread_costs_nothing(sandbox, tmp_path, project):
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        for thread_id in ("thr_" + "0" * 24, "not-a-thread", ""):
            text = await h.fail("ask_model", {"prompt": "q", "thread_id": thread_id})
            assert "No thread" in text and "nothing was paid" in text
        assert "No thread" in await h.fail("threads", {"thread_id": "thr_nope"})
        nothing_paid(h, sandbox.state)


async def test_two_calls_on_one_thread_both_land_in_order(sandbox, tmp_path, project):
    sandbox.state.set_faults(model_latency_seconds=0.3)
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        start = await h.ok("ask_model", {"prompt": "start", "model": CHEAP_MODEL})
        thread_id = start["thread_id"]
        answers: dict[str, Any] = {}

        async def ask(prompt: str) -> None:
            answers[prompt] = await h.ok(
                "ask_model", {"prompt": prompt, "model": CHEAP_MODEL, "thread_id": thread_id}
            )

        async with anyio.create_task_group() as group:
            group.start_soon(ask, "one")
            group.start_soon(ask, "two")
        turns = (await h.ok("threads", {"thread_id": thread_id}))["turns"]
        assert [t["prompt"] for t in turns[:1]] == ["start"] and len(turns) == 3
        later = turns[2]["prompt"]
        earlier = turns[1]["prompt"]
        last_body = chat_bodies(sandbox.state)[-1]
        assert user_text(last_body).count(earlier) == 1  # the second saw the first
        assert answers[later]["thread_id"] == answers[earlier]["thread_id"] == thread_id


async def test_a_cancelled_call_leaves_no_half_turn(sandbox, tmp_path, project):
    state = sandbox.state
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        state.set_faults(model_latency_seconds=30)
        async with anyio.create_task_group() as group:
            group.start_soon(h.call, "ask_model", {"prompt": "cut me", "model": CHEAP_MODEL})
            await wait_until(lambda: len(state.settlements) == 1, timeout=15)
            group.cancel_scope.cancel()
        state.clear_faults()
        listed = await h.ok("threads")
        assert listed["threads"] == []  # no thread, no turn: the answer never arrived
        (row,) = h.ledger.payments()
        assert row.counted_atomic == row.amount_atomic  # but the payment is on the books


async def test_a_thread_too_long_for_the_model_is_refused_with_one_that_fits(
    sandbox, tmp_path, project
):
    big = project / "big"
    big.mkdir()
    for index in range(8):  # about 8 x 250 KB of text: ~500k tokens
        (big / f"part{index}.txt").write_text(("word " * 50_000)[: MAX_FILE_BYTES - 10])
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        text = await h.fail(
            "ask_model", {"prompt": "q", "model": NANO_MODEL, "files": ["big/*.txt"]}
        )
        assert "context window" in text and "nothing was paid" in text
        assert "tokens" in text and "holds" in text
        nothing_paid(h, sandbox.state)


# --- effort ---------------------------------------------------------------------------------


async def test_effort_goes_through_the_responses_endpoint(sandbox, tmp_path, project):
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        answer = await h.ok(
            "ask_model",
            {
                "prompt": "think hard",
                "model": GPT,
                "effort": "high",
                "system": "be terse",
                "files": ["src/a.py"],
                "max_tokens": 2000,
            },
        )
        assert answer["usage"]["reasoning_tokens"] > 0 and "think hard" in answer["content"]
        (body,) = chat_bodies(sandbox.state, "/v1/responses")[-1:]
        assert body["reasoning"] == {"effort": "high"} and body["stream"] is True
        assert body["instructions"] == "be terse" and body["max_output_tokens"] == 2000
        assert body["store"] is False and "previous_response_id" not in body
        assert "File: src/a.py" in body["input"][-1]["content"]
        low = await h.ok(
            "ask_model",
            {
                "prompt": "think less",
                "model": GPT,
                "effort": "low",
                "thread_id": answer["thread_id"],
            },
        )
        assert low["usage"]["reasoning_tokens"] > 0
        continued = chat_bodies(sandbox.state, "/v1/responses")[-1]
        assert [item["role"] for item in continued["input"]] == ["user", "assistant", "user"]
        assert len(sandbox.state.settlements) == 2


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"model": OPUS, "effort": "high"}, "does not take a reasoning effort"),
        ({"model": GPT, "effort": "extreme"}, "effort"),
    ],
)
async def test_every_refusal_of_effort_costs_nothing(sandbox, tmp_path, project, arguments, says):
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        text = await h.fail("ask_model", {"prompt": "q", **arguments})
        assert says in text
        if "does not" in text:
            assert GPT in text  # names the models that do
        nothing_paid(h, sandbox.state)


async def test_the_threads_command_lists_and_shows(sandbox, tmp_path, project, monkeypatch, capsys):
    async with open_server(tmp_path, sandbox, env=env_with(project)) as h:
        answer = await h.ok("ask_model", {"prompt": "kept for later", "model": CHEAP_MODEL})
        data_dir = h.config.data_dir
    from blockrun_mcp.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BLOCKRUN_DATA_DIR", str(data_dir))
    main(["threads"])
    listed = capsys.readouterr().out
    assert answer["thread_id"] in listed and "kept for later" in listed
    main(["threads", answer["thread_id"], "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["turns"][0]["prompt"] == "kept for later"
    assert shown["turns"][0]["answer"] == answer["content"]
    ledger = open_ledger(h.config)
    ledger.close()
