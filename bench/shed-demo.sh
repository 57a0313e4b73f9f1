#!/usr/bin/env bash
# Load shedding at 5x the configured concurrency (issue 6's numbers).
#
# The mock paces each stream at TTFT 200 ms + 40 tokens x 50 ms = ~2.2 s. The gateway is capped
# at --max-concurrent-requests 200 (queue 100, wait 1 s). diag offers streams open loop at
# 455/s, i.e. 455 x 2.2 s = ~1000 streams wanting to be open at once: 5x the cap. The same load
# runs again with no wait queue (shed at once), and with the cap lifted (100000), to show what
# the queue costs and what the cap buys.
#
# Reported per run: streams accepted (completed) and shed (HTTP 503), TTFT and end-to-end p99 of
# the accepted ones, /health p99 (polled every 250 ms from diag's own thread), the gateway's
# peak RSS (VmHWM) and its shed counters from /metrics.
#
# Run from the repository root: bash bench/shed-demo.sh   (about 2 minutes after the build)
set -u
cargo build --release --locked -q -p gateway -p mock-llm -p diag
B=${CARGO_TARGET_DIR:-target}/release
OUT=bench/results/$(date -u +%F)-shed
MOCK=127.0.0.1:18401
GW=127.0.0.1:18400
$B/mock-llm --listen $MOCK --ttft-ms 200 --itl-ms 50 --tokens 40 > /tmp/shed-mock.log 2>&1 &
MP=$!
trap 'kill $MP 2>/dev/null' EXIT
{
  echo "# Load shedding at 5x the configured concurrency"
  echo
  echo "Date: $(date -u '+%F %H:%M UTC'). Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)."
  echo "Command: \`bash bench/shed-demo.sh\` (release build, loopback, mock and gateway and diag on the same cores)."
  echo "Load: \`diag llm -q 455 -z 20s --health\`: 455 streams/s x ~2.2 s each = ~1000 wanted at once."
  echo
  echo "| gateway limits | streams offered | accepted (completed) | shed (503) | other failures | TTFT p99 accepted | E2E p99 accepted | /health p99 | /health failures | gateway peak RSS | shed counters |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
} > $OUT.md
for run in capped no-queue uncapped; do
  case $run in
    capped) LIMITS="--max-concurrent-requests 200 --max-queued-requests 100 --max-queue-wait-ms 1000" ;;
    no-queue) LIMITS="--max-concurrent-requests 200 --max-queued-requests 0" ;;
    uncapped) LIMITS="--max-concurrent-requests 100000" ;;
  esac
  $B/gateway --mode fixed --listen $GW --upstream http://$MOCK $LIMITS > /tmp/shed-gw-$run.log 2>&1 &
  GP=$!
  sleep 0.5
  $B/diag llm --base-url http://$GW -q 455 -z 20s --health --timeout 30s --no-progress --json /tmp/shed-$run.json > /tmp/shed-diag-$run.txt 2>&1
  HWM=$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$GP/status)
  curl -s http://$GW/metrics | grep '^gateway_shed_total' > /tmp/shed-metrics-$run.txt
  kill $GP; wait $GP 2>/dev/null
  cp /tmp/shed-$run.json $OUT-$run.json
  python3 - "$run" "$LIMITS" "$HWM" >> $OUT.md <<'PY'
import json, sys
run, limits, hwm = sys.argv[1:4]
r = json.load(open(f"/tmp/shed-{run}.json"))
shed_counts = {l.split('"')[1]: l.split()[-1] for l in open(f"/tmp/shed-metrics-{run}.txt") if l.strip()}
s = r["streams"]; errors = dict(s["errors"])
shed = errors.pop("http_503", 0)
def ms(section, key="p99"):
    v = (r.get(section) or {}).get(key)
    return "n/a" if v is None else (f"{v/1000:.2f} s" if v >= 1000 else f"{v:.1f} ms")
h = r.get("health") or {}
hp99 = h.get("p99_ms")
print(f"| `{limits}` | {s['started']} | {s['completed']} | {shed} | {sum(errors.values())} {errors if errors else ''} | {ms('ttft_ms')} | {ms('e2e_ms')} | {'n/a' if hp99 is None else f'{hp99:.1f} ms'} | {h.get('timeouts', 0)} timeouts, {h.get('errors', 0)} errors of {h.get('samples', 0)} | {hwm} | {shed_counts} |")
PY
  echo "$run done: $(tail -1 $OUT.md)"
done
