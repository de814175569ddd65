//! Network namespaces and veth pairs, created with iproute2 and deleted on drop.

use anyhow::{bail, Context, Result};
use std::process::{Command, Output};

/// Runs `ip` with the given arguments; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run_checked("ip", args)
}

/// Runs a program; fails with the command line and its stderr if it exits non-zero.
pub fn run_checked(program: &str, args: &[&str]) -> Result<()> {
    let out = output(program, args)?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn output(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("could not run {program}"))
}

/// A named network namespace, deleted (with everything in it) on drop unless kept.
pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Creates the namespace (replacing a stale one of the same name) with loopback up.
    pub fn create(name: &str) -> Result<Self> {
        if exists(name) {
            delete(name);
        }
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace in place when the guard drops (for `xtask lab up`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a program inside the namespace and waits for it; fails on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<()> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run_checked("ip", &full)
    }

    /// Runs a program inside the namespace and returns its output, whatever its exit code.
    pub fn exec_output(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        output("ip", &full)
    }

    /// A `Command` that runs `program` inside the namespace (for long-lived children).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name.as_str(), program]);
        c
    }

    /// Sets a sysctl inside the namespace (net.* sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            delete(&self.name);
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Deletes a namespace, first killing every process still inside it (only processes that
/// a test or the lab started there can be inside: the namespace is ours).
pub fn delete(name: &str) {
    if let Ok(out) = output("ip", &["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2) on a pid that lives in our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = output("ip", &["netns", "del", name]);
}

/// Names of existing namespaces that start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a veth pair with one end in each namespace, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    ip(&[
        "link",
        "add",
        "name",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}
