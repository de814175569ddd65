//! Everything a session needs, built once at start and passed explicitly (no globals).

use crate::auth::Users;
use crate::config::Config;
use crate::log::ReceptionLog;
use crate::metrics::Metrics;
use crate::spool::Spool;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio_rustls::TlsAcceptor;

pub struct Shared {
    pub config: Config,
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub tls: Option<TlsAcceptor>,
    pub users: Option<Arc<Users>>,
    pub reception: ReceptionLog,
    pub per_ip: Arc<PerIp>,
    /// The outbound dispatcher, once started (status and metrics report it).
    pub delivery: std::sync::OnceLock<crate::delivery::DispatcherHandle>,
}

/// Open connections per client address.
#[derive(Debug, Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// Decrements the address's count when the connection ends.
pub struct PerIpGuard {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// Counts the connection in, unless the address already has `max`.
    pub fn try_add(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut m = self.counts.lock().expect("per-ip lock");
        let c = m.entry(ip).or_default();
        if *c >= max {
            return None;
        }
        *c += 1;
        Some(PerIpGuard {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut m = self.owner.counts.lock().expect("per-ip lock");
        if let Some(c) = m.get_mut(&self.ip) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Resolves once the shutdown flag is set (the guard `wait_for` returns is not `Send`,
/// so it must not live inside a `select!` in a spawned task).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}
