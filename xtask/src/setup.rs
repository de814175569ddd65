//! `cargo xtask setup`: installs what the build, the tests, the lab and the benchmarks need
//! on a fresh Debian 12 machine. Idempotent: it prints what it installs and what it skips.

use crate::cmd::{self, LLVM_BIN};
use anyhow::{bail, Context, Result};
use std::{path::PathBuf, process::Command};

/// Debian packages, each with why it is needed.
const PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links eBPF objects with LLVM 22 (the nightly's LLVM)",
    ),
    (
        "libpolly-22-dev",
        "needed to link bpf-linker against LLVM 22",
    ),
    ("libzstd-dev", "needed to link bpf-linker against LLVM 22"),
    (
        "iproute2",
        "network namespaces and veth pairs for the lab and tests",
    ),
    ("iputils-ping", "reachability checks in the lab"),
    ("curl", "reads the daemons' HTTP endpoints in the lab"),
    ("ethtool", "turns off tx checksum offload on lab veths"),
    ("bpftool", "inspects loaded programs and pinned maps"),
    (
        "postfix",
        "smtp-source / smtp-sink, and the Postfix peer in benchmarks",
    ),
    ("swaks", "a real SMTP client for conformance tests"),
    ("dnsmasq-base", "the lab's DNS server for the .test zone"),
    ("haproxy", "the HAProxy peer in the load-balancer benchmark"),
    (
        "nftables",
        "the nftables DNAT peer in the load-balancer benchmark",
    ),
    ("openssl", "test certificates"),
    ("vagrant", "validates vagrant/Vagrantfile"),
    (
        "vagrant-libvirt",
        "the Vagrantfile's default provider (vagrant validate needs one)",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// What is missing, as human-readable items.
pub fn missing() -> Vec<String> {
    let mut out = Vec::new();
    for (pkg, _) in PACKAGES {
        if !deb_installed(pkg) {
            out.push(format!("Debian package {pkg}"));
        }
    }
    if !nightly_installed() {
        out.push("Rust nightly toolchain".into());
    } else if !rust_src_installed() {
        out.push("rust-src component of nightly".into());
    }
    if !bpf_linker_ok() {
        out.push(format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"));
    }
    out
}

/// Installs prerequisites only if something is missing (used by build/test/demo).
pub fn ensure() -> Result<()> {
    if missing().is_empty() {
        return Ok(());
    }
    run(false)
}

pub fn run(check_only: bool) -> Result<()> {
    let missing_now = missing();
    if check_only {
        if missing_now.is_empty() {
            println!("setup: everything is installed");
            return Ok(());
        }
        for m in &missing_now {
            println!("setup: missing {m}");
        }
        bail!(
            "{} prerequisite(s) missing; run `cargo xtask setup`",
            missing_now.len()
        );
    }
    install_packages()?;
    install_nightly()?;
    install_bpf_linker()?;
    let still = missing();
    if !still.is_empty() {
        bail!(
            "setup finished but these are still missing: {}",
            still.join(", ")
        );
    }
    println!("setup: all prerequisites present");
    Ok(())
}

fn deb_installed(pkg: &str) -> bool {
    cmd::output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

fn install_packages() -> Result<()> {
    let todo: Vec<&str> = PACKAGES
        .iter()
        .filter(|(p, _)| {
            let have = deb_installed(p);
            if have {
                println!("setup: skip {p} (installed)");
            }
            !have
        })
        .map(|(p, _)| *p)
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    for (p, why) in PACKAGES.iter().filter(|(p, _)| todo.contains(p)) {
        println!("setup: install {p}: {why}");
    }
    if !cmd::is_root() {
        bail!(
            "installing Debian packages needs root: run `sudo apt-get install {}` or `cargo xtask setup` as root",
            todo.join(" ")
        );
    }
    if todo.contains(&"postfix") {
        // Postfix's installer asks what kind of mail system this is; "No configuration"
        // installs the programs without starting or configuring a system MTA.
        let mut child = Command::new("debconf-set-selections")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("debconf-set-selections")?;
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(b"postfix postfix/main_mailer_type select No configuration\n")?;
        child.wait()?;
    }
    cmd::run("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&todo);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get")?;
    if !status.success() {
        bail!("apt-get install {} failed", todo.join(" "));
    }
    Ok(())
}

fn nightly_installed() -> bool {
    cmd::output("rustup", &["run", "nightly", "rustc", "--version"]).is_some()
}

fn rust_src_installed() -> bool {
    cmd::output("rustup", &["run", "nightly", "rustc", "--print", "sysroot"])
        .map(|s| {
            PathBuf::from(s.trim())
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        })
        .unwrap_or(false)
}

fn install_nightly() -> Result<()> {
    if !nightly_installed() {
        println!("setup: install Rust nightly (with rust-src): builds the eBPF programs");
        cmd::run(
            "rustup",
            &[
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ],
        )?;
    } else if !rust_src_installed() {
        println!("setup: install rust-src for nightly: eBPF builds rebuild core from source");
        cmd::run(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    } else {
        println!("setup: skip nightly + rust-src (installed)");
    }
    Ok(())
}

fn bpf_linker_ok() -> bool {
    cmd::output("bpf-linker", &["--version"])
        .map(|v| v.contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

fn install_bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        println!("setup: skip bpf-linker {BPF_LINKER_VERSION} (installed)");
        return Ok(());
    }
    println!(
        "setup: install bpf-linker {BPF_LINKER_VERSION} against LLVM 22: links the eBPF programs"
    );
    let path = format!("{LLVM_BIN}:{}", cmd::path_env());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path)
        // The workspace's toolchain settings must not leak into the install.
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed");
    }
    Ok(())
}
