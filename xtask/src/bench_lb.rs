//! `cargo xtask bench lb`: the XDP balancer against HAProxy and nftables DNAT, in one lab,
//! in interleaved rounds (A B C A B C ...) so that machine noise hits every front door
//! alike. Writes `docs/benchmarks.md` and SVG plots under `docs/bench/`.
//!
//! All three front doors run on the same balancer host at once, each on its own VIP
//! (198.18.0.25 XDP, .26 HAProxy, .27 nftables); a fourth "direct" door sends the same
//! sessions straight to the backends' own addresses, as the baseline for host CPU.

use crate::bench_lb_probe::{prog_stats, stats_floor_ns, BpfStats, NicProbe};
use crate::bench_report::{self, Door, Measurement};
use crate::cmd;
use anyhow::{bail, Context, Result};
use e2e::{frontdoor, netns::Netns, proc::ChildGuard, sink, topo, xdp_tier::XdpTier};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PREFIX: &str = "slbb";
const VIP_HAPROXY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 26);
const VIP_NFT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 27);

pub struct Options {
    pub rounds: usize,
    pub sessions: usize,
    pub levels: Vec<usize>,
    pub large_sessions: usize,
    pub large_size: usize,
    /// Smoke run for `cargo xtask test`: the debug binaries the test step built, and the
    /// report written to this directory instead of `docs/`.
    pub smoke_docs: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 3,
            sessions: 2000,
            levels: vec![10, 50, 200],
            large_sessions: 40,
            large_size: 1 << 20,
            smoke_docs: None,
        }
    }
}

pub fn run(opts: Options) -> Result<()> {
    anyhow::ensure!(
        cmd::is_root(),
        "bench lb needs root (network namespaces, XDP)"
    );
    crate::setup::ensure()?;
    let bin = if opts.smoke_docs.is_some() {
        cmd::build_lab_binaries()?
    } else {
        cmd::cargo(&["build", "--release", "-p", "balancer", "-p", "e2e"])?;
        cmd::root().join("target/release")
    };
    topo::down(PREFIX);
    let work = tempdir()?;
    let lab = topo::Lab::up(
        PREFIX,
        topo::Shape {
            balancers: 1,
            backends: 3,
            isps: 0,
        },
    )?;
    let _cleanup = Cleanup(PREFIX);
    let lb = &lab.lbs[0];
    for vip in [VIP_HAPROXY, VIP_NFT] {
        lab.router.ip(&[
            "route",
            "replace",
            &format!("{vip}/32"),
            "via",
            &lb.addr4().to_string(),
        ])?;
    }
    // Postfix listens IPv6-only on [::]: one sink per family (the lab config has v6 VIPs
    // too, and the daemon waits for every backend to be healthy).
    let _sinks: Vec<ChildGuard> = lab
        .mtas
        .iter()
        .flat_map(|m| ["0.0.0.0:25", "[::]:25"].map(|l| sink::start_nodump(&m.ns, l)))
        .collect::<Result<_>>()?;

    let backends: Vec<Ipv4Addr> = lab.mtas.iter().map(|m| m.addr4()).collect();
    let xdp = XdpTier::start(&lab, &bin, &work.join("xdp"))?;
    let hap_ips: Vec<IpAddr> = backends.iter().map(|&b| IpAddr::V4(b)).collect();
    let hap = frontdoor::haproxy(&lb.ns, VIP_HAPROXY, 25, &hap_ips, 2, &work)?;
    frontdoor::nft_dnat(&lb.ns, VIP_NFT, 25, &backends, lb.ifname)?;
    let _nft = NftGuard(&lb.ns);
    wait_for_smtp(&lab, &bin, Ipv4Addr::new(198, 18, 0, 25))?;
    wait_for_smtp(&lab, &bin, VIP_HAPROXY)?;
    wait_for_smtp(&lab, &bin, VIP_NFT)?;

    let _stats = BpfStats::enable()?;
    let mut nic = NicProbe::start(&bin, &lb.ns, lb.ifname)?;
    let mut floors = vec![stats_floor_ns(&xdp, &work)?];
    let doors = [Door::Xdp, Door::Haproxy, Door::Nftables, Door::Direct];
    let mut all: Vec<Measurement> = Vec::new();
    for &conc in &opts.levels {
        for round in 0..opts.rounds {
            for &door in &doors {
                let m = measure(
                    &lab,
                    &bin,
                    door,
                    conc,
                    opts.sessions,
                    2048,
                    &xdp,
                    hap.pid(),
                    &mut nic,
                )
                .with_context(|| format!("{door:?} at concurrency {conc}"))?;
                println!("bench lb: round {round} c={conc:<4} {}", m.line());
                all.push(m);
            }
        }
    }
    floors.push(stats_floor_ns(&xdp, &work)?);
    let mut large: Vec<Measurement> = Vec::new();
    for round in 0..opts.rounds {
        for &door in &doors {
            let m = measure(
                &lab,
                &bin,
                door,
                10,
                opts.large_sessions,
                opts.large_size,
                &xdp,
                hap.pid(),
                &mut nic,
            )?;
            println!("bench lb: round {round} large {}", m.line());
            large.push(m);
        }
    }
    if opts.smoke_docs.is_some() {
        let failed: u64 = all.iter().chain(&large).map(|m| m.sessions_failed).sum();
        anyhow::ensure!(failed == 0, "bench lb smoke run: {failed} sessions failed");
        anyhow::ensure!(
            all.iter()
                .all(|m| m.door == Door::Direct || m.nic_packets_per_session > 0.0),
            "bench lb smoke run: the NIC probe saw no packets"
        );
    }
    let docs = opts
        .smoke_docs
        .clone()
        .unwrap_or_else(|| cmd::root().join("docs"));
    bench_report::write_lb(&docs, &all, &large, &opts_line(&opts), &floors)?;
    Ok(())
}

fn opts_line(o: &Options) -> String {
    format!(
        "{} rounds; {} sessions of one 2 KiB message per run at concurrency {:?}; {} sessions of one {} KiB message at concurrency 10",
        o.rounds,
        o.sessions,
        o.levels,
        o.large_sessions,
        o.large_size / 1024
    )
}

#[allow(clippy::too_many_arguments)]
fn measure(
    lab: &topo::Lab,
    bin: &Path,
    door: Door,
    concurrency: usize,
    sessions: usize,
    size: usize,
    xdp: &XdpTier,
    haproxy_pid: u32,
    nic: &mut NicProbe,
) -> Result<Measurement> {
    let servers: Vec<String> = match door {
        Door::Xdp => vec![format!("{}:25", topo::VIP4)],
        Door::Haproxy => vec![format!("{VIP_HAPROXY}:25")],
        Door::Nftables => vec![format!("{VIP_NFT}:25")],
        Door::Direct => lab
            .mtas
            .iter()
            .map(|m| format!("{}:25", m.addr4()))
            .collect(),
    };
    let host0 = host_busy_ns()?;
    let hap0 = proc_cpu_ns(haproxy_pid);
    let bpf0 = prog_stats(xdp)?;
    let nic0 = nic.read()?;
    let daemon_pid = xdp.balancers[0].guard.pid();
    let daemon0 = proc_cpu_ns(daemon_pid);
    let out = lab
        .client
        .ns
        .command(bin.join("smtp-load").to_str().expect("utf-8 path"))
        .args(["--server", &servers.join(",")])
        .args([
            "--sessions",
            &sessions.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args([
            "--size",
            &size.to_string(),
            "--timeout",
            "20",
            "--max-duration",
            "120",
            "--summary-only",
        ])
        .output()
        .context("run smtp-load")?;
    if !out.status.success() {
        bail!("smtp-load failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ok = report["sessions_ok"].as_u64().unwrap_or(0) as f64;
    let host = (host_busy_ns()? - host0) as f64;
    let nic1 = nic.read()?;
    let (prog_ns, prog_runs) = match door {
        Door::Xdp => {
            let b = prog_stats(xdp)?;
            ((b.0 - bpf0.0) as f64, (b.1 - bpf0.1) as f64)
        }
        _ => (f64::NAN, f64::NAN),
    };
    // No traffic crosses the balancer host in the direct runs: its NIC figure is noise.
    let (nic_ns, nic_packets) = match door {
        Door::Direct => (f64::NAN, f64::NAN),
        _ => (
            (nic1.ns - nic0.ns) as f64,
            (nic1.packets - nic0.packets) as f64,
        ),
    };
    let lb_cpu_ns = match door {
        Door::Xdp => prog_ns + (proc_cpu_ns(daemon_pid) - daemon0) as f64,
        Door::Haproxy => (proc_cpu_ns(haproxy_pid) - hap0) as f64,
        // nftables has no process of its own: its cost is estimated from host CPU over the
        // direct baseline when the report is made (see bench_report).
        Door::Nftables | Door::Direct => f64::NAN,
    };
    Ok(Measurement {
        door,
        concurrency,
        size,
        sessions_ok: ok as u64,
        sessions_failed: report["sessions_failed"].as_u64().unwrap_or(0),
        sessions_per_s: report["sessions_per_s"].as_f64().unwrap_or(0.0),
        messages_per_s: report["messages_per_s"].as_f64().unwrap_or(0.0),
        p50_ms: report["session_ms_p50"].as_f64().unwrap_or(0.0),
        p99_ms: report["session_ms_p99"].as_f64().unwrap_or(0.0),
        lb_cpu_us_per_session: lb_cpu_ns / ok.max(1.0) / 1e3,
        prog_us_per_session: prog_ns / ok.max(1.0) / 1e3,
        host_cpu_us_per_session: host / ok.max(1.0) / 1e3,
        prog_runs_per_session: prog_runs / ok.max(1.0),
        nic_us_per_session: nic_ns / ok.max(1.0) / 1e3,
        nic_packets_per_session: nic_packets / ok.max(1.0),
    })
}

fn wait_for_smtp(lab: &topo::Lab, bin: &Path, vip: Ipv4Addr) -> Result<()> {
    let ok = e2e::proc::wait_until(Duration::from_secs(20), || {
        lab.client
            .ns
            .command(bin.join("smtp-load").to_str().expect("utf-8 path"))
            .args([
                "--server",
                &format!("{vip}:25"),
                "--sessions",
                "3",
                "--timeout",
                "2",
                "--summary-only",
            ])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .map(|r| r["sessions_ok"] == 3)
            .unwrap_or(false)
    });
    anyhow::ensure!(ok, "no SMTP service on {vip}:25 within 20 s");
    Ok(())
}

/// Busy CPU time of the whole host (all CPUs, everything but idle and iowait), in ns.
fn host_busy_ns() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(v.len() >= 8, "unexpected /proc/stat");
    let busy: u64 = v[..8].iter().sum::<u64>() - v[3] - v[4];
    Ok(busy * 1_000_000_000 / clk_tck())
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// CPU time of a process (all its threads), in ns; 0 if it is gone. From each thread's
/// `schedstat` (nanoseconds on the CPU): the daemon's health checks cost a millisecond
/// here and there, which `stat`'s 10 ms ticks would round to 0 or to 5 µs per session
/// over a sub-second run. Falls back to the ticks where `schedstat` is missing.
pub fn proc_cpu_ns(pid: u32) -> u64 {
    let from_tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>()
        });
    match from_tasks {
        Some(ns) if ns > 0 => ns,
        _ => proc_ticks_ns(pid),
    }
}

/// User + system CPU of a process from `/proc/<pid>/stat`, in ns (10 ms resolution).
fn proc_ticks_ns(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // rest starts at field 3 (state, not numeric, filtered out) so utime is f[10].
    if f.len() < 12 {
        return 0;
    }
    (f[10] + f[11]) * 1_000_000_000 / clk_tck()
}

struct NftGuard<'a>(&'a Netns);

impl Drop for NftGuard<'_> {
    fn drop(&mut self) {
        frontdoor::nft_cleanup(self.0);
    }
}

/// Removes the bench's lab even when the bench fails half-way.
struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        topo::down(self.0);
    }
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("smtp-lb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
