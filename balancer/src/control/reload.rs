//! Applying a (new) config to the controller: the first load and every reload.
//!
//! The config arrives already validated (a file that fails validation never gets here,
//! so it changes nothing). Ids are planned before any map is touched, so running out of
//! them also changes nothing. Only VIPs whose config changed get a new table.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::controller::{BackendState, ControlError, Controller, VipState};
use super::convert::{acl, backend_info, lb_config, vip_keys, vip_meta};
use crate::config::Config;
use crate::health::HealthTracker;

/// What a reload changed, for the log and the API's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadSummary {
    pub vips_added: Vec<String>,
    pub vips_removed: Vec<String>,
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    /// VIPs whose table was recomputed.
    pub vips_rebuilt: Vec<String>,
}

impl Controller {
    /// Makes `cfg` the desired state. `own_mac` / `nexthop_mac` are already resolved.
    pub fn apply_config(
        &mut self,
        cfg: Config,
        own_mac: [u8; 6],
        nexthop_mac: [u8; 6],
    ) -> Result<ReloadSummary, ControlError> {
        let vip_plan = self
            .vip_ids
            .plan(cfg.vips.iter().map(|v| v.name.as_str()))?;
        let be_plan = self.backend_ids.plan(
            cfg.vips
                .iter()
                .flat_map(|v| v.backends.iter().map(|b| b.name.as_str())),
        )?;
        self.vip_ids.commit(&vip_plan);
        self.backend_ids.commit(&be_plan);
        let mut summary = ReloadSummary::default();

        if let Some(old) = &self.cfg {
            if old.dataplane.interfaces != cfg.dataplane.interfaces
                || old.dataplane.xdp_mode != cfg.dataplane.xdp_mode
            {
                warn!(
                    old_interfaces = ?old.dataplane.interfaces,
                    new_interfaces = ?cfg.dataplane.interfaces,
                    "dataplane.interfaces / xdp_mode changed: takes effect only after `balancer detach` and a restart"
                );
            }
        }
        let lb = lb_config(&cfg.dataplane, own_mac, nexthop_mac);
        if self.lb != Some(lb) {
            self.dp.set_config(&lb)?;
            self.lb = Some(lb);
            info!(
                mtu = lb.mtu,
                src_vary_bits = lb.src_vary_bits,
                "data plane config written"
            );
        }

        let (rise, fall) = (cfg.health.rise, cfg.health.fall);
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for v in &cfg.vips {
            for b in &v.backends {
                seen.insert(b.name.clone());
                let id = be_plan[&b.name];
                match self.backends.get_mut(&b.name) {
                    None => {
                        self.dp.set_backend(id, &backend_info(b.addr, true))?;
                        info!(backend = %b.name, id, addr = %b.addr, vip = %v.name, weight = b.weight, "backend added");
                        self.backends.insert(
                            b.name.clone(),
                            BackendState {
                                id,
                                vip: v.name.clone(),
                                cfg: b.clone(),
                                override_weight: None,
                                drained: false,
                                tracker: HealthTracker::new(rise, fall),
                                detail: String::new(),
                                factor: 1.0,
                                load: None,
                            },
                        );
                        summary.backends_added.push(b.name.clone());
                        dirty.insert(v.name.clone());
                    }
                    Some(st) => {
                        if st.cfg.addr != b.addr {
                            self.dp.set_backend(id, &backend_info(b.addr, true))?;
                            // A new address is a new machine: its health is unknown.
                            st.tracker = HealthTracker::new(rise, fall);
                            info!(backend = %b.name, id, from = %st.cfg.addr, to = %b.addr, "backend address change");
                        }
                        if st.cfg.weight != b.weight {
                            let before = st.weight();
                            // The file changed this weight: it wins over an API override.
                            st.override_weight = None;
                            info!(backend = %b.name, id, from = before, to = b.weight, source = "config", "weight change");
                        }
                        if st.vip != v.name {
                            dirty.insert(std::mem::replace(&mut st.vip, v.name.clone()));
                        }
                        st.tracker.set_thresholds(rise, fall);
                        st.cfg = b.clone();
                    }
                }
            }
        }
        if !cfg.feedback.enabled {
            // Feedback switched off: its reductions must not outlive it.
            for b in self.backends.values_mut().filter(|b| b.factor != 1.0) {
                let before = b.effective();
                b.factor = 1.0;
                info!(backend = %b.cfg.name, id = b.id, from = before, to = b.effective(), source = "config", reason = "feedback disabled", "weight change");
                dirty.insert(b.vip.clone());
            }
        }
        let gone: Vec<String> = self
            .backends
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        let mut invalidate = Vec::new();
        for name in gone {
            let st = self.backends.remove(&name).expect("listed above");
            info!(backend = %name, id = st.id, vip = %st.vip, "backend removed");
            dirty.insert(st.vip.clone());
            invalidate.push((st.id, st.cfg.addr));
            summary.backends_removed.push(name);
        }

        for v in &cfg.vips {
            let id = vip_plan[&v.name];
            let keys = vip_keys(v);
            let meta = vip_meta(v, id);
            let prefixes = acl(v);
            match self.vips.get_mut(&v.name) {
                None => {
                    self.dp.set_acl(id, &prefixes)?;
                    for k in &keys {
                        self.dp.upsert_vip(k, &meta)?;
                    }
                    info!(vip = %v.name, id, addr = %v.addr, ports = ?v.ports, "VIP added");
                    self.vips.insert(
                        v.name.clone(),
                        VipState {
                            id,
                            cfg: v.clone(),
                            keys,
                            meta,
                            acl: prefixes,
                            ring: None,
                            stale: false,
                            swaps: 0,
                        },
                    );
                    summary.vips_added.push(v.name.clone());
                    dirty.insert(v.name.clone());
                }
                Some(st) => {
                    if st.acl != prefixes {
                        self.dp.set_acl(id, &prefixes)?;
                        st.acl = prefixes;
                    }
                    for k in st.keys.iter().filter(|k| !keys.contains(k)) {
                        self.dp.remove_vip(k)?;
                    }
                    for k in &keys {
                        if !st.keys.contains(k) || st.meta != meta {
                            self.dp.upsert_vip(k, &meta)?;
                        }
                    }
                    if st.cfg != *v {
                        info!(vip = %v.name, id, "VIP config changed");
                        dirty.insert(v.name.clone());
                    }
                    st.keys = keys;
                    st.meta = meta;
                    st.cfg = v.clone();
                }
            }
        }
        let names: BTreeSet<&str> = cfg.vips.iter().map(|v| v.name.as_str()).collect();
        let gone: Vec<String> = self
            .vips
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let st = self.vips.remove(&name).expect("listed above");
            for k in &st.keys {
                self.dp.remove_vip(k)?;
            }
            self.dp.set_acl(st.id, &[])?;
            info!(vip = %name, id = st.id, "VIP removed");
            dirty.remove(&name);
            summary.vips_removed.push(name);
        }

        self.cfg = Some(cfg);
        for vip in &dirty {
            if self.vips.contains_key(vip) {
                self.rebuild(vip, "config")?;
                summary.vips_rebuilt.push(vip.clone());
            }
        }
        // Only now that no new table points at them.
        for (id, addr) in invalidate {
            self.dp.set_backend(id, &backend_info(addr, false))?;
        }
        Ok(summary)
    }
}
