//! `cargo xtask lab up|down|status`: the lab of `e2e::topo` on this host with all its
//! services (DNS, ISP sinks, mta-workers, the XDP balancers behind ECMP), left running for
//! exploration. `down` removes every lab namespace (and with them every
//! process, veth and XDP attachment inside), also after a failed or interrupted `up`.

use anyhow::{Context, Result};
use e2e::{mail_lab::MailLab, topo};
use std::path::PathBuf;

/// Namespace prefix of the interactive lab (tests use their own prefixes).
pub const PREFIX: &str = "slab";

pub fn state_dir() -> PathBuf {
    PathBuf::from("/run/smtp-lb-lab")
}

pub fn up() -> Result<()> {
    anyhow::ensure!(
        crate::cmd::is_root(),
        "the lab needs root (network namespaces, XDP)"
    );
    // A previous run may have been interrupted: start from nothing.
    down_quiet();
    let dir = state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    crate::setup::ensure()?;
    let bins = crate::cmd::build_lab_binaries()?;
    crate::interrupt::cleanup_on_signal(PREFIX);
    let mut lab = topo::Lab::up(PREFIX, topo::Shape::default())?;
    // DNS, the ISP sinks, a worker per backend and the XDP tier, with the shipped configs.
    let mut ml = MailLab::start(&lab, &bins, &dir).context("starting the lab's services")?;
    ml.keep();
    lab.keep();
    println!(
        "lab: up ({} namespaces, prefix {PREFIX}-)",
        lab.namespaces().len()
    );
    print_plan(&lab);
    Ok(())
}

fn print_plan(lab: &topo::Lab) {
    println!("  VIP            {} / {}", topo::VIP4, topo::VIP6);
    println!(
        "  client         {}  (ip netns exec {})",
        lab.client.addr4(),
        lab.client.ns.name()
    );
    for h in &lab.lbs {
        println!("  balancer       {}  ({})", h.addr4(), h.ns.name());
    }
    for h in &lab.mtas {
        println!("  backend        {}  ({})", h.addr4(), h.ns.name());
    }
    for (h, n) in lab.isps.iter().zip(topo::ISP_NAMES) {
        println!("  ISP {n:<10} {}  ({})", h.addr4(), h.ns.name());
    }
    println!(
        "  DNS            {}  ({})",
        lab.dns.addr4(),
        lab.dns.ns.name()
    );
    println!(
        "  state          {}  (configs, logs, spools, ISP dumps)",
        state_dir().display()
    );
    println!(
        "  try            ip netns exec {} swaks --server {} --to you@gmail.test",
        lab.client.ns.name(),
        topo::VIP4
    );
    println!(
        "                 ip netns exec {} target/debug/balancer status --config {}/tier/lb1.toml",
        lab.lbs[0].ns.name(),
        state_dir().display()
    );
}

fn down_quiet() -> usize {
    let n = topo::down(PREFIX);
    let _ = std::fs::remove_dir_all(state_dir());
    n
}

pub fn down() -> Result<()> {
    anyhow::ensure!(
        crate::cmd::is_root(),
        "the lab needs root (network namespaces, XDP)"
    );
    let n = down_quiet();
    println!("lab: down ({n} namespaces removed)");
    Ok(())
}

pub fn status() -> Result<()> {
    let names = e2e::netns::list_with_prefix(&format!("{PREFIX}-"));
    if names.is_empty() {
        println!("lab: down");
        return Ok(());
    }
    println!("lab: up, {} namespaces", names.len());
    let mut names = names;
    names.sort();
    for n in names {
        let pids = crate::cmd::output("ip", &["netns", "pids", &n]).unwrap_or_default();
        let procs: Vec<String> = pids
            .split_whitespace()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|c| c.trim().to_string())
            .collect();
        let links = crate::cmd::output("ip", &["-n", &n, "-brief", "link"]).unwrap_or_default();
        let xdp = crate::cmd::output("ip", &["-n", &n, "link"])
            .map(|l| l.contains("xdp"))
            .unwrap_or(false);
        println!(
            "  {n:<16} links: {:<3} xdp: {:<3} processes: {}",
            links.lines().count(),
            if xdp { "yes" } else { "no" },
            if procs.is_empty() {
                "-".to_string()
            } else {
                procs.join(", ")
            }
        );
    }
    Ok(())
}
