//! The server: binds the configured listeners, accepts connections (one task each, capped
//! by a semaphore and per-address counts), and shuts down gracefully: stop accepting,
//! tell idle sessions 421, let transfers in progress finish, then return.

use crate::api;
use crate::auth::{AuthError, Users};
use crate::config::{Config, Role};
use crate::log::ReceptionLog;
use crate::metrics::{Metrics, RejectReason};
use crate::smtp::reply;
use crate::smtp::session;
use crate::smtp::stream::Stream;
use crate::spool::{Spool, SpoolError};
use crate::state::{PerIp, Shared};
use crate::tls::{self, TlsError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("auth users file: {0}")]
    Auth(#[from] AuthError),
    #[error("reception log: {0}")]
    ReceptionLog(std::io::Error),
}

/// Bound sockets, before the server runs (tests bind port 0 and read the real ports here).
pub struct Listeners {
    pub smtp: Vec<(Role, TcpListener)>,
    pub admin: Option<TcpListener>,
}

/// A listening socket; IPv6 ones are IPv6-only, so that `0.0.0.0:25` and `[::]:25` can be
/// configured side by side (as Postfix does).
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        let mut smtp = Vec::new();
        for l in &config.listeners {
            for &addr in &l.addresses {
                let sock =
                    bind_listener(addr).map_err(|source| StartError::Bind { addr, source })?;
                smtp.push((l.role, sock));
            }
        }
        let admin = match config.admin.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self { smtp, admin })
    }

    /// Local address of every SMTP listener, in config order.
    pub fn smtp_addrs(&self) -> Vec<(Role, SocketAddr)> {
        self.smtp
            .iter()
            .filter_map(|(r, l)| l.local_addr().ok().map(|a| (*r, a)))
            .collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Opens the spool (running recovery), loads TLS material and credentials.
pub fn build_shared(config: Config) -> Result<Arc<Shared>, StartError> {
    let metrics = Arc::new(Metrics::default());
    let spool = Spool::open_with(
        &config.spool.dir,
        config.spool.max_batch,
        config.spool.flush,
        metrics.clone(),
    )?;
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let users = config
        .auth
        .as_ref()
        .map(|a| Users::load(&a.users_file).map(Arc::new))
        .transpose()?;
    let reception = ReceptionLog::open(config.log.reception_log.as_deref())
        .map_err(StartError::ReceptionLog)?;
    Ok(Arc::new(Shared {
        config,
        spool,
        metrics,
        tls,
        users,
        reception,
        per_ip: Arc::new(PerIp::default()),
        delivery: std::sync::OnceLock::new(),
    }))
}

/// Serves until `shutdown` completes, then drains sessions for at most `grace`.
pub async fn run(
    shared: Arc<Shared>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each session holds a clone; when all are dropped, recv() returns None: all done.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(shared.config.limits.max_connections));
    let mut tasks = Vec::new();
    for (role, l) in listeners.smtp {
        if let Ok(a) = l.local_addr() {
            tracing::info!(addr = %a, ?role, "SMTP listening");
        }
        tasks.push(tokio::spawn(accept_loop(
            shared.clone(),
            l,
            role,
            limit.clone(),
            stop_rx.clone(),
            done_tx.clone(),
        )));
    }
    if let Some(l) = listeners.admin {
        if let Ok(a) = l.local_addr() {
            tracing::info!(addr = %a, "admin HTTP listening");
        }
        tasks.push(tokio::spawn(api::serve(shared.clone(), l, stop_rx.clone())));
    }
    drop(done_tx);
    shutdown.await;
    tracing::info!("shutting down: no new connections, closing idle sessions");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        tracing::warn!("sessions still open after the grace period; exiting anyway");
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    role: Role,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::state::stopped(&mut stop) => return,
        };
        let _ = sock.set_nodelay(true);
        let shared = shared.clone();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.reject(RejectReason::TooManyConnections);
            tokio::spawn(refuse(sock, reply::TOO_MANY_CONNECTIONS));
            continue;
        };
        let Some(ip_guard) = shared
            .per_ip
            .try_add(peer.ip(), shared.config.limits.max_connections_per_ip)
        else {
            shared.metrics.reject(RejectReason::TooManyConnections);
            tokio::spawn(refuse(sock, reply::TOO_MANY_FROM_YOU));
            continue;
        };
        let stop = stop.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let m = &shared.metrics;
            m.sessions_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            m.sessions_active
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let stream = match role {
                Role::Smtps => match shared.tls.clone() {
                    Some(acc) => {
                        let t = shared.config.limits.command_timeout.0;
                        match tokio::time::timeout(t, acc.accept(sock)).await {
                            Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
                            _ => None,
                        }
                    }
                    None => None,
                },
                _ => Some(Stream::Plain(sock)),
            };
            if let Some(stream) = stream {
                session::run(shared.clone(), stream, peer, role, stop).await;
            }
            shared
                .metrics
                .sessions_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            drop((permit, ip_guard, done));
        });
    }
}

async fn refuse(mut sock: TcpStream, r: reply::Reply) {
    let mut out = Vec::new();
    r.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = sock.write_all(&out).await;
        let _ = sock.shutdown().await;
    })
    .await;
}
