//! The backend side: the `decap` XDP program that strips the balancer's outer header
//! from packets addressed to this host, and its address list and counters.

use super::{
    attach::{AttachMode, RunResult, XdpProg},
    DataPlaneError,
};
use crate::programs::DECAP_OBJ;
use aya::maps::{HashMap, MapData, PerCpuArray};
use balancer_ebpf::{
    map_names as n, prog_names, Addr, Counter, DecapAddr, DecapCounter, DECAP_MAX_ADDRS,
};
use std::path::Path;

const OBJECT: &str = "decap";
const MAPS: [&str; 2] = [n::DECAP_ADDRS, n::DECAP_STATS];

/// The decap program and its maps.
pub struct DecapPlane {
    prog: XdpProg,
    addrs: HashMap<MapData, DecapAddr, u32>,
    stats: PerCpuArray<MapData, Counter>,
}

fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DataPlaneError {
    move |source| DataPlaneError::Map { map, op, source }
}

impl DecapPlane {
    /// Loads and verifies the program; pins it (and later its link) under `pin_dir`.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, DataPlaneError> {
        let mut prog = XdpProg::load(OBJECT, prog_names::DECAP, DECAP_OBJ, &[])?;
        if let Some(dir) = pin_dir {
            prog.pin(dir)?;
        }
        let addrs = prog
            .take_map(n::DECAP_ADDRS)?
            .try_into()
            .map_err(map_err(n::DECAP_ADDRS, "open"))?;
        let stats = prog
            .take_map(n::DECAP_STATS)?
            .try_into()
            .map_err(map_err(n::DECAP_STATS, "open"))?;
        Ok(Self { prog, addrs, stats })
    }

    /// Opens a set pinned by an earlier `load`.
    pub fn adopt(dir: &Path) -> Result<Self, DataPlaneError> {
        let (prog, maps) = XdpProg::adopt(OBJECT, prog_names::DECAP, dir, &MAPS)?;
        let mut maps = maps.into_iter();
        let mut next = |name: &'static str| {
            maps.next().ok_or(DataPlaneError::MissingMap {
                object: OBJECT,
                map: name,
            })
        };
        let addrs = next(n::DECAP_ADDRS)?
            .try_into()
            .map_err(map_err(n::DECAP_ADDRS, "open"))?;
        let stats = next(n::DECAP_STATS)?
            .try_into()
            .map_err(map_err(n::DECAP_STATS, "open"))?;
        Ok(Self { prog, addrs, stats })
    }

    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DataPlaneError> {
        self.prog.attach(iface, mode)
    }

    pub fn detach(self) -> Result<(), DataPlaneError> {
        self.prog.detach(&MAPS)
    }

    /// Accepts encapsulated packets whose outer destination is `addr`.
    pub fn add_address(&mut self, addr: &Addr, family: u8) -> Result<(), DataPlaneError> {
        if self.addrs.keys().count() >= DECAP_MAX_ADDRS as usize {
            return Err(DataPlaneError::OutOfRange {
                what: "decap address",
                id: DECAP_MAX_ADDRS,
                max: DECAP_MAX_ADDRS,
            });
        }
        let key = DecapAddr {
            addr: *addr,
            family,
            _pad: [0; 3],
        };
        self.addrs
            .insert(key, 1, 0)
            .map_err(map_err(n::DECAP_ADDRS, "insert"))
    }

    pub fn remove_address(&mut self, addr: &Addr, family: u8) -> Result<(), DataPlaneError> {
        let key = DecapAddr {
            addr: *addr,
            family,
            _pad: [0; 3],
        };
        self.addrs
            .remove(&key)
            .map_err(map_err(n::DECAP_ADDRS, "remove"))
    }

    /// One counter summed over CPUs.
    pub fn counter(&self, c: DecapCounter) -> Result<Counter, DataPlaneError> {
        let per_cpu = self
            .stats
            .get(&(c as u32), 0)
            .map_err(map_err(n::DECAP_STATS, "read"))?;
        Ok(per_cpu.iter().fold(Counter::default(), |a, v| Counter {
            packets: a.packets + v.packets,
            bytes: a.bytes + v.bytes,
        }))
    }

    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<RunResult, DataPlaneError> {
        self.prog.test_run(frame, repeat)
    }
}
