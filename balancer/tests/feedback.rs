//! Queue-aware weights end to end: the daemon polls each backend's real HTTP status
//! endpoint (a tiny server in the test answering like mta-worker's `GET /status`),
//! sheds the backlogged backend step by step and gives the weight back when the
//! backlog clears.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use balancer::control::MemoryDataPlane;
use support::{config_text, tempdir, wait_for, SmtpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers `GET /status` with the current queue depth; stops on drop.
struct StatusServer {
    port: u16,
    depth: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    async fn start(depth: u64) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let depth = Arc::new(AtomicU64::new(depth));
        let d = depth.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let d = d.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = 0;
                    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
                        match s.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                    }
                    // Shaped like mta-worker's answer, with a field we do not use.
                    let body = format!(
                        "{{\"queue_depth\":{d},\"queue_depth_by_domain\":{{\"example.test\":{d}}},\"active_deliveries\":3}}"
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        StatusServer { port, depth, task }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlogged_backend_is_shed_and_recovers() {
    let smtp = [
        SmtpServer::start("127.0.0.1").await,
        SmtpServer::start("127.0.0.2").await,
        SmtpServer::start("127.0.0.3").await,
    ];
    let status = [
        StatusServer::start(20_000).await,
        StatusServer::start(150).await,
        StatusServer::start(200).await,
    ];
    let dir = tempdir();
    let mut text = config_text(
        &[
            ("mta-1", "127.0.0.1", smtp[0].addr.port()),
            ("mta-2", "127.0.0.2", smtp[1].addr.port()),
            ("mta-3", "127.0.0.3", smtp[2].addr.port()),
        ],
        None,
        "\n[feedback]\nenabled = true\ninterval = \"100ms\"\nmax_step = 0.2\nmin_factor = 0.2\n",
    );
    for (i, s) in status.iter().enumerate() {
        let name = format!("name = \"mta-{}\"\n", i + 1);
        text = text.replace(
            &name,
            &format!(
                "{name}status_url = \"http://127.0.0.1:{}/status\"\n",
                s.port
            ),
        );
    }
    let path = dir.path().join("balancer.toml");
    std::fs::write(&path, &text).unwrap();
    let (h, mem) = support::start_daemon(&path, None).await;
    let id1 = h.daemon.ctl.lock().await.backend("mta-1").unwrap().id;
    let share = |mem: &MemoryDataPlane| {
        let r = mem.ring(0).unwrap();
        r.iter().filter(|&&x| x == id1).count() as f64 / r.len() as f64
    };
    let effective = || {
        h.daemon
            .ctl
            .try_lock()
            .ok()
            .map(|c| c.backend("mta-1").unwrap().effective())
    };
    // 100 -> 80 -> 60 -> 40 -> 20 (floor), one step per poll.
    let shed = wait_for(Duration::from_secs(5), || effective() == Some(20)).await;
    assert!(shed.is_some(), "mta-1 never shed to the floor");
    println!("shed to 20% after {shed:?}; share {:.3}", share(&mem));
    assert!((share(&mem) - 20.0 / 220.0).abs() < 0.01);
    let st = h.daemon.ctl.lock().await.status().unwrap();
    let b = &st.vips[0].backends[0];
    assert_eq!((b.configured_weight, b.effective_weight), (100, 20));
    assert_eq!(
        (b.queue_depth, b.active_deliveries),
        (Some(20_000), Some(3))
    );
    assert_eq!(st.vips[0].backends[1].effective_weight, 100);

    status[0].depth.store(180, Ordering::SeqCst);
    let back = wait_for(Duration::from_secs(5), || effective() == Some(100)).await;
    assert!(back.is_some(), "mta-1 never recovered");
    println!("recovered after {back:?}");
    assert!((share(&mem) - 1.0 / 3.0).abs() < 0.01);
}
