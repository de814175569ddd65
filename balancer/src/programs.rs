//! The compiled XDP objects, embedded at build time by `build.rs`.

/// ELF object holding the `balancer` XDP program and its maps.
pub static BALANCER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));

/// ELF object holding the backend-side `decap` XDP program.
pub static DECAP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap"));

/// ELF object of `tx_peer`, the benchmark peer: a minimal IPIP forwarder (no parsing, no
/// maps) that `cargo xtask bench xdp` runs beside the balancer.
pub static TX_PEER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tx_peer"));

/// ELF object of `nic_time`, the diagnostics probe that times one veth's receive polls
/// (`cargo xtask bench lb` charges every front door's softirq CPU with it).
pub static NIC_TIME_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nic_time"));
