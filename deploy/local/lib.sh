# shellcheck shell=bash
# Shared helpers for deploy/local/kafka.sh and deploy/local/postgres.sh.
# Sourced, never executed. Everything goes to stderr except what the callers
# explicitly print to stdout (the env lines), so `make` can capture those.

# Repository root = two levels above deploy/local/<script>.
HANDOFF_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
HANDOFF_LOCAL_DIR="${HANDOFF_LOCAL_DIR:-$HANDOFF_REPO_ROOT/.local}"
HANDOFF_CACHE_DIR="${HANDOFF_CACHE_DIR:-${HOME:-/root}/.cache/handoff}"

log() { printf '[%s] %s\n' "${LOG_TAG:-local}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${LOG_TAG:-local}" "$*" >&2; exit 1; }

now_s() { date +%s; }

# make_abs PATH -> absolute path (the path need not exist yet).
make_abs() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd -P)" "$1" ;;
    esac
}

# port_open PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_port_number() {
    local name="$1" value="$2"
    if ! [[ "$value" =~ ^[0-9]{1,5}$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
        die "$name must be a TCP port number (1-65535), got '$value'"
    fi
}

# pid_alive PID -> 0 if the process exists.
pid_alive() {
    [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null
}

# apt_install PKG... : non-interactive Debian/Ubuntu package installation.
# Only possible as root; otherwise tells the user what to install.
APT_UPDATED=0
apt_install() {
    if ((EUID != 0)); then
        die "missing packages: $*; install them (e.g. 'sudo apt-get install -y $*') and retry"
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages: $* (and apt-get is not available to install them)"
    export DEBIAN_FRONTEND=noninteractive
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        apt-get update -qq -o DPkg::Lock::Timeout=300 >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@" >&2 || die "apt-get install $* failed"
}

# with_lock FILE : take an exclusive lock for the rest of the script, so two
# concurrent `start`s (e.g. parallel make targets) do not race each other.
with_lock() {
    local file="$1"
    mkdir -p "$(dirname "$file")"
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$file"
    if ! flock -w 300 9; then
        die "timed out waiting for lock $file"
    fi
}
