"""The README's examples run as written: the x402 client alone, and the demo of every tool."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_x402_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The x402 client on its own", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_x402_example_runs_as_written(tmp_path):
    code = readme_x402_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 15  # lines of code
    assert "from blockrun_mcp.x402 import" in code
    assert not re.search(r"blockrun_mcp\.x402\.\w+", code), (
        "import from the package, not its modules"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    content, tx = done.stdout.rsplit(" ", 1)
    assert 'You said: "Hi"' in content
    assert tx.strip().startswith("0x") and len(tx.strip()) == 66


def test_demo_drives_every_tool_on_a_fresh_home(tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "blockrun_mcp", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 10 tools worked" in done.stdout and "delegate" in done.stdout
    for tool in (
        "wallet",
        "list_models",
        "estimate_cost",
        "ask_model",
        "generate_image",
        "generate_video",
        "budget",
    ):
        assert f"  {tool}" in done.stdout
    assert "FAILED" not in done.stdout
    saved = list((tmp_path / ".blockrun" / "mcp" / "media" / "sandbox").iterdir())
    assert {p.suffix for p in saved} == {".png", ".mp4"}
    assert not (tmp_path / ".blockrun" / "mcp" / "ledger.sqlite3").exists(), (
        "sandbox spend stays apart"
    )
