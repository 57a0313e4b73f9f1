//! Lesson: a bad flag is a usage error (exit code 2) whose message lists what would be valid,
//! reported before the gateway binds a port or builds a runtime.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Output;

use support::process::{GatewayProcess, command};

/// Runs the real `gateway` binary with `args`, with no `GATEWAY_*` overrides from the caller's
/// environment, and returns how it ended.
fn run_gateway(args: &[&str]) -> Output {
    run_gateway_with(args, &[])
}

/// [`run_gateway`] with `env` set on the child.
fn run_gateway_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(env)
        .args(args)
        .output()
        .expect("the gateway binary runs")
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

/// A config file in the temp dir, unique per test.
fn config_file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("gateway-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The `blocking pool` line of `--check-config`'s limits block.
fn pool_line(args: &[&str], env: &[(&str, &str)]) -> String {
    limits_line(args, env, "blocking pool")
}

/// The line of `--check-config`'s limits block that starts with `name`.
fn limits_line(args: &[&str], env: &[(&str, &str)], name: &str) -> String {
    let mut args = args.to_vec();
    args.push("--check-config");
    let output = run_gateway_with(&args, env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} line in {stdout}"))
        .to_owned()
}

#[test]
fn the_connection_bounds_are_in_the_limits_block() {
    let derived = limits_line(&[], &[], "connections");
    assert!(derived.contains("derived: ("), "{derived}");
    assert!(derived.contains("within 10000 ms"), "{derived}");
    assert!(derived.contains("after 75 s"), "{derived}");
    let flags = [
        "--max-connections",
        "500",
        "--header-read-timeout-ms",
        "800",
    ];
    let env = [("GATEWAY_IDLE_TIMEOUT_SECS", "30")];
    let set = limits_line(&flags, &env, "connections");
    assert!(
        set.starts_with("connections            500 open at once (--max-connections)"),
        "{set}"
    );
    assert!(
        set.contains("within 800 ms") && set.contains("after 30 s"),
        "{set}"
    );
}

#[test]
fn file_then_environment_then_flag() {
    let file = config_file("precedence", "blocking-threads = 3\n");
    let config = ["--config", file.as_str()];
    assert_eq!(pool_line(&config, &[]), "blocking pool          3 threads");
    let env = [("GATEWAY_BLOCKING_THREADS", "5")];
    assert_eq!(pool_line(&config, &env), "blocking pool          5 threads");
    let flag = ["--config", file.as_str(), "--blocking-threads", "7"];
    assert_eq!(pool_line(&flag, &env), "blocking pool          7 threads");
    // The file itself may come from the environment too.
    assert_eq!(
        pool_line(&[], &[("GATEWAY_CONFIG", file.as_str())]),
        "blocking pool          3 threads"
    );
}

#[test]
fn config_file_mistakes_are_usage_errors_naming_the_key() {
    let typo = config_file("typo", "max-concurent-requests = 10\n");
    assert_usage_error(
        &["--config", &typo],
        &[
            "unknown key `max-concurent-requests`; did you mean `max-concurrent-requests`?",
            &typo,
        ],
    );
    let field = config_file(
        "field",
        "[[providers]]\nname = \"p\"\nbase-url = \"http://127.0.0.1:1\"\nmodel = [\"m\"]\n",
    );
    assert_usage_error(
        &["--config", &field],
        &["unknown field `model`", "did you mean `models`?"],
    );
    let bad = config_file("bad", "max-queue-wait-ms = -1\n");
    assert_usage_error(&["--config", &bad], &["key `max-queue-wait-ms`", "-1"]);
    let wrong_type = config_file("type", "listen = [[1]]\n");
    assert_usage_error(&["--config", &wrong_type], &["key `listen`"]);
    let not_toml = config_file("syntax", "blocking-threads = \n");
    assert_usage_error(&["--config", &not_toml], &["not valid TOML"]);
    assert_usage_error(
        &["--config", "/nonexistent/gateway.toml"],
        &["cannot read --config /nonexistent/gateway.toml"],
    );
    let provider = config_file(
        "provider",
        "[[providers]]\nname = \"p\"\nbase-url = \"ftp://x\"\nmodels = [\"m\"]\n",
    );
    assert_usage_error(&["--config", &provider], &["provider p", "base-url"]);
    let no_models = config_file(
        "no-models",
        "[[providers]]\nname = \"p\"\nbase-url = \"http://127.0.0.1:1\"\nmodels = []\n",
    );
    assert_usage_error(&["--config", &no_models], &["provider p", "models"]);
    assert_usage_error(
        &["--rate-limit-burst", "5"],
        &["--rate-limit-burst needs --rate-limit-rpm"],
    );
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway.example.toml");
    let output = run_gateway(&["--config", example, "--check-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("provider local"), "{stdout}");
}

/// With no `[[providers]]` the one provider takes every model: `--check-config` (and the
/// start-up log, which prints the same block) says a misspelt model is forwarded, not refused.
#[test]
fn a_catch_all_provider_says_it_forwards_any_model() {
    let output = run_gateway(&["--check-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "provider default http://127.0.0.1:8001/: models * (any model name, forwarded as is);"
        ),
        "{stdout}"
    );
    let file = config_file(
        "catch-all",
        "[[providers]]\nname = \"a\"\nbase-url = \"http://127.0.0.1:1\"\nmodels = [\"m-1\", \"*\"]\n",
    );
    let output = run_gateway(&["--config", &file, "--check-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("models m-1,* (any other model name, forwarded as is);"),
        "{stdout}"
    );
}

/// A mistyped `GATEWAY_*` variable is ignored, as before, but no longer silently:
/// `--check-config` and the start-up log name it and the variable it probably meant.
#[test]
fn an_unknown_gateway_variable_is_warned_about_with_the_closest_name() {
    let typo = [("GATEWAY_MAX_CONCURENT_REQUESTS", "5")];
    let warning = "GATEWAY_MAX_CONCURENT_REQUESTS is set but is not a setting of the gateway, \
                   so it is ignored; did you mean GATEWAY_MAX_CONCURRENT_REQUESTS?";
    let output = run_gateway_with(&["--check-config"], &typo);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("warning: {warning}")), "{stderr}");
    assert!(
        stdout.contains("inbound                1024 at once"),
        "{stdout}"
    );

    let gw = GatewayProcess::start_with_env(&["--upstream", &support::dead_upstream()], &typo);
    let log = gw.log_once_it_has(warning);
    assert!(log.contains(warning), "{log}");

    // A provider's api-key-env is read too: no warning for it.
    let file = config_file(
        "key-env",
        "[[providers]]\nname = \"p\"\nbase-url = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\napi-key-env = \"GATEWAY_P_KEY\"\n",
    );
    let output = run_gateway_with(
        &["--config", &file, "--check-config"],
        &[("GATEWAY_P_KEY", "sk-test")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("warning"),
        "{stderr}"
    );
}

/// `--upstream` next to `[[providers]]` is refused, and the error names where the value was set:
/// here the environment, so the reader knows to unset a variable rather than search the file.
#[test]
fn an_upstream_beside_providers_is_blamed_on_where_it_was_set() {
    let file = config_file(
        "upstream-env",
        "[[providers]]\nname = \"p\"\nbase-url = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n",
    );
    let output = run_gateway_with(
        &["--config", &file],
        &[("GATEWAY_UPSTREAM", "http://127.0.0.1:2")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("so the environment variable GATEWAY_UPSTREAM has no effect")
            && !stderr.contains("--upstream"),
        "{stderr}"
    );
}

/// gateway/README.md shows `--check-config`'s output for `gateway.example.toml`: it must be the
/// real output, or the reference drifts from the binary (it once lacked four lines). A new
/// limits line fails this test until the sample is pasted again.
#[test]
fn the_readme_sample_is_what_check_config_prints() {
    let readme = include_str!("../README.md");
    let prompt = "$ gateway --config gateway.example.toml --check-config\n";
    let sample = readme
        .split(prompt)
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("gateway/README.md has the --check-config sample");
    let output = command(&[])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["--config", "gateway.example.toml", "--check-config"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    // The `connections` line is derived from this machine's open-file limit: compare the rest.
    let machine_free = |text: &str| {
        text.lines()
            .filter(|line| !line.trim_start().starts_with("connections "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        machine_free(&stdout),
        machine_free(sample),
        "gateway/README.md's --check-config sample is not what the binary prints: paste it again"
    );
    assert!(sample.contains("\n  connections "), "{sample}");
}

/// The cache's settings are in the limits block, a Redis password never is, and a cache with
/// nowhere to keep anything is refused.
#[test]
fn the_cache_settings_are_in_the_limits_block() {
    let args = [
        "--cache-mode",
        "deterministic",
        "--cache-ttl-secs",
        "60",
        "--redis-url",
        "redis://:s3cret@127.0.0.1:6379/0",
    ];
    let cache = limits_line(&args, &[], "response cache");
    assert_eq!(
        cache,
        "response cache         deterministic (temperature 0 or a seed); in process up to \
         67108864 bytes; TTL 60 s; shared through redis"
    );
    let redis = limits_line(&args, &[], "redis");
    assert!(
        redis.contains("redis://:%3Credacted%3E@127.0.0.1:6379/0") && !redis.contains("s3cret"),
        "{redis}"
    );
    let from_env = limits_line(&[], &[("GATEWAY_CACHE_MODE", "all")], "response cache");
    assert!(from_env.contains("all (any request)"), "{from_env}");
    assert_usage_error(
        &["--cache-mode", "all", "--cache-max-bytes", "0"],
        &["--cache-max-bytes 0", "--redis-url"],
    );
    assert_usage_error(&["--redis-url", "rediss://127.0.0.1"], &["TLS"]);
    assert_usage_error(
        &["--cache-mode", "sometimes"],
        &["off", "deterministic", "all"],
    );
    let file = config_file("cache", "cache-mode = \"all\"\ncache-max-bytes = 1024\n");
    let line = limits_line(&["--config", &file], &[], "response cache");
    assert!(line.contains("up to 1024 bytes"), "{line}");
}

/// `--retry-backoff-max-ms` below `--retry-backoff-ms` would make the cap smaller than the
/// first wait: refused, exit 2, naming both.
#[test]
fn a_backoff_cap_below_the_backoff_is_a_usage_error() {
    assert_usage_error(
        &["--retry-backoff-ms", "500", "--retry-backoff-max-ms", "100"],
        &["--retry-backoff-max-ms 100 is below --retry-backoff-ms 500"],
    );
}

/// `--check-config` exits 2 on bad settings, wherever they come from, and never says they are
/// valid.
#[test]
fn check_config_exits_2_on_bad_settings() {
    let bad_file = config_file("check-bad", "max-queue-wait-ms = -1\n");
    // (flags, environment, what stderr must name)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 3] = [
        (&["--blocking-threads", "0"], &[], "--blocking-threads"),
        (&["--config", &bad_file], &[], "max-queue-wait-ms"),
        (&[], &[("GATEWAY_MAX_BODY_BYTES", "lots")], "lots"),
    ];
    for (args, env, named) in cases {
        let mut args = args.to_vec();
        args.push("--check-config");
        let output = run_gateway_with(&args, env);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?} {env:?}: {stderr}");
        assert!(!stdout.contains("settings are valid"), "{stdout}");
    }
}

/// Next to `[[providers]]`, `--upstream` and `--upstream-api-key` as flags have no effect and
/// stop the gateway with exit 2; so does a provider whose `api-key-env` is not set. (The
/// messages are unit-tested in `config::file`; here: the exit status of the real binary.)
#[test]
fn provider_mistakes_exit_2() {
    let providers =
        "[[providers]]\nname = \"p\"\nbase-url = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n";
    let file = config_file("beside-flags", providers);
    assert_usage_error(
        &["--config", &file, "--upstream", "http://127.0.0.1:2"],
        &["the flag --upstream has no effect"],
    );
    assert_usage_error(
        &["--config", &file, "--upstream-api-key", "k"],
        &["--upstream-api-key", "api-key-env"],
    );
    let unset = config_file(
        "key-env-unset",
        &format!("{providers}api-key-env = \"GATEWAY_TEST_KEY_NOT_SET\"\n"),
    );
    assert_usage_error(
        &["--config", &unset],
        &["provider p", "GATEWAY_TEST_KEY_NOT_SET", "not set"],
    );
}

/// `--check-config` says whether the rate limits hold across instances, and what each instance
/// counts while Redis does not answer; `--instances-hint` without a Redis is refused (it would
/// divide nothing), from a flag, the environment or the file alike.
#[test]
fn the_limits_block_says_whether_rate_limits_are_shared() {
    let local = limits_line(&["--rate-limit-rpm", "30"], &[], "shared rate limits");
    assert_eq!(
        local,
        "shared rate limits     no: each instance counts its own (no --redis-url)"
    );
    let redis = [
        "--rate-limit-rpm",
        "30",
        "--redis-url",
        "redis://127.0.0.1:6379",
    ];
    let shared = limits_line(
        &redis,
        &[("GATEWAY_INSTANCES_HINT", "3")],
        "shared rate limits",
    );
    assert_eq!(
        shared,
        "shared rate limits     yes, in redis (one script call a check); if it does not answer \
         within 100 ms, each instance counts locally at 1/3 of each rate and burst \
         (--instances-hint 3)"
    );
    let file = config_file(
        "providers-shared",
        "[[providers]]\nname = \"p\"\nbase-url = \"http://127.0.0.1:1\"\nmodels = [\"*\"]\n\
         requests-per-minute = 60\n",
    );
    let provider = limits_line(
        &["--config", &file, "--redis-url", "redis://127.0.0.1:6379"],
        &[],
        "provider p",
    );
    assert!(
        provider.contains("60/min burst 60, shared in redis;"),
        "{provider}"
    );
    assert_usage_error(
        &["--instances-hint", "2"],
        &["--instances-hint 2 needs --redis-url"],
    );
    assert_usage_error(&["--instances-hint", "0"], &["--instances-hint"]);
    let hint = config_file("hint", "instances-hint = 2\n");
    assert_usage_error(&["--config", &hint], &["needs --redis-url"]);
}
