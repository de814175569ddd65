//! `balancer`: the daemon and its CLI. Thin: argument parsing, logging, and the two
//! data-plane hooks; everything else is in the library.

use balancer::cli::{self, Cli, DecapArgs, DetachFn, HookError, Hooks, NicTimeArgs};
use balancer::config::{Config, XdpMode};
use balancer::dataplane::decap::DecapPlane;
use balancer::dataplane::nic_time::NicTimeProbe;
use balancer::dataplane::xdp::{LoadOptions, XdpDataPlane};
use balancer::dataplane::{AttachMode, DataPlaneOps};
use clap::Parser;

// ---- Integration point: the real XDP data plane ---------------------------------------
// Wired to `balancer::dataplane::xdp` as it stood when the daemon side was finished;
// adjust here if the loader's API changes.

fn attach_mode(cfg: &Config) -> AttachMode {
    match cfg.dataplane.xdp_mode {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
    }
}

/// Adopts the set pinned under `dataplane.pin_dir` (a restart: forwarding never stopped),
/// or loads, pins and attaches a fresh one.
fn open_dataplane(cfg: &Config) -> Result<Box<dyn DataPlaneOps + Send>, HookError> {
    let dir = &cfg.dataplane.pin_dir;
    if dir.join("prog").exists() {
        tracing::info!(dir = %dir.display(), "adopting the pinned XDP balancer");
        return Ok(Box::new(XdpDataPlane::adopt(dir)?));
    }
    let mut plane = XdpDataPlane::load(&LoadOptions {
        pin_dir: Some(dir.clone()),
        ..LoadOptions::default()
    })?;
    let ifaces = &cfg.dataplane.interfaces;
    if ifaces.is_empty() {
        return Err("dataplane.interfaces is empty".into());
    }
    // One program and one set of maps for every interface: a flow keeps its backend
    // whichever NIC its packets arrive on.
    for iface in ifaces {
        plane.attach(iface, attach_mode(cfg))?;
    }
    tracing::info!(ifaces = ?ifaces, mode = ?cfg.dataplane.xdp_mode, dir = %dir.display(), "XDP balancer loaded, attached and pinned");
    Ok(Box::new(plane))
}

/// Detaches the program and removes the pinned program, link and maps.
fn detach(cfg: &Config) -> Result<(), HookError> {
    let dir = &cfg.dataplane.pin_dir;
    if !dir.join("prog").exists() {
        return Err(format!("nothing pinned under {}: not attached", dir.display()).into());
    }
    XdpDataPlane::adopt(dir)?.detach()?;
    println!("detached; removed the pins under {}", dir.display());
    Ok(())
}
/// Loads the decap program (unpinned: it lives as long as this process), attaches it and
/// registers the local addresses.
fn decap(args: &DecapArgs) -> Result<DetachFn, HookError> {
    let mut plane = DecapPlane::load(None)?;
    let mode = if args.generic {
        tracing::warn!(iface = %args.iface, "decap in GENERIC (skb) mode: slower than native XDP");
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    plane.attach(&args.iface, mode)?;
    for ip in &args.local {
        let (addr, family) = match ip {
            std::net::IpAddr::V4(v4) => (balancer_ebpf::addr4(v4.octets()), balancer_ebpf::AF_INET),
            std::net::IpAddr::V6(v6) => (v6.octets(), balancer_ebpf::AF_INET6),
        };
        plane.add_address(&addr, family)?;
    }
    Ok(Box::new(move || plane.detach().map_err(HookError::from)))
}

/// Attaches the probe, then answers every input line with the current totals as JSON.
fn nic_time(args: &NicTimeArgs) -> Result<(), HookError> {
    use std::io::{BufRead, Write};
    let netns = args
        .netns
        .as_ref()
        .map(|n| std::path::Path::new("/run/netns").join(n));
    let probe = NicTimeProbe::attach(&args.iface, netns.as_deref())?;
    let mut out = std::io::stdout().lock();
    let report = |out: &mut std::io::StdoutLock| -> Result<(), HookError> {
        let t = probe.read()?;
        writeln!(
            out,
            r#"{{"ns":{},"polls":{},"packets":{}}}"#,
            t.ns, t.polls, t.packets
        )?;
        out.flush()?;
        Ok(())
    };
    report(&mut out)?;
    for line in std::io::stdin().lock().lines() {
        line?;
        report(&mut out)?;
    }
    Ok(())
}
// ----------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        // Colours only on a terminal: log files and journald get plain `key=value`.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(cli::run(
        args,
        Hooks {
            open_dataplane,
            detach,
            decap,
            nic_time,
        },
    ));
    if let Err(e) = result {
        // Config errors already carry file:line:column: field; print them as they are.
        eprintln!("balancer: {e}");
        std::process::exit(1);
    }
    Ok(())
}
