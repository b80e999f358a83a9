#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 only, with trust authentication and
# fsync off (it holds nothing worth keeping). Installs PostgreSQL from Debian's packages when no
# pg_ctl/initdb is found (as root, with apt-get).
#
#   bash .ci/postgres.sh start [DIR]    start a server (in DIR, else a new temporary directory);
#                                       prints `export NAME=value` lines for `eval`
#   bash .ci/postgres.sh restart [DIR]  restart it in place (same data, same port): `pg_ctl -m fast`
#   bash .ci/postgres.sh stop [DIR]     stop it and remove DIR; nothing to stop is not an error
#   bash .ci/postgres.sh status [DIR]   exit 0 if it accepts connections, 1 if not
#   bash .ci/postgres.sh env [DIR]      print the export lines again
#
# DIR defaults to $BLOCKRUN_TEST_PG_DIR (one of the exported names). `start` on a DIR whose server
# runs prints its lines again; on a DIR whose server is stopped, starts it again. Exported:
#   BLOCKRUN_TEST_POSTGRES_URL  postgresql://blockrun@127.0.0.1:PORT/blockrun_test (superuser)
#   BLOCKRUN_TEST_PG_DIR        the directory `stop` removes
#   BLOCKRUN_TEST_PGDATA        the data directory (pg_ctl -D)
#   BLOCKRUN_TEST_PG_CTL        the pg_ctl that runs it
#   BLOCKRUN_TEST_PG_OS_USER    the OS user pg_ctl must run as (`runuser -u USER --` when root)
#   BLOCKRUN_TEST_PG_LOG        the server's log file (pg_ctl -l)
# Settings: BLOCKRUN_PG_BINDIR (a directory with pg_ctl, initdb, postgres and psql) and
# BLOCKRUN_PG_OS_USER (who runs the server when started as root; default postgres) are optional.
set -euo pipefail

PROG="postgres.sh"
DB_USER="blockrun"
DB_NAME="blockrun_test"
MARKER=".blockrun-test-postgres"

say() { echo "$PROG: $*" >&2; }
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

# Our own connection details are explicit; PGHOST, PGOPTIONS and the like from the caller's
# environment must not redirect or alter them.
while read -r name; do
    unset "$name"
done < <(compgen -e | grep '^PG' || true)

# ---- finding (or installing) PostgreSQL ----------------------------------------------------------

has_server_binaries() {
    [[ -x "$1/pg_ctl" && -x "$1/initdb" && -x "$1/postgres" ]]
}

# Prints the directory holding pg_ctl, initdb and postgres, or nothing.
find_bindir() {
    local dir candidate
    if [[ -n "${BLOCKRUN_PG_BINDIR:-}" ]]; then
        has_server_binaries "$BLOCKRUN_PG_BINDIR" ||
            die "BLOCKRUN_PG_BINDIR=$BLOCKRUN_PG_BINDIR has no pg_ctl, initdb and postgres"
        echo "$BLOCKRUN_PG_BINDIR"
        return
    fi
    # Debian and Ubuntu keep each major version in /usr/lib/postgresql/N/bin: newest first. Then
    # whatever pg_ctl the PATH has (its real directory, past any symlink), then other layouts.
    while read -r dir; do
        if [[ -n "$dir" ]] && has_server_binaries "$dir"; then
            echo "$dir"
            return
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V -r || true)
    if candidate="$(command -v pg_ctl)"; then
        dir="$(dirname "$(readlink -f "$candidate")")"
        if has_server_binaries "$dir"; then
            echo "$dir"
            return
        fi
    fi
    while read -r dir; do
        if [[ -n "$dir" ]] && has_server_binaries "$dir"; then
            echo "$dir"
            return
        fi
    done < <(compgen -G '/usr/pgsql-*/bin' | sort -V -r || true; echo /usr/local/pgsql/bin)
}

install_postgres() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "PostgreSQL is not installed (no pg_ctl, initdb and postgres found) and installing it" \
            "needs root: run 'sudo apt-get install postgresql' (or your system's equivalent), or" \
            "set BLOCKRUN_PG_BINDIR to a directory that has them"
    fi
    command -v apt-get >/dev/null ||
        die "PostgreSQL is not installed and there is no apt-get to install it: install PostgreSQL" \
            "13 or later yourself, or set BLOCKRUN_PG_BINDIR to a directory with pg_ctl and initdb"
    say "PostgreSQL not found: installing it from the package registry (apt-get install postgresql)"
    local log
    log="$(mktemp)"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # Straight away when the package lists are fresh enough; else after an update.
    if ! "${apt[@]}" install --no-install-recommends postgresql >"$log" 2>&1; then
        say "installing failed with the package lists as they were: updating them and retrying"
        if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends postgresql; } \
            >>"$log" 2>&1; then
            tail -n 40 "$log" >&2
            rm -f "$log"
            die "could not install PostgreSQL with apt-get (the end of its output is above)"
        fi
    fi
    rm -f "$log"
}

# Sets BINDIR, installing PostgreSQL first if need be.
locate_postgres() {
    BINDIR="$(find_bindir)"
    if [[ -z "$BINDIR" ]]; then
        install_postgres
        BINDIR="$(find_bindir)"
        [[ -n "$BINDIR" ]] ||
            die "apt-get installed postgresql, yet no pg_ctl, initdb and postgres can be found" \
                "(looked in /usr/lib/postgresql/*/bin and the PATH)"
    fi
}

psql_path() {
    if [[ -x "$1/psql" ]]; then
        echo "$1/psql"
    elif command -v psql >/dev/null; then
        command -v psql
    else
        die "no psql next to $1/pg_ctl nor on the PATH (install postgresql-client)"
    fi
}

# ---- the OS user that runs the server ------------------------------------------------------------

# initdb and pg_ctl refuse to run as root: as root the server runs as BLOCKRUN_PG_OS_USER (default
# postgres, which Debian's package creates; made here as a system user if missing).
choose_os_user() {
    if [[ "$(id -u)" -ne 0 ]]; then
        id -un
        return
    fi
    local user="${BLOCKRUN_PG_OS_USER:-postgres}"
    [[ "$user" != root ]] || die "BLOCKRUN_PG_OS_USER=root: PostgreSQL refuses to run as root"
    if ! id -u "$user" >/dev/null 2>&1; then
        command -v useradd >/dev/null ||
            die "no OS user '$user' to run PostgreSQL as, and no useradd to create one" \
                "(set BLOCKRUN_PG_OS_USER to an existing user other than root)"
        say "creating the system user '$user' to run PostgreSQL as"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$user" ||
            die "could not create the system user '$user'"
    fi
    echo "$user"
}

# Runs a command as the given user (from /, which every user may enter), with runuser when root.
run_as() {
    local user="$1"
    shift
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u "$user" -- "$@")
    else
        [[ "$user" == "$(id -un)" ]] ||
            die "the server belongs to '$user': run this as root or as '$user'"
        (cd / && "$@")
    fi
}

# ---- the server's directory -----------------------------------------------------------------------

# DIR holds: MARKER, env (the export lines), data/ (PGDATA), run/ (the Unix socket), log/.
resolve_dir() {
    local dir="${1:-${BLOCKRUN_TEST_PG_DIR:-}}"
    if [[ -n "$dir" ]]; then
        [[ "$dir" == /* ]] || dir="$PWD/$dir"
        [[ "$dir" =~ ^[A-Za-z0-9_./+-]+$ ]] ||
            die "'$dir': choose a directory path of letters, digits and . _ - + / only"
    fi
    echo "$dir"
}

is_ours() { [[ -f "$1/$MARKER" ]]; }

# Prints the value of one exported name from DIR/env.
env_value() {
    sed -n "s/^export $2=//p" "$1/env" 2>/dev/null | tail -n 1
}

write_env() {
    local dir="$1" port="$2" os_user="$3"
    {
        echo "export BLOCKRUN_TEST_POSTGRES_URL=postgresql://$DB_USER@127.0.0.1:$port/$DB_NAME"
        echo "export BLOCKRUN_TEST_PG_DIR=$dir"
        echo "export BLOCKRUN_TEST_PGDATA=$dir/data"
        echo "export BLOCKRUN_TEST_PG_CTL=$BINDIR/pg_ctl"
        echo "export BLOCKRUN_TEST_PG_OS_USER=$os_user"
        echo "export BLOCKRUN_TEST_PG_LOG=$dir/log/postgres.log"
    } >"$dir/env.new"
    mv "$dir/env.new" "$dir/env"
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "found no free TCP port on 127.0.0.1"
}

# The settings, in a file of their own that postgresql.conf includes (so a new port is one rewrite).
write_settings() {
    local dir="$1" port="$2" os_user="$3"
    cat >"$dir/data/blockrun-test.conf" <<EOF
# Written by .ci/postgres.sh: a throwaway test server.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
EOF
    chown "$os_user:" "$dir/data/blockrun-test.conf" 2>/dev/null || true
}

pg_ctl_as_owner() {
    local dir="$1"
    shift
    local pg_ctl os_user
    pg_ctl="$(env_value "$dir" BLOCKRUN_TEST_PG_CTL)"
    os_user="$(env_value "$dir" BLOCKRUN_TEST_PG_OS_USER)"
    [[ -x "$pg_ctl" ]] || die "$dir/env names no usable pg_ctl ('$pg_ctl')"
    run_as "$os_user" "$pg_ctl" "$@" -D "$dir/data"
}

is_running() {
    [[ -f "$1/env" ]] && pg_ctl_as_owner "$1" status >/dev/null 2>&1
}

accepts_connections() {
    local dir="$1" url
    url="$(env_value "$dir" BLOCKRUN_TEST_POSTGRES_URL)"
    [[ -n "$url" ]] && "$(psql_path "$(dirname "$(env_value "$dir" BLOCKRUN_TEST_PG_CTL)")")" \
        -X -q -A -t -d "${url%/*}/postgres" -c 'SELECT 1' >/dev/null 2>&1
}

show_log() {
    if [[ -f "$1/log/postgres.log" ]]; then
        echo "--- the end of $1/log/postgres.log:" >&2
        tail -n 25 "$1/log/postgres.log" >&2
    fi
}

# Starts the server in DIR (already initialised), on its port or, if that is taken, another.
launch() {
    local dir="$1" os_user="$2" port="$3"
    local attempt
    for attempt in 1 2 3 4 5; do
        write_settings "$dir" "$port" "$os_user"
        write_env "$dir" "$port" "$os_user"
        if pg_ctl_as_owner "$dir" start -w -t 60 -s -l "$dir/log/postgres.log" \
            >"$dir/log/pg_ctl.log" 2>&1; then
            return 0
        fi
        if grep -q -e 'could not bind' -e 'Address already in use' "$dir/log/postgres.log" 2>/dev/null &&
            [[ "$attempt" -lt 5 ]]; then
            say "port $port was taken: trying another"
            : >"$dir/log/postgres.log"
            port="$(free_port)"
            continue
        fi
        cat "$dir/log/pg_ctl.log" >&2
        show_log "$dir"
        die "the PostgreSQL server in $dir did not start (pg_ctl's output and the log are above)"
    done
}

wait_until_ready() {
    local dir="$1"
    for _ in $(seq 300); do
        if accepts_connections "$dir"; then
            return 0
        fi
        sleep 0.1
    done
    show_log "$dir"
    die "the PostgreSQL server in $dir runs but does not accept connections after 30 s"
}

# ---- commands ------------------------------------------------------------------------------------

CREATED_DIR=""
cleanup_failed_start() {
    local status=$?
    if [[ "$status" -ne 0 && -n "$CREATED_DIR" ]]; then
        say "start failed: removing $CREATED_DIR"
        stop_and_remove "$CREATED_DIR" >/dev/null 2>&1 || true
    fi
}

cmd_start() {
    local dir os_user
    dir="$(resolve_dir "${1:-}")"

    if [[ -n "$dir" && -e "$dir" ]] && is_ours "$dir"; then
        if is_running "$dir"; then
            say "already running in $dir"
            wait_until_ready "$dir"
            cat "$dir/env"
            return
        fi
        say "starting the stopped server in $dir again"
        BINDIR="$(dirname "$(env_value "$dir" BLOCKRUN_TEST_PG_CTL)")"
        has_server_binaries "$BINDIR" || locate_postgres
        os_user="$(env_value "$dir" BLOCKRUN_TEST_PG_OS_USER)"
        local port
        port="$(env_value "$dir" BLOCKRUN_TEST_POSTGRES_URL | sed -n 's/.*:\([0-9]*\)\/.*/\1/p')"
        launch "$dir" "$os_user" "${port:-$(free_port)}"
        wait_until_ready "$dir"
        cat "$dir/env"
        return
    fi

    locate_postgres
    os_user="$(choose_os_user)"
    trap cleanup_failed_start EXIT
    if [[ -z "$dir" ]]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/blockrun-pg.XXXXXX")"
    else
        if [[ -e "$dir" && -n "$(ls -A "$dir")" ]]; then
            die "$dir exists, is not empty and was not made by $PROG: give a new or empty directory"
        fi
        mkdir -p "$dir"
    fi
    CREATED_DIR="$dir"
    touch "$dir/$MARKER"
    chmod 0755 "$dir"
    mkdir -p "$dir/data" "$dir/run" "$dir/log"
    chmod 0700 "$dir/data"
    chown "$os_user:" "$dir/data" "$dir/run" "$dir/log"
    run_as "$os_user" test -w "$dir/data" ||
        die "the user '$os_user' cannot reach $dir/data (is a parent directory closed to it?):" \
            "give another DIR, or set TMPDIR to a directory every user may enter"

    say "initdb in $dir/data (PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}'), as $os_user)"
    if ! run_as "$os_user" "$BINDIR/initdb" -D "$dir/data" -U "$DB_USER" --auth=trust \
        --encoding=UTF8 --no-locale --no-sync >"$dir/log/initdb.log" 2>&1; then
        tail -n 25 "$dir/log/initdb.log" >&2
        die "initdb failed (its output is above)"
    fi
    echo "include 'blockrun-test.conf'" >>"$dir/data/postgresql.conf"

    launch "$dir" "$os_user" "$(free_port)"
    wait_until_ready "$dir"
    local url
    url="$(env_value "$dir" BLOCKRUN_TEST_POSTGRES_URL)"
    if ! "$(psql_path "$BINDIR")" -X -q -v ON_ERROR_STOP=1 \
        -d "${url%/*}/postgres" -c "CREATE DATABASE $DB_NAME" >"$dir/log/createdb.log" 2>&1; then
        cat "$dir/log/createdb.log" >&2
        die "could not create the database $DB_NAME"
    fi
    CREATED_DIR=""
    say "running: $url (data in $dir/data, as $os_user)"
    cat "$dir/env"
}

stop_and_remove() {
    local dir="$1"
    if [[ -f "$dir/data/postmaster.pid" && -f "$dir/env" ]]; then
        if ! pg_ctl_as_owner "$dir" stop -m fast -w -t 30 -s >/dev/null 2>&1 &&
            ! pg_ctl_as_owner "$dir" stop -m immediate -w -t 30 -s >/dev/null 2>&1; then
            local pid
            pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
            if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
                say "pg_ctl could not stop the server (pid $pid): killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    rm -rf "$dir"
}

cmd_stop() {
    local dir
    dir="$(resolve_dir "${1:-}")"
    if [[ -z "$dir" ]]; then
        say "nothing to stop (no DIR given and BLOCKRUN_TEST_PG_DIR is not set)"
        return
    fi
    if [[ ! -e "$dir" ]]; then
        say "nothing to stop: $dir is already gone"
        return
    fi
    is_ours "$dir" || die "$dir was not made by $PROG: not stopping or removing anything in it"
    stop_and_remove "$dir"
    say "stopped and removed $dir"
}

require_ours() {
    local dir="$1"
    [[ -n "$dir" ]] || die "which server? give its DIR or set BLOCKRUN_TEST_PG_DIR"
    [[ -e "$dir" ]] || die "$dir does not exist (was the server stopped?)"
    is_ours "$dir" || die "$dir was not made by $PROG"
}

cmd_restart() {
    local dir
    dir="$(resolve_dir "${1:-}")"
    require_ours "$dir"
    if ! pg_ctl_as_owner "$dir" restart -m fast -w -t 60 -s -l "$dir/log/postgres.log" >/dev/null; then
        show_log "$dir"
        die "pg_ctl restart failed for $dir (the log is above)"
    fi
    wait_until_ready "$dir"
    say "restarted: $(env_value "$dir" BLOCKRUN_TEST_POSTGRES_URL)"
}

cmd_status() {
    local dir
    dir="$(resolve_dir "${1:-}")"
    require_ours "$dir"
    if accepts_connections "$dir"; then
        say "running: $(env_value "$dir" BLOCKRUN_TEST_POSTGRES_URL)"
    else
        say "not accepting connections: $dir"
        return 1
    fi
}

cmd_env() {
    local dir
    dir="$(resolve_dir "${1:-}")"
    require_ours "$dir"
    cat "$dir/env"
}

usage() {
    echo "usage: bash .ci/postgres.sh start|stop|restart|status|env [DIR]" >&2
    exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
case "$1" in
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
restart) cmd_restart "${2:-}" ;;
status) cmd_status "${2:-}" ;;
env) cmd_env "${2:-}" ;;
*) usage ;;
esac
