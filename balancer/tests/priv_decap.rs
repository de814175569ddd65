//! Golden packets through the backend-side `decap` program: IPIP, IP6IP6 and the mixed
//! families lose their outer header when addressed to this host; everything else passes
//! untouched. Also: the balancer's own output decapsulates back to the client's packet.
#![cfg(feature = "privileged")]

mod common;

use balancer::dataplane::DecapPlane;
use balancer_ebpf::{DecapCounter, AF_INET, AF_INET6};
use common::{packet::*, *};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const HOST4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 10);
const ROUTER_MAC: [u8; 6] = [0x02, 0x0e, 0, 0, 0, 1];
const HOST_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 1];

fn plane() -> DecapPlane {
    let mut d = DecapPlane::load(None).expect("decap program loads");
    d.add_address(&addr(&HOST4.into()), AF_INET).unwrap();
    d.add_address(&addr(&HOST6.into()), AF_INET6).unwrap();
    d
}

fn wrapped(
    outer_src: IpAddr,
    outer_dst: IpAddr,
    inner: &[u8],
    inner_v4: bool,
    vlans: &[u16],
) -> Vec<u8> {
    let proto = if inner_v4 { 4 } else { 41 };
    let mut f = eth(HOST_MAC, ROUTER_MAC, vlans, ethertype(&outer_dst));
    f.extend(ip_packet(&outer_src, &outer_dst, proto, &[], 0, inner));
    f
}

#[test]
fn decapsulates_every_family_combination_for_this_host() {
    let mut d = plane();
    let lb4: IpAddr = "198.18.255.7".parse().unwrap();
    let lb6: IpAddr = "fd00:198:18:ff::7".parse().unwrap();
    let in4 = Tcp::new(CLIENT4.into(), VIP4.into(), 40000, PORT, SYN).ip();
    let in6 = Tcp::new(CLIENT6.into(), VIP6.into(), 40000, PORT, SYN).ip();
    let cases = [
        ("IPIP", lb4, IpAddr::from(HOST4), &in4, true),
        ("IPv6 in IPv4", lb4, IpAddr::from(HOST4), &in6, false),
        ("IP6IP6", lb6, IpAddr::from(HOST6), &in6, false),
        ("IPv4 in IPv6", lb6, IpAddr::from(HOST6), &in4, true),
    ];
    for vlans in [vec![], vec![42u16]] {
        for (what, src, dst, inner, v4) in &cases {
            let f = wrapped(*src, *dst, inner, *v4, &vlans);
            let r = d.test_run(&f, 1).unwrap();
            assert_eq!(r.verdict, XDP_PASS, "{what}");
            let mut want = eth(
                HOST_MAC,
                ROUTER_MAC,
                &vlans,
                if *v4 { ETH_IP } else { ETH_IPV6 },
            );
            want.extend(inner.iter());
            assert_eq!(
                r.data, want,
                "{what}: the inner packet behind the same link layer"
            );
        }
    }
    assert_eq!(d.counter(DecapCounter::Decapsulated).unwrap().packets, 8);
}

#[test]
fn passes_what_is_not_for_this_host() {
    let mut d = plane();
    let lb4: IpAddr = "198.18.255.7".parse().unwrap();
    let inner = Tcp::new(CLIENT4.into(), VIP4.into(), 40000, PORT, SYN).ip();
    let cases = [
        (
            "IPIP for another host",
            wrapped(lb4, "198.18.2.11".parse().unwrap(), &inner, true, &[]),
        ),
        ("plain TCP to this host", {
            let mut f = eth(HOST_MAC, ROUTER_MAC, &[], ETH_IP);
            f.extend(Tcp::new(CLIENT4.into(), HOST4.into(), 40000, 25, SYN).ip());
            f
        }),
        ("ARP", {
            let mut f = eth([0xff; 6], ROUTER_MAC, &[], 0x0806);
            f.resize(60, 0);
            f
        }),
    ];
    for (what, f) in &cases {
        let r = d.test_run(f, 1).unwrap();
        assert_eq!((r.verdict, &r.data), (XDP_PASS, f), "{what}");
    }
    assert_eq!(d.counter(DecapCounter::Pass).unwrap().packets, 3);
    assert_eq!(d.counter(DecapCounter::Decapsulated).unwrap().packets, 0);
    // An IPIP packet for us whose outer length lies is dropped.
    let mut f = wrapped(lb4, HOST4.into(), &inner, true, &[]);
    f[16..18].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(d.test_run(&f, 1).unwrap().verdict, XDP_DROP);
    assert_eq!(d.counter(DecapCounter::DropMalformed).unwrap().packets, 1);
}

#[test]
fn balancer_output_decapsulates_to_the_client_packet() {
    let mut lab = Lab::new();
    let mut d = DecapPlane::load(None).unwrap();
    for id in [0, 1, 2, 10, 11, 12] {
        let ip = backend_ip(id);
        d.add_address(&addr(&ip), family(&ip)).unwrap();
    }
    for (client, vip) in [
        (IpAddr::from(CLIENT4), IpAddr::from(VIP4)),
        (CLIENT6.into(), VIP6.into()),
    ] {
        let t = Tcp::new(client, vip, 40000, PORT, SYN);
        let (v, out) = lab.run(&t.frame());
        assert_eq!(v, XDP_TX);
        let r = d.test_run(&out, 1).unwrap();
        assert_eq!(r.verdict, XDP_PASS);
        assert_eq!(
            &r.data[14..],
            &t.ip()[..],
            "{client}: the client's packet, intact"
        );
    }
}

#[test]
fn decap_attaches_and_detaches_in_a_private_namespace() {
    std::thread::spawn(|| {
        // SAFETY: unshare(2) on this thread only; its `lo` is the interface used.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let show = || {
            let out = std::process::Command::new("ip")
                .args(["-d", "link", "show", "lo"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let mut d = plane();
        d.attach("lo", balancer::dataplane::AttachMode::Generic)
            .unwrap();
        assert!(show().contains("xdpgeneric"), "attached: {}", show());
        d.detach().unwrap();
        assert!(!show().contains("xdp"), "detached: {}", show());
    })
    .join()
    .expect("namespace thread");
}
