//! `cargo xtask test`: the whole suite, in the order a reviewer reads it: formatting,
//! lints, unit tests, then the tests that need root (BPF `TestRun`, network namespaces).

use crate::{cmd, setup};
use anyhow::{bail, Result};
use std::time::Instant;

/// Test targets that need root, per package. Each is compiled only with the package's
/// `privileged` feature, so a plain `cargo test` never needs root.
const PRIVILEGED: &[(&str, &str)] = &[("balancer", "priv_*"), ("e2e", "priv_*")];

pub fn run() -> Result<()> {
    let started = Instant::now();
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        println!("\n==> {name}");
        let t = Instant::now();
        let r = f();
        timings.push((name.to_string(), t.elapsed().as_secs_f64()));
        r
    };

    step("setup (only what is missing)", &mut setup::ensure)?;
    step("cargo fmt --check", &mut || {
        cmd::cargo(&["fmt", "--all", "--", "--check"])
    })?;
    step("clippy (host crates, warnings denied)", &mut || {
        cmd::cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "balancer-ebpf",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ])?;
        // The shared types crate is host code too (user space uses it); its eBPF bins are
        // checked by the eBPF build itself.
        cmd::cargo(&[
            "clippy",
            "-p",
            "balancer-ebpf",
            "--lib",
            "--tests",
            "--features",
            "user",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("vagrant validate", &mut || {
        let vagrant_dir = cmd::root().join("vagrant");
        let status = std::process::Command::new("vagrant")
            .arg("validate")
            .current_dir(vagrant_dir)
            .status()?;
        anyhow::ensure!(status.success(), "vagrant validate failed");
        Ok(())
    })?;
    step("unit and socket tests (no root)", &mut || {
        cmd::cargo(&["test", "--workspace", "--exclude", "balancer-ebpf"])?;
        cmd::cargo(&["test", "-p", "balancer-ebpf", "--lib"])
    })?;

    let privileged = cmd::is_root();
    if privileged {
        // The end-to-end tests run the workspace's binaries inside lab namespaces.
        step("build binaries for the end-to-end tests", &mut || {
            cmd::build_lab_binaries().map(drop)
        })?;
        for (pkg, pattern) in PRIVILEGED {
            step(&format!("privileged tests of {pkg} (root)"), &mut || {
                cmd::cargo(&[
                    "test",
                    "-p",
                    pkg,
                    "--features",
                    &format!("{pkg}/privileged"),
                    "--test",
                    pattern,
                ])
            })?;
        }
        // The benchmark is not a test, but it must keep working: a tiny workload, its
        // report written to a scratch directory.
        step("bench lb smoke run (root)", &mut || {
            let docs = std::env::temp_dir().join(format!("bench-lb-smoke-{}", std::process::id()));
            let r = crate::bench_lb::run(crate::bench_lb::Options {
                rounds: 1,
                sessions: 40,
                levels: vec![4],
                large_sessions: 2,
                large_size: 256 * 1024,
                smoke_docs: Some(docs.clone()),
            });
            let _ = std::fs::remove_dir_all(&docs);
            r
        })?;
    }

    println!("\n==> timings");
    for (name, secs) in &timings {
        println!("{secs:8.1}s  {name}");
    }
    println!("{:8.1}s  total", started.elapsed().as_secs_f64());
    if !privileged {
        bail!("the BPF and network-namespace tests need root (CAP_BPF + CAP_NET_ADMIN): run `sudo -E cargo xtask test`");
    }
    Ok(())
}
