"""A release's notes: its section of CHANGELOG.md, word for word.

    python .ci/release-notes.py 1.2.3     prints the body of `## [1.2.3] - YYYY-MM-DD`

The release workflow gives this to the GitHub release. Exits 1, saying why, when the version
has no section, its section has no date (still being written) or nothing under its heading:
a release without notes is a mistake to stop at, not to publish.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"
# Keep a Changelog's release heading: "## [1.2.3] - 2026-12-06".
HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")


class NoNotes(Exception):
    pass


def notes(changelog: str, version: str) -> str:
    """The text between `version`'s heading and the next release heading (or the link
    references at the end), without surrounding blank lines."""
    lines = changelog.splitlines()
    start = None
    for number, line in enumerate(lines):
        heading = HEADING.match(line)
        if heading and heading["version"] == version:
            if not heading["date"]:
                raise NoNotes(f"CHANGELOG.md: ## [{version}] has no date (## [{version}] - Y-M-D)")
            start = number + 1
            break
    if start is None:
        raise NoNotes(f"CHANGELOG.md has no section ## [{version}] - YYYY-MM-DD")
    end = len(lines)
    for number in range(start, len(lines)):
        if lines[number].startswith("## ") or re.match(r"^\[[^\]]+\]: ", lines[number]):
            end = number
            break
    body = "\n".join(lines[start:end]).strip()
    if not body:
        raise NoNotes(f"CHANGELOG.md: the section for {version} is empty")
    return body + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: release-notes.py VERSION", file=sys.stderr)
        return 2
    version = args[0].removeprefix("v")
    try:
        sys.stdout.write(notes(CHANGELOG.read_text(encoding="utf-8"), version))
    except NoNotes as problem:
        print(f"release-notes: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
