# The front door. Every target is a thin call into cargo or `cargo xtask` (see xtask/src/).
# Extra flags go through ARGS, e.g.  make demo-broken ARGS="--streams 16 --blocking-threads 2"

CARGO ?= cargo
ARGS ?=
# `cargo xtask` is an alias with --quiet, so a first run used to sit silent for ~20 s while cargo
# compiled xtask. Building it first, with cargo's usual progress, shows what the wait is.
XTASK = $(CARGO) build --locked -p xtask && $(CARGO) xtask

.PHONY: demo-broken demo-fixed demo-inline demo-rollout demo-scale stop test test-compat bench bench-quick bench-shed bench-hedge bench-cpu bench-conns bench-jobs bench-cache bench-fleet bench-ratelimit bench-observe bench-instructions fmt lint

## The gateway with a blocking client on a 4-thread pool: 8 streams, only 4 flow, health stalls.
demo-broken:
	$(XTASK) demo broken $(ARGS)

## The same load against the async client: all 8 flow, health answers in milliseconds.
demo-fixed:
	$(XTASK) demo fixed $(ARGS)

## The blocking client called on the async workers (2 of them): even the async probe stalls.
demo-inline:
	$(XTASK) demo inline --worker-threads 2 $(ARGS)

## Broken mode with 0, 50 and 100 % of streams on the async client, 12 s each; three verdicts.
demo-rollout:
	$(XTASK) rollout $(ARGS)

## Three gateways behind HAProxy (with Redis and Postgres) under a steady load of streams: spread,
## starve one, rolling restart, kill one with jobs, one key's rate; a verdict table (about 2 minutes).
## Ports 8080 (HAProxy), 8081 (its stats page), 8090, 8100-8102, 8200-8202. Needs the Debian
## packages haproxy, redis-server and postgresql. Results: target/fleet/demo-scale.{json,svg}.
demo-scale:
	$(XTASK) fleet demo $(ARGS)

## Stop whatever a demo or `cargo xtask up` left running (by pid file, nothing else).
stop:
	$(XTASK) stop

## Unit and integration tests, then the end-to-end demo check (both modes, then stop), then the
## list of tests skipped because their service (Redis, Postgres, ...) is not installed.
test:
	$(XTASK) skipped --reset
	$(CARGO) test --workspace --locked
	$(XTASK) e2e
	$(XTASK) skipped

## OpenAI's Python client (pinned, in a venv under target/) against the gateway in both modes.
test-compat:
	$(XTASK) compat

## Benchmarks, release build: stream capacity per mode, overhead, memory (about 2 minutes once built).
## Results: bench/results/<date>-bench.{json,md}.
bench:
	$(XTASK) bench $(ARGS)

## The same, short (under 2 minutes with a warm build); CI runs it and checks structure, not speed.
bench-quick:
	$(XTASK) bench --quick $(ARGS)

## Load shedding at 5x the configured concurrency: capped, without a queue, uncapped (about 1.5 minutes).
## Results: bench/results/<date>-shed.md and a diag report per run.
bench-shed:
	$(XTASK) bench shed $(ARGS)

## Hedged requests against a heavy-tailed mock, five runs (about 2 minutes).
## Results: bench/results/<date>-hedge.md and a diag report per run.
bench-hedge:
	$(XTASK) bench hedge $(ARGS)

## CPU-bound work per --cpu-mode while /health is probed (under a minute).
## Results: bench/results/<date>-cpu.md and diag's reports per mode. The committed numbers of
## 2026-11-23 predate this target: bench/results/2026-11-23-modes.md (same load, older script).
bench-cpu:
	$(XTASK) bench cpu $(ARGS)

## 21,000 connections that send half a request head: the cap, the head timeout, /readyz throughout
## (about 30 s). Results: bench/results/<date>-conns.{json,md}.
bench-conns:
	$(XTASK) bench conns $(ARGS)

## The job queue on SQLite and Postgres (a throwaway cluster): jobs accepted/s (each a durable
## commit), end to end at 1,000 queued, a dead worker's jobs taken back (about a minute).
## Results: bench/results/<date>-jobs.md and diag's reports per run.
bench-jobs:
	$(XTASK) bench jobs $(ARGS)

## The response cache: hit against miss, in process and through a throwaway Redis, and the upstream
## requests saved at a 50 % repeat rate (about 1.5 minutes). Results: bench/results/<date>-cache.md.
bench-cache:
	$(XTASK) bench cache $(ARGS)

## 1, 2 and 3 gateways behind HAProxy: req/s, streams held, HAProxy's CPU per request, and how fast
## it stops sending to a starved one (about 3 minutes). Results: bench/results/<date>-fleet.{json,md}.
bench-fleet:
	$(XTASK) bench fleet $(ARGS)

## Shared rate limits: the GCRA script's latency in a throwaway Redis (redis-benchmark), and what a
## request pays for a check in Redis against one in process (about 1.5 minutes).
## Results: bench/results/<date>-ratelimit.md.
bench-ratelimit:
	$(XTASK) bench ratelimit $(ARGS)

## What observability costs: the gateway's CPU per non-streamed request with logs off, text and
## JSON, and OTLP traces off and on, side by side (about 2 minutes). Results:
## bench/results/<date>-observe.{md,json}.
bench-observe:
	$(XTASK) bench observe $(ARGS)

## The gateway's instructions per request and per relayed token under valgrind's callgrind: a
## before/after that the shared machine's noise cannot blur (needs the Debian package valgrind;
## a few minutes). Measure a saved binary with ARGS="--gateway-bin /tmp/before". Results:
## bench/results/<date>-instructions.{md,json}.
bench-instructions:
	$(XTASK) bench instructions $(ARGS)

fmt:
	$(CARGO) fmt --all

## The docs are part of the lesson: a broken or ambiguous intra-doc link fails the lint.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked
	$(XTASK) msrv
