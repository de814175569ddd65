//! The flow hash, shared so that user space (tests, `balancer` tooling) can predict the
//! ring position the XDP program picks for a client.
//!
//! It must be identical on every balancer host (flows that move between hosts under ECMP
//! keep their backend), so it is a fixed function with a fixed seed, not a keyed random
//! hash. Straight-line code: the verifier sees no loops.

use crate::Addr;

/// Seed of the ring-position hash. Changing it moves every flow: never do it casually.
pub const FLOW_HASH_SEED: u32 = 0x5354_4d50; // "SMTP"

#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[inline(always)]
const fn round(h: u32, w: u32) -> u32 {
    let k = w
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn word(a: &Addr, i: usize) -> u32 {
    u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

/// Hash of a client address and port (port 0 for source-sticky VIPs).
#[inline(always)]
pub const fn client_hash(addr: &Addr, port: u16, seed: u32) -> u32 {
    let mut h = seed;
    h = round(h, word(addr, 0));
    h = round(h, word(addr, 4));
    h = round(h, word(addr, 8));
    h = round(h, word(addr, 12));
    h = round(h, port as u32);
    fmix32(h ^ 18)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr4;

    #[test]
    fn ports_spread_over_ring_positions() {
        // 20k ports of one client over 101 buckets: no bucket far from the mean.
        let a = addr4([198, 18, 0, 10]);
        let mut buckets = [0u32; 101];
        for p in 1024..21024u16 {
            buckets[(client_hash(&a, p, FLOW_HASH_SEED) % 101) as usize] += 1;
        }
        let mean = 20000 / 101;
        for b in buckets {
            assert!(
                b > mean * 7 / 10 && b < mean * 13 / 10,
                "bucket {b} vs mean {mean}"
            );
        }
    }

    #[test]
    fn hash_is_stable() {
        // Pinned values: the hash is part of the wire contract between balancer hosts
        // (and with the XDP program). Computed once by an independent reimplementation;
        // if this fails, every flow would move to another backend.
        let a = addr4([198, 18, 0, 10]);
        assert_eq!(client_hash(&a, 40000, FLOW_HASH_SEED), 0x7a9e_9d9f);
        assert_eq!(client_hash(&a, 0, FLOW_HASH_SEED), 0x7614_08cf);
    }
}
