"""SECURITY.md stays true: every test it names exists, and every threat names some."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "SECURITY.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_test_security_md_names_exists():
    text = DOC.read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert len(references) > 40
    for file, name in references:
        path = ROOT / file
        assert path.is_file(), f"SECURITY.md names {file}, which does not exist"
        if name:
            assert name in _tests_in(path), (
                f"SECURITY.md names {file}::{name}, which does not exist"
            )


def test_every_threat_points_at_tests_and_a_contact_is_given():
    text = DOC.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    threats = [s for s in sections if s.startswith("Threat ")]
    assert len(threats) == 4
    for section in threats:
        title = section.splitlines()[0]
        assert REFERENCE.search(section), f"{title} names no test"
        assert "Left open" in section, f"{title} does not say what is left open"
    assert "security/advisories/new" in text
