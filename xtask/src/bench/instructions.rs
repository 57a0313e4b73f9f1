//! `cargo xtask bench instructions`: the gateway's cost in *instructions* per request and per
//! relayed token, counted by valgrind's callgrind, for a before/after that noise cannot blur.
//!
//! # Why count instructions
//!
//! CPU time per request (what `bench observe` and the ramp read from `/proc`) is the honest
//! figure, but on this shared 2-core machine it wanders by ±15 % from one run to the next: a
//! neighbour's burst, frequency scaling, which core the scheduler picked. A change that saves 5 %
//! cannot be seen through that. Callgrind runs the gateway on a simulated CPU and counts every
//! instruction it executes (`Ir`); the same binary on the same input executes (nearly) the same
//! instructions every time, so two runs agree to a fraction of a percent and a 2 % saving shows.
//! The price is speed: valgrind slows the program about 50 times, so this counts, it does not
//! time. Nothing here reads a clock.
//!
//! # How: two runs, one difference
//!
//! Each case runs two fresh gateways under callgrind, one given N₁ requests and one N₂, and
//! takes `(Ir(N₂) − Ir(N₁)) / (N₂ − N₁)`: start-up (config, the allocator, the runtime) and
//! shutdown cost the same in both, so they cancel and what is left is the cost of one more
//! request. The cases:
//!
//! - **per request**: a non-streamed chat completion of one token from a mock that answers at
//!   once, `diag load -c 8 -n N` (the one body the other benchmarks send);
//! - **per relayed token**: a streamed completion of 50 tokens 5 ms apart, `diag load -n N`
//!   reading every stream to its end, so exactly N × 50 tokens pass; the figure is per token
//!   with each stream's own set-up spread over its 50 tokens, as "CPU per relayed token" is.
//!
//! The gateway runs as shipped (fixed mode, default limits, the `info` access log on) except
//! `--jobs-store off`, so no SQLite file is written. `--gateway-bin PATH` measures another
//! binary with the same command: `cp target/release/gateway /tmp/before`, change, then run with
//! and without `--gateway-bin /tmp/before`. The results end with callgrind_annotate's top
//! functions by self cost in the larger non-streamed run, and each one's share of a request
//! (the same difference, per function), so a reader sees where the instructions go.
//!
//! # What it does not see
//!
//! Instructions are not time. Callgrind does not count the kernel's work in system calls (a
//! `writev` costs one instruction here and microseconds there), cache misses and branch
//! mispredictions, lock contention and cross-thread wake-ups (valgrind runs one thread at a
//! time), or anything that depends on timing. So pair it with CPU time from `/proc` (`make
//! bench-observe`, the ramp): instructions say a change did less work, CPU time says it
//! mattered.
//!
//! Results: `bench/results/<date>-instructions.{md,json}`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::bench::observe::find_on_path;
use crate::bench::reports::{self, LoadReport, non_200};
use crate::bench::results::{Results, command_line, commands_section, head, rel};
use crate::bench::session::{Runner, Session, strings};
use crate::cli::BenchArgs;
use crate::services::{self, Service};

const CHAT: &str =
    r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#;
const STREAM: &str =
    r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
/// How long a gateway under callgrind may take to exit after SIGINT (it drains, then callgrind
/// writes its file).
const EXIT_LIMIT: Duration = Duration::from_secs(120);
/// Rows of the top-functions table.
const TOP: usize = 15;

/// One case: the mock it runs against, the load, and what one request is worth in units.
struct Case {
    name: &'static str,
    slug: &'static str,
    /// "request" or "token": what the figure is per.
    unit: &'static str,
    mock: &'static [&'static str],
    body: &'static str,
    concurrency: &'static str,
    /// Units one request is worth: 1 request, or the 50 tokens of one stream.
    units_per_request: u64,
    /// N₁ and N₂, requests in the smaller and the larger run.
    counts: (u64, u64),
}

fn cases(quick: bool) -> [Case; 2] {
    [
        Case {
            name: "non-streamed chat",
            slug: "request",
            unit: "request",
            mock: &[
                "--ttft-ms",
                "0",
                "--itl-ms",
                "0",
                "--tokens",
                "1",
                "--seed",
                "1",
            ],
            body: CHAT,
            concurrency: "8",
            units_per_request: 1,
            counts: if quick { (100, 300) } else { (500, 2_500) },
        },
        Case {
            name: "streamed chat, 50 tokens",
            slug: "token",
            unit: "token",
            mock: &[
                "--ttft-ms",
                "0",
                "--itl-ms",
                "5",
                "--tokens",
                "50",
                "--seed",
                "1",
            ],
            body: STREAM,
            concurrency: "20",
            units_per_request: 50,
            counts: if quick { (20, 60) } else { (100, 300) },
        },
    ]
}

/// One gateway's run under callgrind.
struct Measured {
    requests: u64,
    not_200: u64,
    ir: u64,
    out_file: PathBuf,
}

/// A case's two runs and the figure they give.
struct Outcome {
    small: Measured,
    large: Measured,
    per_unit: f64,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let Some(valgrind) = find_on_path("valgrind") else {
        bail!(
            "valgrind is not on PATH; this benchmark counts instructions under callgrind:\n  \
             sudo apt-get install valgrind"
        );
    };
    let annotate = find_on_path("callgrind_annotate");
    let mut session = Session::begin("-instructions")?;
    let mut results = Results::new(args, &session.clock, "instructions");
    let runner = &mut session.runner;
    let gateway_bin = match &args.gateway_bin {
        Some(path) => std::path::absolute(path)?,
        None => runner.bin_dir().join("gateway"),
    };
    if !gateway_bin.is_file() {
        bail!("no gateway binary at {}", gateway_bin.display());
    }
    let cases = cases(args.quick);
    let mut outcomes = Vec::new();
    for case in &cases {
        println!("\n=== bench instructions: {}", case.name);
        let (mock, mock_listen) = runner.start_mock(&strings(case.mock))?;
        let small = measure(
            runner,
            &valgrind,
            &gateway_bin,
            mock_listen,
            case,
            case.counts.0,
        )?;
        let large = measure(
            runner,
            &valgrind,
            &gateway_bin,
            mock_listen,
            case,
            case.counts.1,
        )?;
        drop(mock);
        let units = (large.requests - small.requests) * case.units_per_request;
        #[allow(clippy::cast_precision_loss)]
        let per_unit = (large.ir as f64 - small.ir as f64) / units.max(1) as f64;
        println!(
            "xtask: {}: {per_unit:.0} instructions per {}",
            case.name, case.unit
        );
        outcomes.push(Outcome {
            small,
            large,
            per_unit,
        });
    }

    let top = match (&annotate, outcomes.first()) {
        (Some(annotate), Some(first)) => {
            let requests = first.large.requests - first.small.requests;
            top_functions(
                annotate,
                &first.small.out_file,
                &first.large.out_file,
                requests,
            )?
        }
        _ => Vec::new(),
    };
    let md = markdown(
        &session,
        args.quick,
        &gateway_bin,
        &cases,
        &outcomes,
        &top,
        annotate.is_some(),
    );
    results.markdown(md);
    results.json(&json!({
        "gateway_bin": rel(&gateway_bin),
        "valgrind": valgrind_version(&valgrind),
        "cases": cases.iter().zip(&outcomes).map(|(case, o)| json!({
            "case": case.name,
            "unit": case.unit,
            "mock": case.mock.join(" "),
            "body": case.body,
            "concurrency": case.concurrency,
            "runs": runs_json(o),
            "instructions_per_unit": o.per_unit.round(),
        })).collect::<Vec<_>>(),
        "top_functions": top.iter().map(|f| json!({
            "function": f.function, "object": f.object, "ir": f.ir,
            "percent": f.percent, "per_request": f.per_request.round(),
        })).collect::<Vec<_>>(),
    }))?;
    results.write("bench instructions done")
}

/// A case's two runs, for the JSON.
fn runs_json(outcome: &Outcome) -> serde_json::Value {
    let run = |m: &Measured| json!({"requests": m.requests, "not_200": m.not_200, "ir": m.ir});
    json!([run(&outcome.small), run(&outcome.large)])
}

/// A fresh gateway under callgrind in front of the mock at `upstream`: `requests` sent by
/// `diag load`, SIGINT, and the total `Ir` of its callgrind file.
fn measure(
    runner: &mut Runner,
    valgrind: &Path,
    gateway_bin: &Path,
    upstream: SocketAddr,
    case: &Case,
    requests: u64,
) -> Result<Measured> {
    let listen = services::free_addr()?;
    let admin = services::free_addr()?;
    let out_file = runner
        .work_dir
        .join(format!("callgrind.{}.{requests}.out", case.slug));
    let mut args = vec![
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out_file.display()),
        gateway_bin.to_string_lossy().into_owned(),
    ];
    args.extend(strings(&[
        "--listen",
        &listen.to_string(),
        "--upstream",
        &format!("http://{upstream}"),
        "--admin-listen",
        &admin.to_string(),
        "--mode",
        "fixed",
        "--jobs-store",
        "off",
        "--drain-secs",
        "1",
        "--drain-grace-secs",
        "0",
    ]));
    // The default filter, set rather than inherited: a RUST_LOG in the caller's shell would
    // change what a request costs.
    let env = [("RUST_LOG", "info")];
    runner.note(format!("RUST_LOG=info {} &", command_line(valgrind, &args)));
    let name = format!("gateway-{}-{requests}", case.slug);
    let mut gateway = services::launch(
        &runner.work_dir,
        &services::Spec {
            bin_dir: valgrind
                .parent()
                .context("valgrind's path has no directory")?,
            program: "valgrind",
            name: &name,
            listen,
            args: &args,
            ready_url: &format!("http://{listen}/health"),
            env: &env,
        },
    )?;
    let report_path = runner
        .work_dir
        .join(format!("load-{}-{requests}.json", case.slug));
    let load = strings(&[
        "load",
        &format!("http://{listen}/v1/chat/completions"),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        case.body,
        "-c",
        case.concurrency,
        "-n",
        &requests.to_string(),
        "--no-progress",
        "--json",
        &report_path.to_string_lossy(),
    ]);
    runner.diag(&load)?;
    stop(&mut gateway)?;
    gateway.kill();
    let report: LoadReport = reports::read(&report_path)?;
    let not_200 = non_200(&report);
    if not_200 > 0 || report.requests.total != requests {
        bail!(
            "{name}: {} requests, {not_200} not 200: the count would not be per request",
            report.requests.total
        );
    }
    let text = std::fs::read_to_string(&out_file)
        .with_context(|| format!("callgrind wrote no {}", out_file.display()))?;
    let ir = total_ir(&text).with_context(|| format!("no total in {}", out_file.display()))?;
    println!("xtask: {name}: Ir {}", thousands(ir));
    Ok(Measured {
        requests,
        not_200,
        ir,
        out_file,
    })
}

/// SIGINT, the gateway's orderly stop, then wait for callgrind to write its file and exit.
fn stop(gateway: &mut Service) -> Result<()> {
    kill(Pid::from_raw(i32::try_from(gateway.pid())?), Signal::SIGINT)?;
    match gateway.wait_exit(EXIT_LIMIT) {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{} exited with {status} after SIGINT", gateway.name),
        None => bail!(
            "{} did not exit within {EXIT_LIMIT:?} of SIGINT",
            gateway.name
        ),
    }
}

/// The total `Ir` of a callgrind out file: its `totals:` line (what valgrind prints as
/// "Collected"), else `summary:` (which valgrind 3.19 writes a few hundred lower).
fn total_ir(text: &str) -> Option<u64> {
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    line("totals:").or_else(|| line("summary:"))
}

/// One row of the top-functions table.
struct Function {
    function: String,
    object: String,
    ir: u64,
    percent: f64,
    /// What the function adds per request: its Ir in the larger run minus in the smaller.
    per_request: f64,
}

/// The `TOP` functions by self cost in `large`, each with its share of one more request.
fn top_functions(
    annotate: &Path,
    small: &Path,
    large: &Path,
    requests: u64,
) -> Result<Vec<Function>> {
    let small = by_function(&annotated(annotate, small)?);
    let large = by_function(&annotated(annotate, large)?);
    let total: u64 = large.iter().map(|(_, _, ir)| ir).sum::<u64>().max(1);
    let before: HashMap<&str, u64> = small.iter().map(|(f, _, ir)| (f.as_str(), *ir)).collect();
    Ok(large
        .iter()
        .take(TOP)
        .map(|(function, object, ir)| {
            let earlier = before.get(function.as_str()).copied().unwrap_or(0);
            #[allow(clippy::cast_precision_loss)]
            Function {
                function: short_name(function),
                object: object.clone(),
                ir: *ir,
                percent: *ir as f64 * 100.0 / total as f64,
                per_request: (*ir as f64 - earlier as f64) / requests.max(1) as f64,
            }
        })
        .collect())
}

/// callgrind_annotate's entries summed per function, highest first: with line tables only, one
/// function shows up once per source file inlined into it (`slice/iter.rs:Meter::chunk`,
/// `meter.rs:Meter::chunk`), and the table is about functions. The object is the first one an
/// entry names (annotate leaves it out when it repeats).
fn by_function(entries: &[(String, u64)]) -> Vec<(String, String, u64)> {
    let mut sums: Vec<(String, String, u64)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (entry, ir) in entries {
        let (function, object) = split_entry(entry);
        match index.get(&function) {
            Some(&i) => {
                sums[i].2 += ir;
                if sums[i].1.is_empty() {
                    sums[i].1 = object;
                }
            }
            None => {
                index.insert(function.clone(), sums.len());
                sums.push((function, object, *ir));
            }
        }
    }
    sums.sort_by_key(|entry| std::cmp::Reverse(entry.2));
    sums
}

/// `callgrind_annotate`'s list of functions by self cost, as (`file:function [object]`, Ir),
/// every function (`--threshold=100`), highest first.
fn annotated(annotate: &Path, file: &Path) -> Result<Vec<(String, u64)>> {
    let output = Command::new(annotate)
        .args(["--threshold=100", "--auto=no"])
        .arg(file)
        .output()
        .with_context(|| format!("cannot run {}", annotate.display()))?;
    if !output.status.success() {
        bail!(
            "callgrind_annotate {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_annotate(&String::from_utf8_lossy(&output.stdout)))
}

/// The function lines of callgrind_annotate's output: `1,234 (5.6%)  file:function [object]`
/// (valgrind 3.19; older ones print no percentage). `PROGRAM TOTALS` is not a function.
fn parse_annotate(text: &str) -> Vec<(String, u64)> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ir) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('(')
            && let Some((_, after)) = rest.split_once(')')
        {
            rest = after.trim_start();
        }
        if rest.is_empty() || rest.starts_with("PROGRAM TOTALS") || !rest.contains(':') {
            continue;
        }
        entries.push((rest.to_string(), ir));
    }
    entries
}

/// `file:function [object]` as (the function, the object's file name).
fn split_entry(entry: &str) -> (String, String) {
    let (place, object) = match entry.rsplit_once(" [") {
        Some((place, object)) => (place, object.trim_end_matches(']')),
        None => (entry, ""),
    };
    let function = place.split_once(':').map_or(place, |(_, f)| f);
    let object = Path::new(object)
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    (function.to_string(), object)
}

/// A function name that fits a table cell: generic arguments folded to `<..>` (a `<` after a
/// name; the `<Type as Trait>` of a method is kept), at most 90 characters (the end kept, where
/// the method is), `|` escaped.
fn short_name(function: &str) -> String {
    let mut out = String::new();
    // One entry per open `<`: whether it folds (generic arguments) or only groups.
    let mut open: Vec<bool> = Vec::new();
    let mut previous = ' ';
    for c in function.chars() {
        let folding = open.iter().any(|&fold| fold);
        match c {
            '<' => {
                let fold = previous.is_alphanumeric() || previous == '_';
                if fold && !folding {
                    out.push_str("<..>");
                } else if !folding {
                    out.push(c);
                }
                open.push(fold);
            }
            // `->` of a function type is not a bracket.
            '>' if !open.is_empty() && previous != '-' => {
                let grouping = open.pop() == Some(false);
                out.extend((grouping && !folding).then_some(c));
            }
            _ if !folding => out.push(c),
            _ => {}
        }
        previous = c;
    }
    let chars: Vec<char> = out.chars().collect();
    let out: String = if chars.len() > 90 {
        std::iter::once('…')
            .chain(chars[chars.len() - 89..].iter().copied())
            .collect()
    } else {
        out
    };
    out.replace('|', "\\|")
}

fn markdown(
    session: &Session,
    quick: bool,
    gateway_bin: &Path,
    cases: &[Case],
    outcomes: &[Outcome],
    top: &[Function],
    annotated: bool,
) -> String {
    let load = format!(
        "Gateway: `{}` under `valgrind --tool=callgrind`, fixed mode, `--jobs-store off`, \
         default limits, `RUST_LOG=info` (the default: one access line per request). Each case \
         runs two fresh gateways, N₁ and N₂ requests; the figure is `(Ir(N₂) − Ir(N₁))` over the \
         units between them, so start-up and shutdown cancel. Instructions, not time: see \
         `xtask/src/bench/instructions.rs` for what callgrind does not see.",
        rel(gateway_bin)
    );
    let mut md = head(
        &session.clock,
        "Instructions per request and per relayed token (callgrind)",
        "instructions",
        quick,
        &load,
    );
    md.push_str(
        "\n| case | mock | load | N₁ / N₂ | Ir(N₁) | Ir(N₂) | instructions |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (case, o) in cases.iter().zip(outcomes) {
        let _ = writeln!(
            md,
            "| {} | `{}` | `diag load -c {} -n N` | {} / {} | {} | {} | **{}** per {} |",
            case.name,
            case.mock.join(" "),
            case.concurrency,
            thousands(o.small.requests),
            thousands(o.large.requests),
            thousands(o.small.ir),
            thousands(o.large.ir),
            thousands(o.per_unit.round() as u64),
            case.unit,
        );
    }
    if let (Some(case), Some(o)) = (cases.first(), outcomes.first()) {
        if annotated {
            let _ = write!(
                md,
                "\nTop {TOP} functions by self cost in the {} run ({} requests; \
                 `callgrind_annotate`), and what each adds per request (its Ir at N₂ minus at \
                 N₁, over {}):\n\n| function | object | Ir | % | per request |\n|---|---|---|---|---|\n",
                case.name,
                thousands(o.large.requests),
                thousands(o.large.requests - o.small.requests),
            );
            for f in top {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {:.1} % | {} |",
                    f.function,
                    f.object,
                    thousands(f.ir),
                    f.percent,
                    thousands(f.per_request.round().max(0.0) as u64),
                );
            }
        } else {
            md.push_str("\n(callgrind_annotate is not on PATH: no table of functions.)\n");
        }
    }
    md.push_str(&commands_section(&session.runner.commands));
    md
}

/// `valgrind --version`, for the JSON.
fn valgrind_version(valgrind: &Path) -> String {
    Command::new(valgrind)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_the_totals_line() {
        let text = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\nfn=(1) main\n3 5\n\
                    summary: 123456700\n\n\ntotals: 123456789\n";
        assert_eq!(total_ir(text), Some(123_456_789));
        assert_eq!(total_ir("events: Ir\nsummary: 42\n"), Some(42));
        assert_eq!(total_ir("events: Ir\n"), None);
    }

    #[test]
    fn annotate_lines_become_functions() {
        let text = "\
--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                 file:function
--------------------------------------------------------------------------------
120,000 (12.00%)  ./malloc/malloc.c:_int_malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]
 9,500 ( 0.95%)  /rustc/abc/library/core/src/fmt/mod.rs:core::fmt::write [/w/target/release/gateway]
 8,000 ( 0.80%)  /rustc/abc/library/core/src/slice/iter.rs:_int_malloc
";
        let entries = parse_annotate(text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].1, 120_000);
        assert_eq!(
            split_entry(&entries[0].0),
            ("_int_malloc".to_string(), "libc.so.6".to_string())
        );
        assert_eq!(
            split_entry(&entries[1].0),
            ("core::fmt::write".to_string(), "gateway".to_string())
        );
        let functions = by_function(&entries);
        assert_eq!(functions.len(), 2);
        assert_eq!(
            functions[0],
            ("_int_malloc".to_string(), "libc.so.6".to_string(), 128_000)
        );
    }

    #[test]
    fn long_generic_names_are_folded() {
        assert_eq!(
            short_name("core::ptr::drop_in_place<gateway::AppState<x<y>>>"),
            "core::ptr::drop_in_place<..>"
        );
        assert_eq!(
            short_name("<hyper::role::Server<T> as hyper::Http1Transaction>::encode"),
            "<hyper::role::Server<..> as hyper::Http1Transaction>::encode"
        );
        assert_eq!(short_name("a|b"), "a\\|b");
        assert!(short_name(&"x::".repeat(60)).starts_with('…'));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(208_123), "208,123");
        assert_eq!(thousands(1_234_567_890), "1,234,567,890");
    }
}
