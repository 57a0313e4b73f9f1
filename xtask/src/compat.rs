//! `cargo xtask compat`: OpenAI's own Python client against the gateway, in both modes.
//!
//! Our Rust tests prove the wire format as *we* read it; this proves it as the most used client
//! reads it. xtask makes a virtualenv under `target/compat-venv` with a pinned `openai` package,
//! builds the debug binaries, starts mock-llm and a gateway with an API key on free ports, runs
//! `compat/openai_check.py` against it, stops both, and does the same for the other mode. Then
//! once more against a gateway with `--cache-mode all`, running the script's cache checks
//! (`--checks cache`): a cached answer replayed as a stream must be one the SDK reads like any
//! other. Any failed check fails the command.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::cli::Mode;
use crate::{project_root, services};

/// The `openai` package the check runs with. Pinned, so that a new release cannot change the
/// result of an old commit; raise it on purpose (and read its changelog) when needed.
const OPENAI_PACKAGE: &str = "openai==3.54.0";

/// The key the gateway is started with and the script presents.
const API_KEY: &str = "compat-check-key";

pub fn run() -> Result<ExitCode> {
    services::catch_ctrl_c();
    let python = venv_python()?;
    let bin_dir = services::build(true)?;
    let script = project_root().join("compat").join("openai_check.py");
    let mut failed = Vec::new();
    // (label, mode, extra gateway flags, the script's `--checks`).
    let runs: [(&str, Mode, &[&str], &str); 3] = [
        ("broken", Mode::Broken, &[], "api"),
        ("fixed", Mode::Fixed, &[], "api"),
        ("cache", Mode::Fixed, &["--cache-mode", "all"], "cache"),
    ];
    for (label, mode, extra, checks) in runs {
        println!("\n=== compat: {label} gateway");
        if let Err(e) = check_mode(&bin_dir, &python, &script, (label, mode), extra, checks) {
            println!("=== compat: FAILED: {label}: {e:#}");
            failed.push(label);
        }
    }
    if failed.is_empty() {
        println!("\ncompat: the openai client works against both modes and the cache");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\ncompat: failed in {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

fn check_mode(
    bin_dir: &Path,
    python: &Path,
    script: &Path,
    (label, mode): (&str, Mode),
    extra: &[&str],
    checks: &str,
) -> Result<()> {
    let mock_listen = services::free_addr()?;
    // Fast pacing, fixed seed: the script checks behaviour, not speed.
    // Its own pid files and logs: a demo running in target/demo/ is not disturbed.
    let dir = services::target_dir().join("compat");
    let _mock = services::start(
        &dir,
        bin_dir,
        "mock-llm",
        mock_listen,
        &[
            "--listen",
            &mock_listen.to_string(),
            "--ttft-ms",
            "20",
            "--itl-ms",
            "10",
            "--tokens",
            "8",
            "--seed",
            "1",
        ]
        .map(String::from),
        &format!("http://{mock_listen}/health"),
    )?;
    let listen = services::free_addr()?;
    let mut args: Vec<String> = [
        "--mode",
        mode.as_str(),
        "--listen",
        &listen.to_string(),
        "--upstream",
        &format!("http://{mock_listen}"),
        "--api-key",
        API_KEY,
        "--drain-secs",
        "1",
        "--drain-grace-secs",
        "0",
        "--admin-listen",
        &services::free_addr()?.to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let _gateway = services::start(
        &dir,
        bin_dir,
        "gateway",
        listen,
        &args,
        &format!("http://{listen}/health"),
    )?;
    services::run(
        Command::new(python)
            .arg(script)
            .args(["--gateway", &format!("http://{listen}")])
            .args(["--api-key", API_KEY])
            .args(["--label", label])
            .args(["--checks", checks]),
    )
    // `_gateway` and `_mock` stop here, on success and on failure alike.
}

/// `target/compat-venv/bin/python`, with [`OPENAI_PACKAGE`] installed.
fn venv_python() -> Result<PathBuf> {
    let venv = services::target_dir().join("compat-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        println!("xtask: creating {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        match status {
            Err(e) => bail!(
                "cannot run python3 ({e}): `cargo xtask compat` needs Python 3.10 or later \
                 (Debian/Ubuntu: apt-get install python3 python3-venv)"
            ),
            Ok(status) if !status.success() => {
                // A half-made venv would make the next run skip this step.
                let _ = std::fs::remove_dir_all(&venv);
                bail!(
                    "`python3 -m venv {}` failed ({status}): the venv module or ensurepip is \
                     missing (Debian/Ubuntu: apt-get install python3-venv)",
                    venv.display()
                );
            }
            Ok(_) => {}
        }
    }
    // Quick when already installed: pip sees the pinned version is there.
    services::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(OPENAI_PACKAGE),
    )
    .with_context(|| {
        format!(
            "cannot install {OPENAI_PACKAGE} into {} (is pip available, PyPI reachable, and python3 at least 3.10?)",
            venv.display()
        )
    })?;
    Ok(python)
}
