#!/usr/bin/env bash
# Idempotent machine set-up: Debian tools the stack and tests use, then a venv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(redis-server sox espeak-ng flite ffmpeg libsndfile1 prometheus docker-compose haproxy shellcheck chromium postgresql)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bootstrap: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The real LiveKit server and LiveKit SIP (built once per machine, then cached).
bash scripts/install_livekit.sh

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv"
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the project metadata changed since the last successful install.
stamp=.venv/.switchboard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing Python packages"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[dev]"
    touch "$stamp"
fi
