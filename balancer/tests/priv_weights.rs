//! Statistical and temporal behaviour of the steering: weighted Maglev rings (built by
//! `balancer::maglev`) give backends their share of 20,000 random SYNs within 1%, and
//! a ring swap keeps every established flow on its backend while new SYNs follow the
//! new ring.
#![cfg(feature = "privileged")]

mod common;

use balancer_ebpf::{stats_backend_slot, GlobalCounter as G, ObjectCounter, MAGLEV_RING_MAX};
use common::{packet::*, *};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::net::IpAddr;

const SYNS: usize = 20_000;

fn random_client(rng: &mut StdRng) -> (IpAddr, u16) {
    let ip: IpAddr = if rng.gen_bool(0.5) {
        IpAddr::from([198, 18, rng.gen_range(128..=255), rng.gen()])
    } else {
        IpAddr::from([198, 19, rng.gen(), rng.gen()])
    };
    (ip, rng.gen_range(1024..=65535))
}

#[test]
fn backend_shares_follow_the_weights_within_one_percent() {
    use balancer::dataplane::DataPlaneOps;
    let mut lab = Lab::new();
    let weights = [(0u32, 1u32), (1, 2), (2, 5)];
    lab.set_vip(0, 0, &maglev(&weights, MAGLEV_RING_MAX));
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut hits = [0usize; 3];
    for _ in 0..SYNS {
        let (c, port) = random_client(&mut rng);
        let (v, out) = lab.run(&Tcp::new(c, VIP4.into(), port, PORT, SYN).frame());
        assert_eq!(v, XDP_TX);
        let b = backend_of(&check_encap(&out, &[], true).outer_dst);
        assert_eq!(
            b,
            lab.expected(0, &c, port),
            "kernel and user-space hash agree"
        );
        hits[b as usize] += 1;
    }
    let total_w: u32 = weights.iter().map(|w| w.1).sum();
    for (id, w) in weights {
        let share = hits[id as usize] as f64 / SYNS as f64;
        let want = f64::from(w) / f64::from(total_w);
        assert!(
            (share - want).abs() < 0.01,
            "backend {id}: share {share:.4}, weight share {want:.4} ({hits:?})"
        );
    }
    let stats = lab.dp.read_stats().unwrap();
    assert_eq!(stats[G::NewFlow as usize].packets, SYNS as u64);
    for (id, _) in weights {
        let c = stats[stats_backend_slot(id, ObjectCounter::NewFlows) as usize];
        assert_eq!(
            c.packets, hits[id as usize] as u64,
            "per-backend new-flow counter"
        );
    }
}

#[test]
fn ring_swap_keeps_established_flows_and_steers_new_ones() {
    let mut lab = Lab::new();
    let old = maglev(&[(0, 1), (1, 1), (2, 1)], MAGLEV_RING_MAX);
    lab.set_vip(0, 0, &old);
    let mut rng = StdRng::seed_from_u64(7);
    let flows: Vec<(IpAddr, u16, u32)> = (0..2000)
        .map(|_| {
            let (c, p) = random_client(&mut rng);
            let (v, out) = lab.run(&Tcp::new(c, VIP4.into(), p, PORT, SYN).frame());
            assert_eq!(v, XDP_TX);
            (c, p, backend_of(&check_encap(&out, &[], true).outer_dst))
        })
        .collect();
    let half_before = lab.dp.active_half(0).unwrap();
    // Backend 2 is drained (weight 0) and backend 0 weighs more: most slots move.
    let new = maglev(&[(0, 3), (1, 1), (2, 0)], MAGLEV_RING_MAX);
    lab.set_vip(0, 0, &new);
    assert_ne!(
        lab.dp.active_half(0).unwrap(),
        half_before,
        "the other half went live"
    );
    let mut moved_by_ring = 0;
    for (c, p, b) in &flows {
        let (v, out) = lab.run(&Tcp::new(*c, VIP4.into(), *p, PORT, PSH_ACK).frame());
        assert_eq!(v, XDP_TX);
        assert_eq!(
            backend_of(&check_encap(&out, &[], true).outer_dst),
            *b,
            "flow kept"
        );
        if lab.expected(0, c, *p) != *b {
            moved_by_ring += 1;
        }
    }
    assert!(
        moved_by_ring > 500,
        "the new ring differs for many flows ({moved_by_ring})"
    );
    for _ in 0..2000 {
        let (c, p) = random_client(&mut rng);
        let (_, out) = lab.run(&Tcp::new(c, VIP4.into(), p, PORT, SYN).frame());
        let b = backend_of(&check_encap(&out, &[], true).outer_dst);
        assert_eq!(b, lab.expected(0, &c, p), "new SYN follows the new ring");
        assert_ne!(b, 2, "drained backend gets no new flows");
    }
    // A SYN reusing an old tuple is a new connection: it follows the new ring too.
    let (c, p, _) = flows
        .iter()
        .find(|(c, p, b)| lab.expected(0, c, *p) != *b)
        .unwrap();
    let (_, out) = lab.run(&Tcp::new(*c, VIP4.into(), *p, PORT, SYN).frame());
    assert_eq!(
        backend_of(&check_encap(&out, &[], true).outer_dst),
        lab.expected(0, c, *p)
    );
}
