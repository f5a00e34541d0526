#!/usr/bin/env bash
# Create the project's virtualenv: deploy/local/venv.sh PYTHON VENV
#
# Needs Python 3.11+. Debian splits `venv`'s pip bootstrap (ensurepip) into the
# python3-venv package, which a fresh machine may lack: it is installed here as
# the other scripts install theirs (as root; otherwise we say what to install).
# A virtualenv left without pip by an earlier failed attempt is made again.
set -euo pipefail
LOG_TAG=venv
# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 2 ]] || die "usage: deploy/local/venv.sh PYTHON VENV"
python="$1" venv="$2"

command -v "$python" >/dev/null 2>&1 || die "$python not found: handoff needs Python 3.11+"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "handoff needs Python 3.11+, $python is $("$python" --version 2>&1)"

if [[ -x "$venv/bin/python" && -x "$venv/bin/pip" ]]; then
    exit 0
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install "python${version}-venv"
fi
if [[ -e "$venv" ]]; then
    log "removing $venv (it has no pip: an earlier attempt failed)"
    rm -rf "$venv"
fi
log "creating $venv with $("$python" --version 2>&1)"
"$python" -m venv "$venv" || die "'$python -m venv $venv' failed"
