#!/usr/bin/env bash
# The quick start on the embedded default comes up with its demo data and stops cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

export ATTEST_VAR_DIR
ATTEST_VAR_DIR="$(mktemp -d)"
unset DATABASE_URL CELERY_BROKER_URL
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG="$ATTEST_VAR_DIR/run.log"

setsid make run PORT="$PORT" >"$LOG" 2>&1 &
RUN_PID=$!
stop() { kill -TERM -- "-$RUN_PID" 2>/dev/null || true; }
# The worker runs in a session of its own (Makefile: serve); its command line names the schedule.
SCHEDULE="$ATTEST_VAR_DIR/celerybeat-schedule"
running() { pgrep -g "$RUN_PID" >/dev/null 2>&1 || pgrep -f "$SCHEDULE" >/dev/null 2>&1; }
show() { pgrep -a -g "$RUN_PID" || true; pgrep -a -f "$SCHEDULE" || true; }
trap stop EXIT

echo "Waiting for http://127.0.0.1:$PORT/accounts/login/ (log: $LOG)"
for _ in $(seq 1 360); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/accounts/login/" 2>/dev/null; then break; fi
  if ! kill -0 "$RUN_PID" 2>/dev/null; then echo "make run exited early:"; cat "$LOG"; exit 1; fi
  sleep 0.5
done
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/accounts/login/" || { cat "$LOG"; exit 1; }
grep -q "password attest-admin" "$LOG" || { echo "demo users were not printed"; cat "$LOG"; exit 1; }

KEY=$(.venv/bin/python manage.py create_token compliance --scopes read)
COUNT=$(.venv/bin/python - "$PORT" "$KEY" <<'PY'
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
url, total = f"http://127.0.0.1:{port}/api/v1/decisions?model=credit&limit=500", 0
while url:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {key}"})
    page = json.load(urllib.request.urlopen(request, timeout=30))
    total += len(page["results"])
    nxt = page["next"]
    url = f"http://127.0.0.1:{port}/api/v1/decisions?model=credit&limit=500&cursor={nxt}" if nxt else None
print(total)
PY
)
echo "The demo has $COUNT decisions."
[ "$COUNT" -ge 2000 ] || { echo "expected about 2,000 demo decisions"; exit 1; }
grep -q "celery@" "$LOG" || grep -q "ready" "$LOG" || { echo "no Celery worker came up"; cat "$LOG"; exit 1; }

# The address and logins come last, in a box, once the worker has explained the demo.
echo "Waiting for the demo's SHAP explanations (the ready box)."
for _ in $(seq 1 300); do grep -q "All .* demo decisions are explained" "$LOG" && break; sleep 1; done
grep -q "All .* demo decisions are explained" "$LOG" || { echo "no ready box"; cat "$LOG"; exit 1; }
grep -A12 "Attest is ready" "$LOG" | grep -q "password attest-auditor" \
  || { echo "the ready box lacks the logins"; cat "$LOG"; exit 1; }

# Celery beat seals the demo into the hash chain within a minute or so; then it verifies.
echo "Waiting for the first seal of the hash chain."
for _ in $(seq 1 90); do
  OUT=$(.venv/bin/python manage.py verify_chain --no-progress 2>&1) || { echo "$OUT"; cat "$LOG"; exit 1; }
  case "$OUT" in *" 0 seals checked"*) sleep 2 ;; *) break ;; esac
done
echo "$OUT"
case "$OUT" in *" 0 seals checked"*) echo "beat never sealed the demo decisions"; cat "$LOG"; exit 1 ;; esac

# SIGTERM to the whole process group, as a process manager would (a background job
# here ignores SIGINT); make's shell passes it to the worker's main process alone.
echo "Stopping the quick start."
kill -TERM -- "-$RUN_PID"
for _ in $(seq 1 60); do
  if ! running; then
    trap - EXIT
    echo "Quick start smoke run: OK (stopped cleanly)."
    exit 0
  fi
  sleep 0.5
done
# A warm shutdown that hangs (it did while the group's SIGTERM reached the pool's
# processes too; tests/faults/test_stop.py) gets what a second Ctrl-C gives: Celery's
# cold shutdown. It is reported, not hidden; the run fails only if that too hangs.
echo "WARNING: the quick start did not stop within 30 s of SIGTERM:"; show
tail -n 20 "$LOG"
kill -QUIT -- "-$RUN_PID" 2>/dev/null || true
for _ in $(seq 1 30); do
  if ! running; then
    trap - EXIT
    echo "Quick start smoke run: OK, but stopped only by a cold shutdown (SIGQUIT) after a hung warm shutdown."
    exit 0
  fi
  sleep 0.5
done
echo "The quick start did not stop within 45 s, even after SIGQUIT:"; show
exit 1
