//! The binaries' log set-up: one place that decides the filter and whether to color.
//!
//! Colors are escape codes. On a terminal they help; in a file (`make demo-*` writes
//! `target/demo/gateway.log`) they are noise that `grep` trips over (`^[[2m2026-…`). So lines are
//! colored only when standard output is a terminal and `NO_COLOR` (<https://no-color.org>) is
//! unset or empty. `RUST_LOG` picks the levels (`RUST_LOG=gateway=debug`), `info` otherwise.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Whether log lines should carry ANSI colors: a terminal, and no `NO_COLOR`.
pub fn use_color() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Installs the global subscriber: human-readable lines on standard output.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(use_color())
        .init();
}
