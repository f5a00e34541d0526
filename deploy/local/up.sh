#!/usr/bin/env bash
# The whole pipeline on one machine without Docker: Kafka + PostgreSQL (via
# kafka.sh / postgres.sh) and the five services, each as its own process.
#
#   deploy/local/up.sh        start what is not running, wait until every
#                             service's /readyz answers 200, print the URLs
#                             and the admin token (stdout)
#   deploy/local/down.sh      stop it again (see there)
#
# Idempotent: a service that is already running is left alone. Per service:
#   port       HANDOFF_PORT_BASE + n (intake, qualification, routing, metrics,
#              webhooks = 8101..8105 by default), bound to 127.0.0.1
#   database   <postgres>/<service>       (created here if missing)
#   log        .local/logs/<service>.log  (appended)
#   pid file   .local/run/<service>.pid
# Shared by all services (created once, kept across restarts):
#   .local/secret-key    HANDOFF_SECRET_KEY (mode 600)
#   .local/tokens.json   HANDOFF_TOKENS_FILE (hashed tokens)
#   .local/admin-token   plaintext of the admin token named "ops" (mode 600)
#
# Environment (all optional):
#   HANDOFF_PORT_BASE           first service port                  (default 8101)
#   HANDOFF_UP_TIMEOUT          seconds to wait for every /readyz    (default 120)
#   HANDOFF_BIN                 handoff CLI       (default <repo>/.venv/bin/handoff)
#   HANDOFF_ADMIN_TOKEN_NAME    name of the admin token              (default ops)
#   HANDOFF_LOG_JSON            JSON logs                            (default true)
#   HANDOFF_LOCAL_DIR           state dir                     (default <repo>/.local)
#   KAFKA_PORT, PG_PORT, ...    passed on to kafka.sh / postgres.sh
#
# Progress and errors go to stderr. On failure the tail of the failing
# service's log is printed, services this run started that are not ready are
# stopped again, and the exit status is non-zero.
set -euo pipefail

LOG_TAG=up
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=deploy/local/lib.sh
. "$SCRIPT_DIR/lib.sh"
# shellcheck source=deploy/local/stack-lib.sh
. "$SCRIPT_DIR/stack-lib.sh"

HANDOFF_PORT_BASE="${HANDOFF_PORT_BASE:-8101}"
HANDOFF_UP_TIMEOUT="${HANDOFF_UP_TIMEOUT:-120}"
HANDOFF_ADMIN_TOKEN_NAME="${HANDOFF_ADMIN_TOKEN_NAME:-ops}"
HANDOFF_LOG_JSON="${HANDOFF_LOG_JSON:-true}"

SECRET_FILE="$STACK_DIR/secret-key"
TOKENS_FILE="$STACK_DIR/tokens.json"
ADMIN_TOKEN_FILE="$STACK_DIR/admin-token"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
    "") ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
esac

check_port_number HANDOFF_PORT_BASE "$HANDOFF_PORT_BASE"
((10#$HANDOFF_PORT_BASE + ${#HANDOFF_SERVICES[@]} - 1 <= 65535)) \
    || die "HANDOFF_PORT_BASE=$HANDOFF_PORT_BASE leaves no room for ${#HANDOFF_SERVICES[@]} ports"
[[ "$HANDOFF_UP_TIMEOUT" =~ ^[0-9]+$ ]] || die "HANDOFF_UP_TIMEOUT must be a number of seconds"
[[ -x "$HANDOFF_BIN" ]] \
    || die "handoff CLI not found at $HANDOFF_BIN (create the venv: python3.11 -m venv .venv && .venv/bin/pip install -e .), or set HANDOFF_BIN"
command -v curl >/dev/null 2>&1 || apt_install curl

# Every path below is absolute; run from the repository root.
cd "$HANDOFF_REPO_ROOT"

# Filled in by start_infra / ensure_secret.
BOOTSTRAP=""
PG_URL=""
SECRET=""

# ---------------------------------------------------------------- infrastructure

# Both installed already (no apt-get needed)? Then Kafka and PostgreSQL can
# start in parallel; two concurrent apt-get runs would fight over the dpkg lock.
infra_installed() {
    command -v java >/dev/null 2>&1 || return 1
    [[ -n "${PG_BINDIR:-}" ]] && return 0
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# Each script prints one NAME=value line on stdout (progress on stderr).
start_infra() {
    local tmp kafka_pid pg_pid kafka_rc=0 pg_rc=0
    tmp="$(mktemp -d)"
    # 9>&- : the infra processes must not inherit our stack lock.
    if infra_installed; then
        "$SCRIPT_DIR/kafka.sh" start >"$tmp/kafka" 9>&- &
        kafka_pid=$!
        "$SCRIPT_DIR/postgres.sh" start >"$tmp/postgres" 9>&- &
        pg_pid=$!
        wait "$kafka_pid" || kafka_rc=$?
        wait "$pg_pid" || pg_rc=$?
    else
        "$SCRIPT_DIR/kafka.sh" start >"$tmp/kafka" 9>&- || kafka_rc=$?
        ((kafka_rc != 0)) || "$SCRIPT_DIR/postgres.sh" start >"$tmp/postgres" 9>&- || pg_rc=$?
    fi
    BOOTSTRAP="$(sed -n 's/^KAFKA_BOOTSTRAP_SERVERS=//p' "$tmp/kafka" | tail -n 1)"
    PG_URL="$(sed -n 's/^DATABASE_URL=//p' "$tmp/postgres" | tail -n 1)"
    rm -rf "$tmp"
    ((kafka_rc == 0)) || die "deploy/local/kafka.sh start failed (exit $kafka_rc; output above)"
    ((pg_rc == 0)) || die "deploy/local/postgres.sh start failed (exit $pg_rc; output above)"
    [[ -n "$BOOTSTRAP" ]] || die "kafka.sh printed no KAFKA_BOOTSTRAP_SERVERS line"
    [[ "$PG_URL" == */* ]] || die "postgres.sh printed no DATABASE_URL line"
    "$SCRIPT_DIR/postgres.sh" createdb "${HANDOFF_SERVICES[@]}" 9>&- \
        || die "could not create the service databases"
}

# The database URL of one service: postgres.sh's URL with the service's database.
service_database_url() {
    printf '%s/%s\n' "${PG_URL%/*}" "$1"
}

# ---------------------------------------------------------------- secrets

ensure_secret() {
    if [[ ! -s "$SECRET_FILE" ]]; then
        log "generating HANDOFF_SECRET_KEY in $SECRET_FILE"
        (
            umask 077
            head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$SECRET_FILE.tmp"
            echo >>"$SECRET_FILE.tmp"
        )
        mv -f "$SECRET_FILE.tmp" "$SECRET_FILE"
    fi
    chmod 600 "$SECRET_FILE"
    SECRET="$(head -n 1 "$SECRET_FILE")"
    [[ ${#SECRET} -ge 32 ]] || die "$SECRET_FILE holds a too short secret; delete it to regenerate"
}

# service_env SVC : sets SVC_ENV to the NAME=value list every service gets.
SVC_ENV=()
service_env() {
    SVC_ENV=(
        HANDOFF_ENV=test
        HANDOFF_SECRET_KEY="$SECRET"
        DATABASE_URL="$(service_database_url "$1")"
        KAFKA_BOOTSTRAP_SERVERS="$BOOTSTRAP"
        HANDOFF_TOKENS_FILE="$TOKENS_FILE"
        HANDOFF_DATA_DIR="$STACK_DIR/data/$1"
        HANDOFF_LOG_JSON="$HANDOFF_LOG_JSON"
    )
}

# run_as_service SVC CMD... : CMD (in the foreground) with a service's environment.
run_as_service() {
    service_env "$1"
    shift
    env "${SVC_ENV[@]}" "$@"
}

# The admin token is created once; its plaintext is kept for the developer. If
# the plaintext no longer matches a hash in tokens.json, a new token replaces it.
ensure_admin_token() {
    local token digest name="$HANDOFF_ADMIN_TOKEN_NAME"
    if [[ -s "$ADMIN_TOKEN_FILE" && -f "$TOKENS_FILE" ]]; then
        token="$(head -n 1 "$ADMIN_TOKEN_FILE")"
        digest="$(printf '%s' "$token" | sha256sum | cut -d ' ' -f 1)"
        if grep -qF "\"$digest\"" "$TOKENS_FILE"; then
            chmod 600 "$ADMIN_TOKEN_FILE"
            return 0
        fi
        log "$ADMIN_TOKEN_FILE does not match any token in $TOKENS_FILE; creating a new admin token"
    fi
    local names=""
    if [[ -f "$TOKENS_FILE" ]]; then
        names="$(run_as_service intake "$HANDOFF_BIN" tokens list 2>/dev/null | cut -f 1)" \
            || die "handoff tokens list failed (is $TOKENS_FILE valid JSON?)"
    fi
    if grep -qxF -- "$name" <<<"$names"; then
        log "revoking token '$name' (its plaintext is lost)"
        run_as_service intake "$HANDOFF_BIN" tokens revoke "$name" >&2 \
            || die "handoff tokens revoke $name failed"
    fi
    log "creating admin token '$name' in $TOKENS_FILE"
    token="$(run_as_service intake "$HANDOFF_BIN" tokens create --role admin --name "$name")" \
        || die "handoff tokens create failed"
    token="$(printf '%s\n' "$token" | tail -n 1)"
    [[ "$token" == hnd_* ]] || die "handoff tokens create printed no token"
    (
        umask 077
        printf '%s\n' "$token" >"$ADMIN_TOKEN_FILE.tmp"
    )
    mv -f "$ADMIN_TOKEN_FILE.tmp" "$ADMIN_TOKEN_FILE"
    chmod 600 "$ADMIN_TOKEN_FILE"
}

# ---------------------------------------------------------------- services

declare -A SVC_PID=() SVC_PORT=() SVC_LOG_OFFSET=() SVC_STARTED=()

start_services() {
    local i=0 svc pid port log_file
    mkdir -p "$STACK_RUN_DIR" "$STACK_LOG_DIR"
    for svc in "${HANDOFF_SERVICES[@]}"; do
        port=$((10#$HANDOFF_PORT_BASE + i))
        i=$((i + 1))
        pid="$(service_pid "$svc")"
        if [[ -n "$pid" ]]; then
            SVC_PID[$svc]="$pid"
            SVC_PORT[$svc]="$(service_port_of "$pid")"
            SVC_PORT[$svc]="${SVC_PORT[$svc]:-$port}"
            if [[ "${SVC_PORT[$svc]}" != "$port" ]]; then
                log "$svc: already running (pid $pid) on port ${SVC_PORT[$svc]}, not $port; run down.sh to move it"
            else
                log "$svc: already running (pid $pid)"
            fi
            continue
        fi
        if port_open "$port"; then
            die "$svc: port 127.0.0.1:$port is in use by another process (see 'ss -ltnp');" \
                "stop it or set HANDOFF_PORT_BASE"
        fi
        log_file="$(service_log_file "$svc")"
        touch "$log_file"
        SVC_LOG_OFFSET[$svc]="$(stat -c %s "$log_file")"
        printf '===== %s deploy/local/up.sh: starting %s on 127.0.0.1:%s\n' \
            "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$svc" "$port" >>"$log_file"
        mkdir -p "$STACK_DIR/data/$svc"
        # setsid: own session/process group (pgid == pid), detached from the
        # terminal; down.sh signals the group. A plain command (not a function,
        # which would run in a subshell) so that env, setsid and nohup exec in
        # place and $! is the service's own (python) pid.
        service_env "$svc"
        env "${SVC_ENV[@]}" setsid nohup "$HANDOFF_BIN" serve "$svc" --host 127.0.0.1 --port "$port" \
            >>"$log_file" 2>&1 </dev/null 9>&- &
        pid=$!
        printf '%s\n' "$pid" >"$(service_pid_file "$svc")"
        SVC_PID[$svc]="$pid"
        SVC_PORT[$svc]="$port"
        SVC_STARTED[$svc]=1
        log "$svc: started (pid $pid) on 127.0.0.1:$port, log $log_file"
    done
}

readyz_code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/readyz" 2>/dev/null || true
}

# show_log SVC : the log lines this run appended (or the last ones if it did not start it).
show_log() {
    local svc="$1" log_file offset
    log_file="$(service_log_file "$svc")"
    offset="${SVC_LOG_OFFSET[$svc]:-0}"
    printf '\n----- %s: last 50 lines of %s -----\n' "$svc" "$log_file" >&2
    tail -c "+$((offset + 1))" "$log_file" 2>/dev/null | tail -n 50 >&2 || true
    printf -- '----- end of %s -----\n\n' "$log_file" >&2
}

# fail_services SVC... : show their logs, stop those this run started, exit 1.
fail_services() {
    local svc pids=()
    for svc in "$@"; do
        show_log "$svc"
        if [[ -n "${SVC_STARTED[$svc]:-}" ]] && pid_alive "${SVC_PID[$svc]}"; then
            pids+=("${SVC_PID[$svc]}")
        fi
    done
    if ((${#pids[@]} > 0)); then
        log "stopping the services this run started that are not ready (pids ${pids[*]})"
        stop_pids 20 "${pids[@]}"
    fi
    for svc in "$@"; do
        [[ -z "${SVC_STARTED[$svc]:-}" ]] || rm -f "$(service_pid_file "$svc")"
    done
    die "not ready: $* (logs above; full logs in $STACK_LOG_DIR; 'deploy/local/down.sh' stops everything)"
}

wait_ready() {
    local deadline svc code pending dead
    local -A last=()
    deadline=$(($(now_s) + HANDOFF_UP_TIMEOUT))
    pending=("${HANDOFF_SERVICES[@]}")
    while ((${#pending[@]} > 0)); do
        local still=()
        dead=()
        for svc in "${pending[@]}"; do
            if ! pid_alive "${SVC_PID[$svc]}"; then
                dead+=("$svc")
                continue
            fi
            code="$(readyz_code "${SVC_PORT[$svc]}")"
            last[$svc]="$code"
            if [[ "$code" == 200 ]]; then
                log "$svc: ready"
            else
                still+=("$svc")
            fi
        done
        if ((${#dead[@]} > 0)); then
            log "exited during startup: ${dead[*]}"
            fail_services "${dead[@]}"
        fi
        pending=("${still[@]}")
        ((${#pending[@]} > 0)) || break
        if (($(now_s) >= deadline)); then
            for svc in "${pending[@]}"; do
                log "$svc: /readyz on port ${SVC_PORT[$svc]} answered '${last[$svc]:-nothing}' for ${HANDOFF_UP_TIMEOUT}s"
            done
            fail_services "${pending[@]}"
        fi
        sleep 0.5
    done
}

print_summary() {
    local svc
    printf '\n%-14s %-8s %-34s %s\n' SERVICE PID URL LOG
    for svc in "${HANDOFF_SERVICES[@]}"; do
        printf '%-14s %-8s %-34s %s\n' "$svc" "${SVC_PID[$svc]}" \
            "http://127.0.0.1:${SVC_PORT[$svc]}/docs" "$(service_log_file "$svc")"
    done
    printf '\nKafka:        %s\n' "$BOOTSTRAP"
    printf 'PostgreSQL:   %s (one database per service)\n' "${PG_URL%/*}"
    printf 'Admin token:  %s\n' "$(head -n 1 "$ADMIN_TOKEN_FILE")"
    # shellcheck disable=SC2016 # the $(cat ...) is for the reader to paste
    printf '              (saved in %s; use: -H "Authorization: Bearer $(cat %s)")\n' \
        "$ADMIN_TOKEN_FILE" "$ADMIN_TOKEN_FILE"
    printf 'More tokens:  HANDOFF_TOKENS_FILE=%s %s tokens create --role ... --name ...\n' \
        "$TOKENS_FILE" "$HANDOFF_BIN"
    printf 'Stop:         deploy/local/down.sh [--keep-infra]\n'
}

# ---------------------------------------------------------------- main

T0="$(now_s)"
mkdir -p "$STACK_DIR"
with_lock "$STACK_LOCK"
start_infra
ensure_secret
ensure_admin_token
start_services
wait_ready
log "all ${#HANDOFF_SERVICES[@]} services ready ($(($(now_s) - T0))s)"
print_summary
