//! Signals to the worker process. SIGHUP is what `logrotate` sends after renaming a log:
//! the worker must go on serving and write the reception log to a new file at the
//! configured path, the old file keeping every line written before the signal.

mod common;

use common::binary::{start, Setup};
use common::Client;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The log's records once it has `n` lines (its lines are written every few ms).
async fn wait_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n || t0.elapsed() > Duration::from_secs(10) {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_one(smtp: SocketAddr) -> anyhow::Result<String> {
    let mut c = Client::connect(smtp).await?;
    c.hello().await?;
    let r = c
        .send_mail("s@a.test", &["r@b.test"], b"Subject: hup\r\n\r\nbody\r\n")
        .await?;
    anyhow::ensure!(r.code == 250, "not accepted: {:?}", r.lines);
    Ok(r.lines[0].rsplit(' ').next().unwrap().to_string())
}

#[tokio::test]
async fn sighup_reopens_the_reception_log_and_keeps_serving() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("reception.jsonl");
    let rotated = dir.path().join("reception.jsonl.1");
    let extra = format!("[log]\nreception_log = \"{}\"\n", log.display());
    let setup = Setup::new(dir.path(), &extra)?;
    let (cfg, smtp) = (setup.config, setup.smtp);
    let mut worker = start(&cfg, smtp)?;

    let first = send_one(smtp).await?;
    assert_eq!(wait_lines(&log, 1).await.len(), 1);
    std::fs::rename(&log, &rotated)?;
    worker.signal(libc::SIGHUP);
    let t0 = Instant::now();
    while !log.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no new log after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = send_one(smtp).await?;

    let old = wait_lines(&rotated, 1).await;
    let new = wait_lines(&log, 1).await;
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(old[0]["queue_id"], first.as_str());
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0]["queue_id"], second.as_str());
    assert!(worker.0.try_wait()?.is_none(), "SIGHUP stopped the worker");
    Ok(())
}
