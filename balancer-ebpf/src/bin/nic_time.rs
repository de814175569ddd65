//! Diagnostics, not data path: the softirq time the kernel spends receiving on one veth
//! interface. On a veth with an XDP program every received packet goes through the
//! interface's NAPI poll, which runs the XDP program, sends `XDP_TX` frames and, for
//! passed packets, the whole stack: conntrack, NAT, forwarding, local delivery to
//! HAProxy. Timing that poll charges every front door of `cargo xtask bench lb` (XDP,
//! HAProxy, nftables DNAT) by the same rule, which per-process CPU cannot do for
//! nftables (it has no process) and BPF run-time stats cannot do for the others.
//!
//! How: raw tracepoints (fentry is refused on these machines). Within one `NET_RX`
//! softirq the polls run back to back and `napi:napi_poll` fires as each one returns,
//! so a poll's time is the gap since the previous poll on this CPU, or since
//! `irq:softirq_entry` for the first.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::RawTracePointContext,
};
use balancer_ebpf::{NicTime, NicTimeConfig};

/// `NET_RX_SOFTIRQ` in the kernel's softirq numbering.
const NET_RX_SOFTIRQ: u32 = 3;

#[map]
static NIC_TIME_CFG: Array<NicTimeConfig> = Array::with_max_entries(1, 0);

/// When the last `NET_RX` softirq began or the last poll ended on this CPU; 0 outside
/// a `NET_RX` softirq.
#[map]
static NIC_TIME_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static NIC_TIME: PerCpuArray<NicTime> = PerCpuArray::with_max_entries(1, 0);

/// `true` when the polled device is the configured interface (name, and namespace when
/// one is given: every lab host names its NIC `eth0`).
#[inline(always)]
fn traced(napi: *const u8) -> bool {
    let Some(cfg) = NIC_TIME_CFG.get(0) else {
        return false;
    };
    if cfg.napi_dev_off == 0 {
        return false;
    }
    // SAFETY: kernel memory is only read through the probe-read helper, which fails
    // cleanly on a bad address.
    unsafe {
        let Ok(dev) =
            bpf_probe_read_kernel(napi.add(cfg.napi_dev_off as usize) as *const *const u8)
        else {
            return false;
        };
        let Ok(name) = bpf_probe_read_kernel(dev.add(cfg.dev_name_off as usize) as *const [u8; 16])
        else {
            return false;
        };
        if name != cfg.ifname {
            return false;
        }
        if cfg.netns_ino == 0 {
            return true;
        }
        let Ok(net) = bpf_probe_read_kernel(dev.add(cfg.dev_net_off as usize) as *const *const u8)
        else {
            return false;
        };
        let Ok(ino) = bpf_probe_read_kernel(net.add(cfg.net_inum_off as usize) as *const u32)
        else {
            return false;
        };
        ino == cfg.netns_ino
    }
}

/// softirq_entry(vec_nr)
#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn nic_time_softirq(ctx: RawTracePointContext) -> i32 {
    let vec: u64 = ctx.arg(0);
    if let Some(last) = NIC_TIME_START.get_ptr_mut(0) {
        let now = if vec as u32 == NET_RX_SOFTIRQ {
            // SAFETY: no arguments; reads the monotonic clock.
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        };
        // SAFETY: per-CPU slot from a successful lookup.
        unsafe { *last = now };
    }
    0
}

/// napi_poll(napi, work, budget), fired as each poll returns.
#[raw_tracepoint(tracepoint = "napi_poll")]
pub fn nic_time_poll(ctx: RawTracePointContext) -> i32 {
    let Some(last) = NIC_TIME_START.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU slot from a successful lookup.
    let t0 = unsafe { *last };
    if t0 == 0 {
        // A poll outside NET_RX softirq (busy polling, netpoll): not timed.
        return 0;
    }
    // SAFETY: no arguments; reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: as above; the next poll is timed from here.
    unsafe { *last = now };
    let napi: u64 = ctx.arg(0);
    if !traced(napi as *const u8) {
        return 0;
    }
    let work: u64 = ctx.arg(1);
    if let Some(t) = NIC_TIME.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while its softirqs run.
        unsafe {
            (*t).ns += now.saturating_sub(t0);
            (*t).polls += 1;
            (*t).packets += (work as i32).max(0) as u64;
        }
    }
    0
}

balancer_ebpf::program_boilerplate!();
