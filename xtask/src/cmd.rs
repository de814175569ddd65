//! Running child processes with the environment the project's tools need.

use anyhow::{bail, Context, Result};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Where Debian's LLVM 22 lives; bpf-linker must be built (and run) with it first on PATH.
pub const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// PATH with cargo's bin directory present, so a freshly installed bpf-linker is found.
pub fn path_env() -> String {
    let old = std::env::var("PATH").unwrap_or_default();
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let bin = home.join("bin");
    if std::env::split_paths(&old).any(|p| p == bin) {
        old
    } else {
        format!("{}:{old}", bin.display())
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command in the workspace root, inheriting stdio; fails on a non-zero exit.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .env("PATH", path_env())
        .status()
        .with_context(|| format!("could not start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(&cargo, args)
}

/// Builds the binaries the lab runs inside its namespaces (the daemon, the worker and
/// the load generator) and returns the directory they are in.
pub fn build_lab_binaries() -> Result<PathBuf> {
    cargo(&[
        "build",
        "-p",
        "balancer",
        "-p",
        "mta-worker",
        "-p",
        "e2e",
        "--bins",
    ])?;
    Ok(root().join("target/debug"))
}

/// Runs a command and returns its stdout, or None if it could not run or failed.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", path_env())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
