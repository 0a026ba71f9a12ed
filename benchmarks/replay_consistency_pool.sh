#!/usr/bin/env bash
# The replay-consistency benchmark on a pool of its own, as tests/test_agent_suites.py builds it:
# Redis, the Twilio emulator (transfers are followed through it), an orchestrator and one worker
# of 4 call slots answering the example receptionist with its key presses kept in its records
# (replay re-types them). The shipped suite records the calls, then each is replayed 10 times.
#
#   benchmarks/replay_consistency_pool.sh [--calls 20 --rounds 10 --parallel 4 ...]
#
# Everything runs under `nice`; the pool is stopped on exit (KEEP_LOGS=DIR keeps its logs there).
# Results: benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=$(mktemp -d /tmp/replay-pool.XXXXXX)
PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.log "$KEEP_LOGS"/; fi
  rm -rf "$WORK"
}
trap stop EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() {  # URL: until it answers 200 (60 s)
  for _ in $(seq 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$1 did not come up (logs in $WORK)" >&2; return 1
}

ACCOUNT_SID="AC$(printf '2%.0s' $(seq 32))"
AUTH_TOKEN=replay-benchmark-token
API_KEY=replay-benchmark-key
REDIS_PORT=$(free_port) TWILIO_PORT=$(free_port) ORCH_PORT=$(free_port) WORKER_PORT=$(free_port)

"$PY" - "$WORK/receptionist.yaml" <<'EOF'
import sys, yaml
agent = yaml.safe_load(open("src/switchboard/agents/receptionist.yaml"))
agent["redaction"] = {**agent.get("redaction", {}), "keypad_digits": False}
yaml.safe_dump(agent, open(sys.argv[1], "w"))
EOF

nice redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --save "" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
nice "$PY" -m switchboard.emulators twilio --port "$TWILIO_PORT" --account-sid "$ACCOUNT_SID" \
  --auth-token "$AUTH_TOKEN" >"$WORK/twilio.log" 2>&1 &
PIDS+=($!)
export SWITCHBOARD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" SWITCHBOARD_API_KEY="$API_KEY" \
  SWITCHBOARD_DATABASE_URL="sqlite:///$WORK/calls.db" SWITCHBOARD_RECORDINGS_URL="$WORK/recordings" \
  TWILIO_ACCOUNT_SID="$ACCOUNT_SID" TWILIO_AUTH_TOKEN="$AUTH_TOKEN" \
  SWITCHBOARD_TWILIO_API_URL="http://127.0.0.1:$TWILIO_PORT" SWITCHBOARD_INFERENCE_THREADS=1 \
  SWITCHBOARD_ADMISSION=slots SWITCHBOARD_LOG_LEVEL=INFO SWITCHBOARD_RATE_LIMIT_OPERATOR=100000/minute
nice "$PY" -m switchboard.cli orchestrator --port "$ORCH_PORT" >"$WORK/orchestrator.log" 2>&1 &
PIDS+=($!)
nice "$PY" -m switchboard.cli worker --port "$WORKER_PORT" --worker-id replay-w1 --max-calls 4 \
  --agent "$WORK/receptionist.yaml" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
wait_up "http://127.0.0.1:$TWILIO_PORT/health"
wait_up "http://127.0.0.1:$ORCH_PORT/health/live"
wait_up "http://127.0.0.1:$WORKER_PORT/health"
for _ in $(seq 300); do
  curl -fs -H "X-API-Key: $API_KEY" "http://127.0.0.1:$ORCH_PORT/stats" | grep -q '"replay-w1"' && break
  sleep 0.1
done

nice "$PY" benchmarks/replay_consistency.py --url "http://127.0.0.1:$ORCH_PORT" --api-key "$API_KEY" \
  --auth-token "$AUTH_TOKEN" --twilio-api "http://127.0.0.1:$TWILIO_PORT" \
  --suite examples/suites/receptionist.yaml "$@"
