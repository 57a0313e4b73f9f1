#!/usr/bin/env bash
# CPU demo per --cpu-mode: 100 concurrent POST /v1/solve (work 20000, 400 requests) while
# /health is probed 4x/s (open loop, latency from intended start). Results: bench/results/*-modes.md.
# Run from the repository root: bash bench/cpu-demo.sh
set -u
cargo build --release --locked -q -p gateway -p diag
B=${CARGO_TARGET_DIR:-target}/release
for mode in inline blocking bounded; do
  $B/gateway --mode fixed --cpu-mode $mode --listen 127.0.0.1:18300 --upstream http://127.0.0.1:18301 > /tmp/gw-cpu-$mode.log 2>&1 &
  GP=$!
  sleep 0.5
  $B/diag load -q 4 -c 4 -z 12s --timeout 10s --no-progress --json /tmp/cpu-health-$mode.json http://127.0.0.1:18300/health > /dev/null &
  HP=$!
  sleep 1
  $B/diag load -m POST -T application/json -d '{"work":20000}' -c 100 -n 400 --timeout 30s --no-progress --json /tmp/cpu-solve-$mode.json http://127.0.0.1:18300/v1/solve > /dev/null
  wait $HP
  kill $GP; wait $GP 2>/dev/null
  python3 - "$mode" <<'PY'
import json,sys
m=sys.argv[1]
s=json.load(open(f"/tmp/cpu-solve-{m}.json")); h=json.load(open(f"/tmp/cpu-health-{m}.json"))
print(f"{m:9s} solve: {s['rps']:.1f} req/s, p50 {s['latency_ms']['p50']:.0f} ms, p99 {s['latency_ms']['p99']:.0f} ms, status {s['status_codes']}, errors {s['requests']['errors']} | /health p50 {h['latency_ms']['p50']:.1f} ms p99 {h['latency_ms']['p99']:.1f} ms, status {h['status_codes']}, errors {h['requests']['errors']}")
PY
done
