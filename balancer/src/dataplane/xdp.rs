//! The real data plane: `DataPlaneOps` over the maps of the `balancer` XDP program.
//!
//! Owns the program's life cycle too: load (optionally pinned under a bpffs directory),
//! attach, adopt a pinned set after a restart, detach. Ring swaps follow the
//! double-buffer protocol of `lib.rs`: write the inactive half, flip `RING_ACTIVE`, and
//! never rewrite a half less than `RING_GRACE` after it stopped being live, so a packet
//! that read the old index still finds the old table.

use super::{
    attach::{AttachMode, RunResult, XdpProg},
    keys, AclPrefix, DataPlaneError, DataPlaneOps,
};
use crate::programs::BALANCER_OBJ;
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray};
use balancer_ebpf::{
    map_names as n, prog_names, ring_slot, stats_backend_slot, stats_vip_slot, AclData,
    BackendInfo, Counter, FlowKey, FlowValue, LbConfig, ObjectCounter, VipAddr, VipKey, VipMeta,
    MAGLEV_RING_MAX, MAX_BACKENDS, MAX_VIPS, STATS_GLOBAL_SLOTS, STATS_SIZE,
};
use std::{
    collections::HashMap as StdMap,
    path::Path,
    time::{Duration, Instant},
};

/// Minimum time between a flip of a VIP's ring and the next write into the half that the
/// flip retired. A packet holds the index for well under a microsecond.
pub const RING_GRACE: Duration = Duration::from_millis(2);

const OBJECT: &str = "balancer";

/// Every map of the program, in pin order.
const MAPS: [&str; 11] = [
    n::VIPS,
    n::VIP_ADDRS,
    n::VIP_PORTS,
    n::BACKENDS,
    n::RINGS,
    n::RING_ACTIVE,
    n::FLOWS,
    n::ACL,
    n::SYN_GUARD,
    n::CONFIG,
    n::STATS,
];

/// Sizes for a smaller footprint (tests, benchmarks, small hosts).
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `FLOWS` capacity; default `FLOW_TABLE_SIZE`.
    pub flow_table_size: Option<u32>,
    /// VIP ids the rings have room for (`RINGS` = ids × 2 × `MAGLEV_RING_MAX`); default
    /// `MAX_VIPS`. VIP ids at or above it get no backend.
    pub ring_vips: Option<u32>,
    /// Pin program, maps and link under this bpffs directory.
    pub pin_dir: Option<std::path::PathBuf>,
}

/// The balancer program and typed handles on its maps.
pub struct XdpDataPlane {
    prog: XdpProg,
    vips: HashMap<MapData, VipKey, VipMeta>,
    vip_addrs: HashMap<MapData, VipAddr, u32>,
    vip_ports: Array<MapData, u32>,
    backends: Array<MapData, BackendInfo>,
    rings: Array<MapData, u32>,
    ring_active: Array<MapData, u32>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    acl: LpmTrie<MapData, AclData, u32>,
    config: Array<MapData, LbConfig>,
    stats: PerCpuArray<MapData, Counter>,
    ring_vips: u32,
    /// `STATS` slots of the VIPs and backends ever configured through this handle (or
    /// found at adoption): `read_stats` reads only these and the global ones. Reading all
    /// 8,000-odd slots cost a syscall each, every second, and was most of the daemon's
    /// CPU in `bench lb`.
    counted: std::collections::BTreeSet<u32>,
    last_flip: StdMap<u32, Instant>,
}

fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DataPlaneError {
    move |source| DataPlaneError::Map { map, op, source }
}

/// Pulls the maps out of `get` in `MAPS` order and types them.
fn typed(
    prog: XdpProg,
    mut get: impl FnMut(&'static str) -> Result<Map, DataPlaneError>,
    ring_vips: u32,
) -> Result<XdpDataPlane, DataPlaneError> {
    macro_rules! t {
        ($name:expr) => {
            get($name)?.try_into().map_err(map_err($name, "open"))?
        };
    }
    Ok(XdpDataPlane {
        vips: t!(n::VIPS),
        vip_addrs: t!(n::VIP_ADDRS),
        vip_ports: t!(n::VIP_PORTS),
        backends: t!(n::BACKENDS),
        rings: t!(n::RINGS),
        ring_active: t!(n::RING_ACTIVE),
        flows: t!(n::FLOWS),
        acl: t!(n::ACL),
        config: t!(n::CONFIG),
        stats: t!(n::STATS),
        prog,
        ring_vips,
        counted: Default::default(),
        last_flip: StdMap::new(),
    })
}

impl XdpDataPlane {
    /// Loads and verifies the program; pins it when `opts.pin_dir` is set.
    pub fn load(opts: &LoadOptions) -> Result<Self, DataPlaneError> {
        let ring_vips = opts.ring_vips.unwrap_or(MAX_VIPS).clamp(1, MAX_VIPS);
        let mut sizes = vec![(n::RINGS, ring_vips * 2 * MAGLEV_RING_MAX)];
        if let Some(f) = opts.flow_table_size {
            sizes.push((n::FLOWS, f.max(1)));
        }
        let mut prog = XdpProg::load(OBJECT, prog_names::BALANCER, BALANCER_OBJ, &sizes)?;
        if let Some(dir) = &opts.pin_dir {
            prog.pin(dir)?;
        }
        let mut taken: StdMap<&'static str, Map> = StdMap::new();
        for name in MAPS {
            taken.insert(name, prog.take_map(name)?);
        }
        typed(
            prog,
            |name| {
                taken.remove(name).ok_or(DataPlaneError::MissingMap {
                    object: OBJECT,
                    map: name,
                })
            },
            ring_vips,
        )
    }

    /// Opens the set pinned under `dir` by an earlier `load`: forwarding never stopped,
    /// and the maps keep their flows, rings and counters.
    pub fn adopt(dir: &Path) -> Result<Self, DataPlaneError> {
        let (prog, maps) = XdpProg::adopt(OBJECT, prog_names::BALANCER, dir, &MAPS)?;
        let mut by_name: StdMap<&'static str, Map> = MAPS.into_iter().zip(maps).collect();
        let mut plane = typed(
            prog,
            |name| {
                by_name.remove(name).ok_or(DataPlaneError::MissingMap {
                    object: OBJECT,
                    map: name,
                })
            },
            MAX_VIPS,
        )?;
        plane.ring_vips = plane.rings.len() / (2 * MAGLEV_RING_MAX);
        // Counters of what the previous daemon configured stay readable at once.
        let vip_ids: Vec<u32> = plane
            .vips
            .iter()
            .filter_map(Result::ok)
            .map(|(_, m)| m.vip_id)
            .collect();
        for id in vip_ids {
            plane.count_vip(id);
        }
        for id in 0..MAX_BACKENDS {
            if plane
                .backends
                .get(&id, 0)
                .is_ok_and(|b| b != BackendInfo::default())
            {
                plane.count_backend(id);
            }
        }
        tracing::info!(dir = %dir.display(), "adopted pinned XDP balancer");
        Ok(plane)
    }

    fn count_vip(&mut self, vip_id: u32) {
        for c in [ObjectCounter::Traffic, ObjectCounter::NewFlows] {
            self.counted.insert(stats_vip_slot(vip_id, c));
        }
    }

    fn count_backend(&mut self, id: u32) {
        for c in [ObjectCounter::Traffic, ObjectCounter::NewFlows] {
            self.counted.insert(stats_backend_slot(id, c));
        }
    }

    /// Attaches to `iface` (pinning the link if the program is pinned).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DataPlaneError> {
        self.prog.attach(iface, mode)
    }

    /// Detaches from the interface and removes every pin.
    pub fn detach(self) -> Result<(), DataPlaneError> {
        self.prog.detach(&MAPS)
    }

    /// Runs the program on `frame` `repeat` times (`BPF_PROG_TEST_RUN`).
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<RunResult, DataPlaneError> {
        self.prog.test_run(frame, repeat)
    }

    /// Mean time per run over `repeat` runs (see `XdpProg::bench` for `live`).
    pub fn bench_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
        live: bool,
    ) -> Result<Duration, DataPlaneError> {
        self.prog.bench(frame, repeat, live)
    }

    /// The flow table's entry for `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key, 0).ok()
    }

    /// Which half of `vip_id`'s ring is live.
    pub fn active_half(&self, vip_id: u32) -> Result<u32, DataPlaneError> {
        self.ring_active
            .get(&vip_id, 0)
            .map(|h| h & 1)
            .map_err(map_err(n::RING_ACTIVE, "read"))
    }

    /// Sets or clears `port` in the `VIP_PORTS` bitmap.
    fn set_port(&mut self, port: u16, on: bool) -> Result<(), DataPlaneError> {
        let word = u32::from(port) / 32;
        let bit = 1u32 << (port % 32);
        let w = self
            .vip_ports
            .get(&word, 0)
            .map_err(map_err(n::VIP_PORTS, "read"))?;
        let w = if on { w | bit } else { w & !bit };
        self.vip_ports
            .set(word, w, 0)
            .map_err(map_err(n::VIP_PORTS, "write"))
    }

    fn vip_addr_key(key: &VipKey) -> VipAddr {
        VipAddr {
            addr: key.addr,
            family: key.family,
            _pad: [0; 3],
        }
    }
}

impl DataPlaneOps for XdpDataPlane {
    fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataPlaneError> {
        self.config
            .set(0, cfg, 0)
            .map_err(map_err(n::CONFIG, "write"))
    }

    fn upsert_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataPlaneError> {
        if meta.vip_id >= MAX_VIPS {
            return Err(DataPlaneError::OutOfRange {
                what: "VIP",
                id: meta.vip_id,
                max: MAX_VIPS - 1,
            });
        }
        let existed = self.vips.get(key, 0).is_ok();
        // Address and port first: a VIP that exists must always find both.
        if !existed {
            self.set_port(key.port, true)?;
            let ak = Self::vip_addr_key(key);
            let count = self.vip_addrs.get(&ak, 0).unwrap_or(0);
            self.vip_addrs
                .insert(ak, count + 1, 0)
                .map_err(map_err(n::VIP_ADDRS, "insert"))?;
        }
        self.count_vip(meta.vip_id);
        self.vips
            .insert(key, meta, 0)
            .map_err(map_err(n::VIPS, "insert"))
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataPlaneError> {
        if self.vips.get(key, 0).is_err() {
            return Ok(());
        }
        self.vips.remove(key).map_err(map_err(n::VIPS, "remove"))?;
        // Flow-table hits skip `VIPS` (fast path): the VIP's flows must go with it.
        let stale: Vec<FlowKey> = self
            .flows
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.dst == key.addr && k.dport == key.port && k.family == key.family)
            .collect();
        for k in &stale {
            // An entry the LRU evicted meanwhile is already gone: nothing to report.
            let _ = self.flows.remove(k);
        }
        let port_in_use = self
            .vips
            .keys()
            .filter_map(Result::ok)
            .any(|k| k.port == key.port);
        if !port_in_use {
            self.set_port(key.port, false)?;
        }
        let ak = Self::vip_addr_key(key);
        match self.vip_addrs.get(&ak, 0).unwrap_or(1) {
            0 | 1 => self
                .vip_addrs
                .remove(&ak)
                .map_err(map_err(n::VIP_ADDRS, "remove")),
            c => self
                .vip_addrs
                .insert(ak, c - 1, 0)
                .map_err(map_err(n::VIP_ADDRS, "insert")),
        }
    }

    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<(), DataPlaneError> {
        if id >= MAX_BACKENDS {
            return Err(DataPlaneError::OutOfRange {
                what: "backend",
                id,
                max: MAX_BACKENDS - 1,
            });
        }
        self.count_backend(id);
        self.backends
            .set(id, info, 0)
            .map_err(map_err(n::BACKENDS, "write"))
    }

    fn swap_ring(&mut self, vip_id: u32, ring: &[u32]) -> Result<(), DataPlaneError> {
        if vip_id >= self.ring_vips {
            return Err(DataPlaneError::OutOfRange {
                what: "VIP",
                id: vip_id,
                max: self.ring_vips - 1,
            });
        }
        keys::check_ring(vip_id, ring)?;
        if let Some(t) = self.last_flip.get(&vip_id) {
            let since = t.elapsed();
            if since < RING_GRACE {
                std::thread::sleep(RING_GRACE - since);
            }
        }
        let live = self.active_half(vip_id)?;
        let next = 1 - live;
        for (pos, id) in ring.iter().enumerate() {
            self.rings
                .set(ring_slot(vip_id, next, pos as u32), id, 0)
                .map_err(map_err(n::RINGS, "write"))?;
        }
        self.ring_active
            .set(vip_id, next, 0)
            .map_err(map_err(n::RING_ACTIVE, "flip"))?;
        self.last_flip.insert(vip_id, Instant::now());
        Ok(())
    }

    fn set_acl(&mut self, vip_id: u32, prefixes: &[AclPrefix]) -> Result<(), DataPlaneError> {
        let mut wanted = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let (len, data) = keys::acl_key(vip_id, p)?;
            wanted.push((len, data));
        }
        // New entries first, stale ones after: a client that stays allowed is never
        // refused in between.
        for (len, data) in &wanted {
            self.acl
                .insert(&Key::new(*len, *data), 1, 0)
                .map_err(map_err(n::ACL, "insert"))?;
        }
        let stale: Vec<Key<AclData>> = self
            .acl
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let d = k.data();
                d.vip_id_be == vip_id.to_be()
                    && !wanted
                        .iter()
                        .any(|(len, w)| *len == k.prefix_len() && w.addr == d.addr)
            })
            .collect();
        for k in stale {
            self.acl.remove(&k).map_err(map_err(n::ACL, "remove"))?;
        }
        Ok(())
    }

    fn read_stats(&self) -> Result<Vec<Counter>, DataPlaneError> {
        let mut out = vec![Counter::default(); STATS_SIZE as usize];
        for i in (0..STATS_GLOBAL_SLOTS).chain(self.counted.iter().copied()) {
            let per_cpu = self.stats.get(&i, 0).map_err(map_err(n::STATS, "read"))?;
            let c = &mut out[i as usize];
            for v in per_cpu.iter() {
                c.packets += v.packets;
                c.bytes += v.bytes;
            }
        }
        Ok(out)
    }
}

/// The benchmark peer (`tx_peer`): a minimal IPIP forwarder run beside the balancer in
/// the same harness, so that benchmarks report the balancer's own cost.
pub struct TxPeer(XdpProg);

impl TxPeer {
    pub fn load() -> Result<Self, DataPlaneError> {
        Ok(Self(XdpProg::load(
            "tx_peer",
            "tx_peer",
            crate::programs::TX_PEER_OBJ,
            &[],
        )?))
    }

    /// Mean time per run over `repeat` runs (see `XdpProg::bench` for `live`).
    pub fn bench_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
        live: bool,
    ) -> Result<Duration, DataPlaneError> {
        self.0.bench(frame, repeat, live)
    }
}
