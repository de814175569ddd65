//! The `balancer` binary end to end, without root: `check-config` exit codes and messages,
//! and `run --dry-run` (the whole daemon over the in-memory data plane) driven by the
//! CLI's `status`, `drain`, `weight` and by SIGHUP reloads.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{config_text, tempdir, SmtpServer};

const BIN: &str = env!("CARGO_BIN_EXE_balancer");

fn balancer(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run balancer")
}

/// The daemon child; killed (by its own PID) and reaped on drop, also on failure.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn check_config_reports_ok_and_exact_errors() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/balancer.toml");
    let out = balancer(&["check-config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 VIPs, 3 backends)"));

    let dir = tempdir();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("weight = 50", "weight = -5");
    std::fs::write(&bad, text).unwrap();
    let out = balancer(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text_line(&bad, "weight = -5");
    assert_eq!(
        err.trim(),
        format!(
            "balancer: {}:{line}:10: vip[0].backend[2].weight: invalid value: integer `-5`, expected u32",
            bad.display()
        )
    );
}

fn text_line(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_daemon_driven_by_the_cli() {
    let servers = [
        SmtpServer::start("127.0.0.1").await,
        SmtpServer::start("127.0.0.2").await,
    ];
    let dir = tempdir();
    let token = dir.path().join("token");
    std::fs::write(&token, "cli-test-token\n").unwrap();
    let port = free_port();
    let backends = [
        ("mta-1", "127.0.0.1", servers[0].addr.port()),
        ("mta-2", "127.0.0.2", servers[1].addr.port()),
    ];
    let good = config_text(&backends, Some(token.to_str().unwrap()), "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let cfg = dir.path().join("balancer.toml");
    std::fs::write(&cfg, &good).unwrap();
    let cfg_s = cfg.to_str().unwrap().to_string();

    let log = dir.path().join("daemon.log");
    let child = Command::new(BIN)
        .args(["run", "--dry-run", "--config", &cfg_s])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start daemon");
    let daemon = Daemon(child);
    let pid = daemon.0.id() as i32;

    // Ready once `status` shows both backends up.
    let start = Instant::now();
    let table = loop {
        let out = balancer(&["status", "--config", &cfg_s]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.matches("  up  ").count() == 2 {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon not ready: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("{table}");
    assert!(table.starts_with("VIP smtp (0) 127.0.0.100 ports 25,587 hash maglev ring 4093"));

    let out = balancer(&["drain", "mta-1", "--config", &cfg_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = balancer(&["status", "--json", "--config", &cfg_s]);
    let st: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(st["vips"][0]["backends"][0]["drained"], true);
    assert_eq!(st["vips"][0]["backends"][0]["slots"], 0);
    assert_eq!(st["vips"][0]["backends"][1]["slots"], 4093);

    // A wrong token is refused and changes nothing.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let out = balancer(&[
        "undrain",
        "mta-1",
        "--config",
        &cfg_s,
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("API answered 401"));

    let out = balancer(&["weight", "mta-2", "50", "--config", &cfg_s]);
    assert!(out.status.success());
    let out = balancer(&["undrain", "mta-1", "--config", &cfg_s]);
    assert!(out.status.success());

    // SIGHUP with a broken file: the daemon stays up and unchanged.
    std::fs::write(&cfg, good.replace("ring_size = 4093", "ring_size = 0")).unwrap();
    // SAFETY: plain kill(2) on the PID of the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("reload rejected: the config is invalid; nothing changed")
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no rejection logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&cfg, &good).unwrap();
    let json = balancer(&["status", "--json", "--config", &cfg_s]);
    assert!(json.status.success(), "daemon survived the bad reload");
    let st: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(st["vips"][0]["ring_size"], 4093);
    // mta-2 has 50 (api), mta-1 100: a third / two thirds.
    let s1 = st["vips"][0]["backends"][0]["slots"].as_u64().unwrap() as f64 / 4093.0;
    assert!((s1 - 2.0 / 3.0).abs() < 0.01, "{s1}");

    // SIGHUP with a file that drops mta-2.
    let one = config_text(&backends[..1], Some(token.to_str().unwrap()), "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, one).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let start = Instant::now();
    loop {
        let json = balancer(&["status", "--json", "--config", &cfg_s]);
        let st: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_default();
        if st["vips"][0]["backends"]
            .as_array()
            .is_some_and(|b| b.len() == 1)
        {
            assert_eq!(st["vips"][0]["backends"][0]["slots"], 4093);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "reload not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(&log).unwrap();
    for line in [
        "backend drained",
        "table swap",
        "weight change",
        "API request refused",
        "config reloaded",
    ] {
        assert!(log.contains(line), "log lacks {line:?}");
    }
    // The refused attempt names who made it.
    let refused = log
        .lines()
        .find(|l| l.contains("API request refused"))
        .unwrap();
    assert!(refused.contains("peer=127.0.0.1:"), "{refused}");
    assert!(refused.contains("request=\"undrain\""), "{refused}");
    drop(daemon);
}
