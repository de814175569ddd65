//! The XDP tier of the lab: the `balancer` daemon on each balancer host (with the shipped
//! `balancer/examples/lab.toml`), the decap program on each backend, and the pass-through
//! program that the router-side veth peers need for `XDP_TX` frames to arrive.
//! Everything is stopped, detached and unpinned when the guard drops.

use crate::netns::Netns;
use crate::proc::{wait_until, ChildGuard};
use crate::topo::Lab;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cargo put the workspace's binaries for this build profile: next to the running
/// test or tool (`target/<profile>/deps/x` → `target/<profile>/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A workspace binary; fails with a hint when it has not been built.
pub fn bin(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} is missing: build it first (`cargo build -p {name}`; `cargo xtask test` does)",
            p.display()
        );
    }
    Ok(p)
}

/// A bpffs outside /sys: `ip netns exec` mounts a fresh sysfs over /sys for the
/// namespace, hiding /sys/fs/bpf from the daemons it starts. /run stays shared.
pub const BPFFS: &str = "/run/smtp-lb-bpf";

/// Mounts a bpffs at `BPFFS` unless one is there already.
pub fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(BPFFS))
    {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS)?;
    crate::netns::run_checked("mount", &["-t", "bpf", "bpf", BPFFS])
}

pub struct Balancer {
    pub guard: ChildGuard,
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    pub ns_name: String,
    pub log: PathBuf,
}

pub struct XdpTier {
    pub balancers: Vec<Balancer>,
    pub decaps: Vec<ChildGuard>,
    pub passes: Vec<ChildGuard>,
    pub token: String,
    balancer_bin: PathBuf,
    kept: bool,
}

/// The shipped lab config with the per-host paths replaced.
fn host_config(template: &str, pin_dir: &Path, id_file: &Path, token_file: &Path) -> String {
    template
        .lines()
        .map(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            match key {
                "pin_dir" => format!("pin_dir = \"{}\"", pin_dir.display()),
                "id_file" => format!("id_file = \"{}\"", id_file.display()),
                "token_file" => format!("token_file = \"{}\"", token_file.display()),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn lab_config_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../balancer/examples/lab.toml")
}

impl XdpTier {
    /// Starts the whole tier and waits until every balancer's API reports all backends up.
    pub fn start(lab: &Lab, bins: &Path, work: &Path) -> Result<XdpTier> {
        let balancer_bin = bin(bins, "balancer")?;
        let bb = balancer_bin.to_str().context("utf-8 path")?.to_string();
        std::fs::create_dir_all(work)?;
        let token = format!("lab-token-{}", std::process::id());
        let token_file = work.join("api.token");
        std::fs::write(&token_file, &token)?;
        let template = std::fs::read_to_string(lab_config_template())?;
        ensure_bpffs()?;

        let mut tier = XdpTier {
            balancers: Vec::new(),
            decaps: Vec::new(),
            passes: Vec::new(),
            token,
            balancer_bin: balancer_bin.clone(),
            kept: false,
        };
        for m in &lab.mtas {
            let mut c = m.ns.command(&bb);
            c.args([
                "decap",
                "--iface",
                m.ifname,
                "--local",
                &m.addr4().to_string(),
                "--local",
                &m.addr6().to_string(),
            ]);
            tier.decaps.push(ChildGuard::spawn(
                "decap",
                c,
                Some(&work.join(format!("decap-{}.log", m.ns.name()))),
            )?);
        }
        for lb in &lab.lbs {
            let mut c = lab.router.command(&bb);
            c.args(["decap", "--iface", &lb.router_if]);
            tier.passes.push(ChildGuard::spawn(
                "pass",
                c,
                Some(&work.join(format!("pass-{}.log", lb.router_if))),
            )?);
        }
        for (i, lb) in lab.lbs.iter().enumerate() {
            // `nexthop_mac = "auto"` reads the router's MAC from the neighbour table.
            lb.ns.exec(
                "ping",
                &["-c1", "-W2", &crate::topo::v4(lb.link, 1).to_string()],
            )?;
            let pin_dir = PathBuf::from(format!("{BPFFS}/{}-lb{}", lab.prefix, i + 1));
            let _ = std::fs::remove_dir_all(&pin_dir);
            let cfg = work.join(format!("lb{}.toml", i + 1));
            std::fs::write(
                &cfg,
                host_config(
                    &template,
                    &pin_dir,
                    &work.join(format!("lb{}-ids.json", i + 1)),
                    &token_file,
                ),
            )?;
            let log = work.join(format!("lb{}.log", i + 1));
            let guard = tier.spawn_daemon(&lb.ns, &cfg, &log)?;
            tier.balancers.push(Balancer {
                guard,
                config: cfg,
                pin_dir,
                ns_name: lb.ns.name().to_string(),
                log,
            });
        }
        for (i, lb) in lab.lbs.iter().enumerate() {
            tier.wait_healthy(&lb.ns, i, Duration::from_secs(20))?;
        }
        Ok(tier)
    }

    fn spawn_daemon(&self, ns: &Netns, cfg: &Path, log: &Path) -> Result<ChildGuard> {
        let mut c = ns.command(self.balancer_bin.to_str().context("utf-8 path")?);
        c.arg("run").arg("--config").arg(cfg);
        ChildGuard::spawn("balancer", c, Some(log))
    }

    /// Starts balancer `i`'s daemon again (after a kill): it adopts the pinned data plane.
    pub fn restart(&mut self, lab: &Lab, i: usize) -> Result<()> {
        let b = &self.balancers[i];
        let guard = self.spawn_daemon(&lab.lbs[i].ns, &b.config.clone(), &b.log.clone())?;
        self.balancers[i].guard = guard;
        self.wait_healthy(&lab.lbs[i].ns, i, Duration::from_secs(20))
    }

    /// Runs a `balancer` client command against balancer `i` (status, drain, weight...).
    pub fn ctl(&self, ns: &Netns, i: usize, args: &[&str]) -> Result<String> {
        let cfg = self.balancers[i].config.to_str().context("utf-8 path")?;
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--config", cfg]);
        let out = ns.exec_output(self.balancer_bin.to_str().context("utf-8 path")?, &full)?;
        if !out.status.success() {
            bail!(
                "balancer {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `GET /status` of balancer `i` as JSON.
    pub fn status(&self, ns: &Netns, i: usize) -> Result<serde_json::Value> {
        let s = self.ctl(ns, i, &["status", "--json"])?;
        Ok(serde_json::from_str(&s)?)
    }

    /// `GET /metrics` of balancer `i` (Prometheus text).
    pub fn metrics(&self, ns: &Netns) -> Result<String> {
        let out = ns.exec_output("curl", &["-s", "http://127.0.0.1:9110/metrics"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until balancer `i` reports every backend healthy.
    pub fn wait_healthy(&self, ns: &Netns, i: usize, timeout: Duration) -> Result<()> {
        let mut last = String::new();
        let ok = wait_until(timeout, || match self.status(ns, i) {
            Ok(s) => {
                last = s.to_string();
                all_backends_up(&s)
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        });
        if !ok {
            let log = std::fs::read_to_string(&self.balancers[i].log).unwrap_or_default();
            bail!(
                "balancer {} not healthy within {timeout:?}: {last}\nlog:\n{log}",
                i + 1
            );
        }
        Ok(())
    }
}

/// True when the status JSON lists at least one backend and all of them are up.
pub fn all_backends_up(status: &serde_json::Value) -> bool {
    let mut n = 0;
    let mut up = 0;
    for v in status["vips"].as_array().into_iter().flatten() {
        for b in v["backends"].as_array().into_iter().flatten() {
            n += 1;
            if b["health"] == "up" || b["up"] == true {
                up += 1;
            }
        }
    }
    n > 0 && n == up
}

impl XdpTier {
    /// Leaves every daemon and program running after the guard drops (`xtask lab up`;
    /// `lab down` removes them with the namespaces and pins).
    pub fn keep(&mut self) {
        self.kept = true;
        for b in &mut self.balancers {
            b.guard.release();
        }
        for g in self.decaps.iter_mut().chain(self.passes.iter_mut()) {
            g.release();
        }
    }
}

impl Drop for XdpTier {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for b in &mut self.balancers {
            b.guard.stop(Duration::from_secs(2));
            // The program, link and maps outlive the daemon by design (pinned): remove them.
            let _ = std::process::Command::new(&self.balancer_bin)
                .args(["detach", "--config"])
                .arg(&b.config)
                .output();
            let _ = std::fs::remove_dir_all(&b.pin_dir);
        }
        for g in self.decaps.iter_mut().chain(self.passes.iter_mut()) {
            g.stop(Duration::from_secs(2));
        }
    }
}
