//! The live progress line of `diag load` and `diag llm`: one line on stderr, rewritten in place
//! a few times a second, and erased when the run ends.
//!
//! Only on a terminal: stdout carries the report (a script may parse it), and a progress line
//! written into a pipe or a CI log would be hundreds of `\r`-joined lines of noise. So the line
//! goes to stderr, and only when stderr is a TTY (`std::io::IsTerminal`) and `--no-progress` was
//! not given. It reads shared counters (atomics the workers bump anyway), so it costs the load
//! nothing.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

/// A running progress line (or nothing, when disabled). Must live inside a tokio runtime.
#[derive(Debug)]
pub struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Redraws `line(elapsed)` on stderr every 250 ms, if `wanted` and stderr is a terminal.
    pub fn start(wanted: bool, line: impl Fn(Duration) -> String + Send + 'static) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Self {
                stop: None,
                task: None,
            };
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {
                        // `\r` back to the start, `ESC[K` erases what a longer line left.
                        let mut stderr = std::io::stderr().lock();
                        let _ = write!(stderr, "\r{}\x1b[K", line(started.elapsed()));
                        let _ = stderr.flush();
                    }
                }
            }
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the line and erases it, so the report starts on a clean line.
    pub async fn finish(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
