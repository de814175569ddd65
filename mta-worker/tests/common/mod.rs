//! Test harness: a real worker on ephemeral 127.0.0.1 ports with a temp spool, a TLS
//! certificate generated for the run, an argon2 users file, and a small SMTP client that
//! speaks over real sockets (plain or TLS). Everything is removed on drop.
#![allow(dead_code)]

pub mod binary;

use anyhow::{bail, Context, Result};
use mta_worker::config::{Config, Role};
use mta_worker::server::{self, Listeners};
use mta_worker::state::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse";

/// Files a worker needs besides its config: cert, key, users.
pub struct Material {
    pub dir: tempfile::TempDir,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
}

impl Material {
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let cert_pem = ck.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem)?;
        std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem())?;
        // Cheap argon2 parameters: the verifier reads them from the hash, tests stay fast.
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = argon2::password_hash::SaltString::encode_b64(b"test-salt-123456").unwrap();
        let hash =
            argon2::password_hash::PasswordHasher::hash_password(&a2, PASSWORD.as_bytes(), &salt)
                .unwrap()
                .to_string();
        std::fs::write(
            dir.path().join("users"),
            format!("# test users\n{USER}:{hash}\n"),
        )?;
        Ok(Self {
            dir,
            cert_pem,
            cert_der: ck.cert.der().to_vec(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with one listener per role on port 0, `extra` appended (e.g. `[limits]`).
    pub fn config_text(&self, relay_networks: &str, limits: &str, admin_port: u16) -> String {
        format!(
            r#"hostname = "mx.test"
[spool]
dir = "{spool}"
[relay]
networks = [{relay_networks}]
[tls]
cert = "{cert}"
key = "{key}"
[auth]
users_file = "{users}"
[[listener]]
role = "relay"
addresses = ["127.0.0.1:{p1}", "127.0.0.2:0"]
[[listener]]
role = "submission"
addresses = ["127.0.0.1:0"]
[[listener]]
role = "smtps"
addresses = ["127.0.0.1:0"]
[admin]
listen = "127.0.0.1:{admin_port}"
[log]
reception_log = "{rlog}"
[limits]
{limits}
"#,
            spool = self.path("spool").display(),
            cert = self.path("cert.pem").display(),
            key = self.path("key.pem").display(),
            users = self.path("users").display(),
            rlog = self.path("reception.jsonl").display(),
            p1 = 0,
        )
    }
}

/// A worker running inside the test's runtime.
pub struct Worker {
    pub material: Material,
    pub shared: Arc<Shared>,
    pub relay: SocketAddr,
    /// Second address of the relay role (the "host address" next to the VIP).
    pub relay2: SocketAddr,
    pub submission: SocketAddr,
    pub smtps: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker; loopback is a relay network unless `relay_networks` says otherwise.
    pub async fn start(limits: &str) -> Result<Self> {
        Self::start_with("\"127.0.0.0/8\"", limits).await
    }

    pub async fn start_with(relay_networks: &str, limits: &str) -> Result<Self> {
        let material = Material::new()?;
        let text = material.config_text(relay_networks, limits, 0);
        let cfg = Config::parse(&material.path("worker.toml"), &text)?;
        let listeners = Listeners::bind(&cfg).await?;
        let addr = |role| {
            listeners
                .smtp_addrs()
                .into_iter()
                .find(|(r, _)| *r == role)
                .map(|(_, a)| a)
                .unwrap()
        };
        let (relay, submission, smtps) =
            (addr(Role::Relay), addr(Role::Submission), addr(Role::Smtps));
        let admin = listeners.admin_addr().unwrap();
        let relay2 = listeners
            .smtp_addrs()
            .into_iter()
            .filter(|(r, _)| *r == Role::Relay)
            .nth(1)
            .map(|(_, a)| a)
            .unwrap();
        let shared = server::build_shared(cfg)?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::run(
            shared.clone(),
            listeners,
            async {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        Ok(Self {
            material,
            shared,
            relay,
            relay2,
            submission,
            smtps,
            admin,
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// Messages in the spool as (envelope, bytes without our Received header).
    pub fn spooled(&self) -> Vec<(mta_worker::spool::Envelope, Vec<u8>)> {
        let spool = &self.shared.spool;
        spool
            .recover()
            .map(|(id, _)| {
                let (env, data) = spool.load(id).unwrap();
                (env, strip_received(&data).to_vec())
            })
            .collect()
    }

    pub fn reception_log(&self) -> Vec<serde_json::Value> {
        self.shared.reception.flush();
        std::fs::read_to_string(self.material.path("reception.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Removes the first header (our `Received:`, folded over several lines).
pub fn strip_received(data: &[u8]) -> &[u8] {
    assert!(data.starts_with(b"Received: "), "no Received header first");
    let mut i = 0;
    loop {
        let nl = i + data[i..].iter().position(|&b| b == b'\n').unwrap() + 1;
        i = nl;
        if !matches!(data.get(i), Some(b' ') | Some(b'\t')) {
            return &data[i..];
        }
    }
}

/// One parsed SMTP reply.
#[derive(Debug, Clone)]
pub struct Resp {
    pub code: u16,
    /// "x.y.z" or "" when the reply has no enhanced code.
    pub esc: String,
    pub lines: Vec<String>,
}

impl Resp {
    pub fn is(&self, code: u16, esc: &str) -> bool {
        self.code == code && self.esc == esc
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A minimal SMTP client over a real socket.
pub struct Client {
    io: BufReader<Box<dyn Io>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let s = TcpStream::connect(addr).await?;
        Ok(Self {
            io: BufReader::new(Box::new(s)),
        })
    }

    pub fn from_stream(s: TcpStream) -> Self {
        Self {
            io: BufReader::new(Box::new(s)),
        }
    }

    /// Connects with implicit TLS (port 465 role).
    pub async fn connect_tls(addr: SocketAddr, cert_der: &[u8]) -> Result<Self> {
        let s = TcpStream::connect(addr).await?;
        let tls = tls_connect(Box::new(s), cert_der).await?;
        Ok(Self {
            io: BufReader::new(tls),
        })
    }

    /// STARTTLS handshake after a 220 reply to STARTTLS.
    pub async fn upgrade(self, cert_der: &[u8]) -> Result<Self> {
        let inner = self.io.into_inner();
        Ok(Self {
            io: BufReader::new(tls_connect(inner, cert_der).await?),
        })
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        self.io.get_mut().flush().await?;
        Ok(())
    }

    pub async fn read(&mut self) -> Result<Resp> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line))
                .await
                .context("reply timeout")??;
            if n == 0 {
                bail!("connection closed (after {lines:?})");
            }
            let line = line.trim_end().to_string();
            if line.len() < 3 {
                bail!("short reply line {line:?}");
            }
            let code: u16 = line[..3].parse()?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            let rest = line.get(4..).unwrap_or("").to_string();
            lines.push(rest);
            if !more {
                let first = lines.last().unwrap().clone();
                let esc = first
                    .split(' ')
                    .next()
                    .filter(|w| {
                        w.split('.').count() == 3 && w.split('.').all(|p| p.parse::<u16>().is_ok())
                    })
                    .unwrap_or("")
                    .to_string();
                return Ok(Resp { code, esc, lines });
            }
        }
    }

    /// Sends a command line (CRLF added) and reads the reply.
    pub async fn cmd(&mut self, line: &str) -> Result<Resp> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await?;
        self.read().await
    }

    /// True when the server closed the connection (EOF) within the timeout.
    pub async fn closed(&mut self) -> bool {
        let mut b = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Greeting + EHLO.
    pub async fn hello(&mut self) -> Result<Resp> {
        let g = self.read().await?;
        assert_eq!(g.code, 220, "{g:?}");
        self.cmd("EHLO client.test").await
    }

    /// One complete transaction with a DATA body given unstuffed; returns the final reply.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> Result<Resp> {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await?;
        if r.code != 250 {
            return Ok(r);
        }
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>")).await?;
            if r.code != 250 {
                return Ok(r);
            }
        }
        let r = self.cmd("DATA").await?;
        if r.code != 354 {
            return Ok(r);
        }
        self.send_raw(&dot_stuff(body)).await?;
        self.send_raw(b".\r\n").await?;
        self.read().await
    }
}

/// Client-side dot-stuffing of a CRLF body (which must end with CRLF).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_start = true;
    for &b in body {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    out
}

async fn tls_connect(io: Box<dyn Io>, cert_der: &[u8]) -> Result<Box<dyn Io>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(cert_der.to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let s = conn.connect(name, io).await?;
    Ok(Box::new(s))
}

/// `GET path` on the admin endpoint; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").context("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{head}");
    }
    Ok(body.to_string())
}
