//! An in-memory data plane: the same contract as the XDP maps, held in a struct.
//!
//! Used by the tests (which then inspect exactly what the controller wrote, and when)
//! and by `balancer run --dry-run`, which runs the whole daemon without root or XDP.
//! It enforces the same limits as the real map writer (prime ring sizes, id ranges) so
//! that a controller bug shows up here too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use balancer_ebpf::{
    BackendInfo, Counter, LbConfig, VipKey, VipMeta, MAX_BACKENDS, MAX_VIPS, STATS_SIZE,
};

use crate::dataplane::{AclPrefix, DataPlaneError, DataPlaneOps};

/// What the in-memory maps hold.
#[derive(Debug)]
pub struct MemoryState {
    pub config: Option<LbConfig>,
    pub vips: BTreeMap<(Vec<u8>, u16, u8), (VipKey, VipMeta)>,
    pub backends: BTreeMap<u32, BackendInfo>,
    pub rings: BTreeMap<u32, Vec<u32>>,
    pub acls: BTreeMap<u32, Vec<AclPrefix>>,
    pub stats: Vec<Counter>,
    /// Every `swap_ring` call: when, and for which VIP.
    pub swaps: Vec<(Instant, u32)>,
}

impl Default for MemoryState {
    fn default() -> Self {
        MemoryState {
            config: None,
            vips: BTreeMap::new(),
            backends: BTreeMap::new(),
            rings: BTreeMap::new(),
            acls: BTreeMap::new(),
            stats: vec![Counter::default(); STATS_SIZE as usize],
            swaps: Vec::new(),
        }
    }
}

/// A cloneable handle: the controller owns one, a test keeps another to look inside.
#[derive(Clone, Debug, Default)]
pub struct MemoryDataPlane {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryDataPlane {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The active ring of `vip_id`, if one was ever written.
    pub fn ring(&self, vip_id: u32) -> Option<Vec<u32>> {
        self.state().rings.get(&vip_id).cloned()
    }

    /// Adds to a stats slot, as the XDP program would.
    pub fn bump(&self, slot: u32, packets: u64, bytes: u64) {
        let mut s = self.state();
        let c = &mut s.stats[slot as usize];
        c.packets += packets;
        c.bytes += bytes;
    }
}

fn key_id(k: &VipKey) -> (Vec<u8>, u16, u8) {
    (k.addr.to_vec(), k.port, k.family)
}

impl DataPlaneOps for MemoryDataPlane {
    fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataPlaneError> {
        self.state().config = Some(*cfg);
        Ok(())
    }

    fn upsert_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataPlaneError> {
        if meta.vip_id >= MAX_VIPS {
            return Err(DataPlaneError::OutOfRange {
                what: "VIP",
                id: meta.vip_id,
                max: MAX_VIPS - 1,
            });
        }
        self.state().vips.insert(key_id(key), (*key, *meta));
        Ok(())
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataPlaneError> {
        self.state().vips.remove(&key_id(key));
        Ok(())
    }

    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<(), DataPlaneError> {
        if id >= MAX_BACKENDS {
            return Err(DataPlaneError::OutOfRange {
                what: "backend",
                id,
                max: MAX_BACKENDS - 1,
            });
        }
        self.state().backends.insert(id, *info);
        Ok(())
    }

    fn swap_ring(&mut self, vip_id: u32, ring: &[u32]) -> Result<(), DataPlaneError> {
        crate::dataplane::keys::check_ring(vip_id, ring)?;
        let mut s = self.state();
        s.rings.insert(vip_id, ring.to_vec());
        s.swaps.push((Instant::now(), vip_id));
        Ok(())
    }

    fn set_acl(&mut self, vip_id: u32, prefixes: &[AclPrefix]) -> Result<(), DataPlaneError> {
        self.state().acls.insert(vip_id, prefixes.to_vec());
        Ok(())
    }

    fn read_stats(&self) -> Result<Vec<Counter>, DataPlaneError> {
        Ok(self.state().stats.clone())
    }
}
