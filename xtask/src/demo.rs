//! `cargo xtask demo`: the whole system on this host, the way its users first meet it.
//! Builds, brings up the lab (two XDP balancers behind ECMP, three mta-workers, three
//! "ISPs", DNS), sends a few thousand messages through the VIP with a live summary, kills a
//! backend, drains another, waits until every accepted message is delivered, reports, and
//! tears everything down (also on failure).

use crate::{cmd, setup};
use anyhow::{Context, Result};
use e2e::{mail_lab::MailLab, sink::message_id, topo};
use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "sdemo";
const RCPTS: &str = "alice@gmail.test,bob@outlook.test,carol@yahoo.test";

struct Demo<'a> {
    lab: &'a topo::Lab,
    ml: MailLab,
    started: Instant,
    bin: std::path::PathBuf,
    work: std::path::PathBuf,
    /// (message id, recipient) of every message that got a 250.
    accepted: Vec<(String, String)>,
    failed_sessions: u64,
}

pub fn run() -> Result<()> {
    anyhow::ensure!(
        cmd::is_root(),
        "the demo needs root (network namespaces, XDP): run `sudo -E cargo xtask demo`"
    );
    setup::ensure()?;
    println!("demo: building the balancer, the worker and the load generator ...");
    let bin = cmd::build_lab_binaries()?;
    topo::down(PREFIX);
    crate::interrupt::cleanup_on_signal(PREFIX);
    let work = std::env::temp_dir().join(format!("smtp-lb-demo-{}", std::process::id()));
    let _cleanup = Cleanup(work.clone());
    println!(
        "demo: bringing up the lab: client, router (ECMP), 2 balancers, 3 backends, 3 ISPs, DNS"
    );
    let lab = topo::Lab::up(PREFIX, topo::Shape::default())?;
    let ml = MailLab::start(&lab, &bin, &work)
        .context("starting DNS, ISP sinks, workers and balancers")?;
    let mut d = Demo {
        lab: &lab,
        ml,
        started: Instant::now(),
        bin,
        work: work.clone(),
        accepted: Vec::new(),
        failed_sessions: 0,
    };
    println!(
        "demo: every backend is healthy on both balancers; sending through VIP {} ...\n",
        topo::VIP4
    );

    println!("== 1. steady state: 1200 messages, 20 concurrent sessions");
    let c = d.send(1200, 20, "steady")?;
    d.follow("steady", c, |_| Ok(()))?;

    println!("\n== 2. backend mta2 is killed (kill -9) while 900 messages are being sent");
    let c = d.send(900, 10, "kill")?;
    let mut killed = false;
    d.follow("kill", c, |d| {
        if !killed {
            std::thread::sleep(Duration::from_millis(300));
            d.ml.kill_worker(1);
            killed = true;
            println!(
                "   ** mta2's worker killed: the balancers' health checks take it out of the ring"
            );
        }
        Ok(())
    })?;
    println!("   mta2's worker restarts on its spool: what it accepted before dying is delivered");
    d.ml.restart_worker(d.lab, 1)?;
    for i in 0..d.lab.lbs.len() {
        d.ml.tier
            .wait_healthy(&d.lab.lbs[i].ns, i, Duration::from_secs(20))?;
    }

    println!("\n== 3. drain: mta3 gets no new sessions (its open ones finish); 600 messages");
    for i in 0..d.lab.lbs.len() {
        d.ml.tier.ctl(&d.lab.lbs[i].ns, i, &["drain", "mta3"])?;
    }
    let before = d.sessions_per_backend();
    let c = d.send(600, 20, "drain")?;
    d.follow("drain", c, |_| Ok(()))?;
    let after = d.sessions_per_backend();
    println!(
        "   new sessions during the drain: mta1 +{} mta2 +{} mta3 +{}",
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2]
    );
    for i in 0..d.lab.lbs.len() {
        d.ml.tier.ctl(&d.lab.lbs[i].ns, i, &["undrain", "mta3"])?;
    }

    println!("\n== 4. waiting until every accepted message is delivered");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let delivered = d.delivered_ids();
        let missing = d
            .accepted
            .iter()
            .filter(|(id, _)| !delivered.contains_key(id))
            .count();
        d.summary_line(&format!("{missing} still queued"));
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!();
    d.report()
}

impl Demo<'_> {
    fn send(&self, n: usize, conc: usize, run_id: &str) -> Result<Child> {
        // The report can be larger than a pipe holds: it goes to a file, read at the end.
        let out = std::fs::File::create(self.report_path(run_id))?;
        self.lab
            .client
            .ns
            .command(self.bin.join("smtp-load").to_str().context("utf-8 path")?)
            .args(["--server", &format!("{}:25", topo::VIP4), "--to", RCPTS])
            .args([
                "--sessions",
                &n.to_string(),
                "--concurrency",
                &conc.to_string(),
            ])
            .args(["--timeout", "5", "--run-id", run_id])
            .stdout(Stdio::from(out))
            .spawn()
            .context("start smtp-load")
    }

    fn report_path(&self, run_id: &str) -> std::path::PathBuf {
        self.work.join(format!("load-{run_id}.json"))
    }

    /// Prints a live summary while `child` runs, calling `tick` on each round.
    fn follow(
        &mut self,
        run_id: &str,
        child: Child,
        mut tick: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let mut child = child;
        loop {
            tick(self)?;
            self.summary_line("");
            if child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        child.wait()?;
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.report_path(run_id))?)
                .context("smtp-load report")?;
        for m in r["messages"].as_array().into_iter().flatten() {
            if m["accepted"] == true {
                self.accepted.push((
                    m["message_id"].as_str().unwrap_or("").into(),
                    m["recipient"].as_str().unwrap_or("").into(),
                ));
            }
        }
        self.failed_sessions += r["sessions_failed"].as_u64().unwrap_or(0);
        println!(
            "\n   batch: {} accepted, {} sessions failed, {:.0} sessions/s, p50 {:.1} ms, p99 {:.1} ms",
            r["messages_accepted"], r["sessions_failed"], r["sessions_per_s"].as_f64().unwrap_or(0.0),
            r["session_ms_p50"].as_f64().unwrap_or(0.0), r["session_ms_p99"].as_f64().unwrap_or(0.0)
        );
        Ok(())
    }

    /// New sessions each backend got, summed over both balancers.
    fn sessions_per_backend(&self) -> Vec<u64> {
        let mut v = vec![0u64; 3];
        for (i, lb) in self.lab.lbs.iter().enumerate() {
            if let Ok(st) = self.ml.tier.status(&lb.ns, i) {
                for (j, b) in st["vips"][0]["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .take(3)
                {
                    v[j] += b["new_flows"].as_u64().unwrap_or(0);
                }
            }
        }
        v
    }

    fn health(&self) -> Vec<String> {
        self.ml
            .tier
            .status(&self.lab.lbs[0].ns, 0)
            .map(|st| {
                st["vips"][0]["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let h = b["health"].as_str().unwrap_or("?");
                        if b["drained"] == true {
                            "drained".to_string()
                        } else {
                            h.to_string()
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn summary_line(&self, extra: &str) {
        let s = self.sessions_per_backend();
        let h = self.health();
        let d: Vec<usize> = self.ml.delivered().iter().map(|v| v.len()).collect();
        let hs = |i: usize| h.get(i).map(String::as_str).unwrap_or("?").to_string();
        print!(
            "\r   [{:5.1}s] sessions: mta1 {:>5} ({:<7}) mta2 {:>5} ({:<7}) mta3 {:>5} ({:<7}) | delivered: gmail {:>5} outlook {:>5} yahoo {:>5} {extra}   ",
            self.started.elapsed().as_secs_f64(),
            s[0], hs(0), s[1], hs(1), s[2], hs(2),
            d.first().unwrap_or(&0), d.get(1).unwrap_or(&0), d.get(2).unwrap_or(&0)
        );
        let _ = std::io::stdout().flush();
    }

    fn delivered_ids(&self) -> HashMap<String, (usize, usize)> {
        let mut m: HashMap<String, (usize, usize)> = HashMap::new();
        for (isp, msgs) in self.ml.delivered().iter().enumerate() {
            for r in msgs {
                m.entry(message_id(r)).or_insert((0, isp)).0 += 1;
            }
        }
        m
    }

    fn report(&self) -> Result<()> {
        let delivered = self.delivered_ids();
        let mut missing = 0;
        let mut dups = 0;
        let mut wrong_isp = 0;
        for (id, rcpt) in &self.accepted {
            match delivered.get(id) {
                None => missing += 1,
                Some(&(n, isp)) => {
                    dups += n - 1;
                    if !rcpt.ends_with(&format!("@{}.test", topo::ISP_NAMES[isp])) {
                        wrong_isp += 1;
                    }
                }
            }
        }
        let s = self.sessions_per_backend();
        let per_isp: Vec<usize> = self.ml.delivered().iter().map(|v| v.len()).collect();
        println!("== report ({:.0} s)", self.started.elapsed().as_secs_f64());
        println!("   messages accepted (250):        {}", self.accepted.len());
        println!(
            "   sessions failed (mostly on mta2 as it died): {}",
            self.failed_sessions
        );
        println!(
            "   delivered exactly once:         {}",
            self.accepted.len() - missing - dups.min(self.accepted.len())
        );
        println!("   not delivered:                  {missing}");
        println!("   duplicates (mid-delivery at the kill): {dups}");
        println!("   delivered to the wrong ISP:     {wrong_isp}");
        println!(
            "   sessions per backend:           mta1 {} / mta2 {} / mta3 {}",
            s[0], s[1], s[2]
        );
        println!(
            "   deliveries per ISP:             gmail {} / outlook {} / yahoo {}",
            per_isp[0], per_isp[1], per_isp[2]
        );
        println!("demo: tearing down the lab");
        anyhow::ensure!(
            missing == 0 && wrong_isp == 0,
            "{missing} accepted messages were not delivered, {wrong_isp} went to the wrong ISP"
        );
        Ok(())
    }
}

/// Removes the lab's namespaces and the work directory, also when the demo fails.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        topo::down(PREFIX);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
