//! `diag demo` end to end: a real mock upstream, a real gateway with a 2-thread blocking pool,
//! and the real `diag` binary, with 4 short streams (6 chunks, 300 ms apart) for 3 s.
//!
//! The assertions are structural (how many streams flowed at once, how full the pool got),
//! and where a time is compared, the margin is wide: the sync probe waits for whole streams to
//! end (~1.8 s) against a 100 ms budget.

mod support;

use std::path::PathBuf;

use std::time::Duration;

use support::{
    Mock, Recorder, Run, dead_port_url, demo_at, diag, diag_in_background, gateway, gateway_with,
    json_path, read_json, refuses,
};

/// A 4-stream, 3-second demo against a fresh mock and a gateway in `mode`, expecting `expect`
/// within a sync `budget`, plus `extra` flags: the run, and the report file it was told to write.
fn demo(mode: &str, name: &str, expect: &str, budget: &str, extra: &[&str]) -> (Run, PathBuf) {
    let mock = Mock::start();
    let gateway = gateway(mode, &mock);
    let mut flags = vec!["--sync-budget", budget, "--expect", expect];
    flags.extend_from_slice(extra);
    demo_at(&gateway.url(), name, &flags)
}

#[test]
fn a_broken_gateway_is_exhausted_at_its_pool_size() {
    // The gateway runs inside this test process, so sampling it samples the gateway.
    let pid = std::process::id().to_string();
    let (run, json) = demo("broken", "broken", "exhausted", "100ms", &["--pid", &pid]);
    assert_eq!(run.code, Some(0), "{run:#?}");

    let report = read_json(&json);
    assert_eq!(report["verdict"], "exhausted", "{report:#}");
    assert_eq!(report["mode"], "broken");
    // Two pool threads, so two streams at a time, whatever the number opened.
    assert_eq!(report["streams"]["requested"], 4);
    assert_eq!(report["streams"]["max_concurrent_flowing"], 2, "{report:#}");
    assert_eq!(report["pool"]["max_threads"], 2);
    assert_eq!(report["pool"]["peak_running"], 2, "{report:#}");
    let peak_queued = report["pool"]["peak_queued"]
        .as_u64()
        .expect("pool observed");
    assert!(
        peak_queued >= 2,
        "two streams wait for a thread: {report:#}"
    );
    let sync_p99 = report["probes"]["health_sync"]["p99_ms"]
        .as_f64()
        .expect("probed");
    assert!(
        sync_p99 > 100.0,
        "the sync probe waited behind the streams: {report:#}"
    );
    let async_samples = report["probes"]["health_async"]["samples"]
        .as_u64()
        .expect("probed");
    assert!(
        async_samples >= 20,
        "open loop: ~30 probes in 3 s at 100 ms: {report:#}"
    );
    assert!(
        report["process"]["threads_max"]
            .as_u64()
            .is_some_and(|n| n > 2),
        "{report:#}"
    );
    assert!(
        report["process"]["rss_max_bytes"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );

    assert!(
        run.stdout.contains("| streams "),
        "live lines: {}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("EXHAUSTED: only 2 of 4 streams flowed at once"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_fixed_gateway_is_healthy_under_the_same_load() {
    // A 1 s budget: the sync probe answers in milliseconds here, so the margin is wide.
    let (run, json) = demo("fixed", "fixed", "healthy", "1s", &[]);
    assert_eq!(run.code, Some(0), "{run:#?}");

    let report = read_json(&json);
    assert_eq!(report["verdict"], "healthy", "{report:#}");
    assert_eq!(report["mode"], "fixed");
    assert_eq!(report["streams"]["max_concurrent_flowing"], 4, "{report:#}");
    // 6 chunks x 300 ms end well inside the 3 s run.
    assert_eq!(report["streams"]["completed"], 4, "{report:#}");
    assert_eq!(report["streams"]["failed"], 0);
    let sync_max = report["probes"]["health_sync"]["max_ms"]
        .as_f64()
        .expect("probed");
    assert!(sync_max < 1000.0, "{report:#}");
    assert_eq!(report["probes"]["health_sync"]["timeouts"], 0);
    assert!(report["process"]["threads_max"].is_null(), "no pid given");
    assert!(
        run.stdout.contains("HEALTHY: all 4 streams flowed at once"),
        "{}",
        run.stdout
    );
}

#[test]
fn expecting_healthy_from_a_broken_gateway_exits_1() {
    let (run, json) = demo("broken", "broken-expect-healthy", "healthy", "100ms", &[]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .contains("expected the verdict `healthy`, but the gateway is exhausted"),
        "{}",
        run.stderr
    );
    // The report is still written: a failed expectation is exactly when you want the numbers.
    assert_eq!(read_json(&json)["verdict"], "exhausted");
}

/// The exit code of a run whose target failed (diag/README.md, "Exit codes").
const FAILED: Option<i32> = Some(4);

/// Asserts that `run` exited [`FAILED`] and printed the verdict line starting with `verdict`.
fn assert_failed(run: &Run, verdict: &str) {
    assert_eq!(run.code, FAILED, "{run:#?}");
    assert!(
        run.stdout.contains(&format!("\nFAILED: {verdict}")),
        "no {verdict:?} in {}",
        run.stdout
    );
}

#[test]
fn a_gateway_killed_mid_run_failed_and_says_when() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock);
    let url = gateway.url();
    let json = json_path("killed");
    // Streams of 6 s, so that all are still flowing when the gateway goes at about 1.5 s; and
    // `--expect healthy`, which a failed run must not satisfy.
    let run = diag_in_background(&[
        "demo",
        "--gateway",
        &url,
        "--streams",
        "2",
        "--duration",
        "3s",
        "--stream-query",
        "chunks=30&interval_ms=200",
        "--probe-interval",
        "100ms",
        "--expect",
        "healthy",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    drop(gateway);
    let run = run.join().expect("the diag run");

    assert_eq!(run.code, FAILED, "{run:#?}");
    assert!(!run.stdout.contains("HEALTHY"), "{}", run.stdout);
    let (_, after) = run
        .stdout
        .split_once("FAILED: the gateway stopped answering at ")
        .unwrap_or_else(|| panic!("no FAILED line in {}", run.stdout));
    // Seconds since the streams opened; diag took a moment to start before that.
    let at: f64 = after
        .split(' ')
        .next()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no time in {after}"));
    assert!((0.3..=2.5).contains(&at), "{}", run.stdout);
    assert!(run.stderr.contains("FAILED"), "{}", run.stderr);

    let report = read_json(&json);
    assert_eq!(report["verdict"], "failed", "{report:#}");
    let stopped = report["outage"]["stopped_answering_s"]
        .as_f64()
        .expect("a time");
    assert!((stopped - at).abs() < 0.06, "{report:#}");
    assert!(
        report["outage"]["unanswered_probes"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{report:#}"
    );
    assert!(
        report["streams"]["broken"]
            .as_object()
            .is_some_and(|broken| !broken.is_empty()),
        "{report:#}"
    );
}

#[test]
fn a_keyed_gateway_refusing_the_streams_failed_with_401() {
    let mock = Mock::start();
    let gateway = gateway_with("fixed", &mock, &["--api-key", "k1"]);
    let (run, json) = demo_at(&gateway.url(), "keyed", &["--expect", "exhausted"]);
    assert_failed(&run, "4 of 4 streams refused with HTTP 401");
    let report = read_json(&json);
    assert_eq!(report["verdict"], "failed", "{report:#}");
    assert_eq!(report["streams"]["refused"]["401"], 4, "{report:#}");
}

#[test]
fn a_service_without_chat_stream_failed_with_404() {
    // The mock has `/health` but neither `/chat/stream` nor the debug endpoints: the probes' 404s
    // are endpoints it lacks (not a failure), the streams' 404 is the load refused.
    let mock = Mock::start();
    let (run, json) = demo_at(&mock.url(), "no-stream", &[]);
    assert_failed(&run, "4 of 4 streams refused with HTTP 404");
    assert_eq!(read_json(&json)["verdict"], "failed");
}

#[test]
fn a_keyed_gateway_is_healthy_with_the_key() {
    let mock = Mock::start();
    let gateway = gateway_with("fixed", &mock, &["--api-key", "k1"]);
    let url = gateway.url();
    let flags = ["--expect", "healthy", "--sync-budget", "1s"];
    let (run, json) = demo_at(
        &url,
        "keyed-key",
        &[&flags[..], &["--api-key", "k1"]].concat(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(read_json(&json)["verdict"], "healthy");
    // The gateway also takes the key as `X-API-Key`, which reaches it only through `-H`.
    let (run, _) = demo_at(
        &url,
        "keyed-header",
        &[&flags[..], &["-H", "X-API-Key: k1"]].concat(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn a_wrong_stream_path_failed_with_404() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock);
    let (run, json) = demo_at(&gateway.url(), "wrong-path", &["--stream-path", "/nope"]);
    assert_failed(
        &run,
        "4 of 4 streams refused with HTTP 404 (nothing at /nope",
    );
    let report = read_json(&json);
    assert_eq!(report["stream_path"], "/nope", "{report:#}");
}

#[test]
fn the_stream_path_points_the_demo_at_any_streaming_endpoint() {
    // Straight at the mock's own `/slow_stream`: no gateway, no debug endpoints (their 404s are
    // endpoints it lacks, not failures), every stream flowing.
    let mock = Mock::start();
    let (run, json) = demo_at(
        &mock.url(),
        "slow-stream",
        &["--stream-path", "/slow_stream", "--expect", "healthy"],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let report = read_json(&json);
    assert_eq!(report["streams"]["max_concurrent_flowing"], 4, "{report:#}");
    let stats = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(mock.stats());
    assert_eq!(stats.started, 4, "the mock served the streams: {stats:?}");
}

#[test]
fn the_key_and_headers_go_on_every_request() {
    let recorder = Recorder::start();
    let url = recorder.url();
    let run = diag(&[
        "demo",
        "--gateway",
        &url,
        "--streams",
        "2",
        "--duration",
        "1s",
        "--probe-interval",
        "100ms",
        "--stream-path",
        "/v2/stream",
        "--api-key",
        "k1",
        "-H",
        "X-Diag-Test: yes",
        "-H",
        "X-Other: 2",
    ]);
    // Every request got a 404: the streams were refused.
    assert_eq!(run.code, FAILED, "{run:#?}");
    let heads = recorder.heads();
    let paths: std::collections::BTreeSet<&str> = heads
        .iter()
        .filter_map(|head| head.split(' ').nth(1))
        .map(|target| target.split('?').next().unwrap_or(target))
        .collect();
    for path in [
        "/v2/stream",
        "/debug/health-sync",
        "/debug/health-async",
        "/health",
        "/debug/pool",
    ] {
        assert!(paths.contains(path), "no request to {path}: {paths:?}");
    }
    for head in &heads {
        let head = head.to_ascii_lowercase();
        for header in ["authorization: bearer k1", "x-diag-test: yes", "x-other: 2"] {
            assert!(head.contains(header), "no {header:?} in {head}");
        }
    }
}

#[test]
fn an_unreachable_gateway_exits_3_and_says_how_to_start_one() {
    let url = dead_port_url();
    let run = diag(&["demo", "--gateway", &url, "--duration", "1s"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains(&url), "{}", run.stderr);
    assert!(
        run.stderr.contains("cargo run -p gateway"),
        "{}",
        run.stderr
    );
    // Services that stay up for the next run (`make demo-broken` stops its gateway at the end).
    assert!(
        run.stderr.contains("`cargo xtask up broken`") && run.stderr.contains("`make stop`"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("make demo-broken"), "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "nothing measured, nothing printed: {}",
        run.stdout
    );
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["demo", "--bogus"], "unexpected argument"),
        (&["demo", "--duration", "20"], "has no unit"),
        (&["demo", "--duration", "0s"], "must be longer than zero"),
        (
            &["demo", "--stream-query", "chunks=6&interval_ms=fast"],
            "positive whole number",
        ),
        (&["demo", "--streams", "0"], "--streams"),
        (
            &["demo", "--gateway", "127.0.0.1:8000"],
            "write e.g. http://127.0.0.1:8000",
        ),
        (
            &["demo", "--gateway", "localhost:8000"],
            "must be an http:// or https:// URL",
        ),
        (&["demo", "--expect", "fine"], "--expect"),
        (&["demo", "--stream-path", "chat"], "must start with /"),
        (&["demo", "--stream-path", "/chat?x=1"], "--stream-query"),
        (&["demo", "-H", "novalue"], "is not a header"),
        (&["demo", "--api-key", ""], "non-empty"),
        (&["watch", "-H", "novalue"], "is not a header"),
        (
            &["demo", "--pid-file", "/nonexistent/gateway.pid"],
            "cannot read",
        ),
        (&["watch", "--interval", "soon"], "not a duration"),
        (&["watch", "--count", "0"], "--count"),
        (&["probe"], "unrecognized subcommand"),
    ];
    refuses(cases);
}
