//! The compiled XDP objects, embedded at build time by `build.rs`.

/// ELF object holding the `balancer` XDP program and its maps.
pub static BALANCER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));

/// ELF object holding the backend-side `decap` XDP program.
pub static DECAP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap"));

/// ELF object of `tx_peer`, the benchmark peer: a minimal IPIP forwarder (no parsing, no
/// maps) that `cargo xtask bench xdp` runs beside the balancer.
pub static TX_PEER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tx_peer"));
