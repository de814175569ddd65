//! Weighted Maglev tables: which backend owns each slot of a VIP's ring.
//!
//! Deterministic by construction so that every balancer host builds the same table from
//! the same config (flows that move between hosts under ECMP keep their backend):
//! - each backend's permutation comes from fixed hashes of its *name*, never from its
//!   position in the file, its address or its id;
//! - backends take turns in name order, so the order of the file does not matter.
//!
//! Weights use the credit variant of Maglev's population loop: every round, each
//! backend earns `weight` credit and takes one slot per `max_weight` of credit, so the
//! slot counts follow the weights to within a slot or two. Weight 0 earns nothing: no
//! slots (drain; existing flows keep going through the flow table).

/// A backend as Maglev sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Hashed for the permutation: stable across hosts and reloads.
    pub name: String,
    /// Written into the table.
    pub id: u32,
    pub weight: u32,
}

const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032; // "maglev02"

/// FNV-1a over the bytes, then a 64-bit finaliser (splitmix64) so that names that differ
/// in one character land far apart.
pub fn name_hash(name: &str, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds the table of `size` slots (a prime). Returns `None` when no backend has a
/// positive weight: the caller decides what an empty VIP means.
pub fn build_table(backends: &[MaglevBackend], size: u32) -> Option<Vec<u32>> {
    let m = u64::from(size);
    let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if live.is_empty() || size < 2 {
        return None;
    }
    live.sort_by(|a, b| a.name.cmp(&b.name));
    let max_w = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
    let offset: Vec<u64> = live
        .iter()
        .map(|b| name_hash(&b.name, SEED_OFFSET) % m)
        .collect();
    let skip: Vec<u64> = live
        .iter()
        .map(|b| name_hash(&b.name, SEED_SKIP) % (m - 1) + 1)
        .collect();
    // Position of each backend's next candidate in its permutation, kept as the slot
    // itself (offset + j*skip mod m) to avoid a multiplication per probe.
    let mut cursor: Vec<u64> = offset.clone();
    let mut credit: Vec<u64> = vec![0; live.len()];
    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for i in 0..live.len() {
            credit[i] += u64::from(live[i].weight);
            while credit[i] >= max_w {
                credit[i] -= max_w;
                let mut c = cursor[i];
                while table[c as usize] != EMPTY {
                    c += skip[i];
                    if c >= m {
                        c -= m;
                    }
                }
                table[c as usize] = live[i].id;
                c += skip[i];
                if c >= m {
                    c -= m;
                }
                cursor[i] = c;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    Some(table)
}

#[cfg(test)]
mod tests;
