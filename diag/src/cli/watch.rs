//! `diag watch`'s flags, and the one thing about them clap cannot say alone: which `--probe`
//! each per-probe option belongs to.
//!
//! Without `--probe`, the watch reads the gateway's own endpoints, as it always has. With it,
//! it probes the URLs named, each with its own request, on the rule curl's `--next` and
//! ffmpeg's per-output options made familiar:
//!
//! ```text
//! diag watch --gateway http://10.0.0.5:8080 --api-key "$KEY"      # before any --probe: every probe
//!     --probe health=/healthz                                      # GET, any 2xx
//!     --probe report=/report --method POST --expect-status 200,202 -H "X-Tenant: t1" --budget 500ms
//!     --probe edge=https://10.0.0.9/ping --api-key "$EDGE_KEY"     # its own key instead
//! ```
//!
//! `-H`, `--api-key` and `--budget` *before* the first `--probe` are every probe's (for `-H`
//! and the key, as for the demo and as `watch` always did); *after* a `--probe` they are that
//! probe's alone (its headers added to the common ones, its key and budget instead of the
//! common ones). `--method` and `--expect-status` exist only per probe. The order is kept by clap's argument indices, which the derive API does not
//! expose: so [`WatchArgs`] implements `FromArgMatches` itself, over the derived
//! [`WatchFlags`], and a misplaced option is a clap error (exit 2) like any other bad flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap};

use super::access::{Access, ApiKey, Header, parse_header};
use super::load::parse_method;
use super::{AdminUrl, http_url, parse_admin, parse_duration, parse_gateway};
use crate::probe::{Ask, Endpoint, Target};
use crate::statuses::Statuses;

/// `diag watch`, its flags resolved: every probe with its own request.
#[derive(Debug, Clone)]
pub struct WatchArgs {
    pub gateway: String,
    pub interval: Duration,
    pub count: Option<u64>,
    pub timeout: Duration,
    pub admin: Option<AdminUrl>,
    /// The key and headers given before any `--probe`: every request's.
    pub access: Access,
    /// The `--probe`s, in order; empty: watch the gateway's own endpoints.
    pub probes: Vec<Probe>,
    pub window: Duration,
    pub pairs: Vec<Pair>,
    pub fail_over: Option<Duration>,
    pub fail_on_errors: Option<u64>,
    pub jsonl: Option<Jsonl>,
}

/// One `--probe`: a name to show and pair, what to send, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    /// `--budget`: the window p99 it stays under when all is well (a `--pair` judges by it).
    pub budget: Duration,
    /// An [`Endpoint::Url`] whose [`Ask`] carries the method, every header (the common ones
    /// and its own) and the expected statuses.
    pub target: Target,
}

/// `--pair FAST=SLOW`, two probe names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub fast: String,
    pub slow: String,
}

/// Where `--jsonl` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jsonl {
    /// `-`: standard output (the human lines then go to standard error).
    Stdout,
    /// Appended to, created if missing (with its directory).
    File(PathBuf),
}

/// The flags as clap parses them, before each per-probe option finds its `--probe`.
#[derive(Debug, Args)]
pub struct WatchFlags {
    /// Base URL of the service to watch (without --probe, any subset of the gateway's
    /// endpoints may exist there); a --probe path is appended to it.
    #[arg(long, env = "DIAG_GATEWAY", default_value = "http://127.0.0.1:8000", value_parser = parse_gateway)]
    gateway: String,

    /// Time between lines, and between probes.
    #[arg(long, env = "DIAG_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,

    /// Stop after this many lines [default: run until Ctrl-C].
    #[arg(long, env = "DIAG_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Give up on a probe after this long (with --probe it counts at this value).
    #[arg(long, env = "DIAG_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,

    /// The gateway's admin plane, whose /readyz is probed beside the rest; `off` for none
    /// [default: the gateway's host, port 8002, if it answers]. Not used with --probe.
    #[arg(long, env = "DIAG_ADMIN", value_name = "URL", value_parser = parse_admin)]
    admin: Option<AdminUrl>,

    /// Probe this URL instead of the gateway's endpoints, open loop, every --interval: a
    /// path (/healthz, appended to --gateway) or a whole http(s) URL, named NAME (default:
    /// its last path segment); repeat for more. Options after it are its own.
    #[arg(long = "probe", value_name = "[NAME=]URL", value_parser = parse_probe)]
    probes: Vec<(Option<String>, String)>,

    /// The HTTP method of the --probe before it [default: GET].
    #[arg(long, value_name = "METHOD", value_parser = parse_method)]
    method: Vec<Method>,

    /// The statuses that answer the --probe before it: codes and classes, e.g. 200,204 or
    /// 2xx; any other is a failure [default: 2xx].
    #[arg(long, value_name = "STATUS,...", value_parser = Statuses::parse)]
    expect_status: Vec<Statuses>,

    /// An extra header, `Name: value`: before any --probe on every request, after one on
    /// that probe alone; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<Header>,

    /// API key, sent as `Authorization: Bearer <key>`: before any --probe (or from the
    /// environment) on every request, after one on that probe alone.
    #[arg(long, env = "DIAG_API_KEY", hide_env_values = true, value_parser = super::access::parse_api_key)]
    api_key: Vec<ApiKey>,

    /// With --probe: the span of each line's p50/p99/max and failure count.
    #[arg(long, env = "DIAG_WINDOW", default_value = "60s", value_parser = parse_duration)]
    window: Duration,

    /// With --probe: two probe names, a cheap endpoint and one that needs the pool (or a
    /// database, or blocking work). SLOW over --budget while FAST stays under it reads
    /// "starved: SLOW waits while FAST answers". Repeat for more pairs.
    #[arg(long = "pair", value_name = "FAST=SLOW", value_parser = parse_pair)]
    pairs: Vec<Pair>,

    /// With --pair: the window p99 a probe stays under when all is well (FAST under its
    /// budget, SLOW over its own: starved). Before any --probe every probe's, after one that
    /// probe's [default: 100ms].
    #[arg(long, env = "DIAG_BUDGET", value_parser = parse_duration)]
    budget: Vec<Duration>,

    /// With --probe: exit 1 when a probe's window p99 goes over this (at once, or at the end
    /// with --count).
    #[arg(long, env = "DIAG_FAIL_OVER", value_name = "DURATION", value_parser = parse_duration)]
    fail_over: Option<Duration>,

    /// With --probe: exit 1 when a probe has N failures (timeouts, errors, statuses it does
    /// not expect) in the window (at once, or at the end with --count).
    #[arg(long, env = "DIAG_FAIL_ON_ERRORS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    fail_on_errors: Option<u64>,

    /// With --probe: also write one JSON object per line to PATH (appended), or to standard
    /// output with `-` (the human lines then go to standard error).
    #[arg(long, env = "DIAG_JSONL", value_name = "PATH|-", value_parser = parse_jsonl)]
    jsonl: Option<Jsonl>,
}

impl Args for WatchArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        WatchFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        WatchFlags::augment_args_for_update(command)
    }
}

impl FromArgMatches for WatchArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = WatchFlags::from_arg_matches(matches)?;
        resolve(flags, matches).map_err(|message| {
            clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{message}\n"),
            )
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// A probe's `--budget` when none is given: the demo's `--sync-budget`, far above a healthy
/// answer on loopback and far below a pool wait.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(100);

/// The flags only a `--probe` watch uses; given on the command line without one, a mistake.
const PROBE_ONLY: [(&str, &str); 6] = [
    ("window", "--window"),
    ("pairs", "--pair"),
    ("budget", "--budget"),
    ("fail_over", "--fail-over"),
    ("fail_on_errors", "--fail-on-errors"),
    ("jsonl", "--jsonl"),
];

fn resolve(flags: WatchFlags, matches: &ArgMatches) -> Result<WatchArgs, String> {
    let at = |id: &str| -> Vec<usize> {
        matches
            .indices_of(id)
            .map(Iterator::collect)
            .unwrap_or_default()
    };
    let probe_at = at("probes");
    // Each value of `id` beside its place on the command line.
    fn placed<T>(probe_at: &[usize], at: Vec<usize>, values: Vec<T>) -> (Vec<T>, Vec<Vec<T>>) {
        place(probe_at, at.into_iter().zip(values))
    }
    // A key from the environment has no place on the command line: it is everyone's.
    let key_from_env = matches.value_source("api_key") == Some(ValueSource::EnvVariable);
    let (keys, probe_keys) = if key_from_env {
        (flags.api_key, vec![Vec::new(); probe_at.len()])
    } else {
        placed(&probe_at, at("api_key"), flags.api_key)
    };
    let (budgets, probe_budgets) =
        if matches.value_source("budget") == Some(ValueSource::EnvVariable) {
            (flags.budget, vec![Vec::new(); probe_at.len()])
        } else {
            placed(&probe_at, at("budget"), flags.budget)
        };
    let budget =
        at_most_one(budgets, "--budget before the first --probe")?.unwrap_or(DEFAULT_BUDGET);
    let (headers, probe_headers) = placed(&probe_at, at("headers"), flags.headers);
    let (methods, probe_methods) = placed(&probe_at, at("method"), flags.method);
    let (expects, probe_expects) = placed(&probe_at, at("expect_status"), flags.expect_status);
    if !methods.is_empty() || !expects.is_empty() {
        return Err(
            "--method and --expect-status belong to the --probe before them: write them after it"
                .to_owned(),
        );
    }
    let access = Access {
        headers,
        api_key: at_most_one(keys, "--api-key before the first --probe")?,
    };
    if probe_at.is_empty() {
        let explicit = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        if let Some((_, flag)) = PROBE_ONLY.iter().find(|(id, _)| explicit(id)) {
            return Err(format!(
                "{flag} needs --probe: name the URLs to watch, e.g. --probe /healthz"
            ));
        }
    }
    let mut probes: Vec<Probe> = Vec::new();
    let own = probe_keys
        .into_iter()
        .zip(probe_headers)
        .zip(probe_methods.into_iter().zip(probe_expects))
        .zip(probe_budgets);
    for ((name, url), (((keys, headers), (methods, expects)), budgets)) in
        flags.probes.into_iter().zip(own)
    {
        let url = match url.strip_prefix('/') {
            Some(_) => format!("{}{url}", flags.gateway),
            None => url,
        };
        let name = match name {
            Some(name) => name,
            None => default_name(&url),
        };
        if probes.iter().any(|probe| probe.name == name) {
            return Err(format!(
                "two probes are named `{name}`: name them apart, e.g. --probe a=/x --probe b=/y"
            ));
        }
        let of = |what: &str| format!("{what} after --probe {name}");
        let ask = Ask {
            method: at_most_one(methods, &of("--method"))?.unwrap_or_default(),
            headers: probe_headers_map(&access, at_most_one(keys, &of("--api-key"))?, &headers)?,
            expect: Some(at_most_one(expects, &of("--expect-status"))?.unwrap_or_default()),
        };
        let target = Target {
            endpoint: Endpoint::Url,
            url,
            ask,
        };
        let budget = at_most_one(budgets, &of("--budget"))?.unwrap_or(budget);
        probes.push(Probe {
            name,
            budget,
            target,
        });
    }
    for pair in &flags.pairs {
        for name in [&pair.fast, &pair.slow] {
            if !probes.iter().any(|probe| &probe.name == name) {
                return Err(format!(
                    "--pair {}={}: no probe is named `{name}` (name one with --probe {name}=URL)",
                    pair.fast, pair.slow
                ));
            }
        }
    }
    Ok(WatchArgs {
        gateway: flags.gateway,
        interval: flags.interval,
        count: flags.count,
        timeout: flags.timeout,
        admin: flags.admin,
        access,
        probes,
        window: flags.window,
        pairs: flags.pairs,
        fail_over: flags.fail_over,
        fail_on_errors: flags.fail_on_errors,
        jsonl: flags.jsonl,
    })
}

/// Sorts `values` by where they stood: those before the first of `probe_at` (the indices of
/// the `--probe`s, ascending), and one list per probe of those after it and before the next.
fn place<T>(probe_at: &[usize], values: impl Iterator<Item = (usize, T)>) -> (Vec<T>, Vec<Vec<T>>) {
    let mut before = Vec::new();
    let mut after: Vec<Vec<T>> = probe_at.iter().map(|_| Vec::new()).collect();
    for (index, value) in values {
        // How many probes stand before this value: 0 means none, k the k-th probe's.
        match probe_at.partition_point(|probe| *probe < index) {
            0 => before.push(value),
            k => after[k - 1].push(value),
        }
    }
    (before, after)
}

fn at_most_one<T>(mut values: Vec<T>, what: &str) -> Result<Option<T>, String> {
    match values.len() {
        0 | 1 => Ok(values.pop()),
        n => Err(format!("{what} was given {n} times: give it once")),
    }
}

/// A probe's headers: the common key and `-H`, then its own key (instead of the common one)
/// and its own `-H`, appended.
fn probe_headers_map(
    common: &Access,
    key: Option<ApiKey>,
    headers: &[Header],
) -> Result<HeaderMap, String> {
    let error = |e: anyhow::Error| format!("{e:#}");
    let mut map = common.header_map().map_err(error)?;
    let own = Access {
        headers: headers.to_vec(),
        api_key: key,
    }
    .header_map()
    .map_err(error)?;
    if own.contains_key(AUTHORIZATION) {
        map.remove(AUTHORIZATION);
    }
    for (name, value) in &own {
        map.append(name, value.clone());
    }
    Ok(map)
}

/// A probe's name when none is given: its URL's last path segment (`/debug/health-sync` →
/// `health-sync`), or its host for a bare host.
fn default_name(url: &str) -> String {
    let Ok(url) = reqwest::Url::parse(url) else {
        return url.to_owned();
    };
    url.path_segments()
        .and_then(|mut segments| segments.rfind(|segment| !segment.is_empty()))
        .map(str::to_owned)
        .or_else(|| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| url.to_string())
}

/// A name a person can type in `--pair` and read in a line.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `[NAME=]URL`: the name, if one is given, and a path (from `/`) or a whole http(s) URL.
/// A `=` later in a URL (`/search?q=1`) is the URL's: a name has no `/`, `:` or `?`.
fn parse_probe(text: &str) -> Result<(Option<String>, String), String> {
    let (name, url) = match text.split_once('=') {
        Some((name, url)) if is_name(name) => (Some(name.to_owned()), url),
        _ => (None, text),
    };
    if url.starts_with('/') {
        if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{url}` is not a URL path"));
        }
    } else if url.contains("://") {
        http_url(url, "http://127.0.0.1:8080/healthz")?;
    } else {
        return Err(format!(
            "`{text}`: give a path (/healthz, on --gateway) or a whole URL \
             (http://127.0.0.1:8080/healthz), optionally named: health=/healthz"
        ));
    }
    Ok((name, url.to_owned()))
}

fn parse_pair(text: &str) -> Result<Pair, String> {
    match text.split_once('=') {
        Some((fast, slow)) if is_name(fast) && is_name(slow) && fast != slow => Ok(Pair {
            fast: fast.to_owned(),
            slow: slow.to_owned(),
        }),
        _ => Err(format!(
            "`{text}` is not a pair: write FAST=SLOW, two probe names, e.g. health=report"
        )),
    }
}

fn parse_jsonl(text: &str) -> Result<Jsonl, String> {
    match text {
        "" => Err("give a file, or - for standard output".to_owned()),
        "-" => Ok(Jsonl::Stdout),
        path => Ok(Jsonl::File(PathBuf::from(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, parse};

    fn watch(argv: &[&str]) -> WatchArgs {
        match parse(&[&["watch"], argv].concat()) {
            Command::Watch(args) => args,
            other => panic!("{other:?}"),
        }
    }

    fn refused(argv: &[&str]) -> String {
        use clap::Parser as _;
        let argv = [&["diag", "watch"], argv].concat();
        crate::cli::Cli::try_parse_from(argv)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn without_probe_the_watch_is_what_it_was() {
        let args = watch(&["--api-key", "k1", "-H", "X-A: 1"]);
        assert!(args.probes.is_empty());
        assert_eq!(args.access.headers.len(), 1);
        assert!(args.access.api_key.is_some());
        assert_eq!(args.window, Duration::from_secs(60));
    }

    #[test]
    fn paths_resolve_against_the_gateway_and_names_default_to_the_last_segment() {
        let args = watch(&[
            "--gateway",
            "http://127.0.0.1:9000/",
            "--probe",
            "/debug/health-sync",
            "--probe",
            "up=http://10.0.0.9:8080/",
            "--probe",
            "http://10.0.0.9:8080/search?q=a=b",
        ]);
        let seen: Vec<(&str, &str)> = args
            .probes
            .iter()
            .map(|probe| (probe.name.as_str(), probe.target.url.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("health-sync", "http://127.0.0.1:9000/debug/health-sync"),
                ("up", "http://10.0.0.9:8080/"),
                ("search", "http://10.0.0.9:8080/search?q=a=b"),
            ]
        );
        let ask = &args.probes[0].target.ask;
        assert_eq!(ask.method, Method::GET);
        assert_eq!(ask.expect, Some(Statuses::default()));
    }

    #[test]
    fn options_after_a_probe_are_its_own() {
        let args = watch(&[
            "--api-key",
            "common",
            "-H",
            "X-All: 1",
            "--probe",
            "a=/a",
            "--probe",
            "b=/b",
            "--method",
            "post",
            "--expect-status",
            "200,202",
            "-H",
            "X-Tenant: t1",
            "--api-key",
            "own",
            "--probe",
            "c=/c",
        ]);
        let [a, b, c] = &args.probes[..] else {
            panic!("{:?}", args.probes)
        };
        assert_eq!(a.target.ask.headers[AUTHORIZATION], "Bearer common");
        assert_eq!(a.target.ask.headers["x-all"], "1");
        assert!(!a.target.ask.headers.contains_key("x-tenant"));
        assert_eq!(b.target.ask.method, Method::POST);
        assert_eq!(
            b.target
                .ask
                .expect
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("200,202")
        );
        assert_eq!(b.target.ask.headers["x-all"], "1");
        assert_eq!(b.target.ask.headers["x-tenant"], "t1");
        let keys: Vec<_> = b.target.ask.headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(
            keys,
            ["Bearer own"],
            "its own key instead of the common one"
        );
        assert_eq!(c.target.ask.method, Method::GET);
        assert_eq!(c.target.ask.headers.len(), 2);
        assert!(
            args.probes
                .iter()
                .all(|probe| probe.budget == DEFAULT_BUDGET)
        );
        let args = watch(&[
            "--budget", "50ms", "--probe", "/a", "--probe", "/b", "--budget", "1s",
        ]);
        let budgets: Vec<_> = args.probes.iter().map(|probe| probe.budget).collect();
        assert_eq!(budgets, [Duration::from_millis(50), Duration::from_secs(1)]);
    }

    #[test]
    fn misplaced_or_doubled_options_are_refused() {
        for (argv, message) in [
            (
                &["--method", "POST", "--probe", "/a"][..],
                "belong to the --probe before them",
            ),
            (
                &["--probe", "/a", "--method", "GET", "--method", "POST"],
                "--method after --probe a was given 2 times",
            ),
            (
                &["--probe", "/a", "--probe", "/x/a"],
                "two probes are named `a`",
            ),
            (&["--probe", "/a", "--pair", "a=b"], "no probe is named `b`"),
            (&["--pair", "a=b"], "--pair needs --probe"),
            (&["--fail-over", "1s"], "--fail-over needs --probe"),
            (&["--jsonl", "-"], "--jsonl needs --probe"),
            (
                &["--probe", "healthz"],
                "give a path (/healthz, on --gateway) or a whole URL",
            ),
            (
                &["--probe", "ftp://10.0.0.1/x"],
                "must be an http:// or https:// URL",
            ),
            (
                &["--probe", "/a", "--expect-status", "ok"],
                "is not a status",
            ),
            (&["--probe", "/a", "--pair", "a=a"], "is not a pair"),
        ] {
            let error = refused(argv);
            assert!(error.contains(message), "{argv:?}: {error}");
        }
    }

    #[test]
    fn values_fall_before_or_after_the_probes() {
        let (before, after) = place(
            &[3, 7],
            [(1, 'a'), (4, 'b'), (5, 'c'), (9, 'd')].into_iter(),
        );
        assert_eq!(before, ['a']);
        assert_eq!(after, [vec!['b', 'c'], vec!['d']]);
    }
}
