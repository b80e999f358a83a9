"""The host configs in manifests/: each parses, runs the real command, and sets only real variables."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import blockrun_mcp
from blockrun_mcp.config import ENV_VARS, ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
README = (REPO / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# file -> the key under which the host lists its servers
HOST_CONFIGS = {
    "claude-code.mcp.json": "mcpServers",
    "cursor.mcp.json": "mcpServers",
    "claude_desktop_config.json": "mcpServers",
    "windsurf.mcp_config.json": "mcpServers",
    "vscode.mcp.json": "servers",
    "codex.config.toml": "mcp_servers",
}
EVERY_MANIFEST = [*HOST_CONFIGS, "claude-code.sh", "server.json", "mcpb/manifest.json"]


def _parse(name: str) -> dict[str, Any]:
    text = (MANIFESTS / name).read_text(encoding="utf-8")
    return tomllib.loads(text) if name.endswith(".toml") else json.loads(text)


def _check_env(env: dict[str, str], where: str) -> None:
    unknown = set(env) - set(ENV_VARS)
    assert not unknown, f"{where} sets variables the server never reads: {unknown}"
    assert all(isinstance(v, str) for v in env.values()), f"{where}: env values must be strings"
    try:
        load_config({"HOME": "/tmp", **env})
    except ConfigError as exc:
        pytest.fail(f"{where}: the server would refuse these settings: {exc}")


def test_every_file_in_manifests_is_known_and_documented():
    # team/ is the team server's walkthrough (tests/test_team_walkthrough.py checks it); mcpb/
    # is the Claude Desktop bundle's manifest (tests/test_release.py checks it).
    on_disk = {
        p.relative_to(MANIFESTS).as_posix()
        for p in MANIFESTS.rglob("*")
        if p.is_file() and p.parts[len(MANIFESTS.parts)] != "team" and p.name != "README.md"
    }
    assert on_disk == set(EVERY_MANIFEST)
    guide = (MANIFESTS / "README.md").read_text(encoding="utf-8")
    for name in EVERY_MANIFEST:
        assert f"manifests/{name}" in README, f"README.md does not point at manifests/{name}"
        assert f"`{name}`" in guide, f"manifests/README.md does not say where {name} goes"
    assert "manifests/team/README.md" in README
    assert "(team/README.md)" in guide


@pytest.mark.parametrize("name", sorted(HOST_CONFIGS))
def test_host_config_runs_uvx_blockrun_mcp_with_real_variables(name):
    servers = _parse(name)[HOST_CONFIGS[name]]
    assert set(servers) == {"blockrun"}
    server = servers["blockrun"]
    assert server["command"] == "uvx"
    assert server["args"] == ["blockrun-mcp"]
    assert server["env"], f"{name} should show the budgets it runs with"
    _check_env(server["env"], name)
    if name in ("vscode.mcp.json", "claude-code.mcp.json"):
        assert server["type"] == "stdio"


def test_codex_config_gives_uvx_and_videos_time_and_waits_for_the_tools():
    server = _parse("codex.config.toml")["mcp_servers"]["blockrun"]
    assert server["startup_timeout_sec"] >= 30
    assert server["tool_timeout_sec"] >= 180  # generate_video waits up to 120 s
    # Codex's first model request does not wait for an optional server's tools (4 of 4
    # headless runs had none): required makes it wait, or fail loudly.
    assert server["required"] is True
    # Approval is the person's choice: the shipped config approves nothing by itself.
    assert "tools" not in server and "default_tools_approval_mode" not in server
    first_line = (MANIFESTS / "codex.config.toml").read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("#") and "~/.codex/config.toml" in first_line


def _codex_exec_recipe() -> dict[str, Any]:
    """The config with its commented `codex exec` lines switched on, as the comment says."""
    text = (MANIFESTS / "codex.config.toml").read_text(encoding="utf-8")
    recipe = re.findall(
        r"^# (\[mcp_servers\.blockrun\.tools\..+\]|approval_mode = .+)$", text, re.M
    )
    assert recipe, "codex.config.toml no longer says how to allow tools for `codex exec`"
    return tomllib.loads(text + "\n".join(recipe) + "\n")["mcp_servers"]["blockrun"]


@pytest.mark.anyio
async def test_codex_exec_recipe_approves_exactly_the_tools_codex_would_ask_about(tmp_path):
    """Codex asks before a tool not marked read-only, and `codex exec` cannot ask: the recipe
    must name each such tool (and no read-only one, which needs no approval)."""
    from blockrun_mcp.server import build_server
    from tests.support.server import make_service

    service, _ = make_service(tmp_path, None)
    try:
        tools = await build_server(service).list_tools()
    finally:
        await service.aclose()
    asks = {t.name for t in tools if not (t.annotations and t.annotations.read_only_hint)}
    server = _codex_exec_recipe()
    assert server["tools"] == {name: {"approval_mode": "approve"} for name in asks}
    assert {"ask_model", "ask_models", "delegate", "generate_image", "generate_video"} <= asks
    assert server["required"] is True  # the rest of the file is unchanged


def _claude_mcp_add() -> list[str]:
    lines = (MANIFESTS / "claude-code.sh").read_text(encoding="utf-8").splitlines()
    commands = [shlex.split(line) for line in lines if line.startswith("claude mcp add ")]
    assert len(commands) == 1
    return commands[0]


def test_claude_code_line_adds_uvx_blockrun_mcp_with_real_variables():
    words = _claude_mcp_add()
    separator = words.index("--")
    assert words[separator + 1 :] == ["uvx", "blockrun-mcp"]
    options = words[3:separator]
    # The name comes first: `-e` takes several values and would swallow a name after it.
    assert options[0] == "blockrun"
    env = {}
    for flag, value in itertools.pairwise(options):
        if flag in ("-e", "--env"):
            key, _, val = value.partition("=")
            env[key] = val
    assert env
    _check_env(env, "claude-code.sh")
    # The README's one-liner is the same command without the budgets.
    assert "claude mcp add blockrun -- uvx blockrun-mcp" in README


def test_registry_server_json_describes_the_pypi_package():
    server = _parse("server.json")
    assert server["$schema"].startswith("https://static.modelcontextprotocol.io/schemas/")
    assert server["$schema"].endswith("/server.schema.json")
    assert re.fullmatch(r"[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+", server["name"])
    assert len(server["description"]) <= 100
    # PyPI ownership is proven by this line in the package's README (its long description).
    assert f"mcp-name: {server['name']}" in README
    # One version (tests/test_release.py: pyproject reads it from blockrun_mcp/__init__.py).
    assert server["version"] == blockrun_mcp.__version__
    (package,) = server["packages"]
    assert package["registryType"] == "pypi"
    assert package["identifier"] == PYPROJECT["project"]["name"]
    assert package["version"] == server["version"]
    assert package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    variables = package["environmentVariables"]
    names = [v["name"] for v in variables]
    assert set(names) <= set(ENV_VARS)
    assert {
        "BLOCKRUN_WALLET_KEY",
        "BLOCKRUN_SESSION_BUDGET_USD",
        "BLOCKRUN_MAX_PER_CALL_USD",
    } <= set(names)
    for variable in variables:
        assert variable["description"].strip(), variable["name"]
        assert variable["isRequired"] is False  # the server works with no settings at all
        if "default" in variable:
            _check_env({variable["name"]: variable["default"]}, f"server.json {variable['name']}")
    secrets = {v["name"] for v in variables if v.get("isSecret")}
    # The ledger's URL carries the database's password (config keeps it as a SecretStr).
    assert secrets == {"BLOCKRUN_WALLET_KEY", "BLOCKRUN_LEDGER_URL"}


class _Recorder(dict):
    """An environment that remembers every name it was asked for."""

    def __init__(self) -> None:
        super().__init__(HOME="/tmp")
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("load_config must ask for variables by name")


def test_env_vars_lists_exactly_what_load_config_reads():
    env = _Recorder()
    load_config(env)
    assert env.asked - {"HOME"} == set(ENV_VARS)


def test_readme_documents_every_variable():
    for name in ENV_VARS:
        assert f"`{name}`" in README, f"README.md does not document {name}"
