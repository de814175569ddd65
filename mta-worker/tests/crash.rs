//! Crash safety: the worker binary is killed with SIGKILL while clients are sending.
//! After a restart every message that got a 250 is in the spool byte for byte, every
//! recovered message is complete and is one that was really sent, and no temp file survives.

mod common;

use common::binary::{start, Setup};
use common::{strip_received, Client};
use mta_worker::spool::{QueueId, Spool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn body_for(token: &str, n: usize) -> Vec<u8> {
    let mut b = format!("Subject: {token}\r\nX-Token: {token}\r\n\r\n").into_bytes();
    // Sizes from ~100 B to ~60 KiB, so some writes are in flight when the kill lands.
    for i in 0..(n * 37 % 800) {
        b.extend_from_slice(format!("{token} line {i:05} ..........................................................\r\n").as_bytes());
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let setup = Setup::new(dir.path(), "")?;
    let (cfg, smtp, admin, spool_dir) = (setup.config, setup.smtp, setup.admin, setup.spool);
    let mut worker = start(&cfg, smtp)?;

    let sent: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let acked: Arc<Mutex<Vec<(QueueId, String)>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clients = Vec::new();
    for c in 0..12 {
        let (sent, acked) = (sent.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let Ok(mut cl) = Client::connect(smtp).await else {
                return;
            };
            if cl.hello().await.is_err() {
                return;
            }
            for n in 0..400 {
                if Instant::now() > deadline {
                    return;
                }
                let token = format!("c{c}-m{n}");
                let body = body_for(&token, c * 400 + n);
                sent.lock().unwrap().insert(token.clone(), body.clone());
                match cl.send_mail("s@a.test", &["r@b.test"], &body).await {
                    Ok(r) if r.code == 250 => {
                        let id: QueueId = r.lines[0].rsplit(' ').next().unwrap().parse().unwrap();
                        acked.lock().unwrap().push((id, token));
                    }
                    _ => return,
                }
            }
        }));
    }
    // Kill mid-stream, once a good number of messages has been acknowledged.
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 300 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.signal(libc::SIGKILL);
    let _ = worker.0.wait();
    for c in clients {
        let _ = c.await;
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} acknowledged before the kill",
        acked.len()
    );
    assert!(
        acked.len() < sent.len(),
        "the kill should land while clients are still sending"
    );

    let segment_bytes = || -> u64 {
        std::fs::read_dir(spool_dir.join("segments"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let before = segment_bytes();
    // Restart: recovery runs, the status endpoint reports the recovered depth.
    let worker = start(&cfg, smtp)?;
    let status = common::http_get(admin, "/status").await?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let depth = status["queue_depth"].as_u64().unwrap() as usize;
    drop(worker);

    eprintln!(
        "recovery cut {} bytes of a batch torn by the kill",
        before.saturating_sub(segment_bytes())
    );
    let spool = Spool::open(&spool_dir)?;
    let recovered: Vec<_> = spool.recover().collect();
    assert_eq!(recovered.len(), depth);
    for (id, token) in &acked {
        let (_, data) = spool
            .load(*id)
            .unwrap_or_else(|e| panic!("acknowledged {id} lost: {e}"));
        assert_eq!(strip_received(&data), &sent[token][..], "{id} differs");
    }
    // Anything beyond the acknowledged ones was durable but its 250 was lost in the kill;
    // it must still be a complete copy of a message that was really sent.
    for (id, _) in &recovered {
        let (_, data) = spool.load(*id)?;
        let body = strip_received(&data);
        let token =
            String::from_utf8_lossy(&body[9..body.iter().position(|&b| b == b'\r').unwrap()])
                .to_string();
        assert_eq!(
            sent.get(&token).map(|b| &b[..]),
            Some(body),
            "{id} is not a complete sent message"
        );
    }
    assert!(
        recovered.len() <= acked.len() + 12,
        "at most one unacknowledged message per client"
    );
    Ok(())
}
