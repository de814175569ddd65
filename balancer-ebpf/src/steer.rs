//! Kernel side: which backend a packet goes to. The consistent hash over the VIP's live
//! Maglev ring, the flow table, the per-VIP allowlist and the SYN guard.

use crate::{
    maps::{ACL, BACKENDS, FLOWS, RINGS, RING_ACTIVE, SYN_GUARD},
    stats,
};
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use balancer_ebpf::{
    ring_slot, AclData, Addr, BackendInfo, FlowKey, FlowValue, GlobalCounter, ObjectCounter,
    SynGuardKey, SynGuardState, VipMeta, AF_INET, BACKEND_F_VALID, MAGLEV_RING_MAX, MAX_VIPS,
};

/// The backend a packet goes to.
#[derive(Clone, Copy)]
pub struct Target {
    pub id: u32,
    /// The entry in `BACKENDS`: map memory, not copied onto the small BPF stack.
    pub info: &'static BackendInfo,
}

#[inline(always)]
fn valid_backend(id: u32) -> Option<&'static BackendInfo> {
    let info = BACKENDS.get(id)?;
    if info.flags & BACKEND_F_VALID == 0 {
        return None;
    }
    Some(info)
}

/// The live ring's entry for `hash`. Reads the active half once, then exactly one slot,
/// so a concurrent swap is seen entirely or not at all.
#[inline(always)]
pub fn ring_pick(vip: &VipMeta, hash: u32) -> Result<Target, GlobalCounter> {
    let vip_id = vip.vip_id;
    let size = vip.ring_size;
    if vip_id >= MAX_VIPS || size == 0 || size > MAGLEV_RING_MAX {
        return Err(GlobalCounter::DropNoBackend);
    }
    let half = match RING_ACTIVE.get(vip_id) {
        Some(h) => *h & 1,
        None => 0,
    };
    let id = match RINGS.get(ring_slot(vip_id, half, hash % size)) {
        Some(id) => *id,
        None => return Err(GlobalCounter::DropNoBackend),
    };
    match valid_backend(id) {
        Some(info) => Ok(Target { id, info }),
        None => Err(GlobalCounter::DropNoBackend),
    }
}

/// A flow-table hit whose backend is still valid.
#[derive(Clone, Copy)]
pub struct Hit {
    pub target: Target,
    pub hash: u32,
    pub vip_id: u32,
}

/// The backend, cached hash and VIP of an existing flow, if the flow table knows it and
/// the backend is still valid.
#[inline(always)]
pub fn flow_lookup(key: &FlowKey) -> Option<Hit> {
    let v = FLOWS.get_ptr(key)?;
    // SAFETY: the pointer comes from a successful lookup; fields are read once.
    let (id, hash, vip_id) = unsafe { ((*v).backend_id, (*v).hash, (*v).vip_id) };
    let info = valid_backend(id)?;
    Some(Hit {
        target: Target { id, info },
        hash,
        vip_id,
    })
}

/// Remembers `id` for `key`, skipping the write when the table already says so (SYN
/// retransmits, and the LRU update is the most expensive step of the fast path).
#[inline(always)]
pub fn flow_store(key: &FlowKey, id: u32, hash: u32, vip_id: u32) {
    if let Some(v) = FLOWS.get_ptr(key) {
        // SAFETY: pointer from a successful lookup.
        if unsafe { (*v).backend_id } == id {
            return;
        }
    }
    let _ = FLOWS.insert(
        key,
        FlowValue {
            backend_id: id,
            hash,
            vip_id,
            _pad: 0,
        },
        0,
    );
}

/// A flow the flow table does not know (a SYN, or a miss): the VIP's live ring picks
/// the backend and the flow table records it.
#[inline(always)]
pub fn assign(vip: &VipMeta, key: &FlowKey, hash: u32, syn: bool) -> Result<Target, GlobalCounter> {
    let t = ring_pick(vip, hash)?;
    flow_store(key, t.id, hash, vip.vip_id);
    if syn {
        stats::global(GlobalCounter::NewFlow);
        stats::vip(vip.vip_id, ObjectCounter::NewFlows, 0);
        stats::backend(t.id, ObjectCounter::NewFlows, 0);
    }
    Ok(t)
}

/// `true` when the VIP's allowlist holds a prefix covering `client`. Out of line: only
/// SYNs of VIPs with an allowlist pay for its stack frame.
#[inline(never)]
pub fn acl_allows(vip: &VipMeta, client: &Addr, family: u8) -> bool {
    let bits = if family == AF_INET { 32 } else { 128 };
    let key = Key::new(
        32 + bits,
        AclData {
            vip_id_be: vip.vip_id.to_be(),
            addr: *client,
        },
    );
    ACL.get(&key).is_some()
}

/// `client` with all but the first `plen` bits cleared.
#[inline(always)]
fn masked(client: &Addr, plen: u32) -> Addr {
    let mut a = *client;
    let mut i = 0;
    while i < 16 {
        let first = (i * 8) as u32;
        let m: u8 = if plen >= first + 8 {
            0xff
        } else if plen <= first {
            0
        } else {
            0xffu8 << (8 - (plen - first))
        };
        a[i] &= m;
        i += 1;
    }
    a
}

/// GCRA over the client's prefix: `true` if this SYN fits `syn_rate`/s with `syn_burst`.
/// A rate of 0 disables the guard (user space refuses it; the kernel fails open).
#[inline(never)]
pub fn syn_guard_allows(vip: &VipMeta, client: &Addr, family: u8) -> bool {
    if vip.syn_rate == 0 {
        return true;
    }
    let plen = if family == AF_INET {
        let p = vip.syn_prefix4 as u32;
        if p > 32 {
            32
        } else {
            p
        }
    } else {
        let p = vip.syn_prefix6 as u32;
        if p > 128 {
            128
        } else {
            p
        }
    };
    let key = SynGuardKey {
        vip_id: vip.vip_id,
        addr: masked(client, plen),
    };
    let interval = 1_000_000_000u64 / vip.syn_rate as u64;
    let burst = if vip.syn_burst == 0 { 1 } else { vip.syn_burst };
    let tolerance = interval * burst as u64;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    match SYN_GUARD.get_ptr_mut(key) {
        Some(s) => {
            // SAFETY: pointer from a successful lookup. Two CPUs racing here may both
            // pass; the guard is a flood brake, not an exact quota.
            let tat = unsafe { (*s).tat_ns };
            let tat = if tat > now { tat } else { now };
            if tat + interval - now > tolerance {
                return false;
            }
            unsafe { (*s).tat_ns = tat + interval };
            true
        }
        None => {
            let _ = SYN_GUARD.insert(
                key,
                SynGuardState {
                    tat_ns: now + interval,
                },
                0,
            );
            true
        }
    }
}
