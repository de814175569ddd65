//! The daemon's status as data: what `GET /status` returns and `balancer status` prints,
//! plus the names of the kernel's global counters.

use std::collections::BTreeMap;

use balancer_ebpf::GlobalCounter;
use serde::{Deserialize, Serialize};

/// Global counters with their metric/status names. Drops are the `drop_*` ones.
pub const GLOBAL_COUNTERS: &[(GlobalCounter, &str)] = &[
    (GlobalCounter::Pass, "pass"),
    (GlobalCounter::Forwarded, "forwarded"),
    (GlobalCounter::NewFlow, "new_flow"),
    (GlobalCounter::FlowHit, "flow_hit"),
    (GlobalCounter::FlowMiss, "flow_miss"),
    (GlobalCounter::DropAcl, "drop_acl"),
    (GlobalCounter::DropSynGuard, "drop_syn_guard"),
    (GlobalCounter::DropNoBackend, "drop_no_backend"),
    (GlobalCounter::DropTooBig, "drop_too_big"),
    (GlobalCounter::DropFragment, "drop_fragment"),
    (GlobalCounter::DropMalformed, "drop_malformed"),
    (GlobalCounter::DropAdjust, "drop_adjust"),
    (GlobalCounter::IcmpTooBigSent, "icmp_too_big_sent"),
    (GlobalCounter::IcmpForwarded, "icmp_forwarded"),
    (GlobalCounter::IcmpPass, "icmp_pass"),
    (GlobalCounter::NotReady, "not_ready"),
];

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub vips: Vec<VipStatus>,
    /// Global packet counters by name.
    pub counters: BTreeMap<String, u64>,
    /// The `drop_*` counters, by reason (`acl`, `syn_guard`, ...).
    pub drops: BTreeMap<String, u64>,
    /// Whether queue-aware weights are on.
    pub feedback_enabled: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VipStatus {
    pub name: String,
    pub id: u32,
    pub addr: String,
    pub ports: Vec<u16>,
    pub hash: String,
    pub ring_size: u32,
    /// True while no backend is usable and the last table is kept instead.
    pub table_stale: bool,
    /// Table swaps since the daemon started.
    pub swaps: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub new_flows_per_s: f64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    pub id: u32,
    pub addr: String,
    pub pool: Option<String>,
    /// `unknown`, `up` or `down`.
    pub health: String,
    /// Last check failure (empty when the last check passed).
    pub health_detail: String,
    pub drained: bool,
    /// Weight from the config file.
    pub configured_weight: u32,
    /// Weight set through the API, if any (replaces the configured one until the file's
    /// value for this backend changes).
    pub override_weight: Option<u32>,
    /// Queue-aware factor in `[min_factor, 1]`.
    pub feedback_factor: f64,
    /// What the ring is built from: 0 when drained or down.
    pub effective_weight: u32,
    /// Slots this backend holds in the VIP's current table.
    pub slots: u32,
    pub queue_depth: Option<u64>,
    pub active_deliveries: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub new_flows_per_s: f64,
}
