//! Helpers for the daemon tests: a tiny real SMTP server whose behaviour the test
//! switches at run time, temp files, and a daemon started against the in-memory data
//! plane. Everything listens on 127.0.0.0/8 only and stops when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the fake MTA behaves for new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 220 banner, multi-line 250 to EHLO, 221 to QUIT.
    Healthy = 0,
    /// Accepts, then says nothing (a hung MTA).
    Silent = 1,
    /// `421` banner (service not available, e.g. overloaded).
    Banner421 = 2,
    /// `554` banner (refuses everyone).
    Banner554 = 3,
    /// Answers the banner but rejects EHLO with 550.
    EhloRejected = 4,
}

/// A small SMTP server on one loopback address; dropped = stopped.
pub struct SmtpServer {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start(ip: &str) -> SmtpServer {
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("bind test SMTP server");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Healthy as u8));
        let m = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let mode = m.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    let banner: &[u8] = match mode {
                        1 => {
                            // Hold the connection open, silent, until the client gives up.
                            let mut line = String::new();
                            let _ = r.read_line(&mut line).await;
                            return;
                        }
                        2 => b"421 mx.test Service not available, closing channel\r\n",
                        3 => b"554 mx.test No SMTP service here\r\n",
                        _ => b"220 mx.test ESMTP test server\r\n",
                    };
                    if w.write_all(banner).await.is_err() || mode == 2 || mode == 3 {
                        return;
                    }
                    let mut line = String::new();
                    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let cmd = line.trim_end().to_ascii_uppercase();
                        let reply: &[u8] = if cmd.starts_with("EHLO") && mode == 4 {
                            b"550 5.7.1 go away\r\n"
                        } else if cmd.starts_with("EHLO") {
                            b"250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"
                        } else if cmd.starts_with("QUIT") {
                            let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
                            return;
                        } else {
                            b"502 5.5.2 not implemented\r\n"
                        };
                        if w.write_all(reply).await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        SmtpServer { addr, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; returns the time it took.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond().then(|| start.elapsed())
}

/// A temp directory removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("balancer-test-")
        .tempdir()
        .expect("temp dir")
}

/// A config with one VIP `smtp` whose backends are `(name, ip, health port)`; health
/// settings are the defaults unless `extra` overrides them.
pub fn config_text(
    backends: &[(&str, &str, u16)],
    token_file: Option<&str>,
    extra: &str,
) -> String {
    let mut t = String::from(
        "[dataplane]\ninterfaces = [\"lo\"]\nown_mac = \"02:00:00:00:00:01\"\nnexthop_mac = \"02:00:00:00:00:02\"\nencap_src4 = \"127.0.0.1\"\n\n",
    );
    t.push_str("[api]\nlisten = \"127.0.0.1:0\"\n");
    if let Some(f) = token_file {
        t.push_str(&format!("token_file = {f:?}\n"));
    }
    t.push_str(extra);
    t.push_str(
        "\n[[vip]]\nname = \"smtp\"\naddr = \"127.0.0.100\"\nports = [25, 587]\nring_size = 4093\n",
    );
    for (name, ip, port) in backends {
        t.push_str(&format!(
            "\n[[vip.backend]]\nname = \"{name}\"\naddr = \"{ip}\"\nhealth_port = {port}\n"
        ));
    }
    t
}

/// Starts the daemon on the config file at `path`, over an in-memory data plane (no
/// root), with the kernel's MAC resolver; returns the handle and the data plane to
/// inspect.
pub async fn start_daemon(
    path: &std::path::Path,
    id_file: Option<std::path::PathBuf>,
) -> (
    balancer::control::daemon::DaemonHandle,
    balancer::control::MemoryDataPlane,
) {
    let mem = balancer::control::MemoryDataPlane::new();
    let handle = balancer::control::daemon::Daemon::start(
        path.to_path_buf(),
        balancer::config::load(path).expect("config loads"),
        Box::new(mem.clone()),
        balancer::control::daemon::kernel_mac_resolver(),
        id_file,
    )
    .await
    .expect("daemon starts");
    (handle, mem)
}
