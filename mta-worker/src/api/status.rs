//! The `/status` document. Field names are a contract with the balancer, which reads
//! `queue_depth` and `active_deliveries`.

use crate::state::Shared;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Messages in the spool.
    pub queue_depth: u64,
    /// Messages per recipient domain.
    pub queue_depth_by_domain: BTreeMap<String, u64>,
    /// Open SMTP sessions.
    pub active_sessions: u64,
    /// Outbound connections delivering right now (0 when outbound is not configured).
    pub active_deliveries: u64,
    /// Bytes of queued message data.
    pub spool_bytes: u64,
}

impl Status {
    pub fn collect(shared: &Shared) -> Self {
        Self {
            queue_depth: shared.spool.queue_depth(),
            queue_depth_by_domain: shared.spool.depth_by_domain(),
            active_sessions: shared.metrics.sessions_active.load(Relaxed),
            active_deliveries: shared
                .delivery
                .get()
                .map(|d| d.active_connections())
                .unwrap_or(0),
            spool_bytes: shared.spool.bytes(),
        }
    }
}
