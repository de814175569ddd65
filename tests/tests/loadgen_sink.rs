//! The load generator against a real smtp-sink on loopback: every message it reports as
//! accepted arrives exactly once, with the envelope it was sent with. No root needed.

use e2e::{proc::wait_until, sink};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn every_accepted_message_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _sink = sink::start_here(&listen, dir.path(), &[])
        .expect("smtp-sink starts (cargo xtask setup installs postfix)");
    assert!(wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(&listen).is_ok()
    }));

    let out = Command::new(env!("CARGO_BIN_EXE_smtp-load"))
        .args([
            "--server",
            &listen,
            "--sessions",
            "50",
            "--concurrency",
            "10",
            "--messages",
            "2",
        ])
        .args([
            "--size",
            "3000",
            "--to",
            "a@gmail.test,b@yahoo.test",
            "--run-id",
            "lg1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["messages_accepted"], 100, "{report}");
    assert_eq!(report["sessions_ok"], 50);
    assert!(
        report["session_ms_p99"].as_f64().unwrap() >= report["session_ms_p50"].as_f64().unwrap()
    );

    // smtp-sink writes each dump after it answers: give it a moment.
    assert!(wait_until(Duration::from_secs(5), || sink::read_dumps(
        dir.path()
    )
    .map(|d| d.len() >= 100)
    .unwrap_or(false)));
    let dumps = sink::read_dumps(dir.path()).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for d in &dumps {
        let text = String::from_utf8_lossy(&d.body);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .map(|l| l.trim_end_matches('>').to_string())
            .expect("Message-ID header");
        assert_eq!(d.client_addr, "127.0.0.1");
        assert_eq!(d.helo, "client.test");
        assert_eq!(d.mail_from, "sender@client.test");
        assert_eq!(d.rcpt_to.len(), 1);
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.values().all(|&n| n == 1));
    for m in report["messages"].as_array().unwrap() {
        assert_eq!(seen.get(m["message_id"].as_str().unwrap()), Some(&1));
    }
}
