#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the real peers (DCMTK and Orthanc
# from the OS packages, docker-compose to validate the compose file), the package with its
# test extras, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
missing=()
[ -x /usr/bin/dcmqrscp ] || missing+=(dcmtk)
[ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# Validates docker-compose.yml (no Docker engine needed for `config`).
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
        || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

python3 -m pip install --quiet -e '.[test,dev,bench,cluster,cli]'
python3 -m pytest "$@"
