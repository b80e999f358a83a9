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
