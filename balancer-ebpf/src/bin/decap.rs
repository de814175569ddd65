//! The backend-side decap XDP program: IPIP, IPv6-in-IPv4, IP6IP6 and IPv4-in-IPv6
//! packets whose outer destination is one of this host's `DECAP_ADDRS` lose their outer
//! header and go to the stack as the inner packet. Everything else passes untouched.
#![no_std]
#![no_main]

#[path = "../parse.rs"]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use balancer_ebpf::{
    Counter, DecapAddr, DecapCounter, AF_INET, AF_INET6, DECAP_MAX_ADDRS, DECAP_STATS_SIZE,
};
use parse::{
    frame_len, parse_l2, ptr_at, save_l2, words4_addr, words_addr, write_l2, Ipv4Hdr, Ipv6Hdr,
    ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6,
};

/// Outer destinations this host accepts (value unused).
#[map]
static DECAP_ADDRS: HashMap<DecapAddr, u32> = HashMap::with_max_entries(DECAP_MAX_ADDRS, 0);

#[map]
static DECAP_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(DECAP_STATS_SIZE, 0);

#[inline(always)]
fn count(c: DecapCounter, bytes: u64) {
    if let Some(s) = DECAP_STATS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, written only by this CPU.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += bytes;
        }
    }
}

#[xdp]
pub fn decap(ctx: XdpContext) -> u32 {
    let bytes = frame_len(&ctx) as u64;
    match try_decap(&ctx) {
        Ok(true) => {
            count(DecapCounter::Decapsulated, bytes);
            xdp_action::XDP_PASS
        }
        Ok(false) => {
            count(DecapCounter::Pass, bytes);
            xdp_action::XDP_PASS
        }
        Err(c) => {
            count(c, bytes);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn ours(addr: [u8; 16], family: u8) -> bool {
    let key = DecapAddr {
        addr,
        family,
        _pad: [0; 3],
    };
    DECAP_ADDRS.get_ptr(key).is_some()
}

/// `Ok(true)` once the outer header is gone, `Ok(false)` for a frame that is not ours.
#[inline(always)]
fn try_decap(ctx: &XdpContext) -> Result<bool, DecapCounter> {
    let Ok(l2) = parse_l2(ctx) else {
        return Ok(false);
    };
    let l3 = l2.l3_off();
    let (outer_len, inner_proto) = match l2.ethertype {
        ETH_P_IP => {
            let Ok(p) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
                return Ok(false);
            };
            // SAFETY: `ptr_at` checked the 20 bytes.
            let h = unsafe { *p };
            if h.proto != IPPROTO_IPIP && h.proto != IPPROTO_IPV6 {
                return Ok(false);
            }
            if !ours(words4_addr(&h.dst), AF_INET) {
                return Ok(false);
            }
            let ihl = ((h.vihl & 0x0f) as usize) * 4;
            let len = u16::from_be(h.tot_len) as usize;
            if h.vihl >> 4 != 4 || ihl < 20 || len < ihl || l3 + len > frame_len(ctx) {
                return Err(DecapCounter::DropMalformed);
            }
            if u16::from_be(h.frag_off) & 0x3fff != 0 {
                // An outer fragment cannot be decapsulated alone: the stack reassembles
                // nothing for a protocol it does not speak, so drop it as malformed.
                return Err(DecapCounter::DropMalformed);
            }
            (ihl, h.proto)
        }
        ETH_P_IPV6 => {
            let Ok(p) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
                return Ok(false);
            };
            // SAFETY: `ptr_at` checked the 40 bytes.
            let h = unsafe { &*p };
            if h.nexthdr != IPPROTO_IPIP && h.nexthdr != IPPROTO_IPV6 {
                return Ok(false);
            }
            if !ours(words_addr(&h.dst), AF_INET6) {
                return Ok(false);
            }
            if l3 + 40 + u16::from_be(h.payload_len) as usize > frame_len(ctx) {
                return Err(DecapCounter::DropMalformed);
            }
            (40, h.nexthdr)
        }
        _ => return Ok(false),
    };
    let inner_min = if inner_proto == IPPROTO_IPIP { 20 } else { 40 };
    if l3 + outer_len + inner_min > frame_len(ctx) {
        return Err(DecapCounter::DropMalformed);
    }
    let saved = save_l2(ctx, &l2).map_err(|_| DecapCounter::DropMalformed)?;
    // SAFETY: the helper validates the delta against the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return Err(DecapCounter::DropAdjust);
    }
    let ethertype = if inner_proto == IPPROTO_IPIP {
        ETH_P_IP
    } else {
        ETH_P_IPV6
    };
    write_l2(ctx, &saved, saved.dst, saved.src, ethertype).map_err(|_| DecapCounter::DropAdjust)?;
    Ok(true)
}

balancer_ebpf::program_boilerplate!();
