//! Benchmarks behind `cargo xtask bench mta-relay` (ignored: they measure, they do not
//! test; xtask runs each in its own release process and prints the side-by-side table).
//! Each prints one `BENCH {json}` line.
//!
//! * `bench_worker_relay`: smtp-source → mta-worker (inbound server + durable spool +
//!   outbound dispatcher, in this process) → smtp-sink, all on 127.0.0.x.
//! * `bench_postfix_relay` (root): the same smtp-source load through a private stock
//!   Postfix instance (Debian's master.cf, defaults except addresses, relayhost, no
//!   chroot, no TLS) relaying to the same kind of smtp-sink.
//! * `bench_fill_spool` + `bench_queued_rss`: fill a spool, then in a fresh process recover
//!   it and queue everything for a suspended domain; report recovery time and RSS.

use mta_worker::delivery::admin::Target;
use mta_worker::delivery::{Dispatcher, Options};
use mta_worker::shaping::{self, ShapingHandle, SystemClock};
use mta_worker::spool::{Envelope, Spool};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process killed on drop (by its own pid).
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// smtp-sink with `-c`; a thread keeps the last "mesg=" count.
fn smtp_sink(addr: &str) -> (Proc, Arc<AtomicU64>) {
    let mut cmd = Command::new("/usr/sbin/smtp-sink");
    cmd.arg("-c");
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "nobody"]);
    }
    let mut child = cmd
        .args([addr, "1024"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink");
    let mut out = child.stdout.take().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut acc = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            acc.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(last) = acc.rsplit('\r').find(|s| s.contains("mesg=")) {
                if let Some(v) = last
                    .split("mesg=")
                    .nth(1)
                    .and_then(|v| v.trim().parse().ok())
                {
                    c.store(v, Ordering::SeqCst);
                }
            }
            if acc.len() > 1 << 16 {
                acc = acc[acc.len() - 256..].to_string();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    (Proc(child), count)
}

/// The load. `BENCH_REUSE=1` keeps each session open for its messages (`-d`), as
/// applications that pool their SMTP connections do; otherwise every message is a
/// connection of its own, smtp-source's default.
fn smtp_source(target: &str, n: u64, sessions: u64) -> Proc {
    let mut cmd = Command::new("/usr/sbin/smtp-source");
    if std::env::var("BENCH_REUSE").is_ok_and(|v| v == "1") {
        cmd.arg("-d");
    }
    let child = cmd
        .args([
            "-s",
            &sessions.to_string(),
            "-m",
            &n.to_string(),
            "-l",
            "2048",
            "-f",
            "bench@src.test",
            "-t",
            "rcpt@bench.test",
            target,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-source");
    Proc(child)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn outbound_toml(dir: &Path, sink: &str, source_ip: &str) -> PathBuf {
    let p = dir.join("shaping.toml");
    std::fs::write(
        &p,
        format!(
            "log_file = \"{}/delivery.log\"\n\n[dns]\nservers = [\"127.0.0.1:53\"]\n\n[queue]\ntick = \"10ms\"\nready_queue_size = 5000\n\n[transport]\n\"bench.test\" = \"{sink}\"\n\"held.test\" = \"{sink}\"\n\n[defaults]\nmax_connections = 20\nmessages_per_connection = 1000\ntls = \"off\"\nretry = [\"1s\"]\n\n[[pool]]\nname = \"default\"\n[[pool.source]]\nname = \"b1\"\nip = \"{source_ip}\"\nehlo = \"b1.bench.test\"\n",
            dir.display()
        ),
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_worker_relay() {
    let n = env_num("BENCH_MESSAGES", 20_000);
    let sessions = env_num("BENCH_SESSIONS", 20);
    let dir = tempfile::tempdir().unwrap();
    let sink_addr = format!("127.0.0.201:{}", free_port("127.0.0.201"));
    let (_sink, delivered) = smtp_sink(&sink_addr);
    let in_addr = format!("127.0.0.200:{}", free_port("127.0.0.200"));
    let inbound = dir.path().join("worker.toml");
    std::fs::write(
        &inbound,
        format!(
            "hostname = \"worker.bench.test\"\n\n[spool]\ndir = \"{}/spool\"\n\n[limits]\nmax_connections_per_ip = 1000\n\n[relay]\nnetworks = [\"127.0.0.0/8\"]\n\n[[listener]]\nrole = \"relay\"\naddresses = [\"{in_addr}\"]\n\n[admin]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let cfg = mta_worker::config::Config::load(&inbound).unwrap();
    let listeners = mta_worker::server::Listeners::bind(&cfg).await.unwrap();
    let shared = mta_worker::server::build_shared(cfg).unwrap();
    let spool = shared.spool.clone();
    let out_cfg = ShapingHandle::new(
        shaping::load(&outbound_toml(dir.path(), &sink_addr, "127.0.0.202")).unwrap(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = Dispatcher::start(
        Options {
            hostname: "worker.bench.test".into(),
            clock: Arc::new(SystemClock),
        },
        out_cfg,
        Arc::new(spool.clone()),
        stop_rx.clone(),
    )
    .unwrap();
    handle.follow(spool.subscribe());
    let mut srv_stop = stop_rx.clone();
    let server = tokio::spawn(mta_worker::server::run(
        shared,
        listeners,
        async move {
            let _ = srv_stop.wait_for(|v| *v).await;
        },
        Duration::from_secs(5),
    ));
    let t0 = Instant::now();
    let mut src = smtp_source(&in_addr, n, sessions);
    // Done when the load generator has finished (or stalled: no delivery for 10 s) and
    // nothing it got accepted is still queued. The sink's own counter is only a cross-check
    // (smtp-sink buffers it when writing to a pipe).
    let site = format!("smarthost:{}", sink_addr);
    let deadline = t0 + Duration::from_secs(env_num("BENCH_DEADLINE_S", 300));
    let (mut last, mut last_change) = (0u64, Instant::now());
    while Instant::now() < deadline {
        let d = handle.shared.counters.site_total("delivered", &site);
        if d != last {
            (last, last_change) = (d, Instant::now());
        }
        let src_done = src.0.try_wait().ok().flatten().is_some()
            || last_change.elapsed() > Duration::from_secs(10);
        if d >= n || (src_done && handle.depth() == 0 && spool.queue_depth() == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let got = handle.shared.counters.site_total("delivered", &site);
    let sink_count = delivered.load(Ordering::SeqCst);
    let (left_queued, left_spooled) = (handle.depth(), spool.queue_depth());
    if left_queued > 0 {
        eprintln!(
            "still queued: {}",
            serde_json::to_string(&handle.queues()).unwrap()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(dir.path().join("delivery.log")).unwrap();
    let mut rec = std::collections::HashMap::new();
    let mut lat = Vec::new();
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let id = v["queue_id"].as_str().unwrap().to_string();
        let ts = v["ts_ms"].as_u64().unwrap();
        match v["event"].as_str().unwrap() {
            "reception" => {
                rec.insert(id, ts);
            }
            "delivery" => {
                if let Some(r) = rec.get(&id) {
                    lat.push((ts - r) as f64);
                }
            }
            _ => {}
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    println!(
        "BENCH {}",
        serde_json::json!({
            "peer": "mta-worker", "messages": n, "delivered": got, "sessions": sessions,
            "left_queued": left_queued, "left_spooled": left_spooled, "sink_counter": sink_count,
            "seconds": elapsed, "msgs_per_s": got as f64 / elapsed,
            "p50_ms": percentile(&mut lat, 0.5), "p99_ms": percentile(&mut lat, 0.99),
            "latency_samples": lat.len(), "peak_rss_kb": rss_kb("VmHWM:"),
        })
    );
}

/// A private Postfix instance under `dir` (stock settings except addresses and relayhost).
fn postfix_instance(dir: &Path, listen: &str, port: u16, relay: &str) -> PathBuf {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    for d in ["queue", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let main = format!(
        "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {d}\nmail_owner = postfix\nsetgid_group = postdrop\nmyhostname = pfx.bench.test\nmydestination =\ninet_interfaces = {listen}\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\nrelayhost = [{relay_ip}]:{relay_port}\nsmtpd_relay_restrictions = permit_mynetworks, reject\nalias_maps =\nalias_database =\nlocal_recipient_maps =\nsmtp_tls_security_level = none\nsmtpd_tls_security_level = none\nmaillog_file = {dir}/maillog\nmaillog_file_prefixes = {dir}\n",
        q = dir.join("queue").display(),
        d = dir.join("data").display(),
        dir = dir.display(),
        relay_ip = relay.split(':').next().unwrap(),
        relay_port = relay.split(':').nth(1).unwrap(),
    );
    std::fs::write(etc.join("main.cf"), main).unwrap();
    // Debian's master.cf, with the smtpd service on our port and no chroot (the private
    // queue directory has no chroot environment).
    let stock = std::fs::read_to_string("/etc/postfix/master.cf").unwrap_or_default();
    let mut master = String::new();
    for l in stock.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if l.starts_with('#') || l.starts_with(' ') || l.starts_with('\t') || f.len() < 8 {
            master.push_str(l);
            master.push('\n');
            continue;
        }
        let name = if f[0] == "smtp" && f[1] == "inet" {
            port.to_string()
        } else {
            f[0].to_string()
        };
        master.push_str(&format!(
            "{name} {} {} {} n {} {} {}\n",
            f[1],
            f[2],
            f[3],
            f[5],
            f[6],
            f[7..].join(" ")
        ));
    }
    if !master.contains("postlogd") {
        master.push_str("postlog unix-dgram n - n - 1 postlogd\n");
    }
    std::fs::write(etc.join("master.cf"), master).unwrap();
    // Queue directories with Postfix's owners and modes; data_directory owned by postfix.
    let st = Command::new("sh")
        .args([
            "/usr/lib/postfix/sbin/post-install",
            &format!("config_directory={}", etc.display()),
            "meta_directory=/etc/postfix",
            "create-missing",
        ])
        .env("MAIL_CONFIG", &etc)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "post-install");
    let st = Command::new("chown")
        .args(["postfix", dir.join("data").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    etc
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_postfix_relay() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the Postfix peer needs root"
    );
    let n = env_num("BENCH_MESSAGES", 20_000);
    let sessions = env_num("BENCH_SESSIONS", 20);
    let dir = tempfile::Builder::new()
        .prefix("pfxbench")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sink_addr = format!("127.0.0.211:{}", free_port("127.0.0.211"));
    let (_sink, delivered) = smtp_sink(&sink_addr);
    // Postfix only listens on addresses configured on an interface: 127.0.0.1.
    let port = free_port("127.0.0.1");
    let etc = postfix_instance(dir.path(), "127.0.0.1", port, &sink_addr);
    let etc_s = etc.to_str().unwrap().to_string();
    let st = Command::new("/usr/sbin/postfix")
        .args(["-c", &etc_s, "start"])
        .status()
        .unwrap();
    assert!(st.success(), "postfix start");
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("/usr/sbin/postfix")
                .args(["-c", &self.0, "stop"])
                .status();
        }
    }
    let _stop = Stop(etc_s.clone());
    let target = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&target).is_err() {
        assert!(Instant::now() < deadline, "postfix did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    let mut src = smtp_source(&target, n, sessions);
    let maillog = dir.path().join("maillog");
    let sent = || {
        std::fs::read_to_string(&maillog)
            .unwrap_or_default()
            .matches("status=sent")
            .count() as u64
    };
    let deadline = t0 + Duration::from_secs(env_num("BENCH_DEADLINE_S", 600));
    let (mut last, mut last_change) = (0u64, Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let d = sent();
        if d != last {
            (last, last_change) = (d, Instant::now());
        }
        let src_done = src.0.try_wait().ok().flatten().is_some()
            || last_change.elapsed() > Duration::from_secs(10);
        if d >= n {
            break;
        }
        if src_done {
            let q = Command::new("/usr/sbin/postqueue")
                .args(["-c", &etc_s, "-j"])
                .output()
                .unwrap();
            if q.status.success() && q.stdout.is_empty() {
                break;
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sent();
    let sink_count = delivered.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Postfix logs delay= (arrival to delivery, seconds) per delivered recipient.
    let log = std::fs::read_to_string(dir.path().join("maillog")).unwrap_or_default();
    let mut lat: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("status=sent"))
        .filter_map(|l| {
            l.split("delay=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|s| s * 1000.0)
        .collect();
    println!(
        "BENCH {}",
        serde_json::json!({
            "peer": "postfix", "messages": n, "delivered": got, "sessions": sessions, "sink_counter": sink_count,
            "seconds": elapsed, "msgs_per_s": got as f64 / elapsed,
            "p50_ms": percentile(&mut lat, 0.5), "p99_ms": percentile(&mut lat, 0.99),
            "latency_samples": lat.len(),
        })
    );
}

fn bench_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("BENCH_DIR").expect("BENCH_DIR names the spool directory to fill/load"),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_fill_spool() {
    let n = env_num("BENCH_QUEUED", 100_000);
    let spool = Spool::open(&bench_dir().join("spool")).unwrap();
    let body = format!(
        "From: <b@src.test>\r\nTo: <u@held.test>\r\nSubject: queued\r\n\r\n{}\r\n",
        "x".repeat(900)
    );
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per = n / 64;
    for t in 0..64u64 {
        let (spool, body) = (spool.clone(), body.clone());
        let count = if t == 63 { n - per * 63 } else { per };
        tasks.spawn(async move {
            for i in 0..count {
                let env = Envelope {
                    sender: format!("b{t}@src.test"),
                    recipients: vec![format!("u{i}@held.test")],
                    peer: "127.0.0.1:1".into(),
                    helo: "src.test".into(),
                    auth_user: None,
                    received_at: 1_796_342_400,
                    body_8bit: false,
                    smtputf8: false,
                };
                spool.store(env, body.as_bytes()).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "BENCH {}",
        serde_json::json!({"phase": "fill", "messages": n, "seconds": t0.elapsed().as_secs_f64()})
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_queued_rss() {
    let dir = bench_dir();
    let rss0 = rss_kb("VmRSS:");
    let t0 = Instant::now();
    let spool = Spool::open(&dir.join("spool")).unwrap();
    let open_s = t0.elapsed().as_secs_f64();
    let rss_spool = rss_kb("VmRSS:");
    let out_cfg = ShapingHandle::new(
        shaping::load(&outbound_toml(&dir, "127.0.0.203:9", "127.0.0.204")).unwrap(),
    );
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = Dispatcher::start(
        Options {
            hostname: "worker.bench.test".into(),
            clock: Arc::new(SystemClock),
        },
        out_cfg,
        Arc::new(spool.clone()),
        stop_rx,
    )
    .unwrap();
    handle
        .suspend(&Target {
            domain: Some("held.test".into()),
            site: None,
        })
        .unwrap();
    let t1 = Instant::now();
    let queued = handle.recover(&spool);
    let enqueue_s = t1.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = handle.queues();
    let held = report
        .domains
        .iter()
        .find(|d| d.domain == "held.test")
        .map(|d| d.depth)
        .unwrap_or(0);
    println!(
        "BENCH {}",
        serde_json::json!({
            "phase": "rss", "messages": queued, "held_depth": held,
            "spool_open_s": open_s, "enqueue_s": enqueue_s, "recovery_s": open_s + enqueue_s,
            "rss_start_kb": rss0, "rss_after_spool_open_kb": rss_spool,
            "rss_after_enqueue_kb": rss_kb("VmRSS:"), "peak_rss_kb": rss_kb("VmHWM:"),
        })
    );
}
