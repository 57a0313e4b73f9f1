//! Writing `bench/results/`: the one [`Results`] writer every benchmark hands its files to,
//! what a results file is called, the head and the commands it starts and ends with (date,
//! machine, commit), and how its numbers are printed.
//!
//! Results are evidence, so each file says where it came from (date, machine, commit, the exact
//! commands, pasteable into a shell) and prints its numbers the same way every time, so two
//! runs compare line by line. One writer means the four benchmarks cannot drift apart in how
//! they name, write or announce their results.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::bench::observe::kib_field;
use crate::cli::BenchArgs;
use crate::project_root;

/// When a benchmark started and how long its build took: the date its results are named after
/// and the times their heads report.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub started: SystemTime,
    pub build_time: Duration,
}

impl Clock {
    /// `YYYY-MM-DD HH:MM UTC` of the start; results are named after its first ten characters.
    pub fn date(&self) -> String {
        utc_datetime(self.started)
    }

    /// Since the start, build included.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed().unwrap_or_default()
    }
}

/// One benchmark's results on their way to `bench/results/` (or `--out`): `<name>.json`,
/// `<name>.md` and diag's report of each run as `<name>-<run>.json`, where `<name>` is
/// `<date>-<kind>[-quick]`. Nothing is written until [`Results::write`], and then in that
/// order, whatever order they were handed in.
pub struct Results {
    clock: Clock,
    dir: PathBuf,
    name: String,
    kind: &'static str,
    quick: bool,
    json: Option<String>,
    /// Also printed at the end, so the table is on screen whether or not anyone opens the file.
    markdown: Option<String>,
    /// (file name, contents) of diag's reports, in the order of the runs.
    reports: Vec<(String, String)>,
}

impl Results {
    /// The results of `cargo xtask bench` with `args`, started at `clock`; `kind` names the
    /// files (`bench`, `shed`, `hedge`, `cpu`).
    pub fn new(args: &BenchArgs, clock: &Clock, kind: &'static str) -> Self {
        Results {
            clock: *clock,
            dir: args.results_dir(),
            name: results_name(&clock.date(), kind, args.quick),
            kind,
            quick: args.quick,
            json: None,
            markdown: None,
            reports: Vec::new(),
        }
    }

    /// `<name>.json`: `value`, pretty-printed, with a final newline.
    pub fn json(&mut self, value: &Value) -> Result<()> {
        self.json = Some(serde_json::to_string_pretty(value)? + "\n");
        Ok(())
    }

    /// `<name>.md`, also printed at the end.
    pub fn markdown(&mut self, md: String) {
        self.markdown = Some(md);
    }

    /// `<name>.md` for the benchmarks of one table (shed, hedge, cpu): a [`head`] with `title`
    /// and `load`, then the table (`header`, its rows), then the commands.
    pub fn table(
        &mut self,
        title: &str,
        load: &str,
        header: &str,
        rows: &[String],
        commands: &[String],
    ) {
        let mut md = head(&self.clock, title, self.kind, self.quick, load);
        md.push_str(header);
        for row in rows {
            md.push_str(row);
            md.push('\n');
        }
        md.push_str(&commands_section(commands));
        self.markdown(md);
    }

    /// `<name>-<run>.json`: diag's report of one run, as diag wrote it.
    pub fn diag_report(&mut self, run: &str, report: &Path) -> Result<()> {
        let contents = std::fs::read_to_string(report)?;
        self.reports
            .push((format!("{}-{run}.json", self.name), contents));
        Ok(())
    }

    /// Writes the files, prints the Markdown, then `xtask: {done}; results in ...`: two files
    /// read "a and b", more a list.
    pub fn write(self, done: &str) -> Result<()> {
        let json = self.json.map(|j| (format!("{}.json", self.name), j));
        let md = self
            .markdown
            .as_ref()
            .map(|md| (format!("{}.md", self.name), md.clone()));
        std::fs::create_dir_all(&self.dir)?;
        let mut paths = Vec::new();
        for (name, contents) in json.into_iter().chain(md).chain(self.reports) {
            let path = self.dir.join(name);
            std::fs::write(&path, contents).with_context(|| format!("cannot write {path:?}"))?;
            paths.push(rel(&path));
        }
        println!("\n{}", self.markdown.unwrap_or_default());
        let separator = if paths.len() == 2 { " and " } else { ", " };
        println!("xtask: {done}; results in {}", paths.join(separator));
        Ok(())
    }
}

/// The results name for a run: `<date>-<kind>[-quick]`.
fn results_name(date: &str, kind: &str, quick: bool) -> String {
    let day = date.get(..10).unwrap_or(date);
    format!("{day}-{kind}{}", if quick { "-quick" } else { "" })
}

/// The Markdown head the shed, hedge and cpu results share: title, then date, machine,
/// commit, the command that made them and how long it took, then the load.
pub fn head(clock: &Clock, title: &str, what: &str, quick: bool, load: &str) -> String {
    let elapsed = clock.elapsed();
    let mut md = format!("# {title}\n\n");
    let _ = writeln!(
        md,
        "Date: {}. Machine: {}. Commit: {}.",
        clock.date(),
        machine().describe(),
        commit()
    );
    let _ = writeln!(
        md,
        "Command: `make bench-{what}{}` (`cargo xtask bench {what}{}`; release build, loopback, \
         every process on the same cores), {:.0} s of which {:.0} s building.",
        if quick { " ARGS=--quick" } else { "" },
        if quick { " --quick" } else { "" },
        elapsed.as_secs_f64(),
        clock.build_time.as_secs_f64()
    );
    let _ = writeln!(md, "{load}");
    md
}

/// The "Commands" section every results file ends with: what ran, to paste into a shell.
pub fn commands_section(commands: &[String]) -> String {
    let mut md = String::from("\n## Commands\n\n```sh\n");
    for c in commands {
        let _ = writeln!(md, "{c}");
    }
    md.push_str("```\n");
    md
}

#[derive(Debug)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_kib: Option<u64>,
    pub kernel: String,
}

impl Machine {
    /// "2 cores (model), 24 GiB RAM, Linux 6.18.44": one line for a results file's head.
    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {}, Linux {}",
            self.cores,
            self.cpu,
            self.memory_kib
                .map(|k| format!("{:.0} GiB RAM", k as f64 / 1024.0 / 1024.0))
                .unwrap_or_else(|| "RAM unknown".into()),
            self.kernel
        )
    }
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        memory_kib: kib_field(&meminfo, "MemTotal:"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from it.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(project_root())
            .args(args)
            .output()
            .ok()
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]).filter(|o| o.status.success()) else {
        return "unknown".into();
    };
    let mut commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    commit
}

/// A latency as the scripts printed it: seconds with two decimals from 1 s up, else
/// milliseconds with `ms_decimals` decimals; "n/a" when diag had no sample.
pub fn secs_or_ms(ms: Option<f64>, ms_decimals: usize) -> String {
    match ms {
        None => "n/a".into(),
        Some(ms) if ms >= 1000.0 => format!("{:.2} s", ms / 1000.0),
        Some(ms) => format!("{ms:.ms_decimals$} ms"),
    }
}

/// Milliseconds to microseconds' precision, as diag reports them.
pub fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

pub fn opt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms"))
}

pub fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// A path relative to the workspace root when it is inside it.
pub fn rel(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A command as it could be pasted into a shell.
pub fn command_line(program: &Path, args: &[String]) -> String {
    let root = format!("{}/", project_root().display());
    let mut line = rel(program);
    for arg in args {
        let arg = &arg.replace(&root, "");
        line.push(' ');
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c));
        if plain {
            line.push_str(arg);
        } else {
            let _ = write!(line, "'{}'", arg.replace('\'', r"'\''"));
        }
    }
    line
}

/// `YYYY-MM-DD HH:MM UTC` for a time, without a date crate (days to civil date, H. Hinnant).
pub fn utc_datetime(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_datetime(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_434_600);
        assert_eq!(utc_datetime(t), "2026-11-23 11:50 UTC");
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        let args = ["-H", "a: b", "it's", "-c"].map(String::from);
        let line = command_line(Path::new("/x/diag"), &args);
        assert_eq!(line, r"/x/diag -H 'a: b' 'it'\''s' -c");
    }

    #[test]
    fn results_are_named_by_date_kind_and_quick() {
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let report = dir.join("diag.json");
        std::fs::write(&report, "{\"kind\":\"llm\"}\n").expect("a report");
        let args = BenchArgs {
            what: crate::cli::What::Shed,
            quick: true,
            out: Some(dir.clone()),
            gateway_bin: None,
        };
        let clock = Clock {
            started: UNIX_EPOCH + Duration::from_secs(1_795_434_600),
            build_time: Duration::ZERO,
        };
        let mut results = Results::new(&args, &clock, "shed");
        results
            .diag_report("capped", &report)
            .expect("the report is read");
        let rows = ["| 1 |".to_string()];
        results.table(
            "Title",
            "Load: x.",
            "\n| a |\n|---|\n",
            &rows,
            &["cmd".into()],
        );
        results.write("bench shed done").expect("written");

        let md = std::fs::read_to_string(dir.join("2026-11-23-shed-quick.md")).expect("the .md");
        assert!(md.starts_with("# Title\n\nDate: 2026-11-23 11:50 UTC. Machine: "));
        assert!(md.contains(
            "Command: `make bench-shed ARGS=--quick` (`cargo xtask bench shed --quick`;"
        ));
        assert!(md.contains("building.\nLoad: x.\n\n| a |\n|---|\n| 1 |\n\n## Commands\n"));
        assert!(md.ends_with("```sh\ncmd\n```\n"));
        let copied = std::fs::read_to_string(dir.join("2026-11-23-shed-quick-capped.json"));
        assert_eq!(copied.ok().as_deref(), Some("{\"kind\":\"llm\"}\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn latencies_read_like_the_committed_tables() {
        assert_eq!(secs_or_ms(Some(1128.447), 1), "1.13 s");
        assert_eq!(secs_or_ms(Some(205.6), 1), "205.6 ms");
        assert_eq!(secs_or_ms(Some(102.3), 0), "102 ms");
        assert_eq!(secs_or_ms(None, 0), "n/a");
    }
}
