//! Admin/status HTTP endpoint (loopback by default): `GET /status` (JSON, read by the
//! balancer's queue-aware weights) and `GET /metrics` (Prometheus). A deliberately tiny
//! HTTP/1.1 responder: two read-only GETs do not justify a web framework.

mod status;

use crate::state::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use status::Status;

pub async fn serve(shared: Arc<Shared>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::state::stopped(&mut stop) => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(&shared, sock)).await;
        });
    }
}

async fn handle(shared: &Shared, mut sock: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    // Only the request head matters; stop at the blank line or 8 KiB.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        if sock.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, ctype, body) = match (method, path) {
        ("GET", "/status") => (
            "200 OK",
            "application/json",
            serde_json::to_string(&Status::collect(shared)).unwrap_or_default(),
        ),
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", {
            let mut m = shared
                .metrics
                .render(shared.spool.queue_depth(), shared.spool.bytes());
            if let Some(d) = shared.delivery.get() {
                m.push_str(&d.metrics());
            }
            m
        }),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}
