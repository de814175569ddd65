//! Golden packets for the admission and robustness policies of `docs/dataplane.md`:
//! allowlist, SYN guard, fragments, truncated frames and impossible header fields.
#![cfg(feature = "privileged")]

mod common;

use balancer::dataplane::{AclPrefix, DataPlaneOps};
use balancer_ebpf::{GlobalCounter as G, AF_INET, VIP_F_ACL, VIP_F_SYN_GUARD};
use common::{packet::*, *};
use std::net::IpAddr;

#[test]
fn acl_denies_syns_from_outside_the_allowlist() {
    let mut lab = Lab::with(VIP_F_ACL, 0, MTU);
    lab.dp
        .set_acl(
            0,
            &[AclPrefix {
                addr: balancer_ebpf::addr4([198, 19, 0, 0]),
                family: AF_INET,
                prefix_len: 24,
            }],
        )
        .unwrap();
    let inside: IpAddr = "198.19.0.77".parse().unwrap();
    let outside: IpAddr = "198.19.1.77".parse().unwrap();
    let (v, out) = lab.run(&Tcp::new(inside, VIP4.into(), 40000, PORT, SYN).frame());
    assert_eq!(v, XDP_TX, "allowed prefix");
    assert_eq!(
        backend_of(&check_encap(&out, &[], true).outer_dst),
        lab.expected(0, &inside, 40000)
    );
    assert_eq!(
        lab.run(&Tcp::new(outside, VIP4.into(), 40000, PORT, SYN).frame())
            .0,
        XDP_DROP
    );
    assert_eq!(lab.stat(G::DropAcl), 1);
    // Replacing the list moves the boundary.
    lab.dp
        .set_acl(
            0,
            &[AclPrefix {
                addr: balancer_ebpf::addr4([198, 19, 1, 0]),
                family: AF_INET,
                prefix_len: 24,
            }],
        )
        .unwrap();
    assert_eq!(
        lab.run(&Tcp::new(outside, VIP4.into(), 40001, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    assert_eq!(
        lab.run(&Tcp::new(inside, VIP4.into(), 40001, PORT, SYN).frame())
            .0,
        XDP_DROP
    );
    // The IPv6 VIP has no ACL flag: open.
    let c6: IpAddr = CLIENT6.into();
    assert_eq!(
        lab.run(&Tcp::new(c6, VIP6.into(), 40000, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    assert_eq!(lab.stat(G::DropAcl), 2);
}

#[test]
fn syn_guard_drops_the_excess_of_one_prefix_only() {
    // Rate 10/s, burst 3, grouped by /24 (see `Lab::set_vip`).
    let mut lab = Lab::with(VIP_F_SYN_GUARD, 0, MTU);
    let mut verdicts = Vec::new();
    for i in 0..6u8 {
        let c: IpAddr = IpAddr::from([198, 19, 5, 10 + i]);
        verdicts.push(
            lab.run(&Tcp::new(c, VIP4.into(), 40000, PORT, SYN).frame())
                .0,
        );
    }
    assert_eq!(&verdicts[..3], &[XDP_TX; 3], "the burst passes");
    assert_eq!(
        &verdicts[3..],
        &[XDP_DROP; 3],
        "then the prefix is over its rate"
    );
    assert_eq!(lab.stat(G::DropSynGuard), 3);
    // Another prefix has its own bucket; established packets are never limited.
    let other: IpAddr = "198.19.6.1".parse().unwrap();
    assert_eq!(
        lab.run(&Tcp::new(other, VIP4.into(), 40000, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    let c: IpAddr = "198.19.5.10".parse().unwrap();
    assert_eq!(
        lab.run(&Tcp::new(c, VIP4.into(), 40000, PORT, ACK).frame())
            .0,
        XDP_TX
    );
    // After 1/rate, one more SYN of the limited prefix fits.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let c: IpAddr = "198.19.5.99".parse().unwrap();
    assert_eq!(
        lab.run(&Tcp::new(c, VIP4.into(), 40000, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    assert_eq!(lab.stat(G::DropSynGuard), 3);
}

#[test]
fn fragments_to_a_vip_are_dropped_and_others_pass() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT4.into();
    for frag in [0x2000u16, 0x0010, 0x2010] {
        let mut t = Tcp::new(c, VIP4.into(), 40000, PORT, SYN);
        t.frag = frag;
        assert_eq!(lab.run(&t.frame()).0, XDP_DROP, "frag word {frag:#06x}");
        let mut t = Tcp::new(c, "198.18.1.2".parse().unwrap(), 40000, PORT, SYN);
        t.frag = frag;
        let f = t.frame();
        assert_eq!(lab.run(&f), (XDP_PASS, f.clone()), "not a VIP: {frag:#06x}");
    }
    // IPv6 with a fragment header (next header 44).
    let mut f = eth(LB_MAC, CLIENT_MAC, &[], ETH_IPV6);
    let mut payload = vec![6, 0, 0, 1, 0, 0, 0, 42];
    payload.extend([0u8; 24]);
    f.extend(ipv6(CLIENT6.octets(), VIP6.octets(), 44, &payload));
    assert_eq!(lab.run(&f).0, XDP_DROP);
    assert_eq!(lab.stat(G::DropFragment), 4);
}

fn assert_malformed(lab: &mut Lab, f: &[u8], what: &str) {
    let before = lab.stat(G::DropMalformed);
    assert_eq!(lab.run(f).0, XDP_DROP, "{what}");
    assert_eq!(lab.stat(G::DropMalformed), before + 1, "{what}: counted");
}

#[test]
fn truncated_frames_are_dropped_at_every_header_boundary() {
    let mut lab = Lab::new();
    for client in [IpAddr::from(CLIENT4), IpAddr::from(CLIENT6)] {
        let vip: IpAddr = if client.is_ipv4() {
            VIP4.into()
        } else {
            VIP6.into()
        };
        for vlans in [vec![], vec![7u16], vec![7, 8]] {
            let mut t = Tcp::new(client, vip, 40000, PORT, SYN);
            t.vlans = vlans.clone();
            let full = t.frame();
            let l2 = 14 + 4 * vlans.len();
            let l3 = if client.is_ipv4() { 20 } else { 40 };
            // Inside a VLAN tag, at the end of the link layer, inside and at the end of
            // the IP header: the IP header announces more than the frame holds.
            let mut cuts = vec![l2, l2 + 1, l2 + l3 - 1, l2 + l3, l2 + l3 + 10];
            if !vlans.is_empty() {
                cuts.push(16);
            }
            for cut in cuts {
                assert_malformed(
                    &mut lab,
                    &full[..cut],
                    &format!("{client} vlans {vlans:?} cut {cut}"),
                );
            }
            // A consistent IP header around a TCP header cut short.
            let seg = tcp(&client, &vip, 40000, PORT, SYN, 0);
            let mut f = eth(LB_MAC, CLIENT_MAC, &vlans, ethertype(&client));
            f.extend(ip_packet(&client, &vip, 6, &[], 0x4000, &seg[..12]));
            assert_malformed(&mut lab, &f, &format!("{client} vlans {vlans:?} short TCP"));
        }
    }
}

#[test]
fn impossible_header_fields_are_dropped() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT4.into();
    let good = Tcp::new(c, VIP4.into(), 40000, PORT, SYN).frame();
    let mut f = good.clone();
    f[14] = 0x44; // IHL 4
    assert_malformed(&mut lab, &f, "IHL < 5");
    let mut f = good.clone();
    f[14] = 0x65; // version 6 inside an IPv4 ethertype
    assert_malformed(&mut lab, &f, "wrong IP version");
    let mut f = good.clone();
    f[16..18].copy_from_slice(&200u16.to_be_bytes());
    assert_malformed(&mut lab, &f, "total length > frame");
    let mut f = good.clone();
    f[16..18].copy_from_slice(&10u16.to_be_bytes());
    assert_malformed(&mut lab, &f, "total length < header");
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x40; // TCP data offset 4
    assert_malformed(&mut lab, &f, "TCP doff < 5");
    let mut f = good.clone();
    f[14 + 20 + 12] = 0xf0; // data offset 60 > segment
    assert_malformed(&mut lab, &f, "TCP doff past the packet");
    let c6: IpAddr = CLIENT6.into();
    let mut f = Tcp::new(c6, VIP6.into(), 40000, PORT, SYN).frame();
    f[18..20].copy_from_slice(&500u16.to_be_bytes());
    assert_malformed(&mut lab, &f, "IPv6 payload length > frame");
    // Frames with trailing padding (Ethernet minimum size) are fine.
    let mut f = good.clone();
    f.resize(f.len() + 6, 0);
    assert_eq!(lab.run(&f).0, XDP_TX);
    // A non-IP ethertype is never judged.
    let mut f = good;
    f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    f.truncate(20);
    assert_eq!(lab.run(&f).0, XDP_PASS);
}
