#!/usr/bin/env bash
# Local PostgreSQL cluster run as a plain background process -- no Docker needed.
#
#   deploy/local/postgres.sh start            install PostgreSQL if missing (Debian/apt),
#                                             initdb if needed, start, wait until ready,
#                                             ensure role+database "handoff";
#                                             prints DATABASE_URL=... on stdout
#   deploy/local/postgres.sh stop             fast shutdown
#   deploy/local/postgres.sh status           exit 0 if running, 3 if stopped
#   deploy/local/postgres.sh env              prints: export DATABASE_URL=...
#   deploy/local/postgres.sh createdb NAME... create databases (owner handoff) if missing
#
# Environment (all optional):
#   PG_PORT              TCP port on 127.0.0.1          (default 54329)
#   PG_START_TIMEOUT     seconds to wait for readiness  (default 60)
#   PG_BINDIR            PostgreSQL bin dir (default: highest /usr/lib/postgresql/*/bin)
#   HANDOFF_LOCAL_DIR    state dir (default <repo>/.local; cluster in postgres/)
#
# Security note: this is a throwaway dev/test cluster. It listens on 127.0.0.1
# only and uses `trust` authentication (no password check) for local socket and
# 127.0.0.1 connections. The role handoff/handoff still gets a real password,
# so DATABASE_URL keeps working if pg_hba.conf is ever switched to scram-sha-256.
#
# When run as root (CI), initdb/postgres run as the `postgres` system user. If
# that user cannot reach <repo>/.local/postgres (e.g. the repo is under /root,
# mode 0700), the cluster lives in /var/lib/handoff/postgres-<hash> instead and
# <repo>/.local/postgres/external-data-dir points to it; after an
# `rm -rf .local` that external cluster is wiped on the next start.
set -euo pipefail

LOG_TAG=postgres
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=deploy/local/lib.sh
. "$SCRIPT_DIR/lib.sh"

PG_PORT="${PG_PORT:-54329}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"
PG_USER_NAME=handoff
PG_USER_PASSWORD=handoff
PG_MAIN_DB=handoff
PG_OS_USER=postgres
EXTERNAL_ROOT=/var/lib/handoff

BASE_DIR="$(make_abs "$HANDOFF_LOCAL_DIR")/postgres"
MARKER_FILE="$BASE_DIR/external-data-dir"
DATABASE_URL_VALUE="postgresql+asyncpg://$PG_USER_NAME:$PG_USER_PASSWORD@127.0.0.1:$PG_PORT/$PG_MAIN_DB"

check_port_number PG_PORT "$PG_PORT"

# Set by resolve_layout.
PG_ROOT=""
PGDATA_DIR=""
PG_LOG_FILE=""
PG_SOCKET_DIR=""
PG_BIN=""

# ---------------------------------------------------------------- helpers

# Run a command as the cluster owner (postgres when we are root, else ourselves),
# from / so the command never trips over an unreadable working directory.
as_pg() {
    if ((EUID == 0)); then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

# Highest installed PostgreSQL bin dir (Debian layout), or nothing.
find_pg_bindir() {
    local d best="" best_ver=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/postgres" && -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
        local ver="${d#/usr/lib/postgresql/}"
        ver="${ver%/bin}"
        if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$best_ver" "$ver" | sort -V | tail -n 1)" == "$ver" ]]; then
            best="$d"
            best_ver="$ver"
        fi
    done
    printf '%s\n' "$best"
}

install_postgres() {
    log "no PostgreSQL server binaries found under /usr/lib/postgresql; installing Debian's postgresql package"
    # Install postgresql-common first and tell it not to create (and start) the
    # default 'main' cluster on port 5432: we only need the binaries.
    apt_install postgresql-common
    local conf=/etc/postgresql-common/createcluster.conf
    if [[ -f "$conf" ]]; then
        if grep -Eq '^[#[:space:]]*create_main_cluster[[:space:]]*=' "$conf"; then
            sed -i -E 's/^[#[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' "$conf"
        else
            echo 'create_main_cluster = false' >>"$conf"
        fi
    fi
    apt_install postgresql
}

ensure_binaries() {
    # An existing cluster must be run by the major version that created it.
    if [[ -z "${PG_BINDIR:-}" && -f "$PGDATA_DIR/PG_VERSION" ]]; then
        local ver
        ver="$(tr -dc '0-9.' <"$PGDATA_DIR/PG_VERSION")"
        if [[ -x "/usr/lib/postgresql/$ver/bin/postgres" ]]; then
            PG_BIN="/usr/lib/postgresql/$ver/bin"
            return 0
        fi
        die "the cluster in $PGDATA_DIR was created by PostgreSQL $ver, which is not installed;" \
            "install it or reset the cluster (stop, then rm -rf $BASE_DIR${PG_ROOT:+ $PG_ROOT})"
    fi
    if [[ -n "${PG_BINDIR:-}" ]]; then
        [[ -x "$PG_BINDIR/postgres" ]] || die "PG_BINDIR=$PG_BINDIR does not contain a postgres binary"
        PG_BIN="$PG_BINDIR"
        return 0
    fi
    PG_BIN="$(find_pg_bindir)"
    if [[ -z "$PG_BIN" ]]; then
        install_postgres
        PG_BIN="$(find_pg_bindir)"
        [[ -n "$PG_BIN" ]] || die "PostgreSQL was installed but no /usr/lib/postgresql/*/bin/postgres was found"
    fi
}

# Binaries needed only to talk to a (possibly) running cluster; never installs.
find_binaries_noinstall() {
    if [[ -n "${PG_BINDIR:-}" ]]; then
        PG_BIN="$PG_BINDIR"
    elif [[ -f "$PGDATA_DIR/PG_VERSION" && -x "/usr/lib/postgresql/$(tr -dc '0-9.' <"$PGDATA_DIR/PG_VERSION")/bin/pg_ctl" ]]; then
        PG_BIN="/usr/lib/postgresql/$(tr -dc '0-9.' <"$PGDATA_DIR/PG_VERSION")/bin"
    else
        PG_BIN="$(find_pg_bindir)"
    fi
    [[ -n "$PG_BIN" ]]
}

ensure_os_user() {
    ((EUID == 0)) || return 0
    command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is required to run PostgreSQL as '$PG_OS_USER' when running as root"
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        log "creating system user $PG_OS_USER"
        useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
            --shell /usr/sbin/nologin "$PG_OS_USER" || die "could not create system user $PG_OS_USER"
    fi
}

external_dir_for_base() {
    printf '%s/postgres-%s\n' "$EXTERNAL_ROOT" "$(printf '%s' "$BASE_DIR" | sha256sum | cut -c1-12)"
}

set_paths() {
    PG_ROOT="$1"
    PGDATA_DIR="$PG_ROOT/data"
    PG_LOG_FILE="$PG_ROOT/log/postgres.log"
    PG_SOCKET_DIR="$PG_ROOT/run"
    # Unix socket paths are limited to ~107 bytes; with a very deep checkout we
    # disable the socket (all clients here use TCP on 127.0.0.1 anyway).
    if ((${#PG_SOCKET_DIR} + 20 > 100)); then
        PG_SOCKET_DIR=""
    fi
}

# Decide where the cluster lives (see header). mode=create may create dirs;
# mode=lookup only finds an existing layout (returns 1 if there is none).
resolve_layout() {
    local mode="$1"
    if [[ -f "$MARKER_FILE" ]]; then
        set_paths "$(head -n 1 "$MARKER_FILE")"
        return 0
    fi
    if [[ -d "$BASE_DIR/data" ]] || ((EUID != 0)); then
        set_paths "$BASE_DIR"
        [[ "$mode" == create || -d "$BASE_DIR/data" ]]
        return
    fi
    if [[ "$mode" != create ]]; then
        return 1
    fi

    mkdir -p "$BASE_DIR"
    chown "$PG_OS_USER:$PG_OS_USER" "$BASE_DIR"
    chmod 0700 "$BASE_DIR"
    if as_pg test -w "$BASE_DIR" -a -x "$BASE_DIR" 2>/dev/null; then
        set_paths "$BASE_DIR"
        return 0
    fi

    # postgres cannot traverse the path to the repo: use an external directory.
    local ext
    ext="$(external_dir_for_base)"
    chown root:root "$BASE_DIR"
    chmod 0755 "$BASE_DIR"
    log "user $PG_OS_USER cannot access $BASE_DIR (a parent directory is not traversable); using $ext"
    if [[ -e "$ext" ]]; then
        # Leftover of a cluster whose .local was deleted: it was reset, so wipe it.
        log "wiping stale cluster $ext (its $MARKER_FILE is gone)"
        set_paths "$ext"
        if find_binaries_noinstall && [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
            as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >&2 9>&- || true
        fi
        rm -rf "$ext"
    fi
    mkdir -p "$EXTERNAL_ROOT"
    chmod 0755 "$EXTERNAL_ROOT"
    mkdir -p "$ext"
    chown "$PG_OS_USER:$PG_OS_USER" "$ext"
    chmod 0700 "$ext"
    printf '%s\n' "$ext" >"$MARKER_FILE"
    set_paths "$ext"
}

psql_admin() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_ready() {
    [[ -n "$PG_BIN" ]] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 3 >/dev/null 2>&1
}

# 0 if the postmaster of our data directory is running.
cluster_running() {
    [[ -n "$PGDATA_DIR" && -f "$PGDATA_DIR/postmaster.pid" && -n "$PG_BIN" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

tail_log() {
    if [[ -s "$PG_LOG_FILE" ]]; then
        printf '\n----- last 50 lines of %s -----\n' "$PG_LOG_FILE" >&2
        tail -n 50 "$PG_LOG_FILE" >&2
    fi
}

# ---------------------------------------------------------------- cluster setup

init_cluster_if_needed() {
    if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then
        return 0
    fi
    # No PG_VERSION => never initialised (or an interrupted initdb): start clean.
    as_pg rm -rf "$PGDATA_DIR"
    as_pg mkdir -p "$PGDATA_DIR" "$(dirname "$PG_LOG_FILE")"
    [[ -z "$PG_SOCKET_DIR" ]] || as_pg mkdir -p "$PG_SOCKET_DIR"
    log "initdb $PGDATA_DIR ($("$PG_BIN/postgres" --version))"
    as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" --username=postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$PG_ROOT/initdb.log.tmp" 2>&1 9>&- || {
        cat "$PG_ROOT/initdb.log.tmp" >&2 2>/dev/null || true
        die "initdb failed"
    }
    rm -f "$PG_ROOT/initdb.log.tmp"
    # Our settings live in handoff.conf (rewritten on every start).
    printf "\n# Added by deploy/local/postgres.sh\ninclude_if_exists = 'handoff.conf'\n" \
        | as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
}

write_config() {
    local tmp
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
# Generated by deploy/local/postgres.sh; overwritten on every start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
shared_buffers = 128MB
fsync = on
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    as_pg tee "$PGDATA_DIR/handoff.conf" <"$tmp" >/dev/null
    # Trust for the local socket and 127.0.0.1 only (see the header note).
    cat >"$tmp" <<'EOF'
# Generated by deploy/local/postgres.sh; overwritten on every start.
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
EOF
    as_pg tee "$PGDATA_DIR/pg_hba.conf" <"$tmp" >/dev/null
    rm -f "$tmp"
}

ensure_role_and_db() {
    psql_admin <<EOF
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '$PG_USER_NAME') THEN
    CREATE ROLE "$PG_USER_NAME" LOGIN SUPERUSER PASSWORD '$PG_USER_PASSWORD';
  END IF;
END
\$\$;
EOF
    create_db "$PG_MAIN_DB"
}

create_db() {
    local name="$1"
    [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_-]{0,62}$ ]] \
        || die "invalid database name '$name' (letters, digits, _ and -, max 63 chars)"
    if [[ -n "$(psql_admin -tA -c "SELECT 1 FROM pg_catalog.pg_database WHERE datname = '$name'")" ]]; then
        return 0
    fi
    log "creating database $name"
    psql_admin -c "CREATE DATABASE \"$name\" OWNER \"$PG_USER_NAME\"" \
        || die "could not create database $name"
}

# ---------------------------------------------------------------- commands

cmd_env() {
    printf 'export DATABASE_URL=%s\n' "$DATABASE_URL_VALUE"
}

cmd_start() {
    with_lock "$(make_abs "$HANDOFF_LOCAL_DIR")/postgres.lock"
    ensure_os_user
    resolve_layout create

    if find_binaries_noinstall && cluster_running; then
        pg_ready || die "PostgreSQL ($PGDATA_DIR) is running but not answering on 127.0.0.1:$PG_PORT" \
            "(started with another PG_PORT?); run '$0 stop' first"
        ensure_role_and_db
        log "already running"
        printf 'DATABASE_URL=%s\n' "$DATABASE_URL_VALUE"
        return 0
    fi

    if port_open "$PG_PORT"; then
        die "port 127.0.0.1:$PG_PORT is already in use by another process (see 'ss -ltnp'); stop it or set PG_PORT"
    fi

    ensure_binaries
    init_cluster_if_needed
    as_pg mkdir -p "$(dirname "$PG_LOG_FILE")"
    [[ -z "$PG_SOCKET_DIR" ]] || as_pg mkdir -p "$PG_SOCKET_DIR"
    [[ -n "$PG_SOCKET_DIR" ]] || log "data path too long for a unix socket; TCP only"
    write_config

    local t0
    t0="$(now_s)"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (data $PGDATA_DIR)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG_FILE" -w -t "$PG_START_TIMEOUT" start \
        >/dev/null 2>&1 9>&-; then
        tail_log
        die "PostgreSQL did not start (log: $PG_LOG_FILE)"
    fi
    local deadline=$(($(now_s) + PG_START_TIMEOUT))
    until pg_ready; do
        if (($(now_s) >= deadline)); then
            tail_log
            die "PostgreSQL started but is not ready on 127.0.0.1:$PG_PORT after ${PG_START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    ensure_role_and_db
    log "ready in $(($(now_s) - t0))s"
    printf 'DATABASE_URL=%s\n' "$DATABASE_URL_VALUE"
}

cmd_stop() {
    with_lock "$(make_abs "$HANDOFF_LOCAL_DIR")/postgres.lock"
    if ! resolve_layout lookup || ! find_binaries_noinstall || ! cluster_running; then
        log "not running"
        return 0
    fi
    log "stopping PostgreSQL ($PGDATA_DIR)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null 2>&1 9>&-; then
        log "fast shutdown failed; using immediate shutdown"
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >&2 9>&- \
            || die "could not stop PostgreSQL (data $PGDATA_DIR)"
    fi
    log "stopped"
}

cmd_status() {
    if ! resolve_layout lookup || ! find_binaries_noinstall || ! cluster_running; then
        echo "postgres: stopped"
        return 3
    fi
    if pg_ready; then
        echo "postgres: running on 127.0.0.1:$PG_PORT, data in $PGDATA_DIR"
        return 0
    fi
    echo "postgres: running (data $PGDATA_DIR) but not answering on 127.0.0.1:$PG_PORT"
    return 1
}

cmd_createdb() {
    (($# > 0)) || die "usage: $0 createdb NAME..."
    local name
    for name in "$@"; do
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_-]{0,62}$ ]] \
            || die "invalid database name '$name' (letters, digits, _ and -, max 63 chars)"
    done
    if ! resolve_layout lookup || ! find_binaries_noinstall || ! cluster_running || ! pg_ready; then
        die "PostgreSQL is not running on 127.0.0.1:$PG_PORT; run '$0 start' first"
    fi
    for name in "$@"; do
        create_db "$name"
    done
}

usage() {
    echo "usage: $0 {start|stop|status|env|createdb NAME...}" >&2
    exit 2
}

[[ $# -ge 1 ]] || usage
cmd="$1"
shift
case "$cmd" in
    start) [[ $# -eq 0 ]] || usage; cmd_start ;;
    stop) [[ $# -eq 0 ]] || usage; cmd_stop ;;
    status) [[ $# -eq 0 ]] || usage; cmd_status ;;
    env) [[ $# -eq 0 ]] || usage; cmd_env ;;
    createdb) cmd_createdb "$@" ;;
    *) usage ;;
esac
