//! `mta-worker queues` against a real worker process: the binary runs with an
//! `[outbound]` table (dnsmasq + an in-test SMTP sink), mail arrives over SMTP for a site
//! suspended through the CLI, and the CLI's tables show the depth and the state; bounce,
//! flush and resume through the CLI act on it. Also the operator-facing errors: a wrong token
//! (401) and a worker that is not there (connection refused).

mod common;
mod outbound_common;

use outbound_common::{config, wait_for, Dnsmasq, Script, Sink};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills the worker (by its own PID) however the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn cli(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_mta-worker"))
        .arg("queues")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The row of the table headed by `header` whose first column is `name`.
fn row(table: &str, header: &str, name: &str) -> Option<String> {
    table
        .split("\n\n")
        .find(|s| s.starts_with(header))?
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(str::to_string)
}

fn wait_listening(addrs: &[SocketAddr]) {
    let t0 = Instant::now();
    for a in addrs {
        while std::net::TcpStream::connect(a).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "worker did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_cli_shows_and_steers_a_running_worker() {
    let dns = Dnsmasq::start(&[
        "--mx-host=held.test,mx.held.test,10".into(),
        "--host-record=mx.held.test,127.0.0.131".into(),
    ]);
    let sink = Sink::start(&["127.0.0.131".parse().unwrap()], Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let shaping = config(
        dns.addr,
        sink.port,
        &[("default", &[("s", "127.0.0.132", "s.worker.test")])],
        "",
        "",
    )
    .replace("@DIR@", p(dir.path()));
    std::fs::write(dir.path().join("shaping.toml"), shaping).unwrap();
    std::fs::write(dir.path().join("admin.token"), "cli-s3cret\n").unwrap();
    std::fs::write(dir.path().join("wrong.token"), "not-it\n").unwrap();
    let (smtp, status, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = dir.path().join("worker.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.test\"\n[spool]\ndir = \"{d}/spool\"\n[relay]\nnetworks = [\"127.0.0.0/8\"]\n\
             [[listener]]\nrole = \"relay\"\naddresses = [\"{smtp}\"]\n[admin]\nlisten = \"{status}\"\n\
             [outbound]\nfile = \"{d}/shaping.toml\"\nadmin_listen = \"{admin}\"\ntoken_file = \"{d}/admin.token\"\n",
            d = p(dir.path())
        ),
    )
    .unwrap();
    let _worker = Proc(
        Command::new(env!("CARGO_BIN_EXE_mta-worker"))
            .args(["run", "--config", p(&cfg)])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&[smtp, admin]);

    // Mutations: the config's token works; a wrong one is refused with a clear message.
    let o = cli(&["--config", p(&cfg), "suspend", "--site", "held.test"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "suspended\n");
    let wrong = dir.path().join("wrong.token");
    let o = cli(&[
        "--config",
        p(&cfg),
        "--token-file",
        p(&wrong),
        "resume",
        "--site",
        "held.test",
    ])
    .await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("401") && stderr(&o).contains("token is wrong"),
        "{}",
        stderr(&o)
    );

    let mut ids = Vec::new();
    for rcpt in ["a@held.test", "b@held.test"] {
        let mut c = common::Client::connect(smtp).await.unwrap();
        c.hello().await.unwrap();
        let body = format!("Subject: to {rcpt}\r\n\r\nhello\r\n");
        let r = c
            .send_mail("s@sender.test", &[rcpt], body.as_bytes())
            .await
            .unwrap();
        assert_eq!(r.code, 250, "{r:?}");
        let id = r
            .lines
            .last()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 16, "{r:?}");
        ids.push(id);
    }

    // JSON view until the route is resolved and both messages sit on the site.
    let mut json = serde_json::Value::Null;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let o = cli(&["--config", p(&cfg), "--json"]).await;
        assert!(o.status.success(), "{}", stderr(&o));
        json = serde_json::from_slice(&o.stdout).unwrap();
        if json["sites"][0]["site"] == "held.test" && json["sites"][0]["depth"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(json["sites"][0]["depth"], 2, "{json}");
    assert_eq!(json["sites"][0]["suspended"], true, "{json}");

    // The tables, by address this time.
    let o = cli(&["--admin", &admin.to_string()]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("queued: 2\n"), "{text}");
    let site = row(&text, "SITE ", "held.test").unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = site.split_whitespace().collect();
    assert_eq!(cols[1], "2", "site depth: {site}");
    assert!(site.ends_with("suspended (operator)"), "{site}");
    let dom = row(&text, "DOMAIN ", "held.test").unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = dom.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("held.test", "2"), "{dom}");
    assert!(cols[4].ends_with('s'), "human age: {dom}");
    assert!(dom.ends_with("held (site suspended)"), "{dom}");
    assert!(sink.rec.msgs().is_empty(), "suspended site got mail");

    // Bounce the first message and flush the site through the CLI.
    let o = cli(&["--config", p(&cfg), "bounce", &ids[0]]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "bounced 1 recipients\n");
    let o = cli(&["--config", p(&cfg), "bounce", &ids[0]]).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("HTTP 404"), "{}", stderr(&o));
    let o = cli(&["--config", p(&cfg), "flush", "--site", "held.test"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "flushed 1\n");

    // Resume through the CLI: the remaining message goes out and the queue empties
    // (the DSN to sender.test fails in DNS and, from <>, is dropped).
    let o = cli(&["--config", p(&cfg), "resume", "--site", "held.test"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(wait_for(10, || sink.rec.msgs().len() == 1).await);
    assert_eq!(sink.rec.msgs()[0].rcpts, vec!["b@held.test".to_string()]);
    let mut text = String::new();
    for _ in 0..50 {
        text = stdout(&cli(&["--admin", &admin.to_string()]).await);
        if text.starts_with("queued: 0\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.starts_with("queued: 0\n"), "{text}");
    let site = row(&text, "SITE ", "held.test").unwrap_or_else(|| panic!("{text}"));
    assert!(site.ends_with("active"), "{site}");
}

#[tokio::test]
async fn queues_cli_explains_a_missing_worker() {
    let nobody = free_addr();
    let o = cli(&["--admin", &nobody.to_string()]).await;
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&nobody.to_string())
            && err.contains("connection refused")
            && err.contains("worker running"),
        "{err}"
    );
}
