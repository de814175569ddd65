//! The controller: desired state (config + health + weights) and the one place that turns
//! it into rings pushed through `DataPlaneOps`.
//!
//! Every change goes through `rebuild`, which recomputes only the touched VIP's table and
//! swaps it whole, once, and only when it differs. Every state change is one structured
//! log line. The controller is synchronous: the async runtime around it (health tasks,
//! API, signals) serialises access through one lock, so changes never interleave.

use std::collections::BTreeMap;
use std::time::Instant;

use balancer_ebpf::{Counter, LbConfig, VipKey, VipMeta, MAX_BACKENDS, MAX_VIPS};
use tracing::{error, info, warn};

use super::feedback::{effective_weight, next_factors, Load, Sample};
use super::ids::{IdAllocator, IdState, IdsExhausted};
use crate::config::{BackendCfg, Config, VipCfg};
use crate::dataplane::{AclPrefix, DataPlaneError, DataPlaneOps};
use crate::health::{CheckError, Health, HealthTracker};
use crate::maglev::{build_table, MaglevBackend};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no backend named {name:?}")]
    UnknownBackend { name: String },
    #[error("weight {weight} for {name:?} is out of range (0..=10000)")]
    BadWeight { name: String, weight: u32 },
    #[error(transparent)]
    Ids(#[from] IdsExhausted),
    #[error("data plane: {source}")]
    DataPlane {
        #[from]
        source: DataPlaneError,
    },
}

/// A backend's runtime state.
#[derive(Debug)]
pub struct BackendState {
    pub id: u32,
    /// Name of the VIP it serves.
    pub vip: String,
    pub cfg: BackendCfg,
    pub override_weight: Option<u32>,
    pub drained: bool,
    pub tracker: HealthTracker,
    /// Why the last check failed; empty after a success.
    pub detail: String,
    pub factor: f64,
    pub load: Option<Load>,
}

impl BackendState {
    /// Operator weight: the API's override, else the file's.
    pub fn weight(&self) -> u32 {
        self.override_weight.unwrap_or(self.cfg.weight)
    }

    /// What the ring is built from.
    pub fn effective(&self) -> u32 {
        if self.drained || !self.tracker.state().usable() {
            0
        } else {
            effective_weight(self.weight(), self.factor)
        }
    }
}

/// A VIP's runtime state.
#[derive(Debug)]
pub struct VipState {
    pub id: u32,
    pub cfg: VipCfg,
    pub keys: Vec<VipKey>,
    pub meta: VipMeta,
    pub acl: Vec<AclPrefix>,
    /// The table last written to the data plane.
    pub ring: Option<Vec<u32>>,
    /// No usable backend: the last table is being kept.
    pub stale: bool,
    pub swaps: u64,
}

/// Counter snapshots for rates.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    pub last: Option<(Instant, Vec<Counter>)>,
    /// New flows per second by backend id / VIP id, over the last sampling interval.
    pub backend: BTreeMap<u32, f64>,
    pub vip: BTreeMap<u32, f64>,
}

pub struct Controller {
    pub(crate) dp: Box<dyn DataPlaneOps + Send>,
    pub(crate) cfg: Option<Config>,
    pub(crate) lb: Option<LbConfig>,
    pub(crate) vip_ids: IdAllocator,
    pub(crate) backend_ids: IdAllocator,
    pub(crate) vips: BTreeMap<String, VipState>,
    pub(crate) backends: BTreeMap<String, BackendState>,
    pub(crate) rates: Rates,
}

impl Controller {
    /// A controller with nothing configured; `apply_config` gives it its first state.
    pub fn new(dp: Box<dyn DataPlaneOps + Send>) -> Self {
        Controller {
            dp,
            cfg: None,
            lb: None,
            vip_ids: IdAllocator::new("VIP", MAX_VIPS),
            backend_ids: IdAllocator::new("backend", MAX_BACKENDS),
            vips: BTreeMap::new(),
            backends: BTreeMap::new(),
            rates: Rates::default(),
        }
    }

    /// A controller that continues an earlier run's id allocation (see `ids`).
    pub fn with_ids(dp: Box<dyn DataPlaneOps + Send>, ids: IdState) -> Self {
        let mut c = Controller::new(dp);
        c.vip_ids = ids.vips;
        c.backend_ids = ids.backends;
        c
    }

    /// The id allocation, to save between runs.
    pub fn ids(&self) -> IdState {
        IdState {
            vips: self.vip_ids.clone(),
            backends: self.backend_ids.clone(),
        }
    }

    pub fn config(&self) -> Option<&Config> {
        self.cfg.as_ref()
    }

    pub fn backend(&self, name: &str) -> Option<&BackendState> {
        self.backends.get(name)
    }

    pub fn vip(&self, name: &str) -> Option<&VipState> {
        self.vips.get(name)
    }

    pub fn backends(&self) -> impl Iterator<Item = &BackendState> {
        self.backends.values()
    }

    /// Recomputes `vip`'s table from its usable backends and swaps it in when it changed.
    /// With no usable backend the last table stays (a VIP that answers with a down MTA
    /// now and then beats one that drops every connection), and that is logged loudly.
    pub(crate) fn rebuild(&mut self, vip: &str, reason: &str) -> Result<(), ControlError> {
        let members: Vec<MaglevBackend> = self
            .backends
            .values()
            .filter(|b| b.vip == vip)
            .filter_map(|b| {
                let weight = b.effective();
                (weight > 0).then(|| MaglevBackend {
                    name: b.cfg.name.clone(),
                    id: b.id,
                    weight,
                })
            })
            .collect();
        let Some(v) = self.vips.get_mut(vip) else {
            return Ok(());
        };
        let Some(table) = build_table(&members, v.cfg.ring_size) else {
            if !v.stale {
                v.stale = true;
                if v.ring.is_some() {
                    error!(vip, vip_id = v.id, reason, "every backend of the VIP is down or drained: keeping the last table instead of blackholing");
                } else {
                    error!(vip, vip_id = v.id, reason, "every backend of the VIP is down or drained and no table was ever written: its new connections are dropped");
                }
            }
            return Ok(());
        };
        let was_stale = std::mem::replace(&mut v.stale, false);
        if v.ring.as_deref() == Some(&table[..]) {
            return Ok(());
        }
        let moved = v.ring.as_ref().map_or(table.len(), |old| {
            old.iter().zip(&table).filter(|(a, b)| a != b).count()
        });
        self.dp.swap_ring(v.id, &table)?;
        v.swaps += 1;
        info!(
            vip,
            vip_id = v.id,
            reason,
            backends = members.len(),
            moved_slots = moved,
            ring_size = table.len(),
            recovered = was_stale,
            "table swap"
        );
        v.ring = Some(table);
        Ok(())
    }

    fn backend_mut(&mut self, name: &str) -> Result<&mut BackendState, ControlError> {
        self.backends
            .get_mut(name)
            .ok_or_else(|| ControlError::UnknownBackend {
                name: name.to_string(),
            })
    }

    /// Feeds one health-check result; returns the new state when it flipped.
    pub fn health_report(
        &mut self,
        name: &str,
        result: &Result<(), CheckError>,
    ) -> Result<Option<Health>, ControlError> {
        let Some(b) = self.backends.get_mut(name) else {
            return Ok(None);
        };
        b.detail = match result {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        let Some(new) = b.tracker.observe(result.is_ok()) else {
            return Ok(None);
        };
        let vip = b.vip.clone();
        match new {
            Health::Down => {
                warn!(backend = name, vip, id = b.id, reason = %b.detail, "backend down")
            }
            _ => info!(
                backend = name,
                vip,
                id = b.id,
                state = new.as_str(),
                "backend up"
            ),
        }
        self.rebuild(&vip, "health")?;
        Ok(Some(new))
    }

    /// Weight 0 for new flows; existing flows continue through the flow table.
    pub fn drain(&mut self, name: &str) -> Result<(), ControlError> {
        self.set_drained(name, true)
    }

    pub fn undrain(&mut self, name: &str) -> Result<(), ControlError> {
        self.set_drained(name, false)
    }

    fn set_drained(&mut self, name: &str, drained: bool) -> Result<(), ControlError> {
        let b = self.backend_mut(name)?;
        if b.drained == drained {
            return Ok(());
        }
        b.drained = drained;
        let (vip, id) = (b.vip.clone(), b.id);
        info!(
            backend = name,
            vip,
            id,
            drained,
            effective_weight = b.effective(),
            "{}",
            if drained {
                "backend drained"
            } else {
                "backend undrained"
            }
        );
        self.rebuild(&vip, if drained { "drain" } else { "undrain" })
    }

    /// Sets the operator weight (kept until the file's weight for this backend changes).
    pub fn set_weight(&mut self, name: &str, weight: u32) -> Result<(), ControlError> {
        if weight > 10_000 {
            return Err(ControlError::BadWeight {
                name: name.to_string(),
                weight,
            });
        }
        let b = self.backend_mut(name)?;
        let old = b.weight();
        b.override_weight = Some(weight);
        let (vip, id) = (b.vip.clone(), b.id);
        info!(
            backend = name,
            vip,
            id,
            from = old,
            to = weight,
            effective_weight = b.effective(),
            source = "api",
            "weight change"
        );
        self.rebuild(&vip, "weight")
    }

    /// Applies one round of queue reports (`None`: the poll failed) to the weight factors,
    /// and rebuilds the VIPs whose effective weights changed.
    pub fn apply_loads(
        &mut self,
        loads: &BTreeMap<String, Option<Load>>,
    ) -> Result<(), ControlError> {
        let Some(fb) = self.cfg.as_ref().map(|c| c.feedback.clone()) else {
            return Ok(());
        };
        let vip_names: Vec<String> = self.vips.keys().cloned().collect();
        for vip in vip_names {
            let names: Vec<String> = self
                .backends
                .values()
                .filter(|b| b.vip == vip)
                .map(|b| b.cfg.name.clone())
                .collect();
            let samples: Vec<Sample> = names
                .iter()
                .map(|n| {
                    let b = &self.backends[n];
                    let load = loads.get(n).copied().flatten();
                    Sample {
                        backlog: load.and_then(|l| l.backlog()),
                        factor: b.factor,
                    }
                })
                .collect();
            let factors = next_factors(&samples, &fb);
            let mut changed = false;
            for (n, f) in names.iter().zip(factors) {
                let b = self.backends.get_mut(n).expect("listed above");
                if let Some(Some(l)) = loads.get(n) {
                    b.load = Some(*l);
                }
                let before = b.effective();
                b.factor = f;
                let after = b.effective();
                if before != after {
                    changed = true;
                    info!(backend = %n, vip, id = b.id, from = before, to = after, factor = f, backlog = ?b.load.and_then(|l| l.backlog()), source = "feedback", "weight change");
                }
            }
            if changed {
                self.rebuild(&vip, "feedback")?;
            }
        }
        Ok(())
    }

    /// Reads the counters and updates per-second rates against the previous sample.
    pub fn sample_stats(&mut self, now: Instant) -> Result<(), ControlError> {
        let stats = self.dp.read_stats()?;
        if let Some((then, prev)) = &self.rates.last {
            let dt = now.duration_since(*then).as_secs_f64();
            if dt > 0.0 {
                let rate = |slot: u32| {
                    let s = slot as usize;
                    let d = stats
                        .get(s)
                        .map_or(0, |c| c.packets)
                        .saturating_sub(prev.get(s).map_or(0, |c| c.packets));
                    d as f64 / dt
                };
                use balancer_ebpf::{stats_backend_slot, stats_vip_slot, ObjectCounter};
                self.rates.backend = self
                    .backends
                    .values()
                    .map(|b| {
                        (
                            b.id,
                            rate(stats_backend_slot(b.id, ObjectCounter::NewFlows)),
                        )
                    })
                    .collect();
                self.rates.vip = self
                    .vips
                    .values()
                    .map(|v| (v.id, rate(stats_vip_slot(v.id, ObjectCounter::NewFlows))))
                    .collect();
            }
        }
        self.rates.last = Some((now, stats));
        Ok(())
    }

    /// Current counters straight from the data plane.
    pub fn read_stats(&self) -> Result<Vec<Counter>, ControlError> {
        Ok(self.dp.read_stats()?)
    }
}
