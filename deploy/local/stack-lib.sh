# shellcheck shell=bash
# Shared helpers for deploy/local/up.sh and deploy/local/down.sh (the five
# services run as plain background processes). Sourced after lib.sh, never
# executed.

# shellcheck disable=SC2034 # used by the scripts that source this file
HANDOFF_SERVICES=(intake qualification routing metrics webhooks)

STACK_DIR="$(make_abs "$HANDOFF_LOCAL_DIR")"
STACK_RUN_DIR="$STACK_DIR/run"
STACK_LOG_DIR="$STACK_DIR/logs"
# shellcheck disable=SC2034 # used by the scripts that source this file
STACK_LOCK="$STACK_DIR/stack.lock"
HANDOFF_BIN="${HANDOFF_BIN:-$HANDOFF_REPO_ROOT/.venv/bin/handoff}"

service_pid_file() { printf '%s/%s.pid\n' "$STACK_RUN_DIR" "$1"; }
service_log_file() { printf '%s/%s.log\n' "$STACK_LOG_DIR" "$1"; }

# service_cmdline PID -> the process's argv joined by spaces (empty if gone).
service_cmdline() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
}

# service_pid SVC -> prints the pid if our process for SVC is alive, else
# nothing (and removes a stale pid file). "Ours" = the pid from the pid file
# still runs `handoff serve SVC --host ...` (guards against pid reuse).
service_pid() {
    local svc="$1" file pid
    file="$(service_pid_file "$svc")"
    [[ -f "$file" ]] || return 0
    pid="$(tr -dc '0-9' <"$file")"
    if pid_alive "$pid" && service_cmdline "$pid" | grep -F -- " serve $svc --host " >/dev/null; then
        printf '%s\n' "$pid"
        return 0
    fi
    rm -f "$file"
}

# service_port_of PID -> the --port a running service was started with.
service_port_of() {
    service_cmdline "$1" | sed -n 's/.* --port \([0-9][0-9]*\).*/\1/p'
}

# stop_pids TIMEOUT PID... : SIGTERM each process group (every service leads
# its own, see setsid in up.sh), wait up to TIMEOUT seconds, then SIGKILL.
stop_pids() {
    local timeout="$1" pid deadline alive
    shift
    (($# > 0)) || return 0
    for pid in "$@"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$(($(now_s) + timeout))
    while :; do
        alive=()
        for pid in "$@"; do
            pid_alive "$pid" && alive+=("$pid")
        done
        ((${#alive[@]} > 0)) || return 0
        (($(now_s) < deadline)) || break
        sleep 0.5
    done
    log "still running after ${timeout}s, sending SIGKILL: ${alive[*]}"
    for pid in "${alive[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${alive[@]}"; do
        while pid_alive "$pid"; do sleep 0.2; done
    done
}
