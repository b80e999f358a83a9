#!/usr/bin/env bash
# The release artifacts, built and used as users get them: the sdist and the wheel
# (`python -m build`), checked with `twine check --strict`; the wheel holds the package and its
# metadata only (no tests, no bench); the server started from the wheel with
# `uvx --from dist/<wheel> blockrun-mcp serve --sandbox` (uv from PyPI, as hosts run it) through
# a real MCP client (.ci/mcp-smoke.py: tools/list, wallet, list_models, a paid ask_model); then
# the Claude Desktop bundle (.ci/mcpb.sh: validated and packed by the MCPB CLI) unpacked and
# started by its manifest's own command (`uv run --project <bundle> blockrun-mcp`), its
# settings' defaults reaching the server.
#
#   bash .ci/artifacts.sh [OUT_DIR]   OUT_DIR (default: a temporary one, removed) keeps
#                                     dist/ (sdist, wheel) and bundle/ (.mcpb)
#
# Runs in the checkout, with its .venv (.ci/run makes it) for the MCP client. The tools (build,
# twine, uv: pyproject's `release` extra) go into a venv of their own in the work folder, so
# the project's venv is left as the tests know it (no uvx in it). Everything uv downloads goes
# to a cache there too; no Python is downloaded (UV_PYTHON_DOWNLOADS=never): uv runs the
# project venv's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout="$PWD"
PYTHON="$checkout/.venv/bin/python"

work="$(mktemp -d "${TMPDIR:-/tmp}/blockrun-artifacts.XXXXXX")"
trap 'rm -rf "$work"' EXIT
out="${1:-$work/out}"
mkdir -p "$out/dist" "$out/bundle"
out="$(cd "$out" && pwd)"
step() { echo "artifacts: $*"; }

tools="$work/tools/bin"
"$PYTHON" -m venv "$work/tools"
"$PYTHON" -c 'import tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["release"]
print("\n".join(extra))' >"$work/release-requirements.txt"
"$tools/pip" install -q -r "$work/release-requirements.txt"

# uv's downloads and the servers' files (ledger, media, keys) stay in the work folder; the
# machine's TLS trust store is used, as the server's own httpx2 does (a company CA works).
export UV_CACHE_DIR="$work/uv-cache" UV_PYTHON_DOWNLOADS=never UV_NO_CONFIG=1 UV_SYSTEM_CERTS=1
# npm keeps its download cache where it always does (the MCPB CLI comes from it).
export npm_config_cache="${npm_config_cache:-$HOME/.npm}"
export UV_PYTHON="$PYTHON" HOME="$work/home"
mkdir -p "$HOME"

step "building the sdist and the wheel"
rm -f "$out"/dist/*
"$tools/python" -m build --outdir "$out/dist" . >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    exit 1
}
"$tools/python" -m twine check --strict "$out"/dist/*

version="$("$PYTHON" .ci/version-sync.py --print)"
wheel="$out/dist/blockrun_mcp-$version-py3-none-any.whl"
sdist="$out/dist/blockrun_mcp-$version.tar.gz"
[[ -f "$wheel" && -f "$sdist" ]] || {
    echo "artifacts: expected $(basename "$wheel") and $(basename "$sdist") in dist/:" >&2
    ls "$out/dist" >&2
    exit 1
}

step "what the wheel holds"
"$PYTHON" - "$wheel" "$version" <<'PY'
import sys, zipfile

wheel, version = sys.argv[1], sys.argv[2]
names = zipfile.ZipFile(wheel).namelist()
allowed = {"blockrun_mcp", f"blockrun_mcp-{version}.dist-info"}
strays = sorted(n for n in names if n.split("/", 1)[0] not in allowed)
tests = sorted(n for n in names if n.startswith(("tests/", "bench/")) or "/tests/" in n)
if strays or tests or not any(n == "blockrun_mcp/cli.py" for n in names):
    sys.exit(f"artifacts: the wheel holds {strays + tests or 'no blockrun_mcp/cli.py'}")
print(f"artifacts: {len(names)} files, all under {' and '.join(sorted(allowed))}")
PY

step "uvx --from $(basename "$wheel") blockrun-mcp"
uvx=("$tools/uvx" --from "$wheel" blockrun-mcp)
shown="$("${uvx[@]}" --version)"
[[ "$shown" == "blockrun-mcp $version" ]] || {
    echo "artifacts: the wheel's --version says '$shown', not 'blockrun-mcp $version'" >&2
    exit 1
}
"$PYTHON" .ci/mcp-smoke.py wheel -- "${uvx[@]}" serve --sandbox

step "the Claude Desktop bundle"
bundle="$(bash .ci/mcpb.sh "$out/bundle")"
"$PYTHON" -m zipfile -e "$bundle" "$work/bundle"
# The manifest's command is `uv`, found on the PATH as a host finds it: the tools'.
PATH="$tools:$PATH" "$PYTHON" .ci/mcp-smoke.py bundle "$work/bundle"

step "ok: $(cd "$out" && ls dist/* bundle/*)"
