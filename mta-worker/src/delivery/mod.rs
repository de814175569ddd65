//! Delivery: the dispatcher that turns queued messages into SMTP sessions.
//!
//! Entry point: [`Dispatcher::start`] returns a [`DispatcherHandle`]; feed it with
//! [`DispatcherHandle::enqueue`] (or [`DispatcherHandle::follow`] on the spool's
//! subscription, plus [`DispatcherHandle::recover`] at start). One scheduler task moves
//! due entries from per-domain schedules into bounded (source, site) ready queues and
//! starts connection tasks within each site's limits; connection tasks are independent,
//! so a slow or deferring site never holds up another.

pub mod admin;
pub mod admin_client;
pub mod admin_view;
mod conn;
pub mod counters;
pub mod dkim;
pub mod log;
pub mod outcome;
mod scheduler;
pub mod session;
pub mod tls;

use crate::dns::Dns;
use crate::egress::Egress;
use crate::queue::state::State;
use crate::queue::{split_recipients, Entry, MessageStore};
use crate::shaping::{ShapingHandle, SharedClock};
use crate::spool::{Accepted, DeferRecord, Envelope, QueueId, Spool};
use counters::Counters;
use log::{DeliveryLog, Record};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DNS resolver: {reason}")]
    Dns { reason: String },
    #[error("TLS client setup: {reason}")]
    Tls { reason: String },
    #[error("delivery log {path}: {source}")]
    Log {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the scheduler, connection tasks and the admin API.
pub struct Shared {
    pub cfg: ShapingHandle,
    pub clock: SharedClock,
    pub store: Arc<dyn MessageStore>,
    pub dns: Dns,
    pub egress: Egress,
    pub tls: tls::TlsConnectors,
    pub log: DeliveryLog,
    pub counters: Counters,
    pub state: Mutex<State>,
    /// Reporting MTA name in DSNs.
    pub hostname: String,
    pub wake: Notify,
    /// Becomes true at shutdown; parked (idle) connections watch it to quit at once.
    pub stop: watch::Receiver<bool>,
}

/// Start-up options that are not in the outbound file.
pub struct Options {
    /// This host's name, used as Reporting-MTA in DSNs.
    pub hostname: String,
    /// Time source (a [`crate::shaping::ManualClock`] in tests).
    pub clock: SharedClock,
}

/// Namespace for [`Dispatcher::start`].
pub struct Dispatcher;

/// Handle to a running dispatcher; cheap to clone.
#[derive(Clone)]
pub struct DispatcherHandle {
    pub shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Dispatcher {
    /// Starts the scheduler task. It stops when `shutdown` becomes true (connections in
    /// progress finish their current message; nothing is lost: the spool still has it).
    pub fn start(
        opts: Options,
        cfg: ShapingHandle,
        store: Arc<dyn MessageStore>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<DispatcherHandle, StartError> {
        let c = cfg.get();
        let dns = Dns::new(&c.raw.dns, opts.clock.clone()).map_err(|e| StartError::Dns {
            reason: e.to_string(),
        })?;
        let tls = tls::build(c.raw.tls.ca_file.as_deref())
            .map_err(|reason| StartError::Tls { reason })?;
        let log =
            DeliveryLog::open(c.raw.log_file.as_deref()).map_err(|source| StartError::Log {
                path: c.raw.log_file.clone().unwrap_or_default(),
                source,
            })?;
        let egress = Egress::default();
        egress.probe_local(&c.raw.pools);
        let shared = Arc::new(Shared {
            cfg,
            clock: opts.clock,
            store,
            dns,
            egress,
            tls,
            log,
            counters: Counters::default(),
            state: Mutex::new(State::default()),
            hostname: opts.hostname,
            wake: Notify::new(),
            stop: shutdown.clone(),
        });
        let task = tokio::spawn(scheduler::run(shared.clone(), shutdown));
        Ok(DispatcherHandle {
            shared,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }
}

/// Queues a message's recipients; a message already queued is ignored (the spool's
/// notification and the DSN path may both report the same id).
pub(crate) fn enqueue_inner(sh: &Arc<Shared>, id: QueueId, env: &Envelope) {
    enqueue_with_state(sh, id, env, &[]);
}

/// Like [`enqueue_inner`], continuing the retry state recorded before a restart: each
/// entry with a record keeps its attempt count, its pending recipients and its next-retry
/// time. An entry without a (readable) record starts at attempt 0, due now.
fn enqueue_with_state(sh: &Arc<Shared>, id: QueueId, env: &Envelope, defers: &[DeferRecord]) {
    let cfg = sh.cfg.get();
    let tenant = if crate::egress::needs_tenant(&cfg) {
        sh.store
            .load(id)
            .ok()
            .and_then(|(_, d)| crate::egress::header_value(&d, &cfg.raw.tenant_header))
    } else {
        None
    };
    let pool = crate::egress::select_pool(&cfg, &env.sender, tenant.as_deref()).to_string();
    let groups = split_recipients(env);
    let now = sh.clock.now_ms();
    {
        let mut st = sh.state.lock().expect("state lock");
        if groups.is_empty() || st.msgs.contains_key(&id.0) {
            return;
        }
        let pool_i = st.pool_index(&pool);
        let mut pending = 0u16;
        for (domain, base, mask) in &groups {
            let mut e = Entry {
                id,
                received_s: env.received_at.min(u32::MAX as u64) as u32,
                attempts: 0,
                base: *base,
                mask: *mask,
                pool: pool_i,
            };
            let mut due = now;
            let rec = defers
                .iter()
                .find(|r| r.domain == *domain && r.base == *base);
            match rec {
                // Finished before the restart (other entries were still pending).
                Some(r) if r.mask == 0 => continue,
                // Recipients done before the failure stay done; a record that covers
                // none of this entry's recipients is not trusted (never drop mail).
                Some(r) if r.mask & mask != 0 => {
                    e.attempts = r.attempts;
                    e.mask = r.mask & mask;
                    due = r.next_ms;
                    tracing::info!(queue_id = %id, domain = %domain, attempts = r.attempts,
                        next_in_ms = r.next_ms.saturating_sub(now), "retry state recovered");
                }
                Some(_) => {
                    tracing::warn!(queue_id = %id, domain = %domain,
                        "recorded retry state does not match the envelope; starting at attempt 0");
                }
                None => {}
            }
            st.schedule(domain, e, due);
            pending += 1;
        }
        if pending == 0 {
            // Every entry was recorded as finished: only the removal was lost.
            drop(st);
            tracing::info!(queue_id = %id, "recovered message already done; removing it");
            if let Err(err) = sh.store.remove(id) {
                tracing::warn!(queue_id = %id, %err, "cannot remove finished message");
            }
            return;
        }
        st.msgs.insert(id.0, pending);
    }
    sh.log.write(&Record {
        ts_ms: now,
        event: "reception",
        queue_id: id.to_string(),
        sender: env.sender.clone(),
        domain: groups
            .iter()
            .map(|g| g.0.as_str())
            .collect::<Vec<_>>()
            .join(","),
        pool,
        tls: String::new(),
        ..Default::default()
    });
    sh.wake.notify_one();
}

impl DispatcherHandle {
    /// Queues a newly accepted (or recovered) message.
    pub fn enqueue(&self, id: QueueId, env: &Envelope) {
        enqueue_inner(&self.shared, id, env);
    }

    /// Queues everything already in the spool (call once at start), with the retry
    /// state the spool recorded for deferred messages.
    pub fn recover(&self, spool: &Spool) -> usize {
        let mut n = 0;
        for (id, env) in spool.recover() {
            enqueue_with_state(&self.shared, id, &env, &spool.deferred(id));
            n += 1;
        }
        n
    }

    /// Forwards the spool's stream of accepted messages into the queue.
    pub fn follow(&self, mut rx: mpsc::UnboundedReceiver<Accepted>) -> JoinHandle<()> {
        let h = self.clone();
        tokio::spawn(async move {
            while let Some(a) = rx.recv().await {
                h.enqueue(a.id, &a.envelope);
            }
        })
    }

    /// Messages known to the queue (scheduled, ready or in flight).
    pub fn depth(&self) -> u64 {
        self.shared.state.lock().expect("state lock").depth()
    }

    /// Outbound connections open right now, over all sites.
    pub fn active_connections(&self) -> u64 {
        let st = self.shared.state.lock().expect("state lock");
        st.sites.values().map(|s| u64::from(s.active)).sum()
    }

    /// Prometheus text for the outbound counters.
    pub fn metrics(&self) -> String {
        self.shared.counters.render()
    }

    /// Waits for the scheduler task to end (after shutdown).
    pub async fn join(&self) {
        let t = self.task.lock().expect("task lock").take();
        if let Some(t) = t {
            let _ = t.await;
        }
    }
}
