"""A real MCP client (the MCP SDK's) against a built artifact, as a host would start it.

    mcp-smoke.py wheel -- COMMAND...     COMMAND serves the sandbox (`... serve --sandbox`): the
                                         tools are listed, `wallet` and `list_models` answer, and
                                         one paid `ask_model` is paid from the sandbox's wallet
    mcp-smoke.py bundle BUNDLE_DIR       an unpacked .mcpb: its manifest's mcp_config, as an MCPB
                                         host substitutes it with the settings' defaults, must
                                         list the manifest's tools, and `budget` must report
                                         those defaults (the settings reach the server)

Run with the project's venv python (it has the `mcp` SDK). Exits 1 with the reason on failure.
The server gets this environment (HOME, PATH, UV_* settings) less any BLOCKRUN_* variable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

# What every tool list must hold (blockrun_mcp.server.TOOL_NAMES, written out: this checks a
# built artifact, so it does not take the answer from the source tree it was built from).
TOOLS = {
    "ask_model",
    "ask_models",
    "delegate",
    "threads",
    "list_models",
    "estimate_cost",
    "generate_image",
    "generate_video",
    "budget",
    "wallet",
}
CHEAP_MODEL = "openai/gpt-5-mini"
STEP_SECONDS = 180  # the first start may build a virtualenv (uv), on a busy 2-core machine


class SmokeFailure(Exception):
    pass


def _environment(extra: dict[str, str]) -> dict[str, str]:
    """This environment (HOME, PATH, uv's settings, the machine's TLS trust) without any
    BLOCKRUN_* setting of the caller's, plus `extra`: what the artifact is to be run with."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKRUN_")}
    return {**keep, **extra}


async def _call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    if result.is_error:
        text = result.content[0].text if result.content else "(no text)"
        raise SmokeFailure(f"{name} failed: {text}")
    return result.structured_content or {}


async def _tools(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def smoke_wheel(command: list[str]) -> str:
    params = StdioServerParameters(command=command[0], args=command[1:], env=_environment({}))
    with anyio.fail_after(STEP_SECONDS):
        async with Client(params) as client:
            if (tools := await _tools(client)) != TOOLS:
                raise SmokeFailure(f"tools/list: {sorted(tools ^ TOOLS)} differ")
            wallet = await _call(client, "wallet", {})
            models = await _call(client, "list_models", {"category": "chat"})
            if not models.get("models"):
                raise SmokeFailure("list_models returned no chat model")
            answer = await _call(
                client, "ask_model", {"prompt": "Say ok.", "model": CHEAP_MODEL, "max_tokens": 16}
            )
            if not answer.get("cost_usd", 0) > 0:
                raise SmokeFailure(f"ask_model paid nothing: {answer}")
            return (
                f"{len(tools)} tools; wallet {wallet['address']} on {wallet['network']}; "
                f"{len(models['models'])} chat models; ask_model paid ${answer['cost_usd']}"
            )


def _as_text(value: Any) -> str:
    """A setting's value as an MCPB host puts it in a string (JavaScript's String())."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def bundle_command(bundle: Path) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """The manifest, and its server's command and env as an MCPB host runs them: ${__dirname}
    is the bundle's folder, ${user_config.KEY} each setting's default (the user changed none)."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    values = {"__dirname": str(bundle)}
    for key, option in manifest.get("user_config", {}).items():
        if "default" in option:
            values[f"user_config.{key}"] = _as_text(option["default"])

    def substitute(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise SmokeFailure(f"{match.group(0)} has no value (no default in user_config)")
            return values[match.group(1)]

        return re.sub(r"\$\{([^}]+)\}", one, text)

    config = manifest["server"]["mcp_config"]
    command = [substitute(config["command"]), *(substitute(a) for a in config.get("args", []))]
    env = {name: substitute(value) for name, value in config.get("env", {}).items()}
    return manifest, command, env


async def smoke_bundle(bundle: Path) -> str:
    manifest, command, env = bundle_command(bundle)
    expected = {tool["name"] for tool in manifest.get("tools", [])}
    if expected != TOOLS:
        raise SmokeFailure(f"the manifest's tools {sorted(expected ^ TOOLS)} differ")
    params = StdioServerParameters(command=command[0], args=command[1:], env=_environment(env))
    defaults = {k: v.get("default") for k, v in manifest["user_config"].items()}
    with anyio.fail_after(STEP_SECONDS):
        async with Client(params) as client:
            if (tools := await _tools(client)) != expected:
                raise SmokeFailure(f"tools/list: {sorted(tools ^ expected)} differ")
            budget = await _call(client, "budget", {})
    shown = {
        "session_budget_usd": budget.get("session_limit_usd"),
        "max_per_call_usd": budget.get("per_call_cap_usd"),
        "daily_budget_usd": budget.get("daily_limit_usd"),
    }
    for key, value in shown.items():
        if value != defaults[key]:
            raise SmokeFailure(
                f"budget reports {value} for {key}, the setting says {defaults[key]}"
            )
    return f"{len(tools)} tools; budget {shown} as the settings' defaults say"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    wheel = modes.add_parser("wheel", help="a command serving the sandbox over stdio")
    wheel.add_argument("command", nargs="+", help="after --: the command and its arguments")
    bundle = modes.add_parser("bundle", help="an unpacked .mcpb bundle's folder")
    bundle.add_argument("bundle_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.mode == "wheel":
            summary = anyio.run(smoke_wheel, args.command)
        else:
            summary = anyio.run(smoke_bundle, args.bundle_dir.resolve())
    except (SmokeFailure, TimeoutError) as failure:
        print(f"mcp-smoke {args.mode}: FAILED: {failure or 'timed out'}", file=sys.stderr)
        return 1
    print(f"mcp-smoke {args.mode}: ok ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
