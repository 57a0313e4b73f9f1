//! The two modes a gateway is started in: settings types only, so every layer can name a mode
//! without importing the code that acts on it (the upstream clients, `/v1/solve`).

use std::fmt;

use clap::ValueEnum;

/// How the gateway talks to its upstream. This is the whole experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Blocking client (ureq) inside `spawn_blocking`: one pool thread per open stream.
    Broken,
    /// Async client (reqwest) streaming the body: no pool thread at all.
    Fixed,
    /// Blocking client (ureq) called right inside the async handler, no `spawn_blocking`: each
    /// stream blocks one of the runtime's *worker* threads, so everything else stalls too.
    Inline,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Broken => "broken",
            Mode::Fixed => "fixed",
            Mode::Inline => "inline",
        })
    }
}

/// Where `POST /v1/solve` computes (lesson 7; see the `/v1/solve` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuMode {
    /// On the async worker itself.
    Inline,
    /// `spawn_blocking` on the shared, unbounded-queue blocking pool.
    Blocking,
    /// A semaphore of `--cpu-workers` permits before `spawn_blocking`, and 503 past `--cpu-queue`.
    Bounded,
}

impl CpuMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CpuMode::Inline => "inline",
            CpuMode::Blocking => "blocking",
            CpuMode::Bounded => "bounded",
        }
    }
}
