"""The README's few-line script pays the sandbox for a chat completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pay_sandbox_script_pays_for_a_chat_completion():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pay_sandbox.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    content, cost, tx = done.stdout.rsplit(" ", 2)
    assert "Hi" in content
    assert float(cost) > 0
    assert tx.strip().startswith("0x") and len(tx.strip()) == 66


def test_readme_embeds_the_example_script():
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / "examples" / "pay_sandbox.py").read_text()
    body = script.split("async def main() -> None:", 1)[1].split("anyio.run(main)")[0]
    for line in body.strip().splitlines():
        assert line.strip() in readme, f"README is missing: {line.strip()}"


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
    assert "All 7 tools worked" in done.stdout
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
