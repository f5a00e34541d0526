#!/usr/bin/env bash
# Stops what deploy/local/up.sh started.
#
#   deploy/local/down.sh                the five services, then Kafka and PostgreSQL
#   deploy/local/down.sh --keep-infra   the five services only
#
# Services get SIGTERM (graceful: in-flight requests, outbox relay and
# consumers finish and commit), then SIGKILL after HANDOFF_STOP_TIMEOUT
# seconds (default 45). Data, logs, the secret key and tokens stay in .local.
set -euo pipefail

LOG_TAG=down
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=deploy/local/lib.sh
. "$SCRIPT_DIR/lib.sh"
# shellcheck source=deploy/local/stack-lib.sh
. "$SCRIPT_DIR/stack-lib.sh"

HANDOFF_STOP_TIMEOUT="${HANDOFF_STOP_TIMEOUT:-45}"
[[ "$HANDOFF_STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "HANDOFF_STOP_TIMEOUT must be a number of seconds"

usage() {
    echo "usage: $0 [--keep-infra]" >&2
    exit 2
}

keep_infra=0
for arg in "$@"; do
    case "$arg" in
        --keep-infra) keep_infra=1 ;;
        -h | --help) usage ;;
        *) log "unknown argument: $arg"; usage ;;
    esac
done

mkdir -p "$STACK_DIR"
with_lock "$STACK_LOCK"

pids=()
for svc in "${HANDOFF_SERVICES[@]}"; do
    pid="$(service_pid "$svc")"
    if [[ -n "$pid" ]]; then
        log "$svc: stopping (pid $pid)"
        pids+=("$pid")
    else
        log "$svc: not running"
    fi
done
if ((${#pids[@]} > 0)); then
    t0="$(now_s)"
    stop_pids "$HANDOFF_STOP_TIMEOUT" "${pids[@]}"
    log "services stopped in $(($(now_s) - t0))s"
fi
for svc in "${HANDOFF_SERVICES[@]}"; do
    rm -f "$(service_pid_file "$svc")"
done

if ((keep_infra)); then
    log "--keep-infra: leaving Kafka and PostgreSQL running"
    exit 0
fi
# Both run even if the first fails; the exit status reports any failure.
rc=0
"$SCRIPT_DIR/kafka.sh" stop 9>&- || rc=$?
"$SCRIPT_DIR/postgres.sh" stop 9>&- || rc=$?
exit "$rc"
