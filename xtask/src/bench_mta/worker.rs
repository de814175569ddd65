//! The `mta-worker` side of `bench mta-ingest`: the release binary started with a
//! spool in the benchmark's temp dir, and what its admin endpoint says (queue depth, to
//! count what was really queued; the group-commit histograms, to know how large the
//! writes it issued were). `Drop` kills the process however the run ends.

use super::{free_port, wait_port};
use crate::cmd;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Our own child, killed by PID.
pub struct WorkerProc(pub Child);

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

pub fn worker_depth(admin: SocketAddr) -> Result<u64> {
    let body = http_get(admin, "/status")?;
    let v = body
        .split("\"queue_depth\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .context("no queue_depth in /status")?;
    Ok(v)
}

/// Cumulative group-commit counters from `/metrics`.
#[derive(Clone, Copy, Default, Debug)]
pub struct CommitStats {
    /// Group commits (one fdatasync each).
    pub commits: f64,
    /// Messages they carried.
    pub messages: f64,
    /// Seconds spent writing and flushing.
    pub seconds: f64,
}

impl CommitStats {
    pub fn since(self, before: Self) -> Self {
        Self {
            commits: self.commits - before.commits,
            messages: self.messages - before.messages,
            seconds: self.seconds - before.seconds,
        }
    }
}

pub fn commit_stats(admin: SocketAddr) -> Result<CommitStats> {
    let body = http_get(admin, "/metrics")?;
    let get = |name: &str| -> Result<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in /metrics"))
    };
    Ok(CommitStats {
        commits: get("mta_spool_commit_batch_size_count")?,
        messages: get("mta_spool_commit_batch_size_sum")?,
        seconds: get("mta_spool_commit_seconds_sum")?,
    })
}

pub fn start_worker(dir: &Path) -> Result<(WorkerProc, SocketAddr, SocketAddr)> {
    let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let cfg = dir.join("worker.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"bench.test\"\n[spool]\ndir = \"{}\"\n[relay]\nnetworks = [\"127.0.0.0/8\"]\n[limits]\nmax_connections = 2000\nmax_connections_per_ip = 2000\n[[listener]]\nrole = \"relay\"\naddresses = [\"{smtp}\"]\n[admin]\nlisten = \"{admin}\"\n[log]\nlevel = \"warn\"\n",
            dir.join("worker-spool").display()
        ),
    )?;
    let bin = cmd::root().join("target/release/mta-worker");
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .spawn()?;
    let p = WorkerProc(child);
    wait_port(smtp)?;
    Ok((p, smtp, admin))
}
