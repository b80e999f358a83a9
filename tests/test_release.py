"""The release: one version everywhere, the registry entry and the Claude Desktop bundle valid
against their published schemas, the workflows that test and publish, and the changelog that
the release notes come from. (What the built artifacts hold and do: tests/test_packaging.py and
.ci/artifacts.sh.)"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

import blockrun_mcp
from blockrun_mcp.config import ENV_VARS, load_config
from blockrun_mcp.server import TOOL_NAMES

REPO = Path(__file__).resolve().parent.parent
CI = REPO / ".ci"
WORKFLOWS = REPO / ".github" / "workflows"
SCHEMAS = REPO / "tests" / "data" / "schemas"
SERVER_JSON = REPO / "manifests" / "server.json"
BUNDLE = REPO / "manifests" / "mcpb" / "manifest.json"
CHANGELOG = REPO / "CHANGELOG.md"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# The vendored schemas, pinned (tests/data/schemas/README.md says where each came from).
REGISTRY_SCHEMA = SCHEMAS / "mcp-registry-server-2025-12-11.schema.json"
REGISTRY_SCHEMA_SHA256 = "3fba09590c99f61735d234822279f4223fab9e300c0a81e81c91ab62a4114de0"
MCPB_SCHEMA = SCHEMAS / "mcpb-manifest-v0.4.schema.json"
MCPB_SCHEMA_SHA256 = "068557824c651d6d49b86ad132adeafe62ca788d918b3e1e2b224bf0f91320fd"

# Each budget setting of the bundle, and the variable it must reach.
BUNDLE_SETTINGS = {
    "session_budget_usd": "BLOCKRUN_SESSION_BUDGET_USD",
    "max_per_call_usd": "BLOCKRUN_MAX_PER_CALL_USD",
    "daily_budget_usd": "BLOCKRUN_DAILY_BUDGET_USD",
    "confirm_above_usd": "BLOCKRUN_CONFIRM_ABOVE_USD",
    "wallet_key": "BLOCKRUN_WALLET_KEY",
}


def _script(name: str) -> ModuleType:
    """A .ci/ script as a module (their names have dashes, so not importable by name)."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), CI / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _validator(schema_path: Path, sha256: str) -> jsonschema.Draft7Validator:
    assert hashlib.sha256(schema_path.read_bytes()).hexdigest() == sha256, (
        f"{schema_path.name} is not the vendored copy (see tests/data/schemas/README.md)"
    )
    schema = _json(schema_path)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def _errors(validator: jsonschema.Draft7Validator, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


# ---- one version ------------------------------------------------------------------------------


def test_one_version_from_init_reaches_the_metadata_and_every_manifest():
    version = blockrun_mcp.__version__
    # pyproject states no version of its own: hatchling reads __init__.py.
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["hatch"]["version"] == {"path": "blockrun_mcp/__init__.py"}
    version_sync = _script("version-sync")
    assert version_sync.source_version() == version
    assert version_sync.stale(version) == []
    server = _json(SERVER_JSON)
    (package,) = server["packages"]
    assert server["version"] == package["version"] == _json(BUNDLE)["version"] == version
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", version), "a plain release version"


def test_version_sync_stamps_every_copy_and_check_names_the_stale_ones(tmp_path, monkeypatch):
    version_sync = _script("version-sync")
    init = tmp_path / "__init__.py"
    init.write_text('"""doc"""\n\n__version__ = "7.8.9"\n', encoding="utf-8")
    server, bundle = tmp_path / "server.json", tmp_path / "manifest.json"
    shutil.copy(SERVER_JSON, server)
    shutil.copy(BUNDLE, bundle)
    monkeypatch.setattr(version_sync, "SOURCE", init)
    monkeypatch.setattr(version_sync, "SERVER_JSON", server)
    monkeypatch.setattr(version_sync, "BUNDLE_MANIFEST", bundle)

    assert version_sync.main(["--check"]) == 1
    assert len(version_sync.stale("7.8.9")) == 3  # server.json twice, the bundle once
    assert version_sync.main([]) == 0
    assert version_sync.main(["--check"]) == 0
    assert version_sync.main(["--check", "--expect", "7.8.9"]) == 0
    assert version_sync.main(["--check", "--expect", "7.8.10"]) == 1  # a tag for another version
    written = _json(server)
    assert written["version"] == written["packages"][0]["version"] == "7.8.9"
    assert _json(bundle)["version"] == "7.8.9"
    # Nothing but the versions changed.
    assert {**_json(SERVER_JSON), "version": "7.8.9", "packages": written["packages"]} == written
    assert {**_json(BUNDLE), "version": "7.8.9"} == _json(bundle)


def test_version_sync_refuses_a_version_it_cannot_read(tmp_path, monkeypatch):
    version_sync = _script("version-sync")
    init = tmp_path / "__init__.py"
    init.write_text("__version__ = get_version()\n", encoding="utf-8")
    monkeypatch.setattr(version_sync, "SOURCE", init)
    with pytest.raises(SystemExit, match="expected one line"):
        version_sync.source_version()


# ---- the MCP registry entry -------------------------------------------------------------------


def test_server_json_is_valid_against_the_registry_schema_it_names():
    validator = _validator(REGISTRY_SCHEMA, REGISTRY_SCHEMA_SHA256)
    server = _json(SERVER_JSON)
    assert server["$schema"] == validator.schema["$id"]
    assert _errors(validator, server) == []
    # The schema does refuse what the registry refuses (it is no empty shell).
    assert _errors(validator, {**server, "description": "x" * 101})
    assert _errors(validator, {**server, "name": "blockrun-mcp"})
    (package,) = server["packages"]
    assert _errors(validator, {**server, "packages": [{**package, "version": "latest"}]})


# ---- the Claude Desktop bundle ----------------------------------------------------------------


def _bundle_run(bundle_dir: Path, user_config: dict[str, Any] | None = None) -> tuple[list, dict]:
    """The bundle's command and env as an MCPB host builds them (.ci/mcp-smoke.py's code), with
    `user_config` as what the person set over the defaults."""
    smoke = _script("mcp-smoke")
    manifest = _json(BUNDLE)
    if user_config:
        for key, value in user_config.items():
            manifest["user_config"][key]["default"] = value
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    _, command, env = smoke.bundle_command(bundle_dir)
    return command, env


def test_bundle_manifest_is_valid_mcpb_0_4_with_the_uv_server_type():
    validator = _validator(MCPB_SCHEMA, MCPB_SCHEMA_SHA256)
    manifest = _json(BUNDLE)
    assert _errors(validator, manifest) == []
    assert manifest["manifest_version"] == "0.4"
    server = manifest["server"]
    assert server["type"] == "uv"
    assert (REPO / server["entry_point"]).is_file()
    # The console script pyproject declares, run by uv from the bundle's own pyproject.toml.
    (script,) = PYPROJECT["project"]["scripts"]
    assert server["mcp_config"]["command"] == "uv"
    assert server["mcp_config"]["args"] == ["run", "--project", "${__dirname}", script]
    assert {tool["name"] for tool in manifest["tools"]} == TOOL_NAMES
    assert all(tool["description"].strip() for tool in manifest["tools"])
    assert manifest["name"] == PYPROJECT["project"]["name"]
    assert manifest["license"] == PYPROJECT["project"]["license"]


def test_bundle_settings_are_the_budgets_and_the_key_only_as_a_secret():
    manifest = _json(BUNDLE)
    options = manifest["user_config"]
    env = manifest["server"]["mcp_config"]["env"]
    assert set(env) <= set(ENV_VARS)
    assert set(options) == set(BUNDLE_SETTINGS)
    for option, variable in BUNDLE_SETTINGS.items():
        assert env[variable] == f"${{user_config.{option}}}"
        # A host leaves ${user_config.X} as it is when X has no value: every one has a default.
        assert "default" in options[option] and options[option]["required"] is False
    referenced = set(re.findall(r"\$\{user_config\.([^}]+)\}", json.dumps(env)))
    assert referenced == set(options)
    # The key: never a plain setting, never filled in by default.
    sensitive = {name for name, option in options.items() if option.get("sensitive")}
    assert sensitive == {"wallet_key"}
    assert options["wallet_key"]["type"] == "string" and options["wallet_key"]["default"] == ""
    for name in ("session_budget_usd", "max_per_call_usd", "daily_budget_usd"):
        assert options[name]["type"] == "number" and options[name]["min"] == 0


def test_bundle_defaults_reach_the_server_as_its_settings(tmp_path):
    # The smoke test's own list of tools (it checks built artifacts, not this tree) is current.
    assert _script("mcp-smoke").TOOLS == TOOL_NAMES
    command, env = _bundle_run(tmp_path)
    assert command == ["uv", "run", "--project", str(tmp_path), "blockrun-mcp"]
    config = load_config({"HOME": str(tmp_path), **env})
    assert (config.session_budget_usd, config.max_per_call_usd) == (1.0, 0.5)
    assert config.daily_budget_usd == 5.0
    assert config.confirm_above_usd is None  # empty: never asks
    assert config.wallet_key is None  # empty: the key file is used
    assert config.network == "base"


def test_bundle_settings_a_person_changed_reach_the_server(tmp_path):
    key = "0x" + "ab" * 32
    changed = {
        "session_budget_usd": 2.5,
        "max_per_call_usd": 0.05,
        "daily_budget_usd": 0,
        "confirm_above_usd": "0.25",
        "wallet_key": key,
    }
    _, env = _bundle_run(tmp_path, changed)
    config = load_config({"HOME": str(tmp_path), **env})
    assert (config.session_budget_usd, config.max_per_call_usd) == (2.5, 0.05)
    assert config.daily_budget_usd == 0.0
    assert config.confirm_above_usd == 0.25
    assert config.wallet_key is not None and config.wallet_key.get_secret_value() == key


# ---- the workflows ----------------------------------------------------------------------------


def _workflow(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict) and document.get("jobs")
    # YAML 1.1 reads the key `on` as true.
    document["on"] = document.pop(True, document.get("on"))
    return document


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in _steps(job))


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in _steps(job) if step.get("uses", "").startswith(f"{action}@")]


def test_ci_workflow_runs_ci_run_on_this_repository_alone():
    ci = _workflow("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    assert ci["permissions"] == {"contents": "read"}
    (job,) = ci["jobs"].values()
    (checkout,) = _uses(job, "actions/checkout")
    # This repository, at the workspace's root: nothing else is fetched beside it.
    assert not set(checkout.get("with", {})) & {"repository", "path"}
    assert re.search(r"(^|\s)bash \.ci/run$", _runs(job), re.MULTILINE)


def test_nothing_ci_runs_reaches_beside_the_repository():
    """CI clones this repository alone; a script that read ../shared would pass only here."""
    scripts = [p for p in CI.iterdir() if p.is_file()] + list(WORKFLOWS.iterdir())
    reaching = [
        f"{path.relative_to(REPO)}:{number}"
        for path in scripts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if not line.lstrip().startswith(("#", "//")) and re.search(r"\.\./shared|/shared/", line)
    ]
    assert reaching == []


def test_ci_run_builds_and_checks_the_artifacts():
    run = (CI / "run").read_text(encoding="utf-8")
    artifacts = run.index("bash .ci/artifacts.sh")
    assert run.index(".ci/version-sync.py --check") < artifacts < run.index("bench/run.py --smoke")
    script = (CI / "artifacts.sh").read_text(encoding="utf-8")
    for needed in (
        "-m build",
        "twine check --strict",
        'uvx" --from "$wheel" blockrun-mcp',
        "mcp-smoke.py wheel",
        "bash .ci/mcpb.sh",
        "mcp-smoke.py bundle",
    ):
        assert needed in script, needed
    mcpb = (CI / "mcpb.sh").read_text(encoding="utf-8")
    assert '"@anthropic-ai/mcpb@$MCPB_VERSION"' in mcpb
    assert "mcpb validate manifests/mcpb/manifest.json" in mcpb and 'mcpb pack "$stage"' in mcpb


def test_release_workflow_publishes_a_version_tag_by_trusted_publishing():
    text = (WORKFLOWS / "release.yml").read_text(encoding="utf-8")
    release = _workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}  # each job asks for what it needs
    jobs = release["jobs"]
    assert set(jobs) == {"check", "pypi", "github-release"}

    check = jobs["check"]
    runs = _runs(check)
    assert '.ci/version-sync.py --check --expect "${GITHUB_REF_NAME#v}"' in runs
    assert '.ci/release-notes.py "${GITHUB_REF_NAME#v}"' in runs
    (tests,) = [step for step in _steps(check) if "bash .ci/run" in step.get("run", "")]
    kept = tests["env"]["BLOCKRUN_ARTIFACTS_DIR"]
    uploaded = {
        step["with"]["name"]: step["with"]["path"]
        for step in _uses(check, "actions/upload-artifact")
    }
    assert uploaded == {"python-dists": "release/dist/", "mcpb-bundle": "release/bundle/"}
    assert kept.endswith("/release")

    # PyPI: trusted publishing, no token or password anywhere.
    pypi = jobs["pypi"]
    assert pypi["needs"] == "check"
    assert pypi["permissions"] == {"id-token": "write"}
    assert pypi["environment"]["name"] == "pypi"
    (publish,) = _uses(pypi, "pypa/gh-action-pypi-publish")
    assert not set(publish.get("with", {})) & {"password", "user", "api-token", "token"}
    assert "secrets." not in text
    downloaded = _uses(pypi, "actions/download-artifact")
    assert [step["with"]["name"] for step in downloaded] == ["python-dists"]  # not the .mcpb

    # The GitHub release: after PyPI, its notes from CHANGELOG.md, with every artifact.
    github = jobs["github-release"]
    assert github["needs"] == "pypi"
    assert github["permissions"] == {"contents": "write"}
    runs = _runs(github)
    assert '.ci/release-notes.py "$version" >notes.md' in runs
    assert "gh release create" in runs and "--notes-file notes.md" in runs
    assert "dist/* bundle/*.mcpb" in runs
    names = {step["with"]["name"] for step in _uses(github, "actions/download-artifact")}
    assert names == {"python-dists", "mcpb-bundle"}


# ---- the changelog and the release notes ------------------------------------------------------

SAMPLE = """# Changelog

## [Unreleased]

### Added
- something new

## [1.1.0] - 2026-01-02

### Fixed
- a bug

## [1.0.0] - 2025-12-01

First.

## [0.9.0]

[Unreleased]: https://example.com/compare/v1.1.0...HEAD
[1.1.0]: https://example.com/releases/tag/v1.1.0
"""


def test_release_notes_are_the_versions_section_word_for_word():
    notes = _script("release-notes")
    assert notes.notes(SAMPLE, "1.1.0") == "### Fixed\n- a bug\n"
    assert notes.notes(SAMPLE, "1.0.0") == "First.\n"  # up to the next heading


def test_release_notes_refuse_a_missing_undated_or_empty_section():
    notes = _script("release-notes")
    with pytest.raises(notes.NoNotes, match="no section"):
        notes.notes(SAMPLE, "2.0.0")
    with pytest.raises(notes.NoNotes, match="no date"):
        notes.notes(SAMPLE, "Unreleased")
    with pytest.raises(notes.NoNotes, match="no date"):
        notes.notes(SAMPLE, "0.9.0")
    with pytest.raises(notes.NoNotes, match="empty"):
        notes.notes("## [3.0.0] - 2026-01-01\n\n## [2.0.0] - 2025-01-01\nx\n", "3.0.0")


def test_release_notes_command_takes_the_tag_or_the_version(capsys):
    notes = _script("release-notes")
    version = blockrun_mcp.__version__
    assert notes.main([f"v{version}"]) == 0
    by_tag = capsys.readouterr().out
    assert notes.main([version]) == 0
    assert capsys.readouterr().out == by_tag
    assert by_tag == notes.notes(CHANGELOG.read_text(encoding="utf-8"), version)
    assert notes.main(["v0.0.0-never"]) == 1
    assert notes.main([]) == 2


def test_changelog_keeps_a_changelog_with_the_current_versions_notes():
    text = CHANGELOG.read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    version = blockrun_mcp.__version__
    # Unreleased first, then the releases newest first, the current version among them.
    assert headings[0] == "Unreleased" and version in headings
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)
    assert "Keep a Changelog" in text
    # Every section's subheadings are Keep a Changelog's kinds of change.
    kinds = set(re.findall(r"^### (.+)$", text, re.MULTILINE))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    # Each heading has its link reference.
    for heading in headings:
        assert re.search(rf"^\[{re.escape(heading)}\]: https://", text, re.MULTILINE), heading
