//! The admin API over real HTTP: queue visibility, suspend/resume, bounce by id, metrics,
//! and refusal (401, nothing changed) of mutating requests without the bearer token.

mod outbound_common;

use mta_worker::delivery::admin;
use mta_worker::shaping::SystemClock;
use outbound_common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_suspend_bounce_resume_with_bearer_token() {
    let dns = Dnsmasq::start(&[
        "--mx-host=held.test,mx.held.test,10".into(),
        "--mx-host=back.test,mx.held.test,10".into(),
        "--host-record=mx.held.test,127.0.0.101".into(),
    ]);
    let sink = Sink::start(&["127.0.0.101".parse().unwrap()], Script::default()).await;
    let toml = config(
        dns.addr,
        sink.port,
        &[("default", &[("s", "127.0.0.102", "s.worker.test")])],
        "",
        "",
    );
    let w = Worker::start(&toml, Arc::new(SystemClock));
    let token_path = w.path("admin.token");
    std::fs::write(&token_path, "s3cret-token\n").unwrap();
    let token = admin::load_token(&token_path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = admin::router(w.handle.clone(), Some(token));
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Mutations without (or with a wrong) token: 401 and nothing changes.
    assert_eq!(
        http(addr, "POST", "/queues/suspend?domain=held.test", None)
            .await
            .0,
        401
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/queues/suspend?domain=held.test",
            Some("wrong")
        )
        .await
        .0,
        401
    );
    assert!(w.handle.queues().domains.iter().all(|d| !d.suspended));
    let (code, _) = http(
        addr,
        "POST",
        "/queues/suspend?domain=held.test",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(code, 200);

    let ids = [
        w.submit("s@back.test", &["a@held.test"], "h1", "").await,
        w.submit("s@back.test", &["b@held.test"], "h2", "").await,
        w.submit("s@back.test", &["c@held.test"], "h3", "").await,
    ];
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(sink.rec.msgs().is_empty(), "suspended domain sends nothing");
    let (code, body) = http(addr, "GET", "/queues", None).await;
    assert_eq!(code, 200);
    let q: serde_json::Value = serde_json::from_str(&body).unwrap();
    let held = q["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == "held.test")
        .unwrap();
    assert_eq!(held["depth"], 3);
    assert_eq!(held["suspended"], true);
    assert!(held["oldest_age_s"].as_u64().unwrap() < 60);

    assert_eq!(
        http(addr, "POST", &format!("/queues/bounce/{}", ids[0]), None)
            .await
            .0,
        401
    );
    let (code, body) = http(
        addr,
        "POST",
        &format!("/queues/bounce/{}", ids[0]),
        Some("s3cret-token"),
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "bounced 1 recipients\n"));
    assert_eq!(
        http(
            addr,
            "POST",
            &format!("/queues/bounce/{}", ids[0]),
            Some("s3cret-token")
        )
        .await
        .0,
        404
    );
    // The DSN goes to back.test (same MX host, not suspended).
    assert!(wait_for(10, || sink.rec.msgs().len() == 1).await);
    let dsn = &sink.rec.msgs()[0];
    assert_eq!(dsn.from, "");
    assert_eq!(dsn.rcpts, vec!["s@back.test".to_string()]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Final-Recipient: rfc822; a@held.test") && text.contains("Status: 5.0.0"),
        "{text}"
    );
    assert!(
        w.spool.load(ids[0]).is_err(),
        "bounced message left the spool"
    );

    let (code, _) = http(
        addr,
        "POST",
        "/queues/resume?domain=held.test",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(code, 200);
    assert!(wait_for(10, || sink.rec.msgs().len() == 3).await);
    assert!(wait_for(5, || w.spool.queue_depth() == 0).await);
    let (code, metrics) = http(addr, "GET", "/metrics/outbound", None).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mta_outbound_delivered_total{site=\"held.test\",source=\"s\"} 3"),
        "{metrics}"
    );
    server.abort();
}
