//! Builds the `Status` snapshot from the controller's state and the latest counters.

use std::collections::BTreeMap;

use balancer_ebpf::{stats_backend_slot, stats_vip_slot, Counter, ObjectCounter};

use super::controller::{ControlError, Controller};
use super::status::{BackendStatus, Status, VipStatus, GLOBAL_COUNTERS};
use crate::config::HashMode;

impl Controller {
    /// The status as the API shows it, with counters read now.
    pub fn status(&self) -> Result<Status, ControlError> {
        let stats = self.dp.read_stats()?;
        let get = |slot: u32| {
            stats
                .get(slot as usize)
                .copied()
                .unwrap_or(Counter::default())
        };
        let mut counters = BTreeMap::new();
        let mut drops = BTreeMap::new();
        for (c, name) in GLOBAL_COUNTERS {
            let v = get(*c as u32).packets;
            counters.insert(name.to_string(), v);
            if let Some(reason) = name.strip_prefix("drop_") {
                drops.insert(reason.to_string(), v);
            }
        }
        let vips = self
            .vips
            .iter()
            .map(|(name, v)| {
                let traffic = get(stats_vip_slot(v.id, ObjectCounter::Traffic));
                let mut slots: BTreeMap<u32, u32> = BTreeMap::new();
                if let Some(r) = &v.ring {
                    for &id in r {
                        *slots.entry(id).or_default() += 1;
                    }
                }
                let backends = self
                    .backends
                    .values()
                    .filter(|b| &b.vip == name)
                    .map(|b| {
                        let t = get(stats_backend_slot(b.id, ObjectCounter::Traffic));
                        BackendStatus {
                            name: b.cfg.name.clone(),
                            id: b.id,
                            addr: b.cfg.addr.to_string(),
                            pool: b.cfg.pool.clone(),
                            health: b.tracker.state().as_str().to_string(),
                            health_detail: b.detail.clone(),
                            drained: b.drained,
                            configured_weight: b.cfg.weight,
                            override_weight: b.override_weight,
                            feedback_factor: b.factor,
                            effective_weight: b.effective(),
                            slots: slots.get(&b.id).copied().unwrap_or(0),
                            queue_depth: b.load.and_then(|l| l.queue_depth),
                            active_deliveries: b.load.and_then(|l| l.active_deliveries),
                            packets: t.packets,
                            bytes: t.bytes,
                            new_flows: get(stats_backend_slot(b.id, ObjectCounter::NewFlows))
                                .packets,
                            new_flows_per_s: self.rates.backend.get(&b.id).copied().unwrap_or(0.0),
                        }
                    })
                    .collect();
                VipStatus {
                    name: name.clone(),
                    id: v.id,
                    addr: v.cfg.addr.to_string(),
                    ports: v.cfg.ports.clone(),
                    hash: match v.cfg.hash {
                        HashMode::Maglev => "maglev",
                        HashMode::StickySource => "sticky-source",
                    }
                    .to_string(),
                    ring_size: v.cfg.ring_size,
                    table_stale: v.stale,
                    swaps: v.swaps,
                    packets: traffic.packets,
                    bytes: traffic.bytes,
                    new_flows: get(stats_vip_slot(v.id, ObjectCounter::NewFlows)).packets,
                    new_flows_per_s: self.rates.vip.get(&v.id).copied().unwrap_or(0.0),
                    backends,
                }
            })
            .collect();
        Ok(Status {
            vips,
            counters,
            drops,
            feedback_enabled: self.cfg.as_ref().is_some_and(|c| c.feedback.enabled),
        })
    }
}
