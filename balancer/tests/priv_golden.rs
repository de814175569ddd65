//! Golden packets through the balancer program (`BPF_PROG_TEST_RUN`): steering, flow
//! table, encapsulation. Each fixture states its input frame, the verdict and the output
//! bytes it expects, checked field by field with checksums recomputed here.
#![cfg(feature = "privileged")]

mod common;

use balancer::dataplane::DataPlaneOps;
use balancer_ebpf::{
    stats_backend_slot, stats_vip_slot, FlowKey, GlobalCounter as G, ObjectCounter, VIP_F_STICKY,
};
use common::{packet::*, *};
use std::net::IpAddr;

fn flow_key(client: IpAddr, sport: u16, vip: IpAddr) -> FlowKey {
    FlowKey {
        src: addr(&client),
        dst: addr(&vip),
        sport,
        dport: PORT,
        proto: 6,
        family: family(&client),
        _pad: [0; 2],
    }
}

#[test]
fn non_vip_traffic_passes_untouched() {
    let mut lab = Lab::new();
    let other4: IpAddr = "198.18.1.2".parse().unwrap();
    let other6: IpAddr = "fd00:198:18:1::2".parse().unwrap();
    let cases = [
        (
            "IPv4, not a VIP address",
            Tcp::new(CLIENT4.into(), other4, 40000, PORT, SYN),
        ),
        (
            "IPv4 VIP, other port",
            Tcp::new(CLIENT4.into(), VIP4.into(), 40000, 80, SYN),
        ),
        (
            "IPv6, not a VIP address",
            Tcp::new(CLIENT6.into(), other6, 40000, PORT, SYN),
        ),
        (
            "IPv6 VIP, other port",
            Tcp::new(CLIENT6.into(), VIP6.into(), 40000, 587, SYN),
        ),
    ];
    for (what, t) in &cases {
        let f = t.frame();
        let (v, out) = lab.run(&f);
        assert_eq!(v, XDP_PASS, "{what}");
        assert_eq!(out, f, "{what}: frame untouched");
    }
    // UDP to the VIP address and ARP: not ours.
    let mut udp = eth(LB_MAC, CLIENT_MAC, &[], ETH_IP);
    udp.extend(ipv4(CLIENT4.octets(), VIP4.octets(), 17, &[], 0, &[0; 16]));
    assert_eq!(lab.run(&udp), (XDP_PASS, udp.clone()));
    let mut arp = eth([0xff; 6], CLIENT_MAC, &[], 0x0806);
    arp.resize(60, 0);
    assert_eq!(lab.run(&arp).0, XDP_PASS);
    assert_eq!(lab.stat(G::Pass), 6);
    assert_eq!(lab.stat(G::Forwarded), 0);
}

/// A SYN to a VIP: encapsulated to the backend the consistent hash names, outer source
/// varied by the flow hash, inner packet byte-identical, flow recorded, counters moved.
fn syn_to_vip(client: IpAddr, vip: IpAddr, vip_id: u32) {
    let mut lab = Lab::new();
    let t = Tcp::new(client, vip, 40000, PORT, SYN);
    let f = t.frame();
    let (v, out) = lab.run(&f);
    assert_eq!(v, XDP_TX);
    let e = check_encap(&out, &[], vip.is_ipv4());
    let want = lab.expected(vip_id, &client, 40000);
    assert_eq!(e.outer_dst, backend_ip(want), "backend from the ring");
    let h = flow_hash(&client, 40000);
    let src = if vip.is_ipv4() {
        expected_src4(h)
    } else {
        expected_src6(h)
    };
    assert_eq!(e.outer_src, src, "outer source varies with the flow hash");
    assert_eq!(e.inner, t.ip(), "inner packet untouched");
    let fv = lab
        .dp
        .flow(&flow_key(client, 40000, vip))
        .expect("flow recorded");
    assert_eq!(fv.backend_id, want);

    let stats = lab.dp.read_stats().unwrap();
    assert_eq!(stats[G::NewFlow as usize].packets, 1);
    assert_eq!(stats[G::Forwarded as usize].packets, 1);
    let vt = stats[stats_vip_slot(vip_id, ObjectCounter::Traffic) as usize];
    assert_eq!((vt.packets, vt.bytes), (1, f.len() as u64));
    assert_eq!(
        stats[stats_vip_slot(vip_id, ObjectCounter::NewFlows) as usize].packets,
        1
    );
    let bt = stats[stats_backend_slot(want, ObjectCounter::Traffic) as usize];
    assert_eq!((bt.packets, bt.bytes), (1, f.len() as u64));
}

#[test]
fn syn_to_ipv4_vip_is_ipip_encapsulated() {
    syn_to_vip(CLIENT4.into(), VIP4.into(), 0);
}

#[test]
fn syn_to_ipv6_vip_is_ip6ip6_encapsulated() {
    syn_to_vip(CLIENT6.into(), VIP6.into(), 1);
}

#[test]
fn ipv4_vip_on_ipv6_backend() {
    let mut lab = Lab::new();
    lab.set_vip(0, 0, &[11; RING as usize]);
    let t = Tcp::new(CLIENT4.into(), VIP4.into(), 40001, PORT, SYN);
    let (v, out) = lab.run(&t.frame());
    assert_eq!(v, XDP_TX);
    let e = check_encap(&out, &[], true);
    assert_eq!(e.outer_dst, backend_ip(11));
    assert_eq!(e.inner, t.ip());
}

#[test]
fn established_packet_follows_the_flow_table() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT4.into();
    let syn = Tcp::new(c, VIP4.into(), 41000, PORT, SYN);
    assert_eq!(lab.run(&syn.frame()).0, XDP_TX);
    let first = lab.expected(0, &c, 41000);
    // The ring changes so that the hash would now pick another backend.
    let other = if first == 0 { 1 } else { 0 };
    lab.set_vip(0, 0, &[other; RING as usize]);
    let mut data = Tcp::new(c, VIP4.into(), 41000, PORT, PSH_ACK);
    data.data_len = 100;
    let (v, out) = lab.run(&data.frame());
    assert_eq!(v, XDP_TX);
    let e = check_encap(&out, &[], true);
    assert_eq!(
        backend_of(&e.outer_dst),
        first,
        "flow table wins over the new ring"
    );
    assert_eq!(e.inner, data.ip());
    assert_eq!(lab.stat(G::FlowHit), 1);
    assert_eq!(lab.stat(G::FlowMiss), 0);
}

#[test]
fn established_packet_without_flow_uses_the_hash_and_records_it() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT6.into();
    let ack = Tcp::new(c, VIP6.into(), 42000, PORT, ACK);
    let (v, out) = lab.run(&ack.frame());
    assert_eq!(v, XDP_TX);
    let e = check_encap(&out, &[], false);
    let want = lab.expected(1, &c, 42000);
    assert_eq!(backend_of(&e.outer_dst), want);
    assert_eq!(lab.stat(G::FlowMiss), 1);
    assert_eq!(lab.stat(G::NewFlow), 0, "only SYNs count as new flows");
    assert_eq!(
        lab.dp
            .flow(&flow_key(c, 42000, VIP6.into()))
            .unwrap()
            .backend_id,
        want
    );
}

#[test]
fn flow_to_an_invalid_backend_is_rehashed_and_an_invalid_ring_entry_drops() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT4.into();
    assert_eq!(
        lab.run(&Tcp::new(c, VIP4.into(), 43000, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    let first = lab.expected(0, &c, 43000);
    let other = if first == 0 { 1 } else { 0 };
    lab.set_backend(first, false);
    lab.set_vip(0, 0, &[other; RING as usize]);
    let (v, out) = lab.run(&Tcp::new(c, VIP4.into(), 43000, PORT, ACK).frame());
    assert_eq!(v, XDP_TX);
    assert_eq!(backend_of(&check_encap(&out, &[], true).outer_dst), other);
    assert_eq!(
        lab.dp
            .flow(&flow_key(c, 43000, VIP4.into()))
            .unwrap()
            .backend_id,
        other
    );
    // Now the ring itself names an invalid backend.
    lab.set_vip(0, 0, &[first; RING as usize]);
    let (v, _) = lab.run(&Tcp::new(c, VIP4.into(), 43001, PORT, SYN).frame());
    assert_eq!(v, XDP_DROP);
    assert_eq!(lab.stat(G::DropNoBackend), 1);
}

#[test]
fn sticky_vip_hashes_the_client_address_only() {
    let mut lab = Lab::with(VIP_F_STICKY, 0, MTU);
    let c: IpAddr = CLIENT4.into();
    let want = lab.expected(0, &c, 0);
    for port in [40000u16, 40001, 51515, 60999] {
        let t = Tcp::new(c, VIP4.into(), port, PORT, SYN);
        let (v, out) = lab.run(&t.frame());
        assert_eq!(v, XDP_TX);
        let e = check_encap(&out, &[], true);
        assert_eq!(backend_of(&e.outer_dst), want, "port {port}");
    }
    // Over many clients, the sticky choice is the port-less hash.
    for i in 0..50u8 {
        let c: IpAddr = IpAddr::from([198, 19, 1, i]);
        let (_, out) = lab.run(&Tcp::new(c, VIP4.into(), 1024 + u16::from(i), PORT, SYN).frame());
        assert_eq!(
            backend_of(&check_encap(&out, &[], true).outer_dst),
            lab.expected(0, &c, 0)
        );
    }
}

#[test]
fn ipv4_options_are_carried_inside_the_tunnel() {
    let mut lab = Lab::new();
    let mut t = Tcp::new(CLIENT4.into(), VIP4.into(), 44000, PORT, SYN);
    // Two NOPs, then a 2-byte... keep it simple: four NOP options (IHL 6) and 12 bytes (IHL 8).
    for opts in [vec![1u8; 4], vec![1u8; 12]] {
        t.ip_opts = opts;
        let (v, out) = lab.run(&t.frame());
        assert_eq!(v, XDP_TX);
        let e = check_encap(&out, &[], true);
        assert_eq!(e.inner, t.ip(), "whole packet with options inside");
        assert_eq!(
            backend_of(&e.outer_dst),
            lab.expected(0, &CLIENT4.into(), 44000)
        );
    }
}

#[test]
fn vlan_tags_are_kept_on_the_encapsulated_frame() {
    let mut lab = Lab::new();
    for tags in [vec![100u16], vec![200, 300]] {
        let mut t = Tcp::new(CLIENT6.into(), VIP6.into(), 45000, PORT, SYN);
        t.vlans = tags.clone();
        let (v, out) = lab.run(&t.frame());
        assert_eq!(v, XDP_TX, "tags {tags:?}");
        let e = check_encap(&out, &tags, false);
        assert_eq!(e.inner, t.ip());
    }
}

#[test]
fn config_not_ready_passes_vip_traffic() {
    let mut lab = Lab::new();
    lab.dp.set_config(&Default::default()).unwrap();
    let f = Tcp::new(CLIENT4.into(), VIP4.into(), 46000, PORT, SYN).frame();
    assert_eq!(lab.run(&f), (XDP_PASS, f.clone()));
    assert_eq!(lab.stat(G::NotReady), 1);
}

#[test]
fn removing_a_vip_stops_its_established_flows_too() {
    let mut lab = Lab::new();
    let c: IpAddr = CLIENT4.into();
    assert_eq!(
        lab.run(&Tcp::new(c, VIP4.into(), 47500, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    let ack = Tcp::new(c, VIP4.into(), 47500, PORT, ACK).frame();
    assert_eq!(lab.run(&ack).0, XDP_TX);
    lab.dp.remove_vip(&Lab::vip_key(0)).unwrap();
    assert!(
        lab.dp.flow(&flow_key(c, 47500, VIP4.into())).is_none(),
        "flows purged"
    );
    assert_eq!(lab.run(&ack), (XDP_PASS, ack.clone()));
}
