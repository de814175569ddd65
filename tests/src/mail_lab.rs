//! The whole system in the lab: DNS for the `.test` zone, an smtp-sink per "ISP", an
//! `mta-worker` per backend (the shipped `mta-worker/examples/lab*.toml`), and the XDP
//! tier in front. Used by `cargo xtask demo` and the end-to-end delivery tests.

use crate::netns::Netns;
use crate::proc::{wait_until, ChildGuard};
use crate::topo::{Lab, ISP_NAMES};
use crate::xdp_tier::{bin, XdpTier};
use crate::{dns, sink};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Worker {
    pub guard: ChildGuard,
    pub config: PathBuf,
    pub spool: PathBuf,
    pub log: PathBuf,
}

pub struct MailLab {
    pub dns: ChildGuard,
    pub isps: Vec<sink::Sink>,
    pub workers: Vec<Worker>,
    pub tier: XdpTier,
    worker_bin: PathBuf,
    kept: bool,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mta-worker/examples")
}

/// Rewrites `key = ...` lines (the first word before `=`) to `key = "value"`.
fn rewrite(template: &str, subst: &[(&str, String)]) -> String {
    template
        .lines()
        .map(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            match subst.iter().find(|(k, _)| *k == key) {
                Some((k, v)) if l.contains('=') => format!("{k} = \"{v}\""),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl MailLab {
    /// Starts DNS, the ISP sinks, the workers, then the XDP tier (which waits until every
    /// backend answers its SMTP health check).
    pub fn start(lab: &Lab, bins: &Path, work: &Path) -> Result<MailLab> {
        std::fs::create_dir_all(work)?;
        let domains = dns::lab_domains(lab);
        let dns = dns::start(
            &lab.dns.ns,
            lab.dns.addr4(),
            &domains,
            &work.join("dns.log"),
        )?;
        let isps = lab
            .isps
            .iter()
            .zip(ISP_NAMES)
            .map(|(h, name)| {
                sink::start(
                    &h.ns,
                    &format!("{}:25", h.addr4()),
                    &work.join(format!("isp-{name}")),
                    &[],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let worker_bin = bin(bins, "mta-worker")?;
        let mut workers = Vec::new();
        let main_t = std::fs::read_to_string(examples().join("lab.toml"))?;
        let out_t = std::fs::read_to_string(examples().join("lab-outbound.toml"))?;
        let token = work.join("worker-admin.token");
        std::fs::write(&token, "lab-worker-token")?;
        for (i, m) in lab.mtas.iter().enumerate() {
            let dir = work.join(format!("mta{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let outbound = dir.join("outbound.toml");
            std::fs::write(
                &outbound,
                rewrite(
                    &out_t,
                    &[("log_file", dir.join("delivery.jsonl").display().to_string())],
                ),
            )?;
            let config = dir.join("worker.toml");
            std::fs::write(
                &config,
                rewrite(
                    &main_t,
                    &[
                        ("dir", dir.join("spool").display().to_string()),
                        (
                            "reception_log",
                            dir.join("reception.jsonl").display().to_string(),
                        ),
                        ("file", outbound.display().to_string()),
                        ("token_file", token.display().to_string()),
                    ],
                ),
            )?;
            let log = dir.join("worker.log");
            let guard = spawn_worker(&worker_bin, &m.ns, &config, &log)?;
            workers.push(Worker {
                guard,
                config,
                spool: dir.join("spool"),
                log,
            });
        }
        for (w, m) in workers.iter().zip(&lab.mtas) {
            wait_listening(&m.ns, &w.log)?;
        }
        let tier = XdpTier::start(lab, bins, &work.join("tier"))?;
        Ok(MailLab {
            dns,
            isps,
            workers,
            tier,
            worker_bin,
            kept: false,
        })
    }

    /// SIGKILLs backend `i`'s worker (its spool stays).
    pub fn kill_worker(&mut self, i: usize) {
        self.workers[i].guard.kill();
    }

    /// Starts backend `i`'s worker again on the same spool.
    pub fn restart_worker(&mut self, lab: &Lab, i: usize) -> Result<()> {
        let (config, log) = (self.workers[i].config.clone(), self.workers[i].log.clone());
        self.workers[i].guard = spawn_worker(&self.worker_bin, &lab.mtas[i].ns, &config, &log)?;
        wait_listening(&lab.mtas[i].ns, &log)
    }

    /// Messages each ISP has received so far.
    pub fn delivered(&self) -> Vec<Vec<sink::Received>> {
        self.isps
            .iter()
            .map(|s| sink::read_dumps(&s.dir).unwrap_or_default())
            .collect()
    }

    /// `GET /status` of backend `i`'s worker (queue depth, active deliveries...).
    pub fn worker_status(&self, lab: &Lab, i: usize) -> Result<serde_json::Value> {
        let out = lab.mtas[i].ns.exec_output(
            "curl",
            &["-s", "--max-time", "2", "http://127.0.0.1:8025/status"],
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

fn spawn_worker(bin: &Path, ns: &Netns, config: &Path, log: &Path) -> Result<ChildGuard> {
    let mut c = ns.command(bin.to_str().context("utf-8 path")?);
    c.arg("run").arg("--config").arg(config);
    ChildGuard::spawn("mta-worker", c, Some(log))
}

/// Waits until the worker in `ns` greets on port 25.
fn wait_listening(ns: &Netns, log: &Path) -> Result<()> {
    let ok = wait_until(Duration::from_secs(15), || {
        ns.exec_output(
            "bash",
            &["-c", "exec 3<>/dev/tcp/127.0.0.1/25 && head -c3 <&3"],
        )
        .map(|o| o.stdout.starts_with(b"220"))
        .unwrap_or(false)
    });
    if !ok {
        bail!(
            "mta-worker in {} did not start listening:\n{}",
            ns.name(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    Ok(())
}

impl MailLab {
    /// Leaves everything running after the guard drops (`xtask lab up`).
    pub fn keep(&mut self) {
        self.kept = true;
        self.dns.release();
        for s in &mut self.isps {
            s.guard.release();
        }
        for w in &mut self.workers {
            w.guard.release();
        }
        self.tier.keep();
    }
}

impl Drop for MailLab {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for w in &mut self.workers {
            w.guard.stop(Duration::from_secs(3));
        }
    }
}
