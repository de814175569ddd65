//! Kernel side: per-CPU counters. Per-CPU so that counting never contends between
//! cores; user space sums the CPUs when it reads.

use crate::maps::STATS;
use balancer_ebpf::{stats_backend_slot, stats_vip_slot, GlobalCounter, ObjectCounter, MAX_VIPS};

#[inline(always)]
fn add(slot: u32, bytes: u64) {
    if let Some(c) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only written by this CPU, and the pointer is valid
        // for the program's run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn global(c: GlobalCounter) {
    add(c as u32, 0);
}

#[inline(always)]
pub fn vip(vip_id: u32, c: ObjectCounter, bytes: u64) {
    // An out-of-range id would land in the backends' slots.
    if vip_id >= MAX_VIPS {
        return;
    }
    add(stats_vip_slot(vip_id, c), bytes);
}

#[inline(always)]
pub fn backend(backend_id: u32, c: ObjectCounter, bytes: u64) {
    add(stats_backend_slot(backend_id, c), bytes);
}

/// Out-of-line functions report failure as `false` after counting it here: a `Result`
/// returned across a BPF call is packed into one register in ways the verifier rejects.
#[inline(always)]
pub fn ok_or_count(r: Result<(), GlobalCounter>) -> bool {
    match r {
        Ok(()) => true,
        Err(c) => {
            global(c);
            false
        }
    }
}
