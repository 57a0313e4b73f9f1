//! `--jsonl PATH|-`: the watch as JSON Lines, one object per line of output, for piping into
//! whatever a team already uses (jq, Vector, a log shipper, a CI step).
//!
//! Two kinds of object, told apart by `type`: an `interval` per printed line (each probe's
//! latest result and window, each pair's verdict, the alerts of that line), and one `summary`
//! at the end (each probe over the whole watch, each pair's worst verdict, the exit code and
//! why). The schema is these types; diag/README.md documents it field by field, and the
//! types derive `Deserialize` so that a test reads back what diag wrote.
//!
//! Each object is written whole and flushed at once, so `tail -f` and a pipe see every line as
//! it is printed, and a watch killed mid-run leaves no half object behind but the last.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::pair::Verdict;
use crate::cli::Jsonl;
use crate::probe::ProbeStats;

/// One JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Interval(Interval),
    Summary(Summary),
}

/// One printed line's worth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interval {
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    pub unix_ms: u64,
    /// 1 for the first line.
    pub line: u64,
    /// `--window`, in seconds: the span of each probe's p50/p99/max and failures.
    pub window_s: f64,
    /// By probe name.
    pub probes: BTreeMap<String, ProbeLine>,
    /// The worst verdict of the pairs (`starved` > `both_slow` > `ok` > `no_data`); null
    /// without `--pair`.
    pub verdict: Option<Verdict>,
    pub pairs: Vec<PairLine>,
    /// The thresholds crossed on this line, in words; empty when none.
    pub alerts: Vec<String>,
}

/// One probe on one line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeLine {
    pub method: String,
    pub url: String,
    /// `--budget`: the window p99 it stays under when all is well (a pair judges by it).
    pub budget_ms: f64,
    /// The most recent probe to finish; null before any has.
    pub latest: Option<Latest>,
    /// How long the oldest probe still unanswered has waited, when that is longer than one
    /// interval and than the latest answer took (the line then shows `>2.4s`); else null.
    pub waiting_ms: Option<f64>,
    /// Over the window, the prober's stats as `diag demo`'s report has them (`samples`
    /// counts answers, timeouts and the probes waiting past one interval: the percentiles'
    /// population; `errors` are unexpected statuses and probes with no HTTP answer).
    #[serde(flatten)]
    pub window: ProbeStats,
    /// In the window: `timeouts` + `errors`.
    pub failures: u64,
    /// Probes still waiting past one interval, in the percentiles at their wait so far.
    pub waiting: u64,
}

/// What the latest probe saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Latest {
    /// An expected status, after `ms`.
    Answered { ms: f64 },
    /// No answer within `--timeout` (`ms` is the timeout).
    Timeout { ms: f64 },
    /// A status the probe does not expect.
    Status { status: u16 },
    /// No HTTP answer at all, and why (`Connection refused`).
    Failed { error: String },
}

/// One `--pair`'s verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairLine {
    pub fast: String,
    pub slow: String,
    pub verdict: Verdict,
    /// The verdict in the line's words: `starved: report waits while health answers`.
    pub says: String,
}

/// The end of the watch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub timestamp: String,
    pub unix_ms: u64,
    /// Lines printed.
    pub lines: u64,
    pub elapsed_s: f64,
    /// Whether the watch ended on Ctrl-C or SIGTERM (the probes still in flight are then not
    /// counted).
    pub interrupted: bool,
    /// By probe name, over the whole watch.
    pub probes: BTreeMap<String, ProbeSummary>,
    /// Each pair's worst verdict over the whole watch, and for how many lines it held.
    pub pairs: Vec<PairLine>,
    /// The watch's exit code, and why when it is not 0 (what diag prints on stderr).
    pub exit_code: u8,
    pub reason: Option<String>,
}

/// One probe over the whole watch: the prober's own stats (as in `diag demo`'s report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub method: String,
    pub url: String,
    #[serde(flatten)]
    pub stats: ProbeStats,
}

/// Where the records go.
pub struct Sink {
    out: Box<dyn Write>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

impl Sink {
    /// Standard output, or `path` opened to append (created, with its directory, if missing).
    pub fn open(to: &Jsonl) -> anyhow::Result<Self> {
        let out: Box<dyn Write> = match to {
            Jsonl::Stdout => Box::new(std::io::stdout()),
            Jsonl::File(path) => {
                if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Box::new(file)
            }
        };
        Ok(Self { out })
    }

    /// Writes `record` as one line, and flushes it.
    pub fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(record).context("cannot encode a JSON line")?;
        line.push(b'\n');
        self.out
            .write_all(&line)
            .and_then(|()| self.out.flush())
            .context("cannot write a JSON line")
    }
}
