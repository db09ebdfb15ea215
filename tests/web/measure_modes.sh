#!/bin/bash
# Alternated A/B of web-tier settings on one supervisor (issue 12's quick measurements; the
# numbers in docs/operations.md, "Tuning", came from it). For each of 3 rounds and each mode
# (an env assignment for gunicorn), start `gunicorn -c deploy/gunicorn.conf.py`, warm up
# 2 s, run `wrk -t1 -c16 -d5s` on hello-python's route with a bearer token, and print the
# req/s with the CPU seconds of every process (before/after, tests/web/proc_cpu.py).
#
#   MODES="TORU_WORKERS=1 TORU_WORKERS=2" tests/web/measure_modes.sh
#   MODES="GUNICORN_CMD_ARGS=--http-parser=python GUNICORN_CMD_ARGS=--http-parser=fast" ...
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/toru-measure.XXXXXX)
H=$WORK/home PORT=${PORT:-18931}
mkdir -p "$H/plugins" && cp "$ROOT/build/plugins/hello-python.binary" "$H/plugins/"
export TORU_HOME=$H TORU_ADMIN_PASSWORD=admin-pass-123 TORU_WORKERS=${WORKERS:-2}
export TORU_BIND=127.0.0.1:$PORT
BASE=http://127.0.0.1:$PORT
cd "$ROOT"
.venv/bin/toru plugins --home "$H" enable hello-python >/dev/null
.venv/bin/toru supervisor --home "$H" >"$WORK/supervisor.log" 2>&1 &
SUP=$!
sleep 4
start_web() {
  env $1 .venv/bin/gunicorn -c deploy/gunicorn.conf.py toru.wsgi:application >"$WORK/web.log" 2>&1 &
  WEB=$!
  for _ in $(seq 60); do curl -sf $BASE/healthz >/dev/null && break; sleep 0.5; done
}
start_web TORU_WORKERS=${WORKERS:-2}
COOKIE=$(curl -s -c - -H 'Content-Type: application/json' \
  -d '{"username":"admin","password":"admin-pass-123"}' $BASE/api/auth/login | awk '/toru_session/{print $7}')
CSRF=$(curl -s -b toru_session=$COOKIE $BASE/api/auth/me | python3 -c 'import sys,json;print(json.load(sys.stdin)["csrf_token"])')
TOKEN=$(curl -s -b toru_session=$COOKIE -H "X-CSRF-Token: $CSRF" -H 'Content-Type: application/json' \
  -d '{"name":"bench"}' $BASE/api/auth/tokens | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
kill $WEB; wait $WEB 2>/dev/null
URL=$BASE/api/plugins/route/hello/
for round in 1 2 3; do
  for mode in ${MODES:-TORU_WORKERS=1 TORU_WORKERS=2}; do
    start_web "$mode"
    wrk -t1 -c16 -d2s -H "Authorization: Bearer $TOKEN" $URL >/dev/null
    B=$(python3 tests/web/proc_cpu.py $SUP $WEB)
    R=$(wrk -t1 -c16 -d5s -H "Authorization: Bearer $TOKEN" $URL | grep -E 'requests in|Requests/sec|Non-2xx' | tr '\n' ' ')
    A=$(python3 tests/web/proc_cpu.py $SUP $WEB)
    echo "round=$round mode=$mode $R | before: $B | after: $A"
    kill $WEB; wait $WEB 2>/dev/null
  done
done
kill $SUP; wait $SUP 2>/dev/null
rm -rf "$WORK"
