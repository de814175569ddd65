//! Types, sizes and names shared by the XDP programs and the user-space daemon.
//!
//! This is the one contract between kernel and user space: every map key and value is a
//! `#[repr(C)]` struct with explicit padding, every map name and size is a const defined
//! here, and counters are indexed through enums instead of magic offsets. The crate is
//! `#![no_std]` so the eBPF programs can use it; the `user` feature adds `aya::Pod` impls
//! so user space can put the same types into maps.
#![no_std]

pub mod hash;

/// What every eBPF program object of this crate needs besides its code: a panic handler
/// (no_std; the verifier rejects any path that could reach it anyway) and the licence
/// section, which must say GPL for the kernel to grant GPL-only helpers such as
/// `bpf_ktime_get_ns` and `bpf_probe_read_kernel`. One macro so that the objects agree.
#[macro_export]
macro_rules! program_boilerplate {
    () => {
        #[cfg(not(test))]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            loop {}
        }

        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 4] = *b"GPL\0";
    };
}

/// Map names, exactly as they appear in the object file (BPF limits them to 15 bytes).
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const RINGS: &str = "RINGS";
    pub const RING_ACTIVE: &str = "RING_ACTIVE";
    pub const FLOWS: &str = "FLOWS";
    pub const ACL: &str = "ACL";
    pub const SYN_GUARD: &str = "SYN_GUARD";
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const DECAP_ADDRS: &str = "DECAP_ADDRS";
    pub const DECAP_STATS: &str = "DECAP_STATS";
    /// Every address that carries at least one VIP port (kept by the map writer), so that
    /// fragments without ports can still be recognised as VIP traffic.
    pub const VIP_ADDRS: &str = "VIP_ADDRS";
    /// Bitmap of destination ports that at least one VIP uses (kept by the map writer):
    /// traffic to any other port passes without a hash lookup.
    pub const VIP_PORTS: &str = "VIP_PORTS";
    /// `nic_time` diagnostics program: which interface to time, and its totals.
    pub const NIC_TIME_CFG: &str = "NIC_TIME_CFG";
    pub const NIC_TIME_START: &str = "NIC_TIME_START";
    pub const NIC_TIME: &str = "NIC_TIME";
}

/// Program names (the `#[xdp]` function names).
pub mod prog_names {
    pub const BALANCER: &str = "balancer";
    pub const DECAP: &str = "decap";
    /// `nic_time`: raw tracepoints at the start of each softirq and the end of each
    /// NAPI poll, and the tracepoints they attach to.
    pub const NIC_TIME_SOFTIRQ: &str = "nic_time_softirq";
    pub const NIC_TIME_POLL: &str = "nic_time_poll";
    pub const TP_SOFTIRQ_ENTRY: &str = "softirq_entry";
    pub const TP_NAPI_POLL: &str = "napi_poll";
}

/// `VIP_PORTS` words: one bit per TCP port.
pub const VIP_PORT_WORDS: u32 = 65536 / 32;

/// How many VIPs (address + port) one balancer can serve.
pub const MAX_VIPS: u32 = 64;
/// How many backends, over all VIPs. Backend ids index `BACKENDS` directly.
pub const MAX_BACKENDS: u32 = 4096;
/// The largest Maglev ring a VIP may use (a prime). Also the default ring size.
pub const MAGLEV_RING_MAX: u32 = 65537;
/// Each VIP owns two rings of `MAGLEV_RING_MAX` slots in `RINGS`: user space fills the
/// inactive one, then flips `RING_ACTIVE[vip_id]`. See `ring_slot`.
pub const RING_SLOTS: u32 = MAX_VIPS * 2 * MAGLEV_RING_MAX;
/// LRU flow table capacity (shared between CPUs so that a flow that changes CPU keeps
/// its backend).
pub const FLOW_TABLE_SIZE: u32 = 1 << 20;
/// ACL prefixes over all VIPs.
pub const ACL_MAX_ENTRIES: u32 = 16 * 1024;
/// SYN-guard buckets (LRU: the least recently seen sources are forgotten first).
pub const SYN_GUARD_ENTRIES: u32 = 64 * 1024;
/// Addresses the decap program accepts as outer destination.
pub const DECAP_MAX_ADDRS: u32 = 64;

pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

/// Outer-header overhead of each encapsulation, in bytes.
pub const IPIP_OVERHEAD: u16 = 20;
pub const IP6_OVERHEAD: u16 = 40;

/// Index of the slot that holds entry `pos` of ring `half` of VIP `vip_id` in `RINGS`.
#[inline(always)]
pub const fn ring_slot(vip_id: u32, half: u32, pos: u32) -> u32 {
    (vip_id * 2 + half) * MAGLEV_RING_MAX + pos
}

/// An IP address as 16 bytes in network order. IPv4 uses the first 4 bytes, the rest zero.
pub type Addr = [u8; 16];

/// Builds an `Addr` from an IPv4 address in network order.
#[inline(always)]
pub const fn addr4(a: [u8; 4]) -> Addr {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Key of `VIPS`: a destination the balancer steers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: Addr,
    /// Port in host order.
    pub port: u16,
    /// IP protocol number; always 6 (TCP) today.
    pub proto: u8,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
}

/// Hash only the client address, not its port: a sending host sticks to one backend.
pub const VIP_F_STICKY: u32 = 1 << 0;
/// Consult `ACL` for SYNs; without this flag the VIP is open to every client.
pub const VIP_F_ACL: u32 = 1 << 1;
/// Rate-limit new flows per client prefix (`syn_rate`, `syn_burst`).
pub const VIP_F_SYN_GUARD: u32 = 1 << 2;

/// Value of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipMeta {
    /// Index of this VIP's rings, stats and ACL entries, below `MAX_VIPS`.
    pub vip_id: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
    /// Number of used slots in each ring of this VIP (a prime up to `MAGLEV_RING_MAX`).
    pub ring_size: u32,
    /// New flows per second allowed per client prefix when `VIP_F_SYN_GUARD` is set.
    pub syn_rate: u32,
    /// Burst of new flows allowed per client prefix.
    pub syn_burst: u32,
    /// Prefix length the SYN guard groups IPv4 clients by (IPv6 uses `syn_prefix6`).
    pub syn_prefix4: u8,
    pub syn_prefix6: u8,
    pub _pad: [u8; 2],
}

/// Backend is usable as an encapsulation target.
pub const BACKEND_F_VALID: u8 = 1 << 0;

/// Value of `BACKENDS`, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendInfo {
    pub addr: Addr,
    /// `AF_INET` or `AF_INET6`: the family of the outer header toward this backend.
    pub family: u8,
    /// `BACKEND_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}

/// Key of `VIP_ADDRS`: a VIP address whatever its port. The value (u32) counts the VIP
/// ports on it; user space maintains it alongside `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipAddr {
    pub addr: Addr,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Key of `FLOWS`: one client connection, in the client-to-VIP direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    /// Ports in host order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub backend_id: u32,
    /// The flow's `client_hash`, kept so that later packets need not recompute it (it
    /// varies the outer source address).
    pub hash: u32,
    /// The VIP the flow belongs to (its stats slot), so that a flow-table hit needs no
    /// `VIPS` lookup.
    pub vip_id: u32,
    pub _pad: u32,
}

/// Data part of an `ACL` LPM key. The prefix length always covers all of `vip_id`
/// (32 bits) plus the client prefix, so entries of different VIPs never match each other.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AclData {
    /// Big-endian, so that the LPM trie compares it as the leading bits.
    pub vip_id_be: u32,
    pub addr: Addr,
}

/// Key of `SYN_GUARD`: a client prefix (address masked to the VIP's prefix length).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynGuardKey {
    pub vip_id: u32,
    pub addr: Addr,
}

/// Value of `SYN_GUARD`: generic cell rate algorithm state, one theoretical arrival time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynGuardState {
    pub tat_ns: u64,
}

/// `CONFIG[0]`: what the balancer needs to build outer frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LbConfig {
    /// Source MAC of every frame the balancer sends.
    pub own_mac: [u8; 6],
    /// Destination MAC of encapsulated frames (the next hop toward the backends).
    pub nexthop_mac: [u8; 6],
    /// Largest IP packet (outer header included) the path to the backends carries.
    pub mtu: u16,
    /// How many low bits of the outer source address vary per flow (0 = fixed source).
    pub src_vary_bits: u8,
    /// `CONFIG_F_*` bits.
    pub flags: u8,
    /// Outer IPv4 source (network order).
    pub encap_src4: [u8; 4],
    /// Outer IPv6 source (network order).
    pub encap_src6: Addr,
}

/// `CONFIG[0]` has been written by user space; until then every packet passes.
pub const CONFIG_F_READY: u8 = 1 << 0;

/// A per-CPU counter pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Global counters at the start of `STATS`, one slot each.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCounter {
    /// Not for a VIP: handed to the kernel untouched.
    Pass = 0,
    /// Encapsulated and sent toward a backend.
    Forwarded,
    /// A SYN that took the Maglev ring and created a flow.
    NewFlow,
    /// A non-SYN packet found in the flow table.
    FlowHit,
    /// A non-SYN packet not in the flow table, steered by the consistent hash.
    FlowMiss,
    /// SYN from a client outside the VIP's ACL.
    DropAcl,
    /// SYN over the client prefix's new-flow rate.
    DropSynGuard,
    /// The VIP's ring holds no valid backend.
    DropNoBackend,
    /// Oversize once encapsulated, without DF: dropped.
    DropTooBig,
    /// An IP fragment addressed to a VIP.
    DropFragment,
    /// A frame shorter than its headers say, or with impossible header fields.
    DropMalformed,
    /// The kernel refused to grow or shrink the frame.
    DropAdjust,
    /// ICMP "fragmentation needed" / "packet too big" sent back to a client.
    IcmpTooBigSent,
    /// ICMP error for a VIP flow forwarded to the flow's backend.
    IcmpForwarded,
    /// ICMP error addressed to a VIP that matched no VIP:port.
    IcmpPass,
    /// Every packet to a VIP address with `CONFIG` not yet written.
    NotReady,
}

/// Number of global counter slots reserved (room to grow without moving other slots).
pub const STATS_GLOBAL_SLOTS: u32 = 32;
/// Per-VIP slots: traffic (packets, bytes) then new flows (packets).
pub const STATS_PER_VIP: u32 = 2;
pub const STATS_VIP_BASE: u32 = STATS_GLOBAL_SLOTS;
/// Per-backend slots: traffic (packets, bytes) then new flows (packets).
pub const STATS_PER_BACKEND: u32 = 2;
pub const STATS_BACKEND_BASE: u32 = STATS_VIP_BASE + MAX_VIPS * STATS_PER_VIP;
pub const STATS_SIZE: u32 = STATS_BACKEND_BASE + MAX_BACKENDS * STATS_PER_BACKEND;

/// Slot offset inside a VIP's or backend's group.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectCounter {
    Traffic = 0,
    NewFlows = 1,
}

#[inline(always)]
pub const fn stats_vip_slot(vip_id: u32, c: ObjectCounter) -> u32 {
    STATS_VIP_BASE + vip_id * STATS_PER_VIP + c as u32
}

#[inline(always)]
pub const fn stats_backend_slot(backend_id: u32, c: ObjectCounter) -> u32 {
    STATS_BACKEND_BASE + backend_id * STATS_PER_BACKEND + c as u32
}

/// Counters of the decap program (`DECAP_STATS`, per CPU).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    /// Not an encapsulated packet for this host.
    Pass = 0,
    /// Outer header stripped, inner packet passed to the stack.
    Decapsulated,
    /// Encapsulated but truncated or inconsistent.
    DropMalformed,
    /// The kernel refused to shrink the frame.
    DropAdjust,
}
pub const DECAP_STATS_SIZE: u32 = 8;

/// Key of `DECAP_ADDRS`: an outer destination this backend accepts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DecapAddr {
    pub addr: Addr,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// `NIC_TIME_CFG[0]`: the interface whose NAPI polls `nic_time` times, and where to find
/// its name and namespace from the poll's argument. Offsets come from the running
/// kernel's BTF (user space reads them), so the probe needs no kernel headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NicTimeConfig {
    /// Interface name, NUL-padded (`IFNAMSIZ`).
    pub ifname: [u8; 16],
    /// Byte offset of `dev` in `struct napi_struct`.
    pub napi_dev_off: u32,
    /// Byte offset of `name` in `struct net_device`.
    pub dev_name_off: u32,
    /// Byte offset of `nd_net` (the `struct net` pointer) in `struct net_device`.
    pub dev_net_off: u32,
    /// Byte offset of `ns.inum` in `struct net`.
    pub net_inum_off: u32,
    /// Inode number of the interface's network namespace (`stat` of its
    /// `/run/netns` file); 0 matches the name in any namespace.
    pub netns_ino: u32,
    pub _pad: u32,
}

/// Per-CPU value of `NIC_TIME`: what the traced interface's NAPI polls cost.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NicTime {
    /// Nanoseconds inside the polls (XDP, `XDP_TX`, and the stack for passed packets).
    pub ns: u64,
    pub polls: u64,
    /// Packets the polls handled (their return value).
    pub packets: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type is repr(C), Copy, with explicit padding and no pointers, so any
    // bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipMeta {}
    unsafe impl aya::Pod for BackendInfo {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for AclData {}
    unsafe impl aya::Pod for SynGuardKey {}
    unsafe impl aya::Pod for SynGuardState {}
    unsafe impl aya::Pod for LbConfig {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for DecapAddr {}
    unsafe impl aya::Pod for VipAddr {}
    unsafe impl aya::Pod for NicTimeConfig {}
    unsafe impl aya::Pod for NicTime {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 20);
        assert_eq!(size_of::<VipMeta>(), 24);
        assert_eq!(size_of::<BackendInfo>(), 20);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowValue>(), 16);
        assert_eq!(size_of::<AclData>(), 20);
        assert_eq!(size_of::<SynGuardKey>(), 20);
        assert_eq!(size_of::<LbConfig>(), 36);
        assert_eq!(size_of::<DecapAddr>(), 20);
        assert_eq!(size_of::<VipAddr>(), 20);
    }

    #[test]
    fn ring_slots_do_not_overlap() {
        assert_eq!(ring_slot(0, 1, 0), MAGLEV_RING_MAX);
        assert_eq!(
            ring_slot(MAX_VIPS - 1, 1, MAGLEV_RING_MAX - 1),
            RING_SLOTS - 1
        );
    }

    #[test]
    fn stats_slots_fit() {
        assert!((GlobalCounter::NotReady as u32) < STATS_GLOBAL_SLOTS);
        assert_eq!(
            stats_backend_slot(MAX_BACKENDS - 1, ObjectCounter::NewFlows),
            STATS_SIZE - 1
        );
    }
}
