//! ns/packet of the balancer program under `BPF_PROG_TEST_RUN`, run by
//! `cargo xtask bench xdp` (ignored in the normal test run: it needs root and a release
//! build to mean anything). Prints one `BENCH <case> <ns>` line per case.
//!
//! Why two methods: a run with a repeat count reuses one buffer, so from its second run
//! on an encapsulating program sees its own IPIP output (and live-frame mode recycles
//! pages without copying the input again, with the same effect). Frames the program
//! leaves untouched (pass, drop) are therefore timed with `repeat` runs per syscall;
//! frames it rewrites (SYN, established) with one run per syscall on a fresh copy, where
//! the kernel's timer overhead is in each figure, so the same method on a runt dropped
//! at the first header is reported beside them as the floor, and `tx_peer` (a minimal
//! IPIP forwarder) as the peer.
#![cfg(feature = "privileged")]

mod common;

use balancer::dataplane::{DataPlaneOps, LoadOptions, TxPeer};
use balancer_ebpf::GlobalCounter as G;
use common::{packet::*, *};
use std::{net::IpAddr, time::Duration};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn report(name: &str, v: f64) -> f64 {
    println!("BENCH {name} {v:.1}");
    v
}

/// ns per dependent load over a random cycle through `mib` MiB, one pointer per cache
/// line: what a cache-cold access costs on this machine (TLB misses included), the
/// yardstick for the rows that touch the flow table's memory for the first time.
fn pointer_chase_ns(mib: usize) -> f64 {
    let lines = mib * 1024 * 1024 / 64;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0usize; lines * 8];
    for k in 0..lines {
        next[order[k] * 8] = order[(k + 1) % lines] * 8;
    }
    let mut at = 0;
    for _ in 0..lines {
        at = next[at];
    }
    let steps = 2_000_000;
    let t = std::time::Instant::now();
    for _ in 0..steps {
        at = next[at];
    }
    let ns = t.elapsed().as_nanos() as f64 / steps as f64;
    std::hint::black_box(at);
    ns
}

#[test]
#[ignore]
fn bench_xdp() {
    let repeat = env_u32("BENCH_REPEAT", 1_000_000);
    let rounds = env_u32("BENCH_ROUNDS", 5);
    let singles = env_u32("BENCH_SINGLE", 100_000);
    // Production-size flow table: the LRU's cost depends on it.
    let opts = LoadOptions {
        // BENCH_FLOWS sizes the table for experiments; the report uses the default.
        flow_table_size: std::env::var("BENCH_FLOWS")
            .ok()
            .and_then(|v| v.parse().ok()),
        ring_vips: Some(2),
        pin_dir: None,
    };
    let mut lab = Lab::with_opts(0, 0, MTU, opts);
    let c: IpAddr = CLIENT4.into();
    let syn = Tcp::new(c, VIP4.into(), 40000, PORT, SYN).frame();
    let mut est = Tcp::new(c, VIP4.into(), 40001, PORT, PSH_ACK);
    est.data_len = 64;
    let est = est.frame();
    // Record the flows once, as real traffic would.
    assert_eq!(lab.run(&syn).0, XDP_TX);
    assert_eq!(lab.run(&est).0, XDP_TX);
    let pass = Tcp::new(c, "198.18.1.2".parse().unwrap(), 40000, PORT, PSH_ACK).frame();
    let mut runt = eth(LB_MAC, CLIENT_MAC, &[], ETH_IP);
    runt.extend([0x45, 0, 0]);

    // Untouched frames: `repeat` runs per syscall, median of `rounds`.
    let mut repeated = |f: &[u8]| {
        median(
            (0..rounds)
                .map(|_| ns(lab.dp.bench_run(f, repeat, false).unwrap()))
                .collect(),
        )
    };
    report("non_vip_pass", repeated(&pass));
    let ssh = Tcp::new(c, "198.18.1.2".parse().unwrap(), 40000, 22, PSH_ACK).frame();
    report("other_port_pass", repeated(&ssh));
    report("runt_drop", repeated(&runt));

    // Rewritten frames: one run per syscall, interleaved so that drift hits every case
    // alike; median over `singles` runs each.
    let mut peer = TxPeer::load().expect("tx_peer loads");
    let mut t: [Vec<f64>; 5] = Default::default();
    for i in 0..singles {
        let new_syn = {
            let client = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            Tcp::new(client, VIP4.into(), 1024 + (i % 60000) as u16, PORT, SYN).frame()
        };
        t[0].push(ns(lab.dp.bench_run(&runt, 1, false).unwrap()));
        t[1].push(ns(lab.dp.bench_run(&est, 1, false).unwrap()));
        t[2].push(ns(lab.dp.bench_run(&syn, 1, false).unwrap()));
        t[3].push(ns(lab.dp.bench_run(&new_syn, 1, false).unwrap()));
        t[4].push(ns(peer.bench_run(&est, 1, false).unwrap()));
    }
    let [floor, e, s, n, p] = t.map(median);
    // A second loop, so that its cold lookups do not disturb the cases above: a tuple the
    // flow table has never seen, to an address no VIP uses (the cost of a flow-table
    // lookup whose bucket is not in cache), beside a known one, with their own floor.
    let mut t2: [Vec<f64>; 3] = Default::default();
    for i in 0..singles {
        let new_pass = {
            let client = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
            let port = 1024 + (i % 60000) as u16;
            Tcp::new(client, "198.18.1.2".parse().unwrap(), port, PORT, PSH_ACK).frame()
        };
        t2[0].push(ns(lab.dp.bench_run(&runt, 1, false).unwrap()));
        t2[1].push(ns(lab.dp.bench_run(&pass, 1, false).unwrap()));
        t2[2].push(ns(lab.dp.bench_run(&new_pass, 1, false).unwrap()));
    }
    let [floor2, op, np] = t2.map(median);
    // The lab's CPUs run SMTP processes between two packets of a flow. Writing 32 MiB
    // between runs evicts the caches the same way, so this is an established packet
    // whose program, maps and flow entry must come back from memory.
    let mut junk = vec![0u8; 32 << 20];
    let mut cold = Vec::new();
    let mut cold_floor = Vec::new();
    for i in 0..2000u32 {
        for b in junk.iter_mut().step_by(64) {
            *b = b.wrapping_add(i as u8);
        }
        if i % 2 == 0 {
            cold.push(ns(lab.dp.bench_run(&est, 1, false).unwrap()));
        } else {
            cold_floor.push(ns(lab.dp.bench_run(&runt, 1, false).unwrap()));
        }
    }
    std::hint::black_box(&junk);
    report("established_cold_net", median(cold) - median(cold_floor));
    report("single_floor", floor);
    report("established_single", e);
    report("syn_single", s);
    report("syn_new_single", n);
    report("tx_peer_single", p);
    report("established_net", e - floor);
    report("syn_net", s - floor);
    report("syn_new_net", n - floor);
    report("pass_net", op - floor2);
    report("new_tuple_pass_net", np - floor2);
    for mib in [1, 16, 256] {
        report(&format!("mem_latency_{mib}mib"), pointer_chase_ns(mib));
    }
    // The runs above really took the paths they are named after.
    let stats = lab.dp.read_stats().unwrap();
    assert!(stats[G::FlowHit as usize].packets >= u64::from(singles));
    assert!(stats[G::NewFlow as usize].packets >= 2 * u64::from(singles));
    assert_eq!(
        stats[G::Pass as usize].packets,
        2 * u64::from(repeat) * u64::from(rounds) + 2 * u64::from(singles)
    );
}
