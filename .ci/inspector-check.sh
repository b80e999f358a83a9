#!/usr/bin/env bash
# A real third-party MCP client against `blockrun-mcp serve --sandbox`: the MCP Inspector CLI from
# npm lists the tools and calls ask_model, over stdio and over Streamable HTTP with a bearer token.
# Fails if the Inspector reports an error, a tool is missing, or ask_model's result is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

INSPECTOR_VERSION="${INSPECTOR_VERSION:-2.12.0}"
TOOLS="ask_model ask_models list_models estimate_cost generate_image generate_video budget wallet threads"
PYTHON="$PWD/.venv/bin/python"
SERVER="$PWD/.venv/bin/blockrun-mcp"

work="$(mktemp -d)"
server_pid=""
team_pids=()
team_db=""
cleanup() {
    for pid in "$server_pid" "${team_pids[@]}"; do
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n "$team_db" ]]; then
        "$PYTHON" - "$BLOCKRUN_TEST_POSTGRES_URL" "$team_db" <<'PY' || true
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(f'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)')
PY
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if ! command -v npm >/dev/null; then
    echo "inspector-check: npm (Node.js 20 or later) is needed to install the MCP Inspector" >&2
    exit 1
fi
# npm keeps its download cache where it always does; everything else the Inspector and the server
# write (Inspector state, ledger, media) stays in $work.
export npm_config_cache="${npm_config_cache:-$HOME/.npm}"
export HOME="$work/home" NO_COLOR=1
mkdir -p "$HOME"

echo "inspector-check: installing @modelcontextprotocol/inspector@$INSPECTOR_VERSION from npm"
if ! npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$work/npm" \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" >"$work/npm.log" 2>&1; then
    cat "$work/npm.log" >&2
    exit 1
fi
INSPECTOR="$work/npm/node_modules/.bin/mcp-inspector"

# Runs the Inspector CLI; its JSON result goes to $work/$1.json, its stderr to $work/$1.log.
inspect() {
    local name="$1"
    shift
    if ! "$INSPECTOR" --cli --format json "$@" >"$work/$name.json" 2>"$work/$name.log"; then
        echo "inspector-check: FAILED $name (the Inspector exited non-zero)" >&2
        cat "$work/$name.json" "$work/$name.log" >&2
        exit 1
    fi
}

# Checks one Inspector JSON result: `list` wants every tool, `call` wants a paid, non-error answer.
verify() {
    "$PYTHON" - "$work/$1.json" "$2" "$TOOLS" <<'PY'
import json, sys

path, kind, tools = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
with open(path, encoding="utf-8") as handle:
    data = json.load(handle)
if "error" in data or "result" not in data:
    sys.exit(f"inspector-check: {path}: the Inspector reported an error: {data}")
result = data["result"]
if kind == "list":
    names = {tool["name"] for tool in result.get("tools", [])}
    if tools - names:
        sys.exit(f"inspector-check: tools missing: {sorted(tools - names)} (got {sorted(names)})")
    print(f"  tools/list: all {len(tools)} tools present")
else:
    if result.get("isError"):
        sys.exit(f"inspector-check: ask_model returned an error: {result.get('content')}")
    answer = result.get("structuredContent") or {}
    if not answer.get("content") or not answer.get("cost_usd", 0) > 0:
        sys.exit(f"inspector-check: ask_model's result is not a paid answer: {answer}")
    print(
        f"  tools/call ask_model: {answer['model']} answered, paid ${answer['cost_usd']}, "
        f"tx {str(answer.get('transaction'))[:14]}..."
    )
PY
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Returns once something listens on port $2; fails with log $3 if process $1 exits first.
wait_port() {
    for _ in $(seq 150); do
        if ! kill -0 "$1" 2>/dev/null; then
            echo "inspector-check: a process exited before listening:" >&2
            cat "$3" >&2
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "inspector-check: nothing listens on $2 after 15 s" >&2
    exit 1
}

ask_args=(--method tools/call --tool-name ask_model
    --tool-arg "prompt=Say hello to the MCP Inspector" --tool-arg model=openai/gpt-5-mini
    --tool-arg max_tokens=64)

echo "inspector-check: stdio ($SERVER serve --sandbox)"
inspect stdio-list --strict --method tools/list -- "$SERVER" serve --sandbox
verify stdio-list list
inspect stdio-call "${ask_args[@]}" -- "$SERVER" serve --sandbox
verify stdio-call call

port="$(free_port)"
token="$("$PYTHON" -c 'import secrets; print(secrets.token_hex(24))')"
url="http://127.0.0.1:$port/mcp"
echo "inspector-check: Streamable HTTP with a bearer token ($url)"
BLOCKRUN_HTTP_TOKEN="$token" "$SERVER" serve --transport http --port "$port" --sandbox \
    >"$work/server.log" 2>&1 &
server_pid=$!
wait_port "$server_pid" "$port" "$work/server.log"

inspect http-list --strict --method tools/list --transport http --server-url "$url" \
    --header "Authorization: Bearer $token"
verify http-list list
inspect http-call "${ask_args[@]}" --transport http --server-url "$url" \
    --header "Authorization: Bearer $token"
verify http-call call

# The same client without the token must be turned away.
if "$INSPECTOR" --cli --format json --stored-auth-only --method tools/list --transport http \
    --server-url "$url" >"$work/http-denied.json" 2>&1; then
    echo "inspector-check: FAILED: the HTTP server answered a client without the token" >&2
    exit 1
fi
if ! grep -q -e auth_required -e 401 "$work/http-denied.json"; then
    echo "inspector-check: FAILED: without the token the Inspector failed for another reason:" >&2
    cat "$work/http-denied.json" >&2
    exit 1
fi
echo "  without the token: refused (401), as it should be"

# A team's server (issue 15): stateless Streamable HTTP over the PostgreSQL ledger, an identity's
# token from a tokens file, against a sandbox gateway of its own. Needs the test PostgreSQL that
# .ci/run starts (BLOCKRUN_TEST_POSTGRES_URL).
if [[ -n "${BLOCKRUN_TEST_POSTGRES_URL:-}" ]]; then
    team_db="inspector_$("$PYTHON" -c 'import secrets; print(secrets.token_hex(6))')"
    team_url="$("$PYTHON" - "$BLOCKRUN_TEST_POSTGRES_URL" "$team_db" <<'PY'
import sys, psycopg
from urllib.parse import urlsplit, urlunsplit
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(f'CREATE DATABASE "{sys.argv[2]}"')
print(urlunsplit(urlsplit(sys.argv[1])._replace(path="/" + sys.argv[2])))
PY
)"
    gateway_port="$(free_port)"
    "$SERVER" sandbox --port "$gateway_port" >"$work/team-sandbox.log" 2>&1 &
    team_pids+=($!)
    wait_port "${team_pids[-1]}" "$gateway_port" "$work/team-sandbox.log"
    team_token="$("$PYTHON" - "$work/tokens.toml" <<'PY'
import sys
from pathlib import Path
from blockrun_mcp.identities import add_identity
print(add_identity(Path(sys.argv[1]), "inspector", daily_budget_usd=1.0, max_per_call_usd=None))
PY
)"
    team_port="$(free_port)"
    team_url_mcp="http://127.0.0.1:$team_port/mcp"
    echo "inspector-check: a team's server, stateless HTTP over PostgreSQL ($team_url_mcp)"
    env -u BLOCKRUN_HTTP_TOKEN \
        BLOCKRUN_API_URL="http://127.0.0.1:$gateway_port/api" \
        BLOCKRUN_RPC_URL="http://127.0.0.1:$gateway_port/rpc" \
        BLOCKRUN_WALLET_KEY="0x$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')" \
        BLOCKRUN_LEDGER_URL="$team_url" BLOCKRUN_HTTP_TOKENS_FILE="$work/tokens.toml" \
        BLOCKRUN_DAILY_BUDGET_USD=1.00 BLOCKRUN_DATA_DIR="$work/team-data" \
        "$SERVER" serve --transport http --port "$team_port" >"$work/team-server.log" 2>&1 &
    team_pids+=($!)
    wait_port "${team_pids[-1]}" "$team_port" "$work/team-server.log"
    inspect team-list --strict --method tools/list --transport http --server-url "$team_url_mcp" \
        --header "Authorization: Bearer $team_token"
    verify team-list list
    inspect team-call "${ask_args[@]}" --transport http --server-url "$team_url_mcp" \
        --header "Authorization: Bearer $team_token"
    verify team-call call
    if grep -q "$team_token" "$work/team-server.log"; then
        echo "inspector-check: FAILED: the team server logged a bearer token" >&2
        exit 1
    fi
    echo "  the payment is the identity's, in PostgreSQL: $("$PYTHON" - "$team_url" <<'PY'
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    rows = conn.execute("SELECT identity, status FROM payments").fetchall()
assert rows == [("inspector", "settled")], rows
print(rows)
PY
)"
fi
echo "inspector-check: ok"
