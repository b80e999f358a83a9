"""The release's one version, written where JSON manifests need it, or checked there.

The version lives in blockrun_mcp/__init__.py (`__version__`): `blockrun-mcp --version` prints it
and the package metadata takes it from there (pyproject's [tool.hatch.version]). JSON cannot read
Python, so the registry entry (manifests/server.json: its own version and its PyPI package's)
and the Claude Desktop bundle's manifest (manifests/mcpb/manifest.json) carry copies, which this
script stamps. The tests fail when a copy differs, so a version bump is one edit plus one run:

    python .ci/version-sync.py              write the version into the manifests
    python .ci/version-sync.py --check      exit 1, naming each copy that differs
    python .ci/version-sync.py --check --expect 1.2.3    ... and the version must be 1.2.3
                                            (the release workflow passes the tag's version)
    python .ci/version-sync.py --print      print the version
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "blockrun_mcp" / "__init__.py"
SERVER_JSON = REPO / "manifests" / "server.json"
BUNDLE_MANIFEST = REPO / "manifests" / "mcpb" / "manifest.json"
# The line hatchling's version source reads (its default pattern): one literal, no expression.
VERSION_LINE = re.compile(r'^__version__\s*=\s*"([^"]+)"\s*$', re.MULTILINE)


def source_version() -> str:
    """The version as __init__.py states it (read, not imported: no dependencies needed)."""
    found = VERSION_LINE.findall(SOURCE.read_text(encoding="utf-8"))
    if len(found) != 1:
        raise SystemExit(f'{SOURCE}: expected one line `__version__ = "X.Y.Z"`')
    return found[0]


def copies(version: str) -> dict[Path, dict[str, Any]]:
    """Each manifest as it should be: its JSON with every version field set to `version`."""
    server = _load(SERVER_JSON)
    server["version"] = version
    for package in server.get("packages", []):
        if package.get("registryType") == "pypi":
            package["version"] = version
    bundle = _load(BUNDLE_MANIFEST)
    bundle["version"] = version
    return {SERVER_JSON: server, BUNDLE_MANIFEST: bundle}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def stale(version: str) -> list[str]:
    """Where a manifest's version differs from `version` (empty when all agree)."""
    problems = []
    server = _load(SERVER_JSON)
    if server.get("version") != version:
        problems.append(f"{SERVER_JSON.name}: version {server.get('version')!r}")
    for package in server.get("packages", []):
        if package.get("registryType") == "pypi" and package.get("version") != version:
            problems.append(f"{SERVER_JSON.name}: PyPI package version {package.get('version')!r}")
    bundle = _load(BUNDLE_MANIFEST)
    if bundle.get("version") != version:
        problems.append(f"mcpb/{BUNDLE_MANIFEST.name}: version {bundle.get('version')!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    parser.add_argument("--expect", metavar="VERSION", help="the version must also be this")
    parser.add_argument("--print", action="store_true", help="print the version; change nothing")
    args = parser.parse_args(argv)
    version = source_version()
    if args.print:
        print(version)
        return 0
    if args.expect is not None and args.expect != version:
        print(
            f"version-sync: blockrun_mcp/__init__.py says {version}, expected {args.expect} "
            "(a release tag must be v + the package's version)",
            file=sys.stderr,
        )
        return 1
    if args.check:
        problems = stale(version)
        for problem in problems:
            print(f"version-sync: {problem}, not {version}", file=sys.stderr)
        if problems:
            print("version-sync: run `python .ci/version-sync.py` to update them", file=sys.stderr)
            return 1
        print(f"version-sync: every manifest says {version}")
        return 0
    for path, document in copies(version).items():
        path.write_text(_text(document), encoding="utf-8")
    print(f"version-sync: manifests set to {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
