//! Shared fixtures for the outbound tests: a real dnsmasq serving `.test` records on a
//! loopback high port, and a real (in-test) SMTP server on 127.0.0.x that records what
//! it sees: peer address, EHLO name, TLS, envelopes, timing and concurrency.
#![allow(dead_code)]

use mta_worker::delivery::{Dispatcher, DispatcherHandle, Options};
use mta_worker::shaping::{self, ShapingHandle, SharedClock};
use mta_worker::spool::{Envelope, Spool};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// dnsmasq on 127.0.0.1:<port>, killed on drop.
pub struct Dnsmasq {
    child: Child,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// `records` are dnsmasq options such as `--mx-host=a.test,mx.a.test,10`.
    pub fn start(records: &[String]) -> Self {
        // The port is free when picked, but another test or an outgoing connection may
        // take it before dnsmasq binds it (dnsmasq then exits): pick again.
        for _ in 0..5 {
            if let Some(d) = Self::try_start(records) {
                return d;
            }
        }
        panic!("dnsmasq did not start on five free ports");
    }

    fn try_start(records: &[String]) -> Option<Self> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("/usr/sbin/dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local=/test/",
                "--local-ttl=60",
                "--pid-file=",
                "--user=root",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq runs");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, addr })
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Binds every address on one common free port (MX hosts share the configured port).
pub async fn bind_same_port(ips: &[Ipv4Addr]) -> (u16, Vec<TcpListener>) {
    for _ in 0..50 {
        let first = TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut ls = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => ls.push(l),
                Err(_) => break,
            }
        }
        if ls.len() == ips.len() {
            return (port, ls);
        }
    }
    panic!("no common free port");
}

/// How a sink answers.
#[derive(Clone)]
pub struct Script {
    /// Greeting line; a non-2xx greeting closes the connection after sending it.
    /// Shared so a test can change it while the sink runs.
    pub greeting: Arc<Mutex<String>>,
    /// Recipients containing this text get `reject_reply`.
    pub reject_rcpt: Option<(String, String)>,
    /// Replies to the end of DATA, consumed in order; afterwards "250 2.0.0 ok".
    pub data_replies: Arc<Mutex<VecDeque<String>>>,
    /// Offer STARTTLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub pipelining: bool,
    /// Time the sink takes to accept each message (makes concurrency observable).
    pub data_delay: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            greeting: Arc::new(Mutex::new("220 sink.test ESMTP".into())),
            reject_rcpt: None,
            data_replies: Default::default(),
            tls: None,
            pipelining: true,
            data_delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub at: Instant,
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub ehlo: String,
    pub tls: bool,
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub at: Instant,
}

/// What the sinks saw.
#[derive(Default)]
pub struct Rec {
    pub conns: Mutex<Vec<ConnInfo>>,
    pub msgs: Mutex<Vec<Msg>>,
    pub active: AtomicUsize,
    pub max_active: AtomicUsize,
}

impl Rec {
    pub fn msgs(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }
    pub fn conns(&self) -> Vec<ConnInfo> {
        self.conns.lock().unwrap().clone()
    }
}

/// SMTP servers on several loopback addresses sharing one port and one record.
pub struct Sink {
    pub port: u16,
    pub rec: Arc<Rec>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Sink {
    pub async fn start(ips: &[Ipv4Addr], script: Script) -> Self {
        let (port, ls) = bind_same_port(ips).await;
        Self::on(port, ls, script)
    }

    pub fn on(port: u16, ls: Vec<TcpListener>, script: Script) -> Self {
        let rec = Arc::new(Rec::default());
        let tasks = ls
            .into_iter()
            .map(|l| {
                let (rec, script) = (rec.clone(), script.clone());
                tokio::spawn(async move {
                    while let Ok((s, peer)) = l.accept().await {
                        let (rec, script) = (rec.clone(), script.clone());
                        let local = s.local_addr().unwrap();
                        tokio::spawn(async move {
                            rec.conns.lock().unwrap().push(ConnInfo {
                                peer,
                                local,
                                at: Instant::now(),
                            });
                            let n = rec.active.fetch_add(1, Ordering::SeqCst) + 1;
                            rec.max_active.fetch_max(n, Ordering::SeqCst);
                            if !serve(s, peer, local, &rec, &script).await {
                                rec.active.fetch_sub(1, Ordering::SeqCst);
                            }
                        });
                    }
                })
            })
            .collect();
        Self { port, rec, tasks }
    }
}

enum Next {
    Close,
    StartTls,
}

struct Conn {
    peer: SocketAddr,
    local: SocketAddr,
    ehlo: String,
    tls: bool,
    from: String,
    rcpts: Vec<String>,
    /// QUIT received (and the connection taken off `Rec::active`).
    quit: bool,
}

/// Returns `true` when the client said QUIT, which already took it off `rec.active`.
async fn serve(
    s: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    rec: &Rec,
    script: &Script,
) -> bool {
    let mut io = BufReader::new(s);
    let greeting = script.greeting.lock().unwrap().clone();
    let _ = io
        .get_mut()
        .write_all(format!("{greeting}\r\n").as_bytes())
        .await;
    if !greeting.starts_with('2') {
        return false;
    }
    let mut c = Conn {
        peer,
        local,
        ehlo: String::new(),
        tls: false,
        from: String::new(),
        rcpts: vec![],
        quit: false,
    };
    if let Next::StartTls = dialogue(&mut io, &mut c, rec, script).await {
        let acceptor = tokio_rustls::TlsAcceptor::from(script.tls.clone().unwrap());
        let Ok(t) = acceptor.accept(io.into_inner()).await else {
            return c.quit;
        };
        c.tls = true;
        c.ehlo.clear();
        let mut io = BufReader::new(t);
        dialogue(&mut io, &mut c, rec, script).await;
    }
    c.quit
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    c: &mut Conn,
    rec: &Rec,
    script: &Script,
) -> Next {
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return Next::Close;
        }
        let l = line.trim_end().to_string();
        let up = l.to_ascii_uppercase();
        let reply: String = if up.starts_with("EHLO") || up.starts_with("HELO") {
            c.ehlo = l[4..].trim().to_string();
            let mut r = String::from("250-sink.test\r\n");
            if script.pipelining {
                r.push_str("250-PIPELINING\r\n");
            }
            if script.tls.is_some() && !c.tls {
                r.push_str("250-STARTTLS\r\n");
            }
            r.push_str("250 8BITMIME");
            r
        } else if up == "STARTTLS" && script.tls.is_some() && !c.tls {
            let _ = io.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await;
            return Next::StartTls;
        } else if up.starts_with("MAIL FROM:") {
            c.from = l[10..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            c.rcpts.clear();
            "250 2.1.0 ok".into()
        } else if up.starts_with("RCPT TO:") {
            let r = l[8..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string();
            match &script.reject_rcpt {
                Some((needle, reply)) if r.contains(needle.as_str()) => reply.clone(),
                _ => {
                    c.rcpts.push(r);
                    "250 2.1.5 ok".into()
                }
            }
        } else if up == "DATA" && c.rcpts.is_empty() {
            // Like Postfix's smtpd: with pipelining, DATA arrives even when every RCPT
            // was refused, and must be refused too.
            "554 5.5.1 no valid recipients".into()
        } else if up == "DATA" {
            let _ = io.get_mut().write_all(b"354 go\r\n").await;
            let mut data = Vec::new();
            loop {
                let mut dl = Vec::new();
                if io.read_until(b'\n', &mut dl).await.unwrap_or(0) == 0 {
                    return Next::Close;
                }
                if dl == b".\r\n" {
                    break;
                }
                let body = if dl.starts_with(b"..") {
                    &dl[1..]
                } else {
                    &dl[..]
                };
                data.extend_from_slice(body);
            }
            tokio::time::sleep(script.data_delay).await;
            let reply = script
                .data_replies
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| "250 2.0.0 ok".into());
            if reply.starts_with('2') {
                rec.msgs.lock().unwrap().push(Msg {
                    peer: c.peer,
                    local: c.local,
                    ehlo: c.ehlo.clone(),
                    tls: c.tls,
                    from: c.from.clone(),
                    rcpts: c.rcpts.clone(),
                    data,
                    at: Instant::now(),
                });
            }
            reply
        } else if up == "RSET" || up == "NOOP" {
            "250 2.0.0 ok".into()
        } else if up == "QUIT" {
            // The client is done with this connection before it reads 221 and counts its
            // slot free, so it leaves the active count now, not when the close is seen.
            rec.active.fetch_sub(1, Ordering::SeqCst);
            c.quit = true;
            let _ = io.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
            return Next::Close;
        } else {
            "502 5.5.2 unknown".into()
        };
        if io
            .get_mut()
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return Next::Close;
        }
    }
}

/// A self-signed certificate for `name`, as a rustls server config.
pub fn self_signed_tls(name: &str) -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.key_pair.serialize_der(),
    ));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    Arc::new(cfg)
}

/// A worker under test: spool in a temp dir, outbound config from `toml`, dispatcher.
pub struct Worker {
    pub dir: tempfile::TempDir,
    pub spool: Spool,
    pub handle: DispatcherHandle,
    pub cfg: ShapingHandle,
    shutdown: watch::Sender<bool>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl Worker {
    pub fn start(toml: &str, clock: SharedClock) -> Self {
        Self::start_with_files(toml, clock, &[])
    }

    /// Like `start`, writing `files` (name, content) next to the config first.
    pub fn start_with_files(toml: &str, clock: SharedClock, files: &[(&str, &[u8])]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let path = dir.path().join("shaping.toml");
        std::fs::write(&path, toml.replace("@DIR@", dir.path().to_str().unwrap())).unwrap();
        let (spool, handle, cfg, tx) = Self::open(&path, &dir.path().join("spool"), clock);
        Self {
            dir,
            spool,
            handle,
            cfg,
            shutdown: tx,
        }
    }

    /// Loads the outbound file, opens the spool and starts a dispatcher following it.
    fn open(
        config: &std::path::Path,
        spool_dir: &std::path::Path,
        clock: SharedClock,
    ) -> (Spool, DispatcherHandle, ShapingHandle, watch::Sender<bool>) {
        let compiled = shaping::load(config).unwrap_or_else(|e| panic!("{e}"));
        let cfg = ShapingHandle::new(compiled);
        let spool = Spool::open(spool_dir).unwrap();
        let (tx, rx) = watch::channel(false);
        let handle = Dispatcher::start(
            Options {
                hostname: "worker.test".into(),
                clock,
            },
            cfg.clone(),
            Arc::new(spool.clone()),
            rx,
        )
        .unwrap();
        handle.follow(spool.subscribe());
        (spool, handle, cfg, tx)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Stops the dispatcher and starts a new one on the same spool directory and outbound
    /// file, the way a process restart would: the spool is reopened (recovery runs) and
    /// everything in it is queued again through `recover`. Callers make sure no
    /// connection is in flight first.
    pub async fn restart(&mut self, clock: SharedClock) -> usize {
        let _ = self.shutdown.send(true);
        self.handle.join().await;
        let (spool, handle, cfg, tx) =
            Self::open(&self.path("shaping.toml"), &self.path("spool"), clock);
        let recovered = handle.recover(&spool);
        self.spool = spool;
        self.handle = handle;
        self.cfg = cfg;
        self.shutdown = tx;
        recovered
    }

    /// Stores a message the way the SMTP server would.
    pub async fn submit(
        &self,
        from: &str,
        to: &[&str],
        subject: &str,
        extra_headers: &str,
    ) -> mta_worker::spool::QueueId {
        let env = Envelope {
            sender: from.into(),
            recipients: to.iter().map(|s| s.to_string()).collect(),
            peer: "127.0.0.1:1".into(),
            helo: "client.test".into(),
            auth_user: None,
            received_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            body_8bit: false,
            smtputf8: false,
        };
        let body = format!(
            "From: <{from}>\r\nTo: <{}>\r\nSubject: {subject}\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\n{extra_headers}\r\nHello {subject}.\r\n.leading dot line\r\n",
            to[0]
        );
        self.spool.store(env, body.as_bytes()).await.unwrap()
    }

    /// JSON lines of the delivery log.
    pub fn log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("delivery.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Polls `f` until true or `secs` pass.
pub async fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Outbound config with one pool per `(pool, [(name, ip, ehlo)])` and extra TOML.
/// (name, ip, ehlo) of a source.
pub type Source<'a> = (&'a str, &'a str, &'a str);

/// `top` holds top-level keys, `tables` further tables.
pub fn config(
    dns: SocketAddr,
    mx_port: u16,
    pools: &[(&str, &[Source])],
    top: &str,
    tables: &str,
) -> String {
    let mut s = format!(
        "mx_port = {mx_port}\nlog_file = \"@DIR@/delivery.log\"\n{top}\n\n[dns]\nservers = [\"{dns}\"]\ntimeout = \"2s\"\n\n[queue]\ntick = \"10ms\"\n\n"
    );
    s.push_str(tables);
    s.push('\n');
    for (pool, sources) in pools {
        s.push_str(&format!("[[pool]]\nname = \"{pool}\"\n"));
        for (name, ip, ehlo) in sources.iter() {
            s.push_str(&format!(
                "[[pool.source]]\nname = \"{name}\"\nip = \"{ip}\"\nehlo = \"{ehlo}\"\n"
            ));
        }
        s.push('\n');
    }
    s
}

pub fn assert_file_exists(p: &Path) {
    assert!(p.exists(), "{} missing", p.display());
}
