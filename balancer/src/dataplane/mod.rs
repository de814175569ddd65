//! The daemon's view of the data plane: what it may change in the XDP maps.
//!
//! A trait, so that the control logic (health, weights, reloads) is tested without root
//! against an in-memory implementation, and runs against the real maps (`xdp.rs`) in
//! production. Every method is one atomic step from the packet's point of view.

use balancer_ebpf::{Addr, BackendInfo, Counter, LbConfig, VipKey, VipMeta};

/// Errors from writing or reading the XDP maps.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("map {map}: {op} failed: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("ring of VIP {vip_id} has {len} slots; expected a prime between 2 and {max}")]
    BadRing { vip_id: u32, len: usize, max: u32 },
    #[error("{what} {id} is out of range (max {max})")]
    OutOfRange {
        what: &'static str,
        id: u32,
        max: u32,
    },
    #[error("allowlist prefix /{prefix_len} of VIP {vip_id}: {reason}")]
    BadPrefix {
        vip_id: u32,
        prefix_len: u8,
        reason: &'static str,
    },
    #[error("loading the {object} eBPF object failed: {source}")]
    Load {
        object: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {program}: {op} failed: {source}")]
    Program {
        program: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("the {object} eBPF object has no map {map}")]
    MissingMap {
        object: &'static str,
        map: &'static str,
    },
    #[error("pinning at {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("opening pinned {what} at {path}: {reason}")]
    Adopt {
        what: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not on a bpffs, so pins would not survive; mount one first (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs { path: std::path::PathBuf },
    #[error("program {program}: attached through netlink, not a bpf_link ({reason}); cannot pin")]
    LinkNotPinnable {
        program: &'static str,
        reason: String,
    },
    #[error("the {object} eBPF object has no program {program}")]
    MissingProgram {
        object: &'static str,
        program: &'static str,
    },
    #[error("{0}")]
    Other(String),
}

/// One client prefix of a VIP's allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclPrefix {
    pub addr: Addr,
    pub family: u8,
    pub prefix_len: u8,
}

/// What the daemon needs from the data plane.
pub trait DataPlaneOps {
    fn set_config(&mut self, cfg: &LbConfig) -> Result<(), DataPlaneError>;
    fn upsert_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<(), DataPlaneError>;
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataPlaneError>;
    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<(), DataPlaneError>;
    /// Writes `ring` (backend ids, `ring.len()` == the VIP's `ring_size`) into the VIP's
    /// inactive half, then flips `RING_ACTIVE[vip_id]`: packets see the old ring or the
    /// new one, never a mix being written.
    fn swap_ring(&mut self, vip_id: u32, ring: &[u32]) -> Result<(), DataPlaneError>;
    /// Replaces the VIP's allowlist with `prefixes` (VIP_F_ACL in its meta enables it).
    fn set_acl(&mut self, vip_id: u32, prefixes: &[AclPrefix]) -> Result<(), DataPlaneError>;
    /// `STATS` summed over CPUs, `STATS_SIZE` entries.
    fn read_stats(&self) -> Result<Vec<Counter>, DataPlaneError>;
}

pub mod attach;
pub mod btf;
pub mod decap;
pub mod keys;
pub mod nic_time;
pub mod xdp;

pub use attach::{AttachMode, RunResult};
pub use decap::DecapPlane;
pub use xdp::{LoadOptions, TxPeer, XdpDataPlane};
