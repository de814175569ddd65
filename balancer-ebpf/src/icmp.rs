//! Kernel side: ICMP in both directions. Reading the TCP tuple embedded in a
//! "fragmentation needed" / "packet too big" that a router sends toward a VIP (so it can
//! follow its flow to the backend), and writing such a message back to a client whose
//! packet would no longer fit once encapsulated (path-MTU discovery from the NIC).

use crate::{
    csum,
    parse::{
        ptr_at, save_l2, words4_addr, words_addr, write_l2, IcmpHdr, Ipv4Hdr, Ipv6Hdr, Truncated,
        ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, L2,
    },
};
use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use balancer_ebpf::{FlowKey, GlobalCounter};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;

/// Fills `key` (client to VIP direction) from the TCP tuple quoted by an IPv4
/// "fragmentation needed" at `l4`. `Ok(false)` for any other ICMP message or a quote too
/// short to name a TCP flow.
#[inline(always)]
pub fn quoted_v4(ctx: &XdpContext, l4: usize, key: &mut FlowKey) -> Result<bool, Truncated> {
    let icmp: *const IcmpHdr = ptr_at(ctx, l4)?;
    // SAFETY: bounds checked by `ptr_at` (here and below).
    let (kind, code) = unsafe { ((*icmp).kind, (*icmp).code) };
    if kind != ICMP_DEST_UNREACH || code != ICMP_FRAG_NEEDED {
        return Ok(false);
    }
    let Ok(inner) = ptr_at::<Ipv4Hdr>(ctx, l4 + 8) else {
        return Ok(false);
    };
    let (vihl, proto) = unsafe { ((*inner).vihl, (*inner).proto) };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 || proto != IPPROTO_TCP {
        return Ok(false);
    }
    let Ok(ports) = ptr_at::<[u16; 2]>(ctx, l4 + 8 + ihl) else {
        return Ok(false);
    };
    unsafe {
        // The quoted packet went VIP -> client.
        key.dst = words4_addr(&(*inner).src);
        key.src = words4_addr(&(*inner).dst);
        key.dport = u16::from_be((*ports)[0]);
        key.sport = u16::from_be((*ports)[1]);
    }
    Ok(true)
}

/// The same for an ICMPv6 "packet too big".
#[inline(always)]
pub fn quoted_v6(ctx: &XdpContext, l4: usize, key: &mut FlowKey) -> Result<bool, Truncated> {
    let icmp: *const IcmpHdr = ptr_at(ctx, l4)?;
    // SAFETY: bounds checked by `ptr_at` (here and below).
    let kind = unsafe { (*icmp).kind };
    if kind != ICMPV6_PKT_TOOBIG {
        return Ok(false);
    }
    let Ok(inner) = ptr_at::<Ipv6Hdr>(ctx, l4 + 8) else {
        return Ok(false);
    };
    if unsafe { (*inner).nexthdr } != IPPROTO_TCP {
        return Ok(false);
    }
    let Ok(ports) = ptr_at::<[u16; 2]>(ctx, l4 + 48) else {
        return Ok(false);
    };
    unsafe {
        key.dst = words_addr(&(*inner).src);
        key.src = words_addr(&(*inner).dst);
        key.dport = u16::from_be((*ports)[0]);
        key.sport = u16::from_be((*ports)[1]);
    }
    Ok(true)
}

/// Cuts the frame to `len` bytes.
#[inline(always)]
fn shrink_to(ctx: &XdpContext, len: usize) -> Result<(), GlobalCounter> {
    let cur = crate::parse::frame_len(ctx);
    if cur > len {
        let delta = len as i32 - cur as i32;
        // SAFETY: the helper validates the delta.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return Err(GlobalCounter::DropAdjust);
        }
    }
    Ok(())
}

/// Turns an oversize IPv4 packet (header `ihl` bytes) into an ICMP "fragmentation
/// needed" from the VIP back to the client, quoting the header and 8 bytes of payload,
/// advertising `mtu`. MACs are swapped: the frame leaves the way it came. Out of line:
/// a rare path with its own stack frame.
#[inline(never)]
pub fn too_big_v4(ctx: &XdpContext, l2: &L2, ihl: usize, mtu: u16) -> bool {
    crate::stats::ok_or_count(build_v4(ctx, l2, ihl, mtu))
}

#[inline(always)]
fn build_v4(ctx: &XdpContext, l2: &L2, ihl: usize, mtu: u16) -> Result<(), GlobalCounter> {
    const ADD: usize = 28;
    let ihl = ihl & 0x3c;
    let l3 = l2.l3_off();
    let saved = save_l2(ctx, l2).map_err(|_| GlobalCounter::DropMalformed)?;
    // SAFETY: the helper validates the delta (here and below); every packet pointer is
    // bounds checked by `ptr_at`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ADD as i32)) } != 0 {
        return Err(GlobalCounter::DropAdjust);
    }
    write_l2(ctx, &saved, saved.src, saved.dst, ETH_P_IP).map_err(|_| GlobalCounter::DropAdjust)?;
    let quote = ihl + 8;
    shrink_to(ctx, l3 + ADD + quote)?;
    // The original header now sits right after the new IP and ICMP headers; addresses
    // are copied from it in the frame rather than kept on the (small) BPF stack.
    let orig: *const Ipv4Hdr = ptr_at(ctx, l3 + ADD).map_err(|_| GlobalCounter::DropAdjust)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, l3).map_err(|_| GlobalCounter::DropAdjust)?;
    unsafe {
        (*ip).vihl = 0x45;
        (*ip).tos = 0;
        (*ip).tot_len = ((ADD + quote) as u16).to_be();
        (*ip).id = 0;
        (*ip).frag_off = 0;
        (*ip).ttl = 64;
        (*ip).proto = IPPROTO_ICMP;
        (*ip).check = 0;
        (*ip).src = (*orig).dst;
        (*ip).dst = (*orig).src;
    }
    let sum = csum::sum_frame::<10>(ctx, l3, 10).map_err(|_| GlobalCounter::DropAdjust)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, l3).map_err(|_| GlobalCounter::DropAdjust)?;
    unsafe { (*ip).check = csum::fold(sum) };
    let icmp: *mut IcmpHdr = ptr_at(ctx, l3 + 20).map_err(|_| GlobalCounter::DropAdjust)?;
    unsafe {
        *icmp = IcmpHdr {
            kind: ICMP_DEST_UNREACH,
            code: ICMP_FRAG_NEEDED,
            check: 0,
            rest: [0, mtu.to_be()],
        };
    }
    // ICMP header + quoted IP header (at most 60) + 8: at most 38 words.
    let sum = csum::sum_frame::<38>(ctx, l3 + 20, (8 + quote) / 2)
        .map_err(|_| GlobalCounter::DropAdjust)?;
    let icmp: *mut IcmpHdr = ptr_at(ctx, l3 + 20).map_err(|_| GlobalCounter::DropAdjust)?;
    unsafe { (*icmp).check = csum::fold(sum) };
    Ok(())
}

/// Turns an oversize IPv6 packet into an ICMPv6 "packet too big" from the VIP back to the
/// client, quoting its IPv6 header and the first 8 bytes of TCP, advertising `mtu`.
#[inline(never)]
pub fn too_big_v6(ctx: &XdpContext, l2: &L2, mtu: u16) -> bool {
    crate::stats::ok_or_count(build_v6(ctx, l2, mtu))
}

#[inline(always)]
fn build_v6(ctx: &XdpContext, l2: &L2, mtu: u16) -> Result<(), GlobalCounter> {
    const ADD: usize = 48;
    const QUOTE: usize = 48;
    const ICMP_LEN: usize = 8 + QUOTE;
    let l3 = l2.l3_off();
    let saved = save_l2(ctx, l2).map_err(|_| GlobalCounter::DropMalformed)?;
    // SAFETY: the helper validates the delta (here and below); every packet pointer is
    // bounds checked by `ptr_at`.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ADD as i32)) } != 0 {
        return Err(GlobalCounter::DropAdjust);
    }
    write_l2(ctx, &saved, saved.src, saved.dst, ETH_P_IPV6)
        .map_err(|_| GlobalCounter::DropAdjust)?;
    shrink_to(ctx, l3 + 40 + ICMP_LEN)?;
    let orig: *const Ipv6Hdr = ptr_at(ctx, l3 + ADD).map_err(|_| GlobalCounter::DropAdjust)?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, l3).map_err(|_| GlobalCounter::DropAdjust)?;
    unsafe {
        (*ip).vtcfl = [0x6000u16.to_be(), 0];
        (*ip).payload_len = (ICMP_LEN as u16).to_be();
        (*ip).nexthdr = IPPROTO_ICMPV6;
        (*ip).hop_limit = 64;
        (*ip).src = (*orig).dst;
        (*ip).dst = (*orig).src;
    }
    let icmp: *mut IcmpHdr = ptr_at(ctx, l3 + 40).map_err(|_| GlobalCounter::DropAdjust)?;
    let mtu32 = mtu as u32;
    unsafe {
        *icmp = IcmpHdr {
            kind: ICMPV6_PKT_TOOBIG,
            code: 0,
            check: 0,
            rest: [((mtu32 >> 16) as u16).to_be(), (mtu32 as u16).to_be()],
        };
    }
    // Pseudo-header: the two addresses (bytes 8..40 of the new header), upper-layer
    // length, next header.
    let pseudo = csum::sum_frame::<16>(ctx, l3 + 8, 16).map_err(|_| GlobalCounter::DropAdjust)?
        + (ICMP_LEN as u16).to_be() as u64
        + (IPPROTO_ICMPV6 as u16).to_be() as u64;
    let body =
        csum::sum_frame::<28>(ctx, l3 + 40, ICMP_LEN / 2).map_err(|_| GlobalCounter::DropAdjust)?;
    let icmp: *mut IcmpHdr = ptr_at(ctx, l3 + 40).map_err(|_| GlobalCounter::DropAdjust)?;
    unsafe { (*icmp).check = csum::fold(pseudo + body) };
    Ok(())
}
