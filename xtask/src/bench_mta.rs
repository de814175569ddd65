//! `cargo xtask bench mta-ingest`: inbound throughput of `mta-worker` against a stock
//! Postfix on the same machine, in the same run, both durable (fsync before 250).
//!
//! `smtp-source` drives both with the same parameters in interleaved rounds (worker,
//! Postfix, Postfix, worker, ...) so that machine noise hits both alike. After each
//! large-message load shape, a disk ceiling probe writes the way the worker's group
//! commit just did, on the same file system, so every round says how close the worker
//! came to what the disk gave at that moment. Per run it also records the bytes each
//! server made the kernel write per message. Results go to stdout and
//! `docs/benchmarks-mta.md` (the inbound part; the outbound relay section there belongs
//! to `bench mta-relay`).
//!
//! Parts: `worker.rs` and `postfix.rs` start and read the two servers, `procs.rs` reads
//! CPU and I/O of a process tree, `disk.rs` is the probe and the device counters,
//! `report.rs` writes the page.

mod disk;
mod postfix;
mod procs;
mod report;
mod worker;

use crate::cmd;
use anyhow::{bail, Result};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Hard bound on one smtp-source run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes a spool record adds to the payload (first line, JSON envelope, `Received:`),
/// about 0.4 KiB with the benchmark's addresses; the probe writes records of payload +
/// this.
const RECORD_OVERHEAD: usize = 512;

/// Load shapes with at least this payload get a disk ceiling probe.
const PROBE_MIN_PAYLOAD: usize = 64 * 1024;

pub struct Options {
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { rounds: 3 }
    }
}

/// One load shape: (message payload bytes, concurrent sessions, messages). Enough
/// messages that the faster server's run lasts about half a second or more: with 1,500
/// messages of 100 KiB the worker's run took 0.15 s, and session start-up and the last
/// sessions' drain weighed on it (9.2-9.4k msg/s against 11.5-12.1k with 5,000, same
/// binary, same hour).
const CASES: [(usize, usize, usize); 4] = [
    (2048, 20, 10_000),
    (2048, 200, 20_000),
    (102_400, 20, 5_000),
    (102_400, 200, 6_000),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Worker,
    Postfix,
}

/// One server, one load shape, one round.
struct Sample {
    target: Target,
    case: usize,
    round: usize,
    msgs_per_s: f64,
    cpu_ms_per_msg: f64,
    /// Process-tree `write_bytes` per accepted message (see `procs.rs`).
    written_per_msg: f64,
    /// Device sectors written per accepted message during the run: journal included, but
    /// so is anything else the machine wrote meanwhile.
    device_per_msg: f64,
    /// Worker only: mean messages per group commit and mean ms per commit.
    commit: Option<(f64, f64)>,
    /// smtp-source's own CPU time per message.
    client_cpu_ms_per_msg: f64,
    /// Share of the machine's CPU time that was idle during the run.
    idle: f64,
    /// CPUs' worth of time used by neither the server nor smtp-source (other jobs, and
    /// kernel work not charged to either).
    others_cpus: f64,
}

impl Sample {
    /// MB/s the server made the kernel write.
    fn written_mb_per_s(&self) -> f64 {
        self.msgs_per_s * self.written_per_msg / 1e6
    }
}

/// One ceiling probe, run right after both servers in a round of a load shape.
struct ProbeSample {
    case: usize,
    round: usize,
    record: usize,
    batch: usize,
    r: disk::ProbeResult,
}

impl ProbeSample {
    /// Messages/s the disk takes at this record size and batch: the ceiling for the worker.
    fn msgs_per_s(&self) -> f64 {
        self.r.bytes as f64 / self.record as f64 / self.r.secs
    }
}

/// Removes the benchmark's temp dir however the run ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_port(addr: SocketAddr) -> Result<()> {
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("{addr} did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs smtp-source to completion (bounded); returns wall seconds.
fn smtp_source(addr: SocketAddr, size: usize, sessions: usize, messages: usize) -> Result<f64> {
    let t0 = Instant::now();
    let mut child = Command::new("/usr/sbin/smtp-source")
        .args([
            "-d",
            "-s",
            &sessions.to_string(),
            "-m",
            &messages.to_string(),
            "-l",
            &size.to_string(),
        ])
        .args(["-f", "bench@client.test", "-t", "sink@dest.test"])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("smtp-source against {addr} failed ({st})");
            }
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("smtp-source against {addr} exceeded {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(opts: Options) -> Result<()> {
    for tool in [
        "/usr/sbin/smtp-source",
        "/usr/sbin/postfix",
        "/usr/sbin/postsuper",
    ] {
        if !Path::new(tool).exists() {
            bail!("{tool} missing: apt-get install postfix");
        }
    }
    cmd::cargo(&["build", "--release", "-p", "mta-worker"])?;
    let base = std::env::temp_dir().join(format!("mta-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let tmp = TempDir(base);
    let dev = disk::Device::of(&tmp.0)?;
    let (worker, w_addr, w_admin) = worker::start_worker(&tmp.0)?;
    let (postfix, p_addr) = postfix::start_postfix(&tmp.0)?;
    let w_pid = worker.0.id() as i32;
    let p_pid = postfix.master_pid()?;
    let tck = procs::clk_tck();
    // Warm-up, untimed: the release build just dirtied a lot of page cache, and both
    // servers' first messages pay for process start-up and directory creation.
    let _ = Command::new("sync").status();
    for addr in [w_addr, p_addr] {
        smtp_source(addr, 2048, 20, 1000)?;
    }
    std::thread::sleep(Duration::from_secs(1));
    postfix.purge()?;
    let mut samples = Vec::new();
    let mut probes = Vec::new();
    for round in 0..opts.rounds {
        for (ci, &(size, sessions, messages)) in CASES.iter().enumerate() {
            // Alternate who goes first so neither always runs on a warmer (or busier) machine.
            let order = if (round + ci) % 2 == 0 {
                [Target::Worker, Target::Postfix]
            } else {
                [Target::Postfix, Target::Worker]
            };
            for target in order {
                let (addr, pid) = match target {
                    Target::Worker => (w_addr, w_pid),
                    Target::Postfix => (p_addr, p_pid),
                };
                let (depth0, commit0) = if target == Target::Worker {
                    (
                        worker::worker_depth(w_admin)?,
                        Some(worker::commit_stats(w_admin)?),
                    )
                } else {
                    (0, None)
                };
                disk::settle(&tmp.0)?;
                let proc0 = procs::tree(pid);
                let dev0 = dev.written();
                let client0 = procs::reaped_children_secs();
                let machine0 = procs::machine();
                let secs = smtp_source(addr, size, sessions, messages)?;
                let machine1 = procs::machine();
                let client = procs::reaped_children_secs() - client0;
                // Count what really got queued, not what the client believes it sent.
                let accepted = match target {
                    Target::Worker => (worker::worker_depth(w_admin)? - depth0) as usize,
                    Target::Postfix => {
                        let t0 = Instant::now();
                        while postfix.held() < messages && t0.elapsed() < Duration::from_secs(10) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        postfix.held()
                    }
                };
                let used = procs::tree(pid).since(proc0);
                let dev_bytes = dev.written().saturating_sub(dev0);
                let commit = match commit0 {
                    Some(c0) => {
                        let c = worker::commit_stats(w_admin)?.since(c0);
                        Some((
                            c.messages / c.commits.max(1.0),
                            c.seconds * 1000.0 / c.commits.max(1.0),
                        ))
                    }
                    None => None,
                };
                if target == Target::Postfix {
                    postfix.purge()?;
                }
                if accepted != messages {
                    bail!("{target:?}: {accepted} of {messages} messages queued");
                }
                let n = messages as f64;
                let (busy, total) = (
                    machine1.0.saturating_sub(machine0.0) as f64,
                    machine1.1.saturating_sub(machine0.1) as f64,
                );
                let server_secs = used.ticks as f64 / tck;
                let s = Sample {
                    target,
                    case: ci,
                    round,
                    msgs_per_s: n / secs,
                    cpu_ms_per_msg: server_secs * 1000.0 / n,
                    written_per_msg: used.write_bytes as f64 / n,
                    device_per_msg: dev_bytes as f64 / n,
                    commit,
                    client_cpu_ms_per_msg: client * 1000.0 / n,
                    idle: 1.0 - busy / total.max(1.0),
                    others_cpus: (busy / tck - server_secs - client).max(0.0) / secs,
                };
                println!(
                    "round {} {:>7} B x {:>3} sessions {:?}: {:>8.0} msg/s, {:.3} ms CPU/msg (client {:.3}, machine idle {:.0}%, others {:.2} CPUs), {:.0} B written/msg ({:.0} MB/s), device {:.0} B/msg{}",
                    round + 1,
                    size,
                    sessions,
                    target,
                    s.msgs_per_s,
                    s.cpu_ms_per_msg,
                    s.client_cpu_ms_per_msg,
                    s.idle * 100.0,
                    s.others_cpus,
                    s.written_per_msg,
                    s.written_mb_per_s(),
                    s.device_per_msg,
                    s.commit
                        .map(|(b, ms)| format!(", {b:.1} msg/commit, {ms:.2} ms/commit"))
                        .unwrap_or_default()
                );
                let commit = s.commit;
                samples.push(s);
                // Right after the worker's run, so that both see the disk in nearly the
                // same state (it moves from minute to minute on this VM).
                if target == Target::Worker && size >= PROBE_MIN_PAYLOAD {
                    probes.push(probe_like_worker(&tmp.0, &dev, ci, round, commit)?);
                }
            }
        }
    }
    drop(worker);
    drop(postfix);
    let page = report::page(&samples, &probes, opts.rounds, &dev.name);
    print!("{page}");
    let path = cmd::root().join("docs/benchmarks-mta.md");
    report::write(&path, &page)?;
    println!("wrote {}", path.display());
    let docs = cmd::root().join("docs");
    crate::bench_report::write_mta_ingest_chart(&docs, &docs.join("bench"))?;
    Ok(())
}

/// The probe copies the worker's write pattern of the run just before it: its record size
/// and its mean batch per fdatasync. Only where bandwidth can be the limit: with 2 KiB
/// records it would measure the flush rate, which on this VM swung between about 460 and
/// 3200 flushes/s within a minute in manual runs, so it would say little about a run a
/// few seconds away.
fn probe_like_worker(
    dir: &Path,
    dev: &disk::Device,
    case: usize,
    round: usize,
    commit: Option<(f64, f64)>,
) -> Result<ProbeSample> {
    let (size, sessions, _) = CASES[case];
    let batch = commit.map_or(1, |(b, _)| b.round().max(1.0) as usize);
    let record = size + RECORD_OVERHEAD;
    disk::settle(dir)?;
    let r = disk::probe(dir, dev, record, batch)?;
    let p = ProbeSample {
        case,
        round,
        record,
        batch,
        r,
    };
    println!(
        "round {} {:>7} B x {:>3} sessions disk probe ({} records of {} B per fdatasync): {:.0} MB/s, {:.0} flush/s, ceiling {:.0} msg/s, device {:.2}x written",
        round + 1,
        size,
        sessions,
        batch,
        record,
        r.mb_per_s(),
        r.flushes as f64 / r.secs,
        p.msgs_per_s(),
        r.device_bytes as f64 / r.bytes as f64
    );
    Ok(p)
}
