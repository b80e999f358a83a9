#!/usr/bin/env bash
# The Claude Desktop bundle (.mcpb), made and checked by the MCPB CLI from npm
# (@anthropic-ai/mcpb): `mcpb validate` on manifests/mcpb/manifest.json, then the bundle's folder
# is staged and `mcpb pack`ed, and the .mcpb is read back to check what it holds.
#
#   bash .ci/mcpb.sh OUT_DIR        writes OUT_DIR/blockrun-mcp-VERSION.mcpb; prints its path
#
# The bundle uses MCPB's `uv` server type: the host installs the project and its dependencies
# from the bundle's pyproject.toml, so the bundle holds the manifest, pyproject.toml, README.md,
# LICENSE and the blockrun_mcp package (as git sees them: tracked and untracked files, nothing
# ignored), and nothing else: no tests, no bench, no caches. Needs Node.js 20+ (npx) and
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."

MCPB_VERSION="${MCPB_VERSION:-2.1.2}"
PYTHON="${PYTHON:-python3}"
out="${1:?usage: mcpb.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if ! command -v npx >/dev/null; then
    echo "mcpb: npx (Node.js 20 or later) is needed for the MCPB CLI" >&2
    exit 1
fi
mcpb() { npx -y --loglevel=error "@anthropic-ai/mcpb@$MCPB_VERSION" "$@"; }

stage="$(mktemp -d "${TMPDIR:-/tmp}/blockrun-mcpb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# The manifest on its own first: a schema error is reported against the file in the repository.
mcpb validate manifests/mcpb/manifest.json >&2

cp manifests/mcpb/manifest.json "$stage/manifest.json"
git ls-files -z --cached --others --exclude-standard -- blockrun_mcp pyproject.toml README.md LICENSE |
    while IFS= read -r -d '' file; do
        if [[ -f "$file" ]]; then
            printf '%s\0' "$file"
        fi
    done |
    tar --null --files-from=- -cf - |
    tar -xf - -C "$stage"

version="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
    "$stage/manifest.json")"
bundle="$out/blockrun-mcp-$version.mcpb"
rm -f "$bundle"
mcpb pack "$stage" "$bundle" >&2

# What the bundle holds: exactly the staged files, the manifest's version, an entry point that
# exists, and nothing from tests/ or bench/.
"$PYTHON" - "$bundle" "$stage" <<'PY'
import json, sys, zipfile
from pathlib import Path

bundle, stage = Path(sys.argv[1]), Path(sys.argv[2])
with zipfile.ZipFile(bundle) as archive:
    names = set(archive.namelist())
    manifest = json.loads(archive.read("manifest.json"))
staged = {str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()}
problems = []
if names != staged:
    problems.append(f"holds {sorted(names ^ staged)[:10]} unlike the staged folder")
if any(n.startswith(("tests/", "bench/")) or "__pycache__" in n for n in names):
    problems.append("holds tests, bench or caches")
if manifest["server"]["entry_point"] not in names:
    problems.append(f"has no entry point {manifest['server']['entry_point']}")
if "pyproject.toml" not in names:
    problems.append("has no pyproject.toml (the uv server type installs from it)")
if problems:
    sys.exit(f"mcpb: {bundle.name}: " + "; ".join(problems))
print(f"mcpb: {bundle.name}: {len(names)} files, version {manifest['version']}", file=sys.stderr)
PY
echo "$bundle"
