//! Golden packets for ICMP: "fragmentation needed" / "packet too big" from a router is
//! routed to the backend of the flow it quotes, and oversize packets are answered from
//! the NIC with a generated ICMP (IPv4 with DF, IPv6) or dropped (IPv4 without DF).
#![cfg(feature = "privileged")]

mod common;

use balancer_ebpf::GlobalCounter as G;
use common::{packet::*, *};
use std::net::IpAddr;

#[test]
fn ipv4_frag_needed_goes_to_the_flow_backend() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT4.into();
    assert_eq!(
        lab.run(&Tcp::new(c, VIP4.into(), 47000, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    let owner = lab.expected(0, &c, 47000);
    // Move the ring away so only the flow table can name the owner.
    let other = if owner == 0 { 1 } else { 0 };
    lab.set_vip(0, 0, &[other; RING as usize]);
    // The router quotes the backend's packet VIP:25 -> client:47000.
    let quoted = Tcp::new(VIP4.into(), c, PORT, 47000, PSH_ACK).ip();
    let f = icmp4_frag_needed([198, 18, 3, 1], VIP4.octets(), 1400, &quoted[..28]);
    let (v, out) = lab.run(&f);
    assert_eq!(v, XDP_TX);
    let e = check_encap(&out, &[], true);
    assert_eq!(
        backend_of(&e.outer_dst),
        owner,
        "the flow's backend, not the ring's"
    );
    assert_eq!(
        e.inner,
        f[14..].to_vec(),
        "the ICMP packet travels unchanged"
    );
    assert_eq!(lab.stat(G::IcmpForwarded), 1);

    // Without a flow entry: the consistent hash of the quoted client.
    let c2: IpAddr = "198.19.9.9".parse().unwrap();
    let quoted = Tcp::new(VIP4.into(), c2, PORT, 47001, PSH_ACK).ip();
    let f = icmp4_frag_needed([198, 18, 3, 1], VIP4.octets(), 1400, &quoted[..28]);
    let (v, out) = lab.run(&f);
    assert_eq!(v, XDP_TX);
    assert_eq!(backend_of(&check_encap(&out, &[], true).outer_dst), other);

    // Quoting a port that is no VIP: passed to the kernel, counted.
    let quoted = Tcp::new(VIP4.into(), c, 80, 47000, PSH_ACK).ip();
    let f = icmp4_frag_needed([198, 18, 3, 1], VIP4.octets(), 1400, &quoted[..28]);
    assert_eq!(lab.run(&f), (XDP_PASS, f.clone()));
    assert_eq!(lab.stat(G::IcmpPass), 1);
}

#[test]
fn ipv6_packet_too_big_goes_to_the_flow_backend() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT6.into();
    assert_eq!(
        lab.run(&Tcp::new(c, VIP6.into(), 48000, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    let owner = lab.expected(1, &c, 48000);
    let other = if owner == 10 { 11 } else { 10 };
    lab.set_vip(1, 0, &[other; RING as usize]);
    let quoted = Tcp::new(VIP6.into(), c, PORT, 48000, PSH_ACK).ip();
    let router = "fd00:198:18:3::1".parse::<std::net::Ipv6Addr>().unwrap();
    let f = icmp6_too_big(router.octets(), VIP6.octets(), 1280, &quoted[..48]);
    let (v, out) = lab.run(&f);
    assert_eq!(v, XDP_TX);
    let e = check_encap(&out, &[], false);
    assert_eq!(backend_of(&e.outer_dst), owner);
    assert_eq!(e.inner, f[14..].to_vec());
    assert_eq!(lab.stat(G::IcmpForwarded), 1);
}

/// The IPv4 header and ICMP message of a generated "fragmentation needed", checked.
fn check_frag_needed(out: &[u8], t: &Tcp, mtu: u16) {
    assert_eq!(&out[0..6], &CLIENT_MAC, "back to the client's MAC");
    assert_eq!(&out[6..12], &LB_MAC);
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let ip = &out[14..];
    let orig = t.ip();
    let ihl = usize::from(orig[0] & 0x0f) * 4;
    assert_eq!(
        ip.len(),
        20 + 8 + ihl + 8,
        "header + ICMP + quoted header + 8 bytes"
    );
    assert_eq!(ip[0], 0x45);
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(csum(&ip[..20]), 0, "IPv4 checksum verifies");
    assert_eq!(&ip[12..16], &orig[16..20], "from the VIP");
    assert_eq!(&ip[16..20], &orig[12..16], "to the client");
    let icmp = &ip[20..];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), mtu, "next-hop MTU");
    assert_eq!(csum(icmp), 0, "ICMP checksum verifies");
    assert_eq!(
        &icmp[8..],
        &orig[..ihl + 8],
        "quotes the header and 8 bytes"
    );
}

#[test]
fn oversize_ipv4_with_df_gets_frag_needed_from_the_vip() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT4.into();
    for opts in [vec![], vec![1u8; 8]] {
        let mut t = Tcp::new(c, VIP4.into(), 49000, PORT, PSH_ACK);
        t.ip_opts = opts;
        // 1481 bytes of IP: fits the 1500 MTU alone, not with 20 bytes of IPIP.
        t.data_len = 1481 - 40 - t.ip_opts.len();
        let (v, out) = lab.run(&t.frame());
        assert_eq!(v, XDP_TX);
        check_frag_needed(&out, &t, MTU - 20);
    }
    // A packet that fits exactly is forwarded.
    let mut t = Tcp::new(c, VIP4.into(), 49000, PORT, PSH_ACK);
    t.data_len = 1480 - 40;
    let (v, out) = lab.run(&t.frame());
    assert_eq!(v, XDP_TX);
    assert_eq!(check_encap(&out, &[], true).inner.len(), 1480);
    assert_eq!(lab.stat(G::IcmpTooBigSent), 2);
    assert_eq!(lab.stat(G::Forwarded), 1);
}

#[test]
fn oversize_ipv4_without_df_is_dropped() {
    let mut lab = Lab::new();
    let mut t = Tcp::new(CLIENT4.into(), VIP4.into(), 49500, PORT, PSH_ACK);
    t.frag = 0;
    t.data_len = 1460;
    assert_eq!(lab.run(&t.frame()).0, XDP_DROP);
    assert_eq!(lab.stat(G::DropTooBig), 1);
    assert_eq!(lab.stat(G::IcmpTooBigSent), 0);
}

#[test]
fn oversize_ipv6_gets_packet_too_big_from_the_vip() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT6.into();
    let mut t = Tcp::new(c, VIP6.into(), 50000, PORT, PSH_ACK);
    t.data_len = 1461 - 60; // 1461 bytes of IPv6: over 1500 with 40 bytes of IP6IP6.
    let (v, out) = lab.run(&t.frame());
    assert_eq!(v, XDP_TX);
    assert_eq!(&out[0..6], &CLIENT_MAC);
    assert_eq!(&out[6..12], &LB_MAC);
    assert_eq!(&out[12..14], &[0x86, 0xdd]);
    let ip = &out[14..];
    let orig = t.ip();
    assert_eq!(ip.len(), 40 + 8 + 48);
    assert_eq!(ip[0] >> 4, 6);
    assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 56, "payload length");
    assert_eq!((ip[6], ip[7]), (58, 64), "ICMPv6, hop limit 64");
    assert_eq!(&ip[8..24], &orig[24..40], "from the VIP");
    assert_eq!(&ip[24..40], &orig[8..24], "to the client");
    let icmp = &ip[40..];
    assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
    assert_eq!(
        u32::from_be_bytes(icmp[4..8].try_into().unwrap()),
        u32::from(MTU - 40)
    );
    let (src, dst) = (IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()), c);
    assert_eq!(l4_csum(&src, &dst, 58, icmp), 0, "ICMPv6 checksum verifies");
    assert_eq!(
        &icmp[8..],
        &orig[..48],
        "quotes the IPv6 header and 8 bytes of TCP"
    );
    assert_eq!(lab.stat(G::IcmpTooBigSent), 1);
}
