//! Kernel side: IPIP / IP6IP6 (and IPv4-in-IPv6, IPv6-in-IPv4) encapsulation toward a
//! backend. The frame grows at its head by the outer header; the link layer (MACs from
//! `CONFIG`, VLAN tags kept) is rewritten in front of it, and the frame leaves with
//! `XDP_TX`.

use crate::{
    csum,
    parse::{
        ptr_at, save_l2, write_l2, Ipv6Hdr, ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, L2,
    },
};
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use balancer_ebpf::{
    BackendInfo, GlobalCounter, LbConfig, AF_INET, AF_INET6, IP6_OVERHEAD, IPIP_OVERHEAD,
};

/// Outer header bytes toward `backend`.
#[inline(always)]
pub fn overhead(backend: &BackendInfo) -> u16 {
    if backend.family == AF_INET6 {
        IP6_OVERHEAD
    } else {
        IPIP_OVERHEAD
    }
}

/// `base` (network-order word) with its low `bits` bits taken from `hash`.
#[inline(always)]
fn vary(base: u32, bits: u8, hash: u32) -> u32 {
    if bits == 0 {
        return base;
    }
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    (base & !mask) | (hash & mask)
}

#[inline(always)]
fn split(w: u32) -> [u16; 2] {
    [((w >> 16) as u16).to_be(), (w as u16).to_be()]
}

/// What to wrap and where to send it (one struct: BPF calls take at most 5 arguments).
pub struct Tunnel {
    pub inner_family: u8,
    /// Length of the inner IP packet per its header.
    pub inner_len: u16,
    /// Flow hash; its low bits vary the outer source.
    pub hash: u32,
    /// The backend's entry in `BACKENDS` (map memory, stable for the program's run).
    pub backend: &'static BackendInfo,
}

/// Wraps the IP packet in an outer header toward `t.backend`. Out of line to keep the caller's
/// BPF frame small.
#[inline(never)]
pub fn encapsulate(ctx: &XdpContext, l2: &L2, cfg: &LbConfig, t: &Tunnel) -> bool {
    crate::stats::ok_or_count(wrap(ctx, l2, cfg, t))
}

#[inline(always)]
fn wrap(ctx: &XdpContext, l2: &L2, cfg: &LbConfig, t: &Tunnel) -> Result<(), GlobalCounter> {
    let (inner_family, inner_len, hash, backend) = (t.inner_family, t.inner_len, t.hash, t.backend);
    // Only VLAN tags must survive the move; MACs and the ethertype are rewritten anyway.
    let saved = if l2.vlans != 0 {
        Some(save_l2(ctx, l2).map_err(|_| GlobalCounter::DropMalformed)?)
    } else {
        None
    };
    let proto = if inner_family == AF_INET {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    let outer6 = backend.family == AF_INET6;
    let ovh = overhead(backend);
    // SAFETY: the helper checks the headroom itself and fails without touching the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ovh as i32)) } != 0 {
        return Err(GlobalCounter::DropAdjust);
    }
    let ethertype = if outer6 { ETH_P_IPV6 } else { ETH_P_IP };
    // SAFETY: `LbConfig` and `BackendInfo` live in map values (8-aligned); the MACs sit
    // at offsets 0 and 6, `encap_src4` at 16, `encap_src6` at 20 and the backend address
    // at 0, so their 16-bit word views are aligned.
    let (dst_mac, src_mac, src4, src6, dst) = unsafe {
        (
            *(cfg.nexthop_mac.as_ptr() as *const [u16; 3]),
            *(cfg.own_mac.as_ptr() as *const [u16; 3]),
            *(cfg.encap_src4.as_ptr() as *const [u16; 2]),
            cfg.encap_src6.as_ptr() as *const [u16; 8],
            backend.addr.as_ptr() as *const [u16; 8],
        )
    };
    match &saved {
        Some(saved) => write_l2(ctx, saved, dst_mac, src_mac, ethertype)
            .map_err(|_| GlobalCounter::DropAdjust)?,
        None => {
            let eth: *mut [u16; 7] = ptr_at(ctx, 0).map_err(|_| GlobalCounter::DropAdjust)?;
            // SAFETY: `ptr_at` checked the 14 bytes.
            unsafe {
                *eth = [
                    dst_mac[0],
                    dst_mac[1],
                    dst_mac[2],
                    src_mac[0],
                    src_mac[1],
                    src_mac[2],
                    ethertype.to_be(),
                ];
            }
        }
    }
    let l3 = l2.l3_off();
    if outer6 {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, l3).map_err(|_| GlobalCounter::DropAdjust)?;
        // SAFETY: `ptr_at` checked the 40 bytes; `src6` / `dst` as above.
        unsafe {
            let mut src = *src6;
            let base = (u16::from_be(src[6]) as u32) << 16 | u16::from_be(src[7]) as u32;
            let low = split(vary(base, cfg.src_vary_bits, hash));
            src[6] = low[0];
            src[7] = low[1];
            (*ip).vtcfl = [0x6000u16.to_be(), 0];
            (*ip).payload_len = inner_len.to_be();
            (*ip).nexthdr = proto;
            (*ip).hop_limit = 64;
            (*ip).src = src;
            (*ip).dst = *dst;
        }
    } else {
        let ip: *mut [u16; 10] = ptr_at(ctx, l3).map_err(|_| GlobalCounter::DropAdjust)?;
        let base = (u16::from_be(src4[0]) as u32) << 16 | u16::from_be(src4[1]) as u32;
        let src = split(vary(base, cfg.src_vary_bits, hash));
        // SAFETY: `dst` as above.
        let d = unsafe { *dst };
        // Words in network order, summed in registers: nothing is staged on the stack.
        let w0 = 0x4500u16.to_be();
        let w1 = inner_len.wrapping_add(IPIP_OVERHEAD).to_be();
        let w4 = (0x4000u16 | proto as u16).to_be(); // TTL 64, protocol
        let sum = w0 as u64
            + w1 as u64
            + w4 as u64
            + src[0] as u64
            + src[1] as u64
            + d[0] as u64
            + d[1] as u64;
        // SAFETY: `ptr_at` checked the 20 bytes.
        unsafe {
            *ip = [
                w0,
                w1,
                0,
                0,
                w4,
                csum::fold(sum),
                src[0],
                src[1],
                d[0],
                d[1],
            ];
        }
    }
    Ok(())
}
