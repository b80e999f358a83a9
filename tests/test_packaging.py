"""The wheel that `uvx blockrun-mcp`, `pipx install` and `pip install` get: built here, then read.

Only the wheel is built (no dependency installs), so this stays a few seconds.
"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import blockrun_mcp

REPO = Path(__file__).resolve().parent.parent
RUNTIME_DEPENDENCIES = {
    "mcp",
    "mcp-types",
    "httpx2",
    "eth-account",
    "eth-utils",
    "pydantic",
    "anyio",
    "coincurve",
    "pathspec",
    "google-re2",
    "starlette",
    "uvicorn",
    "psycopg",
    "psycopg-pool",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("blockrun_mcp-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> Message:
    return email.message_from_string(_dist_info(wheel, "METADATA"))


def test_console_script_is_blockrun_mcp(wheel):
    entry_points = _dist_info(wheel, "entry_points.txt")
    section = entry_points.split("[console_scripts]", 1)[1].split("[", 1)[0]
    scripts = [line.replace(" ", "") for line in section.splitlines() if line.strip()]
    assert scripts == ["blockrun-mcp=blockrun_mcp.cli:main"]


def test_runtime_dependencies_are_exactly_the_declared_ones(metadata):
    runtime = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    names = {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower().replace("_", "-") for r in runtime}
    assert names == RUNTIME_DEPENDENCIES
    assert any(r.replace(" ", "").startswith("mcp") and "<2.4" in r for r in runtime)


def test_every_package_the_code_imports_is_declared():
    """Nothing the code imports arrives only because something else happens to need it."""
    import ast
    import importlib.metadata
    import sys

    imported: set[str] = set()
    for path in Path(blockrun_mcp.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"blockrun_mcp", "__future__"}
    distributions = importlib.metadata.packages_distributions()
    used = {dist.lower() for module in third_party for dist in distributions.get(module, [module])}
    assert used <= RUNTIME_DEPENDENCIES, used - RUNTIME_DEPENDENCIES
    assert used == RUNTIME_DEPENDENCIES  # and nothing is declared that the code does not use


def test_metadata_is_complete(metadata):
    assert metadata["Name"] == "blockrun-mcp"
    assert metadata["Version"] == blockrun_mcp.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert {"Homepage", "Repository", "Issues"} <= set(urls)
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    # The PyPI page is the README, with the one-liner people copy.
    assert "claude mcp add blockrun -- uvx blockrun-mcp" in metadata.get_payload()


def test_pypi_description_carries_the_registry_ownership_marker(metadata):
    """The MCP registry accepts manifests/server.json's PyPI package as ours only if the
    package's description (the README) says `mcp-name: <its name>`, the name matched in full (a
    longer name with ours as its prefix does not count)."""
    import json

    name = json.loads((REPO / "manifests" / "server.json").read_text(encoding="utf-8"))["name"]
    marker = re.compile(rf"mcp-name: {re.escape(name)}(?![A-Za-z0-9._/-])")
    assert marker.search(metadata.get_payload())


def test_wheel_holds_the_package_and_nothing_else(wheel):
    names = wheel.namelist()
    for required in (
        "blockrun_mcp/__main__.py",
        "blockrun_mcp/cli.py",
        "blockrun_mcp/doctor.py",
        "blockrun_mcp/reports.py",
        "blockrun_mcp/sandbox/__init__.py",
        "blockrun_mcp/x402/__init__.py",
    ):
        assert required in names
    top_level = {n.split("/", 1)[0] for n in names}
    assert top_level == {"blockrun_mcp", f"blockrun_mcp-{blockrun_mcp.__version__}.dist-info"}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "blockrun_mcp", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"blockrun-mcp {blockrun_mcp.__version__}"


def test_the_package_uses_httpx2_never_httpx():
    # httpx2 is the declared HTTP client; a stray `import httpx` would work in a dev venv (the
    # tests install httpx for the benchmark) and fail for users, who do not have it.
    stray = [
        f"{path.relative_to(REPO)}:{number}"
        for path in (REPO / "blockrun_mcp").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(import httpx|from httpx)\b(?!2)", line)
    ]
    assert stray == []
