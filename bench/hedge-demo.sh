#!/usr/bin/env bash
# Hedged requests against a heavy-tailed upstream (issue 7's numbers).
#
# The mock's TTFT is 100 ms, but 5 % of its delays are 10 times longer (--heavy-tail 0.05):
# one request in twenty waits a second for its first token. diag keeps 50 streams open for 20 s
# through the gateway: without hedging, and hedging after 150 ms with the default 10 % budget.
# Then the upstream turns bad for everyone (30 % of delays 10 times longer) and the same runs
# again, plus one with a 100 % budget (hedging nearly unbounded), to show what the budget
# saves. Extra upstream load = upstream requests the mock saw / streams diag started - 1.
#
# Run from the repository root: bash bench/hedge-demo.sh   (about 2 minutes after the build)
set -u
cargo build --release --locked -q -p gateway -p mock-llm -p diag
B=${CARGO_TARGET_DIR:-target}/release
OUT=bench/results/$(date -u +%F)-hedge
MOCK=127.0.0.1:18501
GW=127.0.0.1:18500
{
  echo "# Hedged requests against a heavy-tailed upstream"
  echo
  echo "Date: $(date -u '+%F %H:%M UTC'). Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)."
  echo "Command: \`bash bench/hedge-demo.sh\` (release build, loopback)."
  echo "Upstream: \`mock-llm --ttft-ms 100 --itl-ms 20 --tokens 20 --heavy-tail TAIL --seed 7\`. Load: \`diag llm -c 50 -z 20s\` through the gateway (fixed mode)."
  echo
  echo "| heavy tail | hedging | streams | TTFT p50 | TTFT p90 | TTFT p99 | E2E p50 | E2E p99 | upstream requests | extra upstream load | hedges fired / won / skipped (budget) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
} > $OUT.md
for run in tail5-off tail5-budget10 tail30-off tail30-budget10 tail30-budget100; do
  case $run in
    tail5-*) TAIL=0.05 ;;
    tail30-*) TAIL=0.3 ;;
  esac
  case $run in
    *-off) HEDGE="" ;;
    *-budget10) HEDGE="--hedge-routes /v1/chat/completions --hedge-delay-ms 150" ;;
    *-budget100) HEDGE="--hedge-routes /v1/chat/completions --hedge-delay-ms 150 --hedge-budget-percent 100" ;;
  esac
  $B/mock-llm --listen $MOCK --ttft-ms 100 --itl-ms 20 --tokens 20 --heavy-tail $TAIL --seed 7 > /tmp/hedge-mock-$run.log 2>&1 &
  MP=$!
  $B/gateway --mode fixed --listen $GW --upstream http://$MOCK $HEDGE > /tmp/hedge-gw-$run.log 2>&1 &
  GP=$!
  sleep 0.5
  $B/diag llm --base-url http://$GW -c 50 -z 20s --no-progress --json /tmp/hedge-$run.json > /tmp/hedge-diag-$run.txt 2>&1
  curl -s http://$MOCK/stats > /tmp/hedge-stats-$run.json
  curl -s http://$GW/metrics | grep -E '^gateway_hedges_(fired|won|skipped)_total' > /tmp/hedge-metrics-$run.txt
  kill $GP $MP; wait $GP $MP 2>/dev/null
  cp /tmp/hedge-$run.json $OUT-$run.json
  python3 - "$run" "$HEDGE" "$TAIL" >> $OUT.md <<'PY'
import json, sys
run, hedge, tail = sys.argv[1:4]
r = json.load(open(f"/tmp/hedge-{run}.json"))
stats = json.load(open(f"/tmp/hedge-stats-{run}.json"))
m = {l.split()[0]: float(l.split()[1]) for l in open(f"/tmp/hedge-metrics-{run}.txt") if l.strip()}
def ms(section, key):
    v = (r.get(section) or {}).get(key)
    return "n/a" if v is None else (f"{v/1000:.2f} s" if v >= 1000 else f"{v:.0f} ms")
started = r["streams"]["started"]
upstream = stats["chat"]["requests"]
extra = upstream / started - 1 if started else 0
fired = m.get("gateway_hedges_fired_total", 0); won = m.get("gateway_hedges_won_total", 0)
skipped = m.get('gateway_hedges_skipped_total{reason="budget"}', 0)
label = "off" if not hedge else f"`{hedge.replace('--hedge-routes /v1/chat/completions ', '')}`"
print(f"| {float(tail)*100:.0f} % | {label} | {started} | {ms('ttft_ms','p50')} | {ms('ttft_ms','p90')} | {ms('ttft_ms','p99')} | {ms('e2e_ms','p50')} | {ms('e2e_ms','p99')} | {upstream} | {extra*100:+.1f} % | {fired:.0f} / {won:.0f} / {skipped:.0f} |")
PY
  echo "$run done: $(tail -1 $OUT.md)"
done
