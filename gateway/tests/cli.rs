//! Lesson: a bad flag is a usage error (exit code 2) whose message lists what would be valid,
//! reported before the gateway binds a port or builds a runtime.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

/// Runs the real `gateway` binary with `args`, with no `GATEWAY_*` overrides from the caller's
/// environment, and returns how it ended.
fn run_gateway(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command.args(args).env("NO_COLOR", "1");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GATEWAY_") {
            command.env_remove(name);
        }
    }
    command.output().expect("the gateway binary runs")
}

fn assert_usage_error(args: &[&str], words: &[&str]) {
    let output = run_gateway(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    for word in words {
        assert!(
            stderr.contains(word),
            "{args:?}: stderr lacks {word:?}:\n{stderr}"
        );
    }
}

#[test]
fn unknown_mode_is_a_usage_error_listing_the_valid_modes() {
    assert_usage_error(&["--mode", "nope"], &["--mode", "nope", "broken", "fixed"]);
}

#[test]
fn zero_blocking_threads_is_a_usage_error() {
    assert_usage_error(&["--blocking-threads", "0"], &["--blocking-threads", "0"]);
}

#[test]
fn upstream_that_is_not_an_http_url_is_a_usage_error_saying_why() {
    assert_usage_error(
        &["--upstream", "ftp://127.0.0.1"],
        &["--upstream", "scheme"],
    );
    assert_usage_error(
        &["--upstream", "127.0.0.1:8001"],
        &["--upstream", "http://127.0.0.1:8001"],
    );
}

#[test]
fn help_lists_the_flags_and_exits_zero() {
    let output = run_gateway(&["--help"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for flag in ["--mode", "--blocking-threads", "--upstream", "--drain-secs"] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
}

#[test]
fn rollout_outside_broken_mode_is_a_usage_error() {
    assert_usage_error(
        &["--mode", "fixed", "--async-rollout-percent", "50"],
        &["--async-rollout-percent", "broken"],
    );
    assert_usage_error(
        &["--mode", "inline", "--async-rollout-percent", "100"],
        &["--async-rollout-percent", "broken"],
    );
    assert_usage_error(
        &["--mode", "broken", "--async-rollout-percent", "101"],
        &["--async-rollout-percent", "101"],
    );
}

#[test]
fn unknown_cpu_mode_is_a_usage_error_listing_the_valid_ones() {
    assert_usage_error(
        &["--cpu-mode", "turbo"],
        &["--cpu-mode", "inline", "blocking", "bounded"],
    );
}
