//! `diag` binary: parse the command line, run it, turn the outcome into an exit code.
//!
//! Exit codes: 0 done, 1 verdict differs from `--expect` (or another failure), 2 bad flags
//! (clap), 3 gateway unreachable, 4 the target failed during the run (see `diag::Error`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = diag::cli::Cli::parse();
    match diag::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("diag: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
