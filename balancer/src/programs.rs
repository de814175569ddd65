//! The compiled XDP objects, embedded at build time by `build.rs`.

/// ELF object holding the `balancer` XDP program and its maps.
pub static BALANCER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));

/// ELF object holding the backend-side `decap` XDP program.
pub static DECAP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap"));
