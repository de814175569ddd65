//! Builds test frames byte by byte (Ethernet, 802.1Q, IPv4 with options, IPv6, TCP,
//! ICMP) and checks the checksums of frames the programs write. No packet crate: the
//! point is to compare the kernel's bytes against an independent implementation.
#![allow(dead_code)]

use std::net::IpAddr;

pub const ETH_IP: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH_ACK: u8 = 0x18;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0, 0, 0, 0x01];

/// RFC 1071 sum of `data` (odd length padded), not yet complemented.
pub fn sum(data: &[u8]) -> u32 {
    let mut s = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    s
}

pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The checksum of `data`; over a block that contains its own checksum, 0 means valid.
pub fn csum(data: &[u8]) -> u16 {
    fold(sum(data))
}

fn pseudo(src: &IpAddr, dst: &IpAddr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend([0, proto]);
            p.extend((len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend(s.octets());
            p.extend(d.octets());
            p.extend((len as u32).to_be_bytes());
            p.extend([0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    sum(&p)
}

/// Checksum of an upper-layer message (with its checksum field in place) under the
/// IPv4/IPv6 pseudo-header: 0 when valid.
pub fn l4_csum(src: &IpAddr, dst: &IpAddr, proto: u8, msg: &[u8]) -> u16 {
    fold(pseudo(src, dst, proto, msg.len()) + sum(msg))
}

/// An Ethernet header with optional 802.1Q tags.
pub fn eth(dst: [u8; 6], src: [u8; 6], vlans: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    for v in vlans {
        f.extend(0x8100u16.to_be_bytes());
        f.extend(v.to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f
}

/// An IPv4 header (with `opts`, a multiple of 4 bytes) and its payload.
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    opts: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let hl = 20 + opts.len();
    let mut h = vec![0x40 | (hl / 4) as u8, 0];
    h.extend(((hl + payload.len()) as u16).to_be_bytes());
    h.extend([0x12, 0x34]);
    h.extend(frag.to_be_bytes());
    h.extend([61, proto, 0, 0]);
    h.extend(src);
    h.extend(dst);
    h.extend(opts);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend(payload);
    h
}

pub fn ipv6(src: [u8; 16], dst: [u8; 16], nexthdr: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((payload.len() as u16).to_be_bytes());
    h.extend([nexthdr, 61]);
    h.extend(src);
    h.extend(dst);
    h.extend(payload);
    h
}

/// A TCP segment with a valid checksum and `data_len` bytes of payload.
pub fn tcp(
    src: &IpAddr,
    dst: &IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    data_len: usize,
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend(0x0102_0304u32.to_be_bytes());
    t.extend(if flags & ACK != 0 { 0x0a0b_0c0du32 } else { 0 }.to_be_bytes());
    t.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend((0..data_len).map(|i| (i % 251) as u8));
    let c = l4_csum(src, dst, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// A TCP packet as described, in a frame from the client toward the balancer.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub data_len: usize,
    pub vlans: Vec<u16>,
    pub ip_opts: Vec<u8>,
    /// IPv4 flags + fragment offset word (DF = 0x4000).
    pub frag: u16,
}

impl Tcp {
    pub fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            flags,
            data_len: 0,
            vlans: Vec::new(),
            ip_opts: Vec::new(),
            frag: 0x4000,
        }
    }

    /// The IP packet (no link layer).
    pub fn ip(&self) -> Vec<u8> {
        let seg = tcp(
            &self.src,
            &self.dst,
            self.sport,
            self.dport,
            self.flags,
            self.data_len,
        );
        ip_packet(&self.src, &self.dst, 6, &self.ip_opts, self.frag, &seg)
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut f = eth(LB_MAC, CLIENT_MAC, &self.vlans, ethertype(&self.src));
        f.extend(self.ip());
        f
    }
}

pub fn ethertype(a: &IpAddr) -> u16 {
    if a.is_ipv4() {
        ETH_IP
    } else {
        ETH_IPV6
    }
}

/// An IP packet of `src`'s family.
pub fn ip_packet(
    src: &IpAddr,
    dst: &IpAddr,
    proto: u8,
    opts: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s.octets(), d.octets(), proto, opts, frag, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s.octets(), d.octets(), proto, payload),
        _ => panic!("mixed families"),
    }
}

/// An ICMP "fragmentation needed" from `router` to `to`, quoting `quoted`.
pub fn icmp4_frag_needed(router: [u8; 4], to: [u8; 4], mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 4, 0, 0, 0, 0];
    m.extend(mtu.to_be_bytes());
    m.extend(quoted);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(LB_MAC, CLIENT_MAC, &[], ETH_IP);
    f.extend(ipv4(router, to, 1, &[], 0, &m));
    f
}

/// An ICMPv6 "packet too big" from `router` to `to`, quoting `quoted`.
pub fn icmp6_too_big(router: [u8; 16], to: [u8; 16], mtu: u32, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![2, 0, 0, 0];
    m.extend(mtu.to_be_bytes());
    m.extend(quoted);
    let c = l4_csum(&IpAddr::from(router), &IpAddr::from(to), 58, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(LB_MAC, CLIENT_MAC, &[], ETH_IPV6);
    f.extend(ipv6(router, to, 58, &m));
    f
}
