//! The balancer XDP program: TCP packets for a VIP:port are steered to a backend by the
//! VIP's Maglev ring and the flow table, encapsulated (IPIP / IP6IP6) and sent back out
//! with `XDP_TX`. Everything else goes to the kernel untouched. The policies for
//! fragments, options, truncated headers and ICMP are in `docs/dataplane.md`.
#![no_std]
#![no_main]

#[path = "../csum.rs"]
mod csum;
#[path = "../encap.rs"]
mod encap;
#[path = "../icmp.rs"]
mod icmp;
#[path = "../maps.rs"]
mod maps;
#[path = "../parse.rs"]
mod parse;
#[path = "../stats.rs"]
mod stats;
#[path = "../steer.rs"]
mod steer;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use balancer_ebpf::{
    hash::{client_hash, FLOW_HASH_SEED},
    Addr, FlowKey, GlobalCounter, LbConfig, ObjectCounter, VipAddr, VipKey, VipMeta, AF_INET,
    AF_INET6, CONFIG_F_READY, VIP_F_ACL, VIP_F_STICKY, VIP_F_SYN_GUARD,
};
use maps::{CONFIG, VIPS, VIP_ADDRS, VIP_PORTS};
use parse::{
    frame_len, parse_l2, ptr_at, words4_addr, words_addr, Ipv4Hdr, Ipv6Hdr, TcpHdr, ETH_P_IP,
    ETH_P_IPV6, IPPROTO_FRAGMENT, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, L2, TCP_ACK, TCP_SYN,
};

/// What happens to the frame; drops carry the counter that explains them.
enum Verdict {
    /// To the kernel, counted `Pass`.
    Pass,
    /// To the kernel, already counted under a more specific reason.
    PassCounted,
    /// Dropped, already counted under its reason.
    DropCounted,
    Tx,
}

type Res = Result<Verdict, GlobalCounter>;

const MALFORMED: GlobalCounter = GlobalCounter::DropMalformed;

#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    action(process(&ctx))
}

/// The XDP action for a verdict, counting what is not counted yet.
#[inline(always)]
fn action(r: Res) -> u32 {
    match r {
        Ok(Verdict::Pass) => {
            stats::global(GlobalCounter::Pass);
            xdp_action::XDP_PASS
        }
        Ok(Verdict::PassCounted) => xdp_action::XDP_PASS,
        Ok(Verdict::DropCounted) => xdp_action::XDP_DROP,
        Ok(Verdict::Tx) => xdp_action::XDP_TX,
        Err(c) => {
            stats::global(c);
            xdp_action::XDP_DROP
        }
    }
}

/// Turns an action computed out of line back into a verdict (already counted).
#[inline(always)]
fn counted(action: u32) -> Res {
    Ok(match action {
        xdp_action::XDP_TX => Verdict::Tx,
        xdp_action::XDP_DROP => Verdict::DropCounted,
        _ => Verdict::PassCounted,
    })
}

/// The IP layer of the frame, family independent. Offsets only: addresses are read
/// straight into the map keys that need them, which keeps the BPF stack small.
struct Ip {
    family: u8,
    proto: u8,
    dont_fragment: bool,
    /// IP packet length per its header (the frame may carry padding after it).
    len: u16,
    l3: usize,
    l4: usize,
}

impl Ip {
    // Offsets cross BPF calls through the stack, where the verifier forgets their range;
    // the masks give it back (l3 is 14, 18 or 22; l4 at most 22 + 60).
    #[inline(always)]
    fn l3(&self) -> usize {
        self.l3 & 0x1f
    }

    #[inline(always)]
    fn l4(&self) -> usize {
        self.l4 & 0x7f
    }
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Res {
    let l2 = parse_l2(ctx).map_err(|_| MALFORMED)?;
    let l3 = l2.l3_off();
    let ip = match l2.ethertype {
        ETH_P_IP => parse_v4(ctx, l3)?,
        ETH_P_IPV6 => parse_v6(ctx, l3)?,
        _ => return Ok(Verdict::Pass),
    };
    let Some(ip) = ip else {
        return Ok(Verdict::Pass);
    };
    match ip.proto {
        IPPROTO_TCP => counted(tcp(ctx, &l2, &ip)),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => counted(icmp_error(ctx, &l2, &ip)),
        _ => Ok(Verdict::Pass),
    }
}

#[inline(always)]
fn is_vip_addr(addr: &Addr, family: u8) -> bool {
    let key = VipAddr {
        addr: *addr,
        family,
        _pad: [0; 3],
    };
    VIP_ADDRS.get_ptr(key).is_some()
}

/// Fragments for a VIP are dropped; other fragments belong to the kernel.
#[inline(always)]
fn fragment(ctx: &XdpContext, l3: usize, family: u8) -> Result<Option<Ip>, GlobalCounter> {
    if fragment_to_vip(ctx, l3, family) {
        Err(GlobalCounter::DropFragment)
    } else {
        Ok(None)
    }
}

#[inline(never)]
fn fragment_to_vip(ctx: &XdpContext, l3: usize, family: u8) -> bool {
    let l3 = l3 & 0x1f;
    let dst = if family == AF_INET {
        let Ok(p) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
            return false;
        };
        // SAFETY: bounds checked by `ptr_at`.
        words4_addr(unsafe { &(*p).dst })
    } else {
        let Ok(p) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
            return false;
        };
        // SAFETY: bounds checked by `ptr_at`.
        words_addr(unsafe { &(*p).dst })
    };
    is_vip_addr(&dst, family)
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Result<Option<Ip>, GlobalCounter> {
    let p: *const Ipv4Hdr = ptr_at(ctx, l3).map_err(|_| MALFORMED)?;
    // SAFETY: `ptr_at` checked the 20 bytes.
    let (vihl, tot_len, frag, proto) =
        unsafe { ((*p).vihl, (*p).tot_len, (*p).frag_off, (*p).proto) };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let len = u16::from_be(tot_len);
    if vihl >> 4 != 4 || ihl < 20 || (len as usize) < ihl || l3 + len as usize > frame_len(ctx) {
        return Err(MALFORMED);
    }
    let frag = u16::from_be(frag);
    if frag & 0x3fff != 0 {
        return fragment(ctx, l3, AF_INET);
    }
    Ok(Some(Ip {
        family: AF_INET,
        proto,
        dont_fragment: frag & 0x4000 != 0,
        len,
        l3,
        l4: l3 + ihl,
    }))
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Result<Option<Ip>, GlobalCounter> {
    let p: *const Ipv6Hdr = ptr_at(ctx, l3).map_err(|_| MALFORMED)?;
    // SAFETY: `ptr_at` checked the 40 bytes.
    let (v, payload, nexthdr) = unsafe { ((*p).vtcfl[0], (*p).payload_len, (*p).nexthdr) };
    let payload = u16::from_be(payload) as usize;
    if u16::from_be(v) >> 12 != 6 || l3 + 40 + payload > frame_len(ctx) {
        return Err(MALFORMED);
    }
    if nexthdr == IPPROTO_FRAGMENT {
        return fragment(ctx, l3, AF_INET6);
    }
    Ok(Some(Ip {
        family: AF_INET6,
        proto: nexthdr,
        dont_fragment: true,
        len: (payload + 40) as u16,
        l3,
        l4: l3 + 40,
    }))
}

#[inline(always)]
fn vip_port(port: u16) -> bool {
    match VIP_PORTS.get(port as u32 / 32) {
        Some(w) => *w & (1 << (port % 32)) != 0,
        None => false,
    }
}

/// The flow key of a TCP packet (client = source). Addresses are copied word by word
/// from the header into the key: no temporaries on the BPF stack, no memset.
#[inline(always)]
fn flow_key(ctx: &XdpContext, ip: &Ip, sport: u16, dport: u16, key: *mut FlowKey) -> bool {
    // SAFETY: `FlowKey` is 2-aligned with `src` at 0 and `dst` at 16, so the word views
    // are aligned; header pointers are bounds checked by `ptr_at`.
    unsafe {
        let src = core::ptr::addr_of_mut!((*key).src) as *mut [u16; 8];
        let dst = core::ptr::addr_of_mut!((*key).dst) as *mut [u16; 8];
        if ip.family == AF_INET {
            let Ok(p) = ptr_at::<Ipv4Hdr>(ctx, ip.l3()) else {
                return false;
            };
            let (s, d) = ((*p).src, (*p).dst);
            *src = [s[0], s[1], 0, 0, 0, 0, 0, 0];
            *dst = [d[0], d[1], 0, 0, 0, 0, 0, 0];
        } else {
            let Ok(p) = ptr_at::<Ipv6Hdr>(ctx, ip.l3()) else {
                return false;
            };
            *src = (*p).src;
            *dst = (*p).dst;
        }
    }
    // SAFETY: `key` points to a live, writable FlowKey.
    unsafe {
        (*key).sport = sport;
        (*key).dport = dport;
        (*key).proto = IPPROTO_TCP;
        (*key).family = ip.family;
        (*key)._pad = [0; 2];
    }
    true
}

#[inline(always)]
fn config() -> Option<&'static LbConfig> {
    let c = CONFIG.get(0)?;
    if c.flags & CONFIG_F_READY == 0 {
        stats::global(GlobalCounter::NotReady);
        return None;
    }
    Some(c)
}

/// Out of line (as are the rare paths it calls) so that no single BPF frame holds the
/// keys of every path at once: the verifier caps the whole call chain at 512 bytes.
#[inline(never)]
fn tcp(ctx: &XdpContext, l2: &L2, ip: &Ip) -> u32 {
    action(tcp_verdict(ctx, l2, ip))
}

#[inline(always)]
fn tcp_verdict(ctx: &XdpContext, l2: &L2, ip: &Ip) -> Res {
    let p: *const TcpHdr = ptr_at(ctx, ip.l4()).map_err(|_| MALFORMED)?;
    // SAFETY: `ptr_at` checked the 20 bytes.
    let (sport, dport, doff, flags) = unsafe {
        (
            u16::from_be((*p).sport),
            u16::from_be((*p).dport),
            (((*p).doff >> 4) as usize) * 4,
            (*p).flags,
        )
    };
    if doff < 20 || ip.l4() - ip.l3() + doff > ip.len as usize {
        return Err(MALFORMED);
    }
    let mut key = core::mem::MaybeUninit::<FlowKey>::uninit();
    if !flow_key(ctx, ip, sport, dport, key.as_mut_ptr()) {
        return Err(MALFORMED);
    }
    // SAFETY: `flow_key` wrote every field.
    let key = unsafe { key.assume_init() };
    // Most traffic to other ports is the host's own (SSH, BGP): one inlined array read
    // sends it on its way before any hash lookup.
    if !vip_port(dport) {
        return Ok(Verdict::Pass);
    }
    let syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // Established packets try the flow table first: a hit names the backend, the flow's
    // hash and its VIP, so the fast path needs no `VIPS` lookup. (User space purges a
    // removed VIP's flows.)
    let hit = if syn { None } else { steer::flow_lookup(&key) };
    let (vip_id, target, hash, cfg) = match hit {
        Some(h) => {
            let Some(cfg) = config() else {
                return Ok(Verdict::PassCounted);
            };
            stats::global(GlobalCounter::FlowHit);
            (h.vip_id, h.target, h.hash, cfg)
        }
        None => {
            let vkey = VipKey {
                addr: key.dst,
                port: dport,
                proto: IPPROTO_TCP,
                family: ip.family,
            };
            let Some(vip) = VIPS.get_ptr(vkey) else {
                return Ok(Verdict::Pass);
            };
            // SAFETY: pointer from a successful lookup, valid for this run; user space
            // replaces values whole, the fields read here are plain integers.
            let vip: &VipMeta = unsafe { &*vip };
            let Some(cfg) = config() else {
                return Ok(Verdict::PassCounted);
            };
            if syn {
                if vip.flags & VIP_F_ACL != 0 && !steer::acl_allows(vip, &key.src, ip.family) {
                    return Err(GlobalCounter::DropAcl);
                }
                if vip.flags & VIP_F_SYN_GUARD != 0
                    && !steer::syn_guard_allows(vip, &key.src, ip.family)
                {
                    return Err(GlobalCounter::DropSynGuard);
                }
            } else {
                stats::global(GlobalCounter::FlowMiss);
            }
            let hport = if vip.flags & VIP_F_STICKY != 0 {
                0
            } else {
                sport
            };
            let h = client_hash(&key.src, hport, FLOW_HASH_SEED);
            let t = steer::assign(vip, &key, h, syn)?;
            (vip.vip_id, t, h, cfg)
        }
    };
    let ovh = encap::overhead(target.info);
    if cfg.mtu != 0 && ip.len as u32 + ovh as u32 > cfg.mtu as u32 {
        let mtu = cfg.mtu - ovh;
        if ip.family == AF_INET {
            if !ip.dont_fragment {
                return Err(GlobalCounter::DropTooBig);
            }
            if !icmp::too_big_v4(ctx, l2, (ip.l4() - ip.l3()) & 0x3f, mtu) {
                return Ok(Verdict::DropCounted);
            }
        } else if !icmp::too_big_v6(ctx, l2, mtu) {
            return Ok(Verdict::DropCounted);
        }
        stats::global(GlobalCounter::IcmpTooBigSent);
        return Ok(Verdict::Tx);
    }
    if !forward(ctx, l2, ip, cfg, vip_id, target, hash) {
        return Ok(Verdict::DropCounted);
    }
    stats::global(GlobalCounter::Forwarded);
    Ok(Verdict::Tx)
}

/// Encapsulates toward `target` and counts the traffic on the VIP and the backend.
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    l2: &L2,
    ip: &Ip,
    cfg: &LbConfig,
    vip_id: u32,
    target: steer::Target,
    hash: u32,
) -> bool {
    let bytes = frame_len(ctx) as u64;
    let tunnel = encap::Tunnel {
        inner_family: ip.family,
        inner_len: ip.len,
        hash,
        backend: target.info,
    };
    if !encap::encapsulate(ctx, l2, cfg, &tunnel) {
        return false;
    }
    stats::vip(vip_id, ObjectCounter::Traffic, bytes);
    stats::backend(target.id, ObjectCounter::Traffic, bytes);
    true
}

/// A "fragmentation needed" / "packet too big" about a VIP flow goes to the flow's
/// backend, whose TCP stack owns the connection and must lower its MSS.
#[inline(never)]
fn icmp_error(ctx: &XdpContext, l2: &L2, ip: &Ip) -> u32 {
    action(icmp_verdict(ctx, l2, ip))
}

#[inline(always)]
fn icmp_verdict(ctx: &XdpContext, l2: &L2, ip: &Ip) -> Res {
    let mut key = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        proto: IPPROTO_TCP,
        family: ip.family,
        _pad: [0; 2],
    };
    let quoted = if ip.family == AF_INET {
        icmp::quoted_v4(ctx, ip.l4(), &mut key)
    } else {
        icmp::quoted_v6(ctx, ip.l4(), &mut key)
    };
    if !quoted.map_err(|_| MALFORMED)? {
        return Ok(Verdict::Pass);
    }
    let vkey = VipKey {
        addr: key.dst,
        port: key.dport,
        proto: IPPROTO_TCP,
        family: ip.family,
    };
    let Some(vip) = VIPS.get_ptr(vkey) else {
        stats::global(GlobalCounter::IcmpPass);
        return Ok(Verdict::PassCounted);
    };
    // SAFETY: pointer from a successful lookup, valid for this run; user space replaces
    // values whole, the fields read here are plain integers.
    let vip: &VipMeta = unsafe { &*vip };
    let Some(cfg) = config() else {
        return Ok(Verdict::PassCounted);
    };
    let hport = if vip.flags & VIP_F_STICKY != 0 {
        0
    } else {
        key.sport
    };
    let (target, hash) = match steer::flow_lookup(&key) {
        Some(hit) => (hit.target, hit.hash),
        None => {
            let h = client_hash(&key.src, hport, FLOW_HASH_SEED);
            (steer::ring_pick(vip, h)?, h)
        }
    };
    let ovh = encap::overhead(target.info);
    if cfg.mtu != 0 && ip.len as u32 + ovh as u32 > cfg.mtu as u32 {
        return Err(GlobalCounter::DropTooBig);
    }
    if !forward(ctx, l2, ip, cfg, vip.vip_id, target, hash) {
        return Ok(Verdict::DropCounted);
    }
    stats::global(GlobalCounter::IcmpForwarded);
    Ok(Verdict::Tx)
}

balancer_ebpf::program_boilerplate!();
