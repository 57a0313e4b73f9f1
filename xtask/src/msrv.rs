//! `cargo xtask msrv` (run by `make lint`): the minimum Rust we declare is one the lock can build.
//!
//! `rust-version` in Cargo.toml is a promise to users, and `make test` builds `--locked`. Once it
//! said 1.85 while the lock pinned `sysinfo` 0.40.1, whose own `rust-version` is 1.95: the promise
//! could not be kept and nothing noticed. This check reads `cargo metadata` and fails when any
//! locked package needs a newer Rust than the workspace declares, naming it. It also says which
//! toolchain ran it, because a build proves the declared version only when they are the same
//! (here they are: this machine's one toolchain is what the workspace declares).

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::project_root;

/// `1.95`, `1.85.0` → comparable `(major, minor, patch)`.
fn version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The locked packages whose `rust-version` is above `declared`, as `name version (needs X)`.
fn too_new(metadata: &Value, declared: (u64, u64, u64)) -> Vec<String> {
    let packages = metadata["packages"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    packages
        .iter()
        .filter_map(|package| {
            let needs = package["rust_version"].as_str()?;
            (version(needs)? > declared).then(|| {
                format!(
                    "{} {} (needs {needs})",
                    package["name"].as_str().unwrap_or("?"),
                    package["version"].as_str().unwrap_or("?")
                )
            })
        })
        .collect()
}

pub fn run() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(project_root())
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    let members = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: no workspace_members")?;
    // Every member inherits the workspace's rust-version; read it off the first.
    let declared_text = metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages
                .iter()
                .find(|package| members.contains(&package["id"]))
        })
        .and_then(|package| package["rust_version"].as_str())
        .context("the workspace declares no rust-version")?
        .to_owned();
    let declared = version(&declared_text).context("unreadable rust-version")?;
    let over = too_new(&metadata, declared);
    if !over.is_empty() {
        bail!(
            "rust-version is {declared_text}, but the lock holds packages that need more:\n  {}\n\
             Raise rust-version in Cargo.toml (and the README), or lock older versions.",
            over.join("\n  ")
        );
    }
    let rustc = Command::new("rustc").arg("--version").output();
    let toolchain = rustc
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc: unknown".into());
    println!(
        "xtask: rust-version {declared_text} covers every locked package; built here with {toolchain}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_locked_package_above_the_declared_version_is_named() {
        let metadata = json!({"packages": [
            {"name": "sysinfo", "version": "0.40.1", "rust_version": "1.95"},
            {"name": "ureq", "version": "3.5.2", "rust_version": "1.85"},
            {"name": "old", "version": "1.0.0", "rust_version": null},
        ]});
        assert_eq!(
            too_new(&metadata, (1, 85, 0)),
            ["sysinfo 0.40.1 (needs 1.95)"]
        );
        assert!(too_new(&metadata, (1, 95, 0)).is_empty());
        assert_eq!(version("1.85.0"), Some((1, 85, 0)));
        assert_eq!(version("1.95"), Some((1, 95, 0)));
    }
}
