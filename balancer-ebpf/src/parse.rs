//! Kernel side: bounds-checked packet access and the header layouts both XDP programs
//! parse (Ethernet with up to two 802.1Q/802.1ad tags, IPv4, IPv6, TCP, ICMP).
//!
//! Compiled into the eBPF binaries only (`#[path]` from `src/bin/*.rs`), never into the
//! host library. Header structs use `u16` words so that every access is 2-byte aligned:
//! XDP frames start at an aligned headroom and every header length we step over is even,
//! and the verifier refuses misaligned stack access, so wider words are avoided.

// Each binary uses a different subset of these helpers.
#![allow(dead_code)]

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: [u16; 2],
    pub dst: [u16; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    pub vtcfl: [u16; 2],
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub src: [u16; 8],
    pub dst: [u16; 8],
}

#[repr(C)]
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    pub seq: [u16; 2],
    pub ack: [u16; 2],
    /// Data offset in the high nibble.
    pub doff: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg: u16,
}

#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub rest: [u16; 2],
}

/// The link layer of a frame: where the IP header starts and what the Ethernet type says.
#[derive(Clone, Copy)]
pub struct L2 {
    pub ethertype: u16,
    /// 0, 1 or 2 VLAN tags; the IP header starts at `14 + 4 * vlans`.
    pub vlans: usize,
}

impl L2 {
    #[inline(always)]
    pub fn l3_off(&self) -> usize {
        // Masked: the verifier loses the range of values passed through the stack.
        14 + 4 * (self.vlans & 3)
    }
}

/// The frame is shorter than a header it announces.
pub struct Truncated;

/// `data` and `data_end` of the frame. Volatile reads: otherwise LLVM promotes the
/// context loads of out-of-line functions into plain integer arguments, which the
/// verifier then refuses to do arithmetic on.
#[inline(always)]
pub fn bounds(ctx: &XdpContext) -> (usize, usize) {
    // SAFETY: `ctx.ctx` is the context pointer the kernel passed to the program.
    unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
        )
    }
}

#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    let (start, end) = bounds(ctx);
    end - start
}

/// A pointer to a `T` at `off`, if the whole `T` lies inside the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, Truncated> {
    let (start, end) = bounds(ctx);
    if start + off + size_of::<T>() > end {
        return Err(Truncated);
    }
    Ok((start + off) as *mut T)
}

#[inline(always)]
fn is_vlan(t: u16) -> bool {
    t == ETH_P_8021Q || t == ETH_P_8021AD
}

/// Parses Ethernet and up to two VLAN tags. A third tag is reported as its own
/// ethertype (the caller passes such frames to the kernel).
#[inline(always)]
pub fn parse_l2(ctx: &XdpContext) -> Result<L2, Truncated> {
    let eth: *const [u16; 7] = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the 14 bytes lie inside the frame.
    let t = u16::from_be(unsafe { (*eth)[6] });
    if !is_vlan(t) {
        return Ok(L2 {
            ethertype: t,
            vlans: 0,
        });
    }
    let tag: *const [u16; 2] = ptr_at(ctx, 14)?;
    // SAFETY: bounds checked by `ptr_at`.
    let t = u16::from_be(unsafe { (*tag)[1] });
    if !is_vlan(t) {
        return Ok(L2 {
            ethertype: t,
            vlans: 1,
        });
    }
    let tag: *const [u16; 2] = ptr_at(ctx, 18)?;
    // SAFETY: bounds checked by `ptr_at`.
    let t = u16::from_be(unsafe { (*tag)[1] });
    Ok(L2 {
        ethertype: t,
        vlans: 2,
    })
}

/// Copies of the link-layer header fields that must survive `bpf_xdp_adjust_head`.
#[derive(Clone, Copy)]
pub struct SavedL2 {
    pub dst: [u16; 3],
    pub src: [u16; 3],
    pub tags: [u16; 4],
    pub vlans: usize,
}

#[inline(always)]
pub fn save_l2(ctx: &XdpContext, l2: &L2) -> Result<SavedL2, Truncated> {
    let eth: *const [u16; 11] = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked 22 bytes; every caller's frame holds an IP header after
    // the link layer, so 22 bytes are always present when this is called.
    let w = unsafe { *eth };
    Ok(SavedL2 {
        dst: [w[0], w[1], w[2]],
        src: [w[3], w[4], w[5]],
        tags: [w[6], w[7], w[8], w[9]],
        vlans: l2.vlans,
    })
}

/// Writes a link-layer header at the start of the frame: `dst`, `src`, the saved VLAN
/// tags (their inner ethertypes included) and `ethertype` as the innermost type.
#[inline(always)]
pub fn write_l2(
    ctx: &XdpContext,
    saved: &SavedL2,
    dst: [u16; 3],
    src: [u16; 3],
    ethertype: u16,
) -> Result<(), Truncated> {
    let eth: *mut [u16; 11] = ptr_at(ctx, 0)?;
    let t = ethertype.to_be();
    // SAFETY: 22 bytes checked above.
    unsafe {
        let e = &mut *eth;
        e[0] = dst[0];
        e[1] = dst[1];
        e[2] = dst[2];
        e[3] = src[0];
        e[4] = src[1];
        e[5] = src[2];
        match saved.vlans {
            0 => e[6] = t,
            1 => {
                e[6] = saved.tags[0];
                e[7] = saved.tags[1];
                e[8] = t;
            }
            _ => {
                e[6] = saved.tags[0];
                e[7] = saved.tags[1];
                e[8] = saved.tags[2];
                e[9] = saved.tags[3];
                e[10] = t;
            }
        }
    }
    Ok(())
}

/// Reads a MAC address kept as 6 bytes (in a map value) as three network-order words.
#[inline(always)]
pub fn mac_words(m: &[u8; 6]) -> [u16; 3] {
    [
        u16::from_ne_bytes([m[0], m[1]]),
        u16::from_ne_bytes([m[2], m[3]]),
        u16::from_ne_bytes([m[4], m[5]]),
    ]
}

/// An address kept as 16 bytes, as eight network-order words.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u16; 8] {
    let mut w = [0u16; 8];
    let mut i = 0;
    while i < 8 {
        w[i] = u16::from_ne_bytes([a[2 * i], a[2 * i + 1]]);
        i += 1;
    }
    w
}

/// Eight network-order words as a 16-byte address.
#[inline(always)]
pub fn words_addr(w: &[u16; 8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        let b = w[i].to_ne_bytes();
        a[2 * i] = b[0];
        a[2 * i + 1] = b[1];
        i += 1;
    }
    a
}

/// An IPv4 address (two network-order words) as a 16-byte address, zero padded.
#[inline(always)]
pub fn words4_addr(w: &[u16; 2]) -> [u8; 16] {
    let (x, y) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
    [x[0], x[1], y[0], y[1], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}
