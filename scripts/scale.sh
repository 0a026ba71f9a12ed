#!/usr/bin/env bash
# Scale the worker pool of a compose stack: `scripts/scale.sh [-f FILE] up|down N`.
#   up N    grow to N workers (never shrinks)
#   down N  shrink to N workers (never grows); removed workers get SIGTERM and drain their
#           calls within stop_grace_period before Docker stops them
# Uses `docker compose` (v2 plugin) or `docker-compose` (v1), whichever is installed.
# SCALE_DRY_RUN=1 prints the compose command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 [-f compose-file] up|down N" >&2
    exit 2
}

file=docker-compose.yml
while getopts "f:h" opt; do
    case "$opt" in
        f) file="$OPTARG" ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || usage
direction="$1"
target="$2"
[[ "$target" =~ ^[0-9]+$ ]] || { echo "scale: N must be a whole number, got '$target'" >&2; exit 2; }
[ -f "$file" ] || { echo "scale: no compose file $file" >&2; exit 2; }

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose -f "$file")
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose -f "$file")
else
    echo "scale: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
fi

run() {
    if [ "${SCALE_DRY_RUN:-0}" = 1 ]; then
        echo "${compose[*]} $*"
    else
        "${compose[@]}" "$@"
    fi
}

# Running workers now (0 when the stack is down or in a dry run).
current=0
if [ "${SCALE_DRY_RUN:-0}" != 1 ]; then
    current=$("${compose[@]}" ps -q worker 2>/dev/null | grep -c . || true)
fi

case "$direction" in
    up)
        if [ "$target" -lt "$current" ]; then
            echo "scale: $current workers already run; use 'down $target' to shrink" >&2
            exit 1
        fi
        ;;
    down)
        if [ "$current" -gt 0 ] && [ "$target" -gt "$current" ]; then
            echo "scale: only $current workers run; use 'up $target' to grow" >&2
            exit 1
        fi
        ;;
    *) usage ;;
esac

echo "scale: workers $current -> $target ($file)"
run up -d --no-recreate --scale "worker=$target" worker
