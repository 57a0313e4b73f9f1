//! `diag llm` end to end: the real binary against a real mock-llm on `127.0.0.1:0`, paced with
//! `--ttft-ms 100 --itl-ms 20 --tokens 10` so a stream takes about 300 ms.
//!
//! Counts are asserted exactly (20 streams of 10 tokens are 200 tokens); times against wide
//! bounds (TTFT at least 90 ms for a 100 ms TTFT; ITL between 15 and 200 ms for a 20 ms pace).

mod support;

use serde_json::Value;
use support::{Mock, Recorder, Run, dead_port_url, diag, diag_json, gateway_with, refuses};

const PACED: [&str; 6] = ["--ttft-ms", "100", "--itl-ms", "20", "--tokens", "10"];

/// `diag llm --base-url <mock> <flags> --json …`, expected to exit 0: the run and its report.
fn llm(name: &str, mock: &Mock, flags: &[&str]) -> (Run, Value) {
    let base = mock.url();
    let mut args = vec!["llm", "--base-url", &base];
    args.extend_from_slice(flags);
    diag_json(name, &args)
}

fn number(report: &serde_json::Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {report:#}"))
}

#[test]
fn paced_streams_are_measured_and_sustained() {
    let mock = Mock::with_flags(&PACED);
    let (run, report) = llm("llm-paced", &mock, &["-n", "20", "-c", "5"]);
    assert_eq!(report["kind"], "llm");
    assert_eq!(report["model"], "mock-1");
    assert_eq!(report["concurrency"], 5);
    assert!(report["rate"].is_null());
    assert_eq!(report["streams"]["started"], 20, "{report:#}");
    assert_eq!(report["streams"]["completed"], 20, "{report:#}");
    assert_eq!(report["streams"]["failed"], 0);
    assert_eq!(report["streams"]["cancelled"], 0);
    assert_eq!(report["output_tokens"]["total"], 200, "{report:#}");
    assert!(number(&report, "/ttft_ms/p50") >= 90.0, "{report:#}");
    let itl = number(&report, "/itl_ms/p50");
    assert!((15.0..=200.0).contains(&itl), "{report:#}");
    // 100 ms + 9 × 20 ms.
    assert!(number(&report, "/e2e_ms/p50") >= 250.0, "{report:#}");
    assert!(number(&report, "/max_gap_ms") >= itl);
    assert!(number(&report, "/output_tokens/per_s") > 0.0);
    // 10 tokens in at least 280 ms: at most ~36 tokens/s per stream.
    let per_stream = number(&report, "/output_tokens/per_stream_p50_per_s");
    assert!((5.0..=40.0).contains(&per_stream), "{report:#}");
    assert!(report["health"].is_null());
    assert_eq!(report["sustained"], true, "{report:#}");
    assert!(
        run.stdout.contains("SUSTAINED: largest gap"),
        "{}",
        run.stdout
    );
    for row in ["TTFT", "ITL", "E2E", "tokens    200 output"] {
        assert!(run.stdout.contains(row), "no {row:?} in\n{}", run.stdout);
    }
}

#[test]
fn failing_streams_are_counted_by_status_and_not_sustained() {
    let mock = Mock::with_flags(&["--fault", "500", "--fault-rate", "1"]);
    let (run, report) = llm("llm-500", &mock, &["-n", "6", "-c", "3"]);
    assert_eq!(report["streams"]["started"], 6, "{report:#}");
    assert_eq!(report["streams"]["failed"], 6, "{report:#}");
    assert_eq!(report["streams"]["errors"]["http_500"], 6, "{report:#}");
    assert_eq!(report["sustained"], false);
    let reason = report["sustained_reason"].as_str().expect("reason");
    assert!(reason.contains("6 of 6 streams failed"), "{reason}");
    assert!(run.stdout.contains("NOT SUSTAINED:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("6 x http_500: HTTP 500"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_cut_stream_is_a_failure_of_its_own_kind() {
    let mock = Mock::with_flags(&["--ttft-ms", "10", "--itl-ms", "10", "--tokens", "10"]);
    let (_, report) = llm(
        "llm-reset",
        &mock,
        &["-n", "3", "-c", "3", "-H", "x-mock-fault: reset"],
    );
    assert_eq!(report["streams"]["errors"]["cut"], 3, "{report:#}");
    // The 3 tokens before the cut still count.
    assert_eq!(report["output_tokens"]["total"], 9, "{report:#}");
    assert_eq!(report["sustained"], false);
}

#[test]
fn health_is_polled_on_the_side() {
    let mock = Mock::with_flags(&PACED);
    let (run, report) = llm("llm-health", &mock, &["-z", "1s", "-q", "10", "--health"]);
    assert!(report["concurrency"].is_null());
    assert_eq!(report["rate"], 10.0);
    assert!(number(&report, "/health/samples") > 0.0, "{report:#}");
    assert!(number(&report, "/health/p50_ms") >= 0.0);
    assert_eq!(report["health"]["timeouts"], 0);
    // Streams last ~300 ms and stop starting at 1 s: the last ones are cancelled at the end.
    let started = number(&report, "/streams/started");
    assert!((5.0..=15.0).contains(&started), "{report:#}");
    assert_eq!(
        number(&report, "/streams/completed") + number(&report, "/streams/cancelled"),
        started,
        "{report:#}"
    );
    assert!(run.stdout.contains("/health: "), "{}", run.stdout);
}

#[test]
fn health_url_polls_that_url_instead_of_health() {
    let mock = Mock::with_flags(&PACED);
    let recorder = Recorder::start();
    let readyz = format!("{}/readyz", recorder.url());
    let (run, report) = llm(
        "llm-health-url",
        &mock,
        &["-n", "4", "-c", "2", "--health-url", &readyz],
    );
    // It implied --health, and says what it polled.
    assert_eq!(report["health_url"], readyz.as_str(), "{report:#}");
    let heads = recorder.heads();
    assert!(!heads.is_empty(), "no poll reached {readyz}");
    for head in &heads {
        assert!(head.starts_with("GET /readyz HTTP/1.1\r\n"), "{head}");
    }
    // The recorder answers 404: each poll is an error, none a sample.
    assert!(number(&report, "/health/errors") >= 1.0, "{report:#}");
    assert_eq!(report["health"]["samples"], 0, "{report:#}");
    assert!(
        run.stdout
            .contains(&format!("health    {readyz}: 0 samples")),
        "{}",
        run.stdout
    );
}

#[test]
fn health_url_reads_the_admin_planes_readyz_as_answers() {
    let mock = Mock::with_flags(&PACED);
    let gateway = gateway_with("fixed", &mock, &["--admin-listen", "127.0.0.1:0"]);
    let readyz = format!("{}/readyz", gateway.admin_url());
    let (_, report) = llm(
        "llm-health-readyz",
        &mock,
        &["-n", "4", "-c", "2", "--health", "--health-url", &readyz],
    );
    assert!(number(&report, "/health/samples") >= 1.0, "{report:#}");
    assert_eq!(report["health"]["errors"], 0, "{report:#}");
    assert_eq!(report["health"]["timeouts"], 0, "{report:#}");
}

/// `--admin` probes `/readyz` beside `--health`, and the report says what readiness read: a
/// broken gateway whose 2-thread pool holds 4 streams turns `degraded`, naming the pool.
#[test]
fn admin_reports_readyz_and_what_readiness_read_beside_the_streams() {
    let mock = Mock::with_flags(&PACED);
    let gateway = gateway_with("broken", &mock, &["--admin-listen", "127.0.0.1:0"]);
    let (base, admin) = (gateway.url(), gateway.admin_url());
    let args = [
        "llm",
        "--base-url",
        &base,
        "-n",
        "8",
        "-c",
        "4",
        "-H",
        "x-mock-itl-ms: 100",
        "--health",
        "--admin",
        &admin,
    ];
    let (run, report) = diag_json("llm-admin-readyz", &args);
    assert_eq!(report["streams"]["completed"], 8, "{report:#}");
    assert!(number(&report, "/health/samples") >= 1.0, "{report:#}");
    assert!(number(&report, "/readyz/samples") >= 1.0, "{report:#}");
    let readiness = &report["readiness"];
    assert_eq!(readiness["url"], format!("{admin}/readyz").as_str());
    assert!(number(readiness, "/not_ready_answers") >= 1.0, "{report:#}");
    assert_eq!(readiness["first_not_ready"], "degraded", "{report:#}");
    assert!(
        number(readiness, "/failing/blocking_pool") >= 1.0,
        "{report:#}"
    );
    assert!(run.stdout.contains("readyz    "), "{}", run.stdout);
    assert!(run.stdout.contains("readiness http://"), "{}", run.stdout);
}

#[test]
fn a_dead_base_url_is_unreachable_with_exit_code_3() {
    let base = dead_port_url();
    let run = diag(&["llm", "--base-url", &base, "-n", "1"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
}

/// Exit 1 when the report cannot be written (here its directory is a file): stderr names it.
#[test]
fn an_unwritable_json_path_exits_1_and_names_it() {
    let mock = Mock::with_flags(&PACED);
    let (blocker, report) = support::unwritable_json("llm-blocker");
    let base = mock.url();
    let run = diag(&[
        "llm",
        "--base-url",
        &base,
        "-n",
        "2",
        "--json",
        report.to_str().expect("utf-8"),
    ]);
    support::assert_unwritable(&run, &blocker);
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let base = "http://127.0.0.1:9";
    let cases: [(&[&str], &str); 9] = [
        (
            &["llm", "--base-url", base, "-n", "0"],
            "must be a whole number, at least 1",
        ),
        (
            &["llm", "--base-url", base, "-c", "0"],
            "must be a whole number from 1",
        ),
        (
            &["llm", "--base-url", base, "-n", "5", "-z", "1s"],
            "cannot be used with",
        ),
        (
            &["llm", "--base-url", base, "-c", "5", "-q", "2"],
            "cannot be used with",
        ),
        (&["llm", "--base-url", base, "-q", "-1"], "not a rate"),
        (
            &["llm", "--base-url", base, "-H", "x-mock-itl-ms 20"],
            "Name: value",
        ),
        (&["llm", "--base-url", "127.0.0.1:8000"], "not a URL"),
        (
            &[
                "llm",
                "--base-url",
                base,
                "--health-url",
                "127.0.0.1:8002/readyz",
            ],
            "not a URL",
        ),
        (
            &["llm", "--base-url", base, "--pacing-ms", "0"],
            "not a pace",
        ),
    ];
    refuses(&cases);
}
