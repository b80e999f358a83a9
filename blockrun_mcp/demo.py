"""`blockrun-mcp demo`: every tool once, through a real MCP client session over stdio, on the sandbox.

It starts `blockrun-mcp serve --sandbox` as a subprocess, exactly as an MCP host would, so a
working demo also proves the install. The subprocess never gets the user's wallet key: see
`sandbox_child_env`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blockrun_mcp.money import dollars

CHAT_MODEL = "openai/gpt-5-mini"
DEMO_CONFIG = '''"""Settings of the demo app."""


def parse_config(values: dict) -> dict:
    """timeout: seconds to wait; retries: attempts before giving up."""
    return {"timeout": values.get("timeout", 30), "retries": values.get("retries", 3)}
'''
DEMO_APP = "from config import parse_config\n\nsettings = parse_config({})\n"
SECOND_MODEL = "google/gemini-2.5-flash"

# What the demo's server may inherit from the user's environment.
#
# Our own namespaces (BLOCKRUN_*, BASE_CHAIN_*) are allow-listed: the server runs on the sandbox
# with a throwaway wallet, so it needs no key (a real BLOCKRUN_WALLET_KEY or BASE_CHAIN_WALLET_KEY
# in a child that never uses it is only exposure), no gateway URL or RPC node (the sandbox
# replaces both), no HTTP token (the demo speaks stdio), and not the user's budgets (they would
# fail the demo for reasons that have nothing to do with the install). Only where files go is
# kept: the sandbox's ledger and media go into a `sandbox` subfolder of the user's chosen
# folders, where `blockrun-mcp spend --sandbox` finds them. Names added to the product later are
# dropped until someone decides otherwise here.
#
# Everything else passes: the child is this same Python program, and needs whatever the
# interpreter and its install need (PATH, HOME, PYTHONPATH, VIRTUAL_ENV, locale, TMPDIR, proxy
# and CA settings), which no allow-list could name for every uvx, pipx or conda set-up. None of
# it changes what the server does with money: config.py reads only the names in ENV_VARS.
OWN_PREFIXES = ("BLOCKRUN_", "BASE_CHAIN_")
INHERITED_SETTINGS = frozenset({"BLOCKRUN_DATA_DIR", "BLOCKRUN_OUTPUT_DIR"})


def sandbox_child_env(parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the demo's sandbox server: the parent's, minus keys and real settings."""
    parent = os.environ if parent is None else parent
    return {
        name: value
        for name, value in parent.items()
        # upper(): drop any spelling of our names, not only the exact one config.py reads.
        if not name.upper().startswith(OWN_PREFIXES) or name in INHERITED_SETTINGS
    }


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _money(value: Any) -> str:
    return dollars(float(value or 0))


async def run_demo(out: Any = sys.stdout) -> int:
    """Drive every tool once; print a readable line each. Returns the number of failed tools."""
    from mcp import Client, StdioServerParameters

    from blockrun_mcp.server import TOOL_NAMES

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    # A small project for `delegate` to explore, so the demo reads nothing of yours.
    project = Path(tempfile.mkdtemp(prefix="blockrun-demo-"))
    atexit.register(shutil.rmtree, project, True)
    (project / "config.py").write_text(DEMO_CONFIG, encoding="utf-8")
    (project / "app.py").write_text(DEMO_APP, encoding="utf-8")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "blockrun_mcp", "serve", "--sandbox"],
        env={**sandbox_child_env(), "BLOCKRUN_WORKSPACE": str(project)},
    )
    say("blockrun-mcp demo: every tool, through a real MCP session, against the built-in sandbox.")
    say("No funds needed: the sandbox plays the BlockRun gateway and pays with a throwaway wallet.")
    say()
    failures = 0
    started = time.monotonic()
    progress_updates: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progress_updates.append(message or f"{progress}")

    async with Client(params, mode="legacy") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        say(f"  server offers {len(tools)} tools: {', '.join(sorted(tools))}")
        say()

        async def call(name: str, arguments: dict[str, Any], **kw: Any) -> dict[str, Any] | None:
            nonlocal failures
            result = await client.call_tool(name, arguments, **kw)
            if result.is_error:
                failures += 1
                text = result.content[0].text if result.content else "(no text)"
                say(f"  {name:<15} FAILED: {text}")
                return None
            return result.structured_content or {}

        if wallet := await call("wallet", {}):
            say(f"  {'wallet':<15} {wallet['address']} on {wallet['network']}")
        if models := await call("list_models", {"category": "chat"}):
            cheap = next(
                (m for m in models["models"] if m["id"] == CHAT_MODEL), models["models"][0]
            )
            say(
                f"  {'list_models':<15} {len(models['models'])} chat models, e.g. {cheap['id']} "
                f"${cheap['input_price']}/${cheap['output_price']} per 1M tokens"
            )
        prompt = "In one sentence: why do agents need budgets?"
        if estimate := await call(
            "estimate_cost", {"model": CHAT_MODEL, "prompt": prompt, "max_tokens": 256}
        ):
            say(
                f"  {'estimate_cost':<15} {estimate['model']}, 256 tokens max: about {_money(estimate['estimated_usd'])} (free, nothing signed)"
            )
        if answer := await call(
            "ask_model", {"prompt": prompt, "model": CHAT_MODEL, "max_tokens": 256}
        ):
            say(f'  {"ask_model":<15} {answer["model"]}: "{_short(answer["content"], 60)}"')
            say(
                f"  {'':<15} paid {_money(answer['cost_usd'])}, tx {str(answer.get('transaction'))[:12]}…, "
                f"{_money(answer['budget_remaining_usd'])} left"
            )
            follow_up = {"prompt": "And in three words?", "thread_id": answer["thread_id"]}
            if again := await call("ask_model", {**follow_up, "model": CHAT_MODEL}):
                say(f'  {"":<15} same thread, follow-up: "{_short(again["content"], 50)}"')
            if thread := await call("threads", {"thread_id": answer["thread_id"]}):
                say(
                    f"  {'threads':<15} {answer['thread_id'][:16]}… kept {len(thread['turns'])} "
                    "turns (they survive restarts)"
                )
        consult = {"prompt": prompt, "models": [CHAT_MODEL, SECOND_MODEL], "max_tokens": 256}
        if many := await call("ask_models", consult):
            say(
                f"  {'ask_models':<15} {len(many['answers'])} models at once, priced together "
                f"before paying: {_money(many['cost_usd'])} in all"
            )
        task = "Find where we parse the config and list what each option does."
        if delegated := await call(
            "delegate", {"task": task, "model": CHAT_MODEL}, progress_callback=on_progress
        ):
            tools_used = ", ".join(step["tool"] for step in delegated["steps"])
            say(
                f"  {'delegate':<15} {delegated['model']} worked alone: {tools_used}; read "
                f"{', '.join(delegated['files_read']) or 'nothing'}; "
                f"{delegated['requests']} paid requests, {_money(delegated['cost_usd'])} in all"
            )
        if image := await call("generate_image", {"prompt": "a lighthouse at dusk"}):
            say(
                f"  {'generate_image':<15} saved {image['images'][0].get('path')} (paid {_money(image['cost_usd'])})"
            )
        if video := await call(
            "generate_video",
            {"prompt": "waves on a beach", "duration_seconds": 2},
            progress_callback=on_progress,
        ):
            say(
                f"  {'generate_video':<15} {video['status']}: {video.get('path') or video.get('job_id')} "
                f"(paid {_money(video['cost_usd'])}, {len(progress_updates)} progress updates)"
            )
        if budget := await call("budget", {}):
            say(
                f"  {'budget':<15} spent {_money(budget['session_spent_usd'])} of "
                f"{_money(budget['session_limit_usd'])} this session; {_money(budget['budget_remaining_usd'])} left; "
                f"{len(budget.get('recent', []))} receipts"
            )
        missing = TOOL_NAMES - tools
        if missing:
            failures += len(missing)
            say(f"  MISSING TOOLS: {', '.join(sorted(missing))}")
    say()
    elapsed = time.monotonic() - started
    if failures:
        say(f"{failures} tool(s) failed ({elapsed:.1f} s). See the messages above.")
    else:
        say(
            f"All {len(TOOL_NAMES)} tools worked ({elapsed:.1f} s). Next: add it to Claude Code with"
        )
        say("  claude mcp add blockrun -- uvx blockrun-mcp")
    return failures
