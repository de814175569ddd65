//! `cargo xtask bench mta-ingest`: inbound throughput of `mta-worker` against a stock
//! Postfix on the same machine, in the same run, both durable (fsync before 250).
//!
//! Postfix runs as a private instance (own config and queue directories in a temp dir,
//! started with `postfix -c DIR`, loopback port, mail put on hold so it stays queued and
//! is not delivered, like the worker's spool); the system Postfix is never touched.
//! `smtp-source` drives both with the same parameters in interleaved rounds
//! (worker, Postfix, Postfix, worker, ...) so that machine noise hits both alike.
//! Results go to stdout and `docs/benchmarks-mta.md`.

use crate::cmd;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hard bound on one smtp-source run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Options {
    pub rounds: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { rounds: 3 }
    }
}

/// One load shape: (message payload bytes, concurrent sessions, messages).
const CASES: [(usize, usize, usize); 4] = [
    (2048, 20, 6000),
    (2048, 200, 12000),
    (102_400, 20, 1500),
    (102_400, 200, 3000),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Worker,
    Postfix,
}

struct Sample {
    target: Target,
    case: usize,
    round: usize,
    msgs_per_s: f64,
    cpu_ms_per_msg: f64,
}

/// Removes the benchmark's temp dir however the run ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the worker (our own child, by PID) however the run ends.
struct WorkerProc(Child);

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the private Postfix instance however the run ends.
struct PostfixInstance {
    config_dir: PathBuf,
    queue_dir: PathBuf,
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl PostfixInstance {
    fn master_pid(&self) -> Result<i32> {
        let s = std::fs::read_to_string(self.queue_dir.join("pid/master.pid"))?;
        Ok(s.trim().parse()?)
    }

    fn held(&self) -> usize {
        count_files(&self.queue_dir.join("hold"))
    }

    fn purge(&self) -> Result<()> {
        let st = Command::new("postsuper")
            .arg("-c")
            .arg(&self.config_dir)
            .args(["-d", "ALL"])
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("postsuper -d ALL failed");
        }
        Ok(())
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
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

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// (ppid, utime+stime, cutime+cstime) in clock ticks from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(i32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split(' ').collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((f.get(1)?.parse().ok()?, n(11)? + n(12)?, n(13)? + n(14)?))
}

/// CPU ticks of a process tree root: itself, its reaped children, its live children.
fn tree_ticks(root: i32) -> u64 {
    let mut total = proc_stat(root)
        .map(|(_, own, reaped)| own + reaped)
        .unwrap_or(0);
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((ppid, own, _)) = proc_stat(pid) {
                if ppid == root {
                    total += own;
                }
            }
        }
    }
    total
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

fn worker_depth(admin: SocketAddr) -> Result<u64> {
    let body = http_get(admin, "/status")?;
    let v = body
        .split("\"queue_depth\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .context("no queue_depth in /status")?;
    Ok(v)
}

fn start_worker(dir: &Path) -> Result<(WorkerProc, SocketAddr, SocketAddr)> {
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

fn start_postfix(dir: &Path) -> Result<(PostfixInstance, SocketAddr)> {
    let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let etc = dir.join("postfix-etc");
    let queue = dir.join("postfix-queue");
    let data = dir.join("postfix-data");
    for d in [&etc, &queue, &data] {
        std::fs::create_dir_all(d)?;
    }
    let st = Command::new("chown").arg("postfix").arg(&data).status()?;
    if !st.success() {
        bail!("chown postfix {} failed", data.display());
    }
    // master.cf: the stock services, chroot off (the queue dir is private), SMTP on our port.
    let stock = std::fs::read_to_string("/etc/postfix/master.cf")
        .context("reading /etc/postfix/master.cf")?;
    let mut master = String::new();
    for line in stock.lines() {
        if line.starts_with('#') || line.starts_with(char::is_whitespace) || line.is_empty() {
            continue;
        }
        let mut f: Vec<String> = line.split_whitespace().map(String::from).collect();
        if f.len() < 8 || f[7] == "pipe" {
            continue;
        }
        if f[0] == "smtp" && f[1] == "inet" {
            f[0] = smtp.to_string();
        }
        if f[4] == "y" {
            f[4] = "n".into();
        }
        master.push_str(&f.join(" "));
        master.push('\n');
    }
    std::fs::write(etc.join("master.cf"), master)?;
    let d = dir.display();
    std::fs::write(
        etc.join("main.cf"),
        format!(
            "compatibility_level = 3.6
queue_directory = {q}
data_directory = {dd}
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject
# HOLD: accepted durably into the queue, then left there (the worker does not deliver either).
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
default_transport = discard
relay_transport = discard
local_transport = discard
default_process_limit = 400
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
message_size_limit = 10240000
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
",
            q = queue.display(),
            dd = data.display(),
        ),
    )?;
    let inst = PostfixInstance {
        config_dir: etc.clone(),
        queue_dir: queue,
    };
    for action in ["check", "start"] {
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg(action)
            .output()?;
        if !out.status.success() {
            bail!(
                "postfix -c {} {action}: {}",
                etc.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    wait_port(smtp)?;
    Ok((inst, smtp))
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
    let (worker, w_addr, w_admin) = start_worker(&tmp.0)?;
    let (postfix, p_addr) = start_postfix(&tmp.0)?;
    let w_pid = worker.0.id() as i32;
    let p_pid = postfix.master_pid()?;
    let tck = clk_tck();
    // Warm-up, untimed: the release build just dirtied a lot of page cache, and both
    // servers' first messages pay for process start-up and directory creation.
    let _ = Command::new("sync").status();
    for addr in [w_addr, p_addr] {
        smtp_source(addr, 2048, 20, 1000)?;
    }
    std::thread::sleep(Duration::from_secs(1));
    postfix.purge()?;
    let mut samples = Vec::new();
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
                let depth0 = if target == Target::Worker {
                    worker_depth(w_admin)?
                } else {
                    0
                };
                let cpu0 = tree_ticks(pid);
                let secs = smtp_source(addr, size, sessions, messages)?;
                let cpu = (tree_ticks(pid).saturating_sub(cpu0)) as f64 / tck;
                // Count what really got queued, not what the client believes it sent.
                let accepted = match target {
                    Target::Worker => (worker_depth(w_admin)? - depth0) as usize,
                    Target::Postfix => {
                        let t0 = Instant::now();
                        while postfix.held() < messages && t0.elapsed() < Duration::from_secs(10) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        let n = postfix.held();
                        postfix.purge()?;
                        n
                    }
                };
                if accepted != messages {
                    bail!("{target:?}: {accepted} of {messages} messages queued");
                }
                let s = Sample {
                    target,
                    case: ci,
                    round,
                    msgs_per_s: messages as f64 / secs,
                    cpu_ms_per_msg: cpu * 1000.0 / messages as f64,
                };
                println!(
                    "round {} {:>7} B x {:>3} sessions {:?}: {:>8.0} msg/s, {:.3} ms CPU/msg",
                    round + 1,
                    size,
                    sessions,
                    target,
                    s.msgs_per_s,
                    s.cpu_ms_per_msg
                );
                samples.push(s);
            }
        }
    }
    drop(worker);
    drop(postfix);
    let report = report(&samples, opts.rounds);
    print!("{report}");
    let path = cmd::root().join("docs/benchmarks-mta.md");
    std::fs::write(&path, report)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn report(samples: &[Sample], rounds: usize) -> String {
    let pick = |t: Target, c: usize, f: fn(&Sample) -> f64| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.target == t && s.case == c)
            .map(f)
            .collect()
    };
    let mut o = String::new();
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_default();
    let pf = cmd::output("postconf", &["-d", "mail_version"]).unwrap_or_default();
    let _ = writeln!(
        o,
        "# mta-worker inbound benchmark (`cargo xtask bench mta-ingest`)\n"
    );
    let _ = writeln!(
        o,
        "Machine: {} CPUs, kernel {}, {}. Same machine, same run, {rounds} interleaved rounds;\nmedian per cell, ratio = median of the per-round ratios. Both sides durable (the worker's\ngroup commit, Postfix's fsync of each queue file) and both keep the mail queued (Postfix\nputs it on hold). Driver: `smtp-source -d -s SESSIONS -m MESSAGES -l SIZE` over loopback.\nCPU = the server's own CPU time (Postfix: master and all its children) per accepted message.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel.trim(),
        pf.trim()
    );
    let _ = writeln!(o, "| payload | sessions | messages | mta-worker msg/s | Postfix msg/s | ratio | worker CPU ms/msg | Postfix CPU ms/msg |");
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (ci, &(size, sessions, messages)) in CASES.iter().enumerate() {
        let w = pick(Target::Worker, ci, |s| s.msgs_per_s);
        let p = pick(Target::Postfix, ci, |s| s.msgs_per_s);
        let ratios: Vec<f64> = (0..rounds)
            .filter_map(|r| {
                let get = |t| {
                    samples
                        .iter()
                        .find(|s| s.target == t && s.case == ci && s.round == r)
                        .map(|s| s.msgs_per_s)
                };
                Some(get(Target::Worker)? / get(Target::Postfix)?)
            })
            .collect();
        let _ = writeln!(
            o,
            "| {} KiB | {sessions} | {messages} | {:.0} | {:.0} | {:.1}x | {:.3} | {:.3} |",
            size / 1024,
            median(w),
            median(p),
            median(ratios),
            median(pick(Target::Worker, ci, |s| s.cpu_ms_per_msg)),
            median(pick(Target::Postfix, ci, |s| s.cpu_ms_per_msg)),
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        o,
        "\nLoad average when the run ended: {} (other jobs share this machine; see every round below).\n\n\
## Reading the numbers\n\n\
- Postfix pays one fsync per queue file in each cleanup process. The worker appends all\n  \
messages that arrive during a flush to its segment file in the next group commit: one\n  \
fdatasync per batch whatever its size (`mta_spool_commit_batch_size` in `/metrics`).\n\
- With 100 KiB messages both sides move hundreds of MB/s to disk; the spread across\n  \
rounds there follows the disk and the other jobs on the machine more than the servers.\n\
- CPU per message is where the designs differ most: the worker does the whole SMTP\n  \
transaction in one process with no queue-manager hand-offs and no per-message inode.\n\
- On this 2-CPU machine smtp-source, the server and its disk share the same cores, and\n  \
other jobs run alongside (see the load average and the spread across rounds).",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(o, "\n## Every round\n\n| round | payload | sessions | server | msg/s | CPU ms/msg |\n|---:|---:|---:|---|---:|---:|");
    for s in samples {
        let (size, sessions, _) = CASES[s.case];
        let _ = writeln!(
            o,
            "| {} | {} KiB | {sessions} | {:?} | {:.0} | {:.3} |",
            s.round + 1,
            size / 1024,
            s.target,
            s.msgs_per_s,
            s.cpu_ms_per_msg
        );
    }
    o
}
