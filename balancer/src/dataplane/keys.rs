//! Pure helpers of the map writer: validating rings and turning allowlist prefixes into
//! LPM keys. Kept apart from the map code so they are unit tested without root.

use super::{AclPrefix, DataPlaneError};
use balancer_ebpf::{AclData, Addr, AF_INET, AF_INET6, MAGLEV_RING_MAX, MAX_BACKENDS};

/// Trial division: rings are at most 65537 slots, so this is instant. Saturating, so
/// that any u32 (a ring size read from a config file) is safe.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Refuses a ring the XDP program could not use: wrong size or a backend id past the
/// `BACKENDS` array.
pub fn check_ring(vip_id: u32, ring: &[u32]) -> Result<(), DataPlaneError> {
    let len = ring.len();
    if len > MAGLEV_RING_MAX as usize || !is_prime(len as u32) {
        return Err(DataPlaneError::BadRing {
            vip_id,
            len,
            max: MAGLEV_RING_MAX,
        });
    }
    if let Some(&id) = ring.iter().find(|&&id| id >= MAX_BACKENDS) {
        return Err(DataPlaneError::OutOfRange {
            what: "backend",
            id,
            max: MAX_BACKENDS - 1,
        });
    }
    Ok(())
}

/// `addr` with every bit past `len` cleared.
pub fn mask(addr: &Addr, len: u8) -> Addr {
    let mut out = [0u8; 16];
    for (i, (o, a)) in out.iter_mut().zip(addr).enumerate() {
        let first = (i * 8) as u32;
        let len = u32::from(len);
        *o = if len >= first + 8 {
            *a
        } else if len <= first {
            0
        } else {
            *a & (0xffu8 << (8 - (len - first)))
        };
    }
    out
}

/// The `ACL` key of one allowlist prefix of `vip_id`: prefix length 32 (the VIP id) plus
/// the client prefix, the address masked to it.
pub fn acl_key(vip_id: u32, p: &AclPrefix) -> Result<(u32, AclData), DataPlaneError> {
    let max = match p.family {
        AF_INET => 32,
        AF_INET6 => 128,
        _ => {
            return Err(DataPlaneError::BadPrefix {
                vip_id,
                prefix_len: p.prefix_len,
                reason: "family is neither AF_INET nor AF_INET6",
            })
        }
    };
    if p.prefix_len > max {
        return Err(DataPlaneError::BadPrefix {
            vip_id,
            prefix_len: p.prefix_len,
            reason: "prefix longer than the address",
        });
    }
    Ok((
        32 + u32::from(p.prefix_len),
        AclData {
            vip_id_be: vip_id.to_be(),
            addr: mask(&p.addr, p.prefix_len),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer_ebpf::addr4;

    #[test]
    fn primes() {
        assert!(is_prime(2) && is_prime(13) && is_prime(65537));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(65536) && !is_prime(65535));
    }

    #[test]
    fn ring_checks() {
        assert!(check_ring(0, &[1; 13]).is_ok());
        assert!(matches!(
            check_ring(0, &[1; 12]),
            Err(DataPlaneError::BadRing { len: 12, .. })
        ));
        let mut r = vec![0; 13];
        r[5] = MAX_BACKENDS;
        assert!(matches!(
            check_ring(0, &r),
            Err(DataPlaneError::OutOfRange {
                what: "backend",
                ..
            })
        ));
    }

    #[test]
    fn acl_keys_mask_and_offset_by_vip() {
        let p = AclPrefix {
            addr: addr4([198, 18, 7, 200]),
            family: AF_INET,
            prefix_len: 20,
        };
        let (len, data) = acl_key(3, &p).unwrap();
        assert_eq!(len, 52);
        assert_eq!(data.vip_id_be, 3u32.to_be());
        assert_eq!(data.addr, addr4([198, 18, 0, 0]));
        let bad = AclPrefix {
            prefix_len: 33,
            ..p
        };
        assert!(matches!(
            acl_key(3, &bad),
            Err(DataPlaneError::BadPrefix { .. })
        ));
    }

    #[test]
    fn mask_keeps_whole_bytes_and_cuts_partial_ones() {
        let a: Addr = [0xff; 16];
        let m = mask(&a, 12);
        assert_eq!(&m[..3], &[0xff, 0xf0, 0]);
        assert_eq!(mask(&a, 128), a);
        assert_eq!(mask(&a, 0), [0; 16]);
    }
}
