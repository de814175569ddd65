//! The scheduler's memory: per-domain schedules (a `BTreeMap` by due time, so overflow
//! and retries cost no timers), bounded ready queues per (source, site), per-site and
//! per-pair counters, and the message index. All of it sits behind one mutex held only
//! for short, non-blocking updates.

use super::Entry;
use crate::dns::DnsError;
use crate::shaping::backoff::Adaptive;
use crate::shaping::config::SourceConfig;
use crate::shaping::limiter::Pacer;
use crate::spool::QueueId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

/// One MX host (or smarthost) to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// Where a domain's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub site: Arc<str>,
    pub targets: Vec<Target>,
}

/// Resolution state of a domain.
#[derive(Debug, Clone, Default)]
pub enum RouteState {
    #[default]
    Unknown,
    Resolving,
    Ready {
        route: Arc<Route>,
        expires_ms: u64,
    },
    Failed {
        err: DnsError,
        expires_ms: u64,
    },
}

/// Schedule key: due time, then id and recipient base for uniqueness.
pub type SchedKey = (u64, u64, u16);

/// A destination domain.
#[derive(Debug, Default)]
pub struct DomainQ {
    pub sched: BTreeMap<SchedKey, Entry>,
    pub route: RouteState,
    pub manual_suspend: bool,
    /// Entries of this domain sitting in ready queues or in flight.
    pub in_flight: u64,
}

/// A message handed to a (source, site) ready queue.
#[derive(Debug, Clone)]
pub struct Ready {
    pub domain: Arc<str>,
    pub route: Arc<Route>,
    pub entry: Entry,
}

/// A (source, site) pair: the unit of connection reuse and adaptive backoff.
#[derive(Debug)]
pub struct PairQ {
    pub source: SourceConfig,
    pub pool: String,
    pub ready: VecDeque<Ready>,
    /// Open connections (idle ones included).
    pub active: u32,
    /// Connections of `active` parked on an empty ready queue, waiting on `wake`.
    pub idle: u32,
    /// Wakes a parked connection when the scheduler fills the ready queue.
    pub wake: Arc<tokio::sync::Notify>,
    pub msg_pacer: Pacer,
    pub conn_pacer: Pacer,
    pub adaptive: Adaptive,
}

/// Site-wide counters.
#[derive(Debug, Default)]
pub struct SiteQ {
    pub active: u32,
    pub msg_pacer: Pacer,
    pub conn_pacer: Pacer,
    pub manual_suspend: bool,
}

/// Everything the scheduler knows.
#[derive(Debug, Default)]
pub struct State {
    pub domains: HashMap<Arc<str>, DomainQ>,
    pub pairs: HashMap<(Arc<str>, Arc<str>), PairQ>,
    pub sites: HashMap<Arc<str>, SiteQ>,
    /// Message id → entries not finished yet.
    pub msgs: HashMap<u64, u16>,
    /// Pool names, indexed by `Entry::pool`.
    pub pools: Vec<String>,
}

impl State {
    pub fn pool_index(&mut self, name: &str) -> u16 {
        if let Some(i) = self.pools.iter().position(|p| p == name) {
            return i as u16;
        }
        self.pools.push(name.to_string());
        (self.pools.len() - 1) as u16
    }

    pub fn pool_name(&self, i: u16) -> &str {
        self.pools
            .get(i as usize)
            .map(|s| s.as_str())
            .unwrap_or("default")
    }

    pub fn intern(&self, domain: &str) -> Arc<str> {
        self.domains
            .get_key_value(domain)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(domain))
    }

    /// Puts an entry on its domain's schedule.
    pub fn schedule(&mut self, domain: &str, e: Entry, due_ms: u64) {
        let key = self.intern(domain);
        self.domains
            .entry(key)
            .or_default()
            .sched
            .insert((due_ms, e.id.0, e.base), e);
    }

    /// Marks one entry of message `id` finished; true when the message has none left.
    pub fn entry_done(&mut self, id: QueueId) -> bool {
        match self.msgs.get_mut(&id.0) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.msgs.remove(&id.0);
                true
            }
            None => true,
        }
    }

    /// Takes every scheduled or ready entry of message `id` out of the queues.
    pub fn take_message(&mut self, id: QueueId) -> Vec<(Arc<str>, Entry)> {
        let mut out = Vec::new();
        for (d, q) in self.domains.iter_mut() {
            let keys: Vec<SchedKey> = q
                .sched
                .iter()
                .filter(|(_, e)| e.id == id)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                if let Some(e) = q.sched.remove(&k) {
                    out.push((d.clone(), e));
                }
            }
        }
        for p in self.pairs.values_mut() {
            let mut i = 0;
            while i < p.ready.len() {
                if p.ready[i].entry.id == id {
                    let r = p.ready.remove(i).expect("index checked");
                    if let Some(dq) = self.domains.get_mut(&r.domain) {
                        dq.in_flight = dq.in_flight.saturating_sub(1);
                    }
                    out.push((r.domain, r.entry));
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    /// Scheduled entries, in flight or ready, for the whole queue.
    pub fn depth(&self) -> u64 {
        self.domains
            .values()
            .map(|d| d.sched.len() as u64 + d.in_flight)
            .sum()
    }
}
