#!/usr/bin/env bash
# The team walkthrough of manifests/team/README.md, on one machine, on the sandbox: no wallet, no
# funds, no network beyond loopback. Given an empty PostgreSQL database, it:
#
#   1. migrates it (`blockrun-mcp migrate`);
#   2. makes two identities with `blockrun-mcp token add`: alice ($0.01 a day), bob ($1.00 a day);
#   3. starts the sandbox gateway (`blockrun-mcp sandbox`) and two instances
#      (`blockrun-mcp serve --transport http`) with the same settings, on one ledger;
#   4. asks through a real MCP client (Streamable HTTP, a bearer token each), alternating between
#      the instances as a load balancer would: alice until her budget refuses, then bob on each;
#   5. prints `blockrun-mcp spend` (by identity: both);
#   6. stops what it started and removes its temporary directory.
#
# It exits 0 only if it all went so: alice served, then refused by her identity budget; bob
# served on both instances; spend listing both.
#
#   bash manifests/team/try-it.sh postgresql://USER:PASSWORD@HOST:5432/DATABASE
#
# The URL may be given as BLOCKRUN_LEDGER_URL instead. The database must hold no payments yet
# (alice's budget is per UTC day): create a new one for each run, e.g. `createdb blockrun_try`.
#
# Optional settings (environment):
#   BLOCKRUN_MCP   the blockrun-mcp command (default: the one on PATH)
#   PYTHON         a Python with the `mcp` package, for the client (default: the one blockrun-mcp
#                  runs on, as its first line names it; else python3)
#   SANDBOX_PORT   the sandbox gateway's port (default 8787)
#   PORT_ONE       the first instance's port (default 8411)
#   PORT_TWO       the second instance's port (default 8412)
set -euo pipefail

say() { printf '\n==> %s\n' "$*"; }
die() {
    echo "try-it.sh: error: $*" >&2
    exit 1
}

LEDGER_URL="${1:-${BLOCKRUN_LEDGER_URL:-}}"
[[ -n "$LEDGER_URL" ]] ||
    die "give the URL of an empty PostgreSQL database: bash $0 postgresql://USER@HOST:5432/DB"
[[ "$LEDGER_URL" == postgres://* || "$LEDGER_URL" == postgresql://* ]] ||
    die "'$LEDGER_URL' is not a postgresql:// URL"

CLI="${BLOCKRUN_MCP:-$(command -v blockrun-mcp || true)}"
[[ -n "$CLI" && -x "$CLI" ]] ||
    die "blockrun-mcp is not on PATH: install it (pipx install blockrun-mcp), or set BLOCKRUN_MCP"
if [[ -z "${PYTHON:-}" ]]; then
    first_line="$(head -n 1 "$CLI" 2>/dev/null || true)"
    PYTHON="${first_line#\#!}"
    if [[ "$first_line" != '#!'* || ! -x "$PYTHON" ]]; then
        PYTHON=python3
    fi
fi
"$PYTHON" -c 'import mcp, httpx2' 2>/dev/null ||
    die "$PYTHON cannot import the mcp package (the client): set PYTHON to the Python blockrun-mcp is installed in"

SANDBOX_PORT="${SANDBOX_PORT:-8787}"
PORT_ONE="${PORT_ONE:-8411}"
PORT_TWO="${PORT_TWO:-8412}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$SANDBOX_PORT" "$PORT_ONE" "$PORT_TWO"; do
    if port_open "$port"; then
        die "port $port on 127.0.0.1 is taken: stop what runs there, or choose others with SANDBOX_PORT, PORT_ONE, PORT_TWO"
    fi
done

# Only the settings below: none of the caller's BLOCKRUN_* (a real key, a session budget, a token)
# may leak into this pretend deployment.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep '^BLOCKRUN_' || true)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/blockrun-team.XXXXXX")"
PIDS=()
NAMES=()
finish() {
    local status=$?
    local index
    for index in "${!PIDS[@]}"; do
        kill -TERM "${PIDS[$index]}" 2>/dev/null || true
    done
    for index in "${!PIDS[@]}"; do
        wait "${PIDS[$index]}" 2>/dev/null || true
    done
    if [[ "$status" -ne 0 ]]; then
        for index in "${!NAMES[@]}"; do
            if [[ -s "$WORK/${NAMES[$index]}.log" ]]; then
                echo "--- the end of ${NAMES[$index]}'s log:" >&2
                tail -n 20 "$WORK/${NAMES[$index]}.log" >&2
            fi
        done
        echo "try-it.sh: FAILED (exit $status)" >&2
    fi
    rm -rf "$WORK"
}
trap finish EXIT
trap 'exit 130' INT TERM

# The settings every instance gets, the same on each (on several machines, too).
export BLOCKRUN_LEDGER_URL="$LEDGER_URL"
TOKENS="$WORK/tokens.toml" # exported as BLOCKRUN_HTTP_TOKENS_FILE once it exists (step 2)
export BLOCKRUN_DAILY_BUDGET_USD=5.00 # the wallet's cap over everyone together
export BLOCKRUN_DATA_DIR="$WORK/data"
# The sandbox in place of BlockRun and of the chain, and a throwaway wallet it funds with $10 of
# pretend USDC.
export BLOCKRUN_API_URL="http://127.0.0.1:$SANDBOX_PORT/api"
export BLOCKRUN_RPC_URL="http://127.0.0.1:$SANDBOX_PORT/rpc"
BLOCKRUN_WALLET_KEY="0x$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')"
export BLOCKRUN_WALLET_KEY

start() { # NAME COMMAND...: in the background, its output in $WORK/NAME.log
    local name="$1"
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}
wait_for_port() { # NAME PORT
    local index name="$1" port="$2"
    for index in "${!NAMES[@]}"; do
        [[ "${NAMES[$index]}" == "$name" ]] && break
    done
    for _ in $(seq 300); do
        if port_open "$port"; then
            return 0
        fi
        kill -0 "${PIDS[$index]}" 2>/dev/null || die "$name exited before listening on :$port (its log is below)"
        sleep 0.1
    done
    die "$name is not listening on :$port after 30 s"
}

# The sandbox gateway needs nothing from the steps before step 3: it starts meanwhile.
start sandbox "$CLI" sandbox --port "$SANDBOX_PORT"

say "1. the ledger's schema: blockrun-mcp migrate"
"$CLI" migrate

say "2. two identities: blockrun-mcp token add"
token_of() { sed -n 's/^  \([A-Za-z0-9_-]\{32,\}\)$/\1/p' <<<"$1" | head -n 1; }
added="$("$CLI" token add alice --daily-budget 0.01 --file "$TOKENS")"
echo "$added"
ALICE="$(token_of "$added")"
added="$("$CLI" token add bob --daily-budget 1.00 --file "$TOKENS")"
echo "$added"
BOB="$(token_of "$added")"
[[ -n "$ALICE" && -n "$BOB" ]] || die "could not read the tokens that 'token add' printed"
export BLOCKRUN_HTTP_TOKENS_FILE="$TOKENS"

say "3. the sandbox gateway on :$SANDBOX_PORT, instances on :$PORT_ONE and :$PORT_TWO (same settings)"
start instance-one "$CLI" serve --transport http --host 127.0.0.1 --port "$PORT_ONE"
start instance-two "$CLI" serve --transport http --host 127.0.0.1 --port "$PORT_TWO"
wait_for_port sandbox "$SANDBOX_PORT"
wait_for_port instance-one "$PORT_ONE"
wait_for_port instance-two "$PORT_TWO"
cat "$WORK/sandbox.log" "$WORK/instance-one.log" "$WORK/instance-two.log"

say "4. asking through MCP clients (Streamable HTTP), on one instance and then the other"
"$PYTHON" - "$PORT_ONE" "$PORT_TWO" "$ALICE" "$BOB" <<'EOF'
"""alice and bob ask at once; alice again until her $0.01 a day refuses; bob goes on."""

import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

MODEL = "anthropic/claude-opus-4.7"  # about half a cent a question in the sandbox
ports, tokens = sys.argv[1:3], {"alice": sys.argv[3], "bob": sys.argv[4]}


async def ask(person: str, index: int, prompt: str) -> tuple[bool, str]:
    port = ports[index]
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"Authorization": f"Bearer {tokens[person]}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool(
            "ask_model", {"prompt": prompt, "model": MODEL, "max_tokens": 2000}
        )
    where = f"{person:<5} -> instance {index + 1} (:{port})"
    if result.is_error:
        text = result.content[0].text
        print(f"{where}: REFUSED: {text}", flush=True)
        return False, text
    paid = result.structured_content
    print(
        f"{where}: served, paid ${paid['cost_usd']:.6f}, "
        f"{person} has ${paid['budget_remaining_usd']:.6f} left today",
        flush=True,
    )
    return True, ""


async def main() -> int:
    # alice and bob at once, each on an instance of their own.
    first: dict[str, tuple[bool, str]] = {}

    async def ask_first(person: str, index: int) -> None:
        first[person] = await ask(person, index, f"{person}'s first question")

    async with anyio.create_task_group() as group:
        group.start_soon(ask_first, "alice", 0)
        group.start_soon(ask_first, "bob", 1)
    if not first["alice"][0]:
        print("alice was refused at once: this database holds her spending of today already")
        print("(give the script a new, empty database)")
        return 1
    if not first["bob"][0]:
        print("bob was refused on his first question")
        return 1
    # alice again, on the other instance, until her $0.01 runs out: her first question, paid on
    # instance 1, counts on instance 2 too.
    served = 1
    for call in range(1, 10):
        ok, why = await ask("alice", call % 2, f"alice's question {call + 1}")
        if not ok:
            break
        served += 1
    else:
        print("alice was never refused: her budget did not hold")
        return 1
    if "identity budget" not in why:
        print("alice was refused, but not by her identity budget")
        return 1
    # bob goes on, on the other instance.
    ok, _ = await ask("bob", 0, "bob's second question")
    if not ok:
        print("bob was refused: his budget should have let him go on")
        return 1
    print(f"alice: served {served}x, then refused by her own budget; bob: served on both instances")
    return 0


sys.exit(anyio.run(main))
EOF

say "5. what was spent: blockrun-mcp spend"
report="$("$CLI" spend)"
echo "$report"
# Its "By identity" table: a header, a rule, then one line per person.
people="$(awk '/^By identity/ { on = 1; next } on && !NF { exit } on { print $1 }' <<<"$report" |
    tail -n +3 | sort | tr '\n' ' ')"
[[ "$people" == "alice bob " ]] || die "spend's By identity lists '$people', not alice and bob"

say "6. done: alice was refused by her budget while bob went on; spend shows both"
