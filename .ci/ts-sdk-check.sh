#!/usr/bin/env bash
# BlockRun's TypeScript SDK (@blockrun/llm from npm) against `blockrun-mcp sandbox`: it lists the
# catalog, pays two chats and reads a 400's explanation (.ci/ts-sdk-check.mjs says what is checked).
# Fails if npm cannot install the SDK, the sandbox does not start, or any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

TS_SDK_VERSION="${TS_SDK_VERSION:-3.16.0}"
PYTHON="$PWD/.venv/bin/python"
SERVER="$PWD/.venv/bin/blockrun-mcp"

work="$(mktemp -d)"
sandbox_pid=""
cleanup() {
    if [[ -n "$sandbox_pid" ]]; then
        kill "$sandbox_pid" 2>/dev/null || true
        wait "$sandbox_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "ts-sdk-check: Node.js 20 or later and npm are needed to run @blockrun/llm" >&2
    exit 1
fi
# npm keeps its download cache where it always does; the SDK's own files (~/.blockrun cost log)
# go to $work.
export npm_config_cache="${npm_config_cache:-$HOME/.npm}"
export HOME="$work/home" NO_COLOR=1
mkdir -p "$HOME"
unset BLOCKRUN_API_KEY BASE_CHAIN_WALLET_KEY  # the wallet rail, with the key given below

echo "ts-sdk-check: installing @blockrun/llm@$TS_SDK_VERSION from npm"
if ! npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$work/npm" \
    "@blockrun/llm@$TS_SDK_VERSION" >"$work/npm.log" 2>&1; then
    cat "$work/npm.log" >&2
    exit 1
fi
# Next to node_modules, so the script's `import "@blockrun/llm"` resolves to what was installed.
cp .ci/ts-sdk-check.mjs "$work/npm/"

port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
echo "ts-sdk-check: $SERVER sandbox --port $port"
"$SERVER" sandbox --port "$port" >"$work/sandbox.log" 2>&1 &
sandbox_pid=$!
for _ in $(seq 100); do
    if ! kill -0 "$sandbox_pid" 2>/dev/null; then
        echo "ts-sdk-check: the sandbox exited:" >&2
        cat "$work/sandbox.log" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    sleep 0.1
done

SANDBOX_API_URL="http://127.0.0.1:$port/api" \
    SANDBOX_PRIVATE_KEY="$("$PYTHON" -c 'import secrets; print("0x" + secrets.token_hex(32))')" \
    node "$work/npm/ts-sdk-check.mjs"
