#!/bin/sh
# Container entrypoint: container-friendly defaults, then exec switchboard (so it is PID 1 and
# receives SIGTERM itself, which starts a worker's drain).
set -eu

: "${SWITCHBOARD_HOST:=0.0.0.0}"
export SWITCHBOARD_HOST

role="${1:-orchestrator}"
if [ "$role" = "worker" ] && [ -z "${SWITCHBOARD_WORKER_INTERNAL_URL:-}" ]; then
    # The media edge (the orchestrators) relays streams to the URL a worker registers;
    # 0.0.0.0 is not reachable, so register this container's own address on the internal
    # network. Workers publish no port: nothing outside that network reaches them.
    address="$(hostname -i | cut -d' ' -f1)"
    SWITCHBOARD_WORKER_INTERNAL_URL="http://${address}:${SWITCHBOARD_PORT:-8081}"
    export SWITCHBOARD_WORKER_INTERNAL_URL
fi

exec switchboard "$@"
