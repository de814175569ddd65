//! The benchmark's peer front doors work in the lab: HAProxy (TCP mode, leastconn) and an
//! nftables DNAT balancer each carry real SMTP sessions from the client to all three
//! backends. Needs root.
#![cfg(feature = "privileged")]

use e2e::{frontdoor, proc::wait_until, sink, topo};
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

struct Bed {
    lab: topo::Lab,
    sinks: Vec<sink::Sink>,
    _dir: tempfile::TempDir,
}

fn bed(tag: &str) -> Bed {
    let prefix = format!("slbp{}{tag}", std::process::id() % 100_000);
    let lab = topo::Lab::up(
        &prefix,
        topo::Shape {
            balancers: 1,
            backends: 3,
            isps: 0,
        },
    )
    .expect("lab up");
    let dir = tempfile::tempdir().unwrap();
    let sinks = sink::start_per_backend(&lab, "0.0.0.0:25", dir.path(), "mta", "").unwrap();
    Bed {
        lab,
        sinks,
        _dir: dir,
    }
}

fn send(lab: &topo::Lab, n: usize) -> serde_json::Value {
    let server = format!("{}:25", topo::VIP4);
    let n = n.to_string();
    e2e::loadgen::run_in(
        &lab.client.ns,
        &[
            "--server",
            &server,
            "--sessions",
            &n,
            "--concurrency",
            "10",
            "--timeout",
            "10",
            "--summary-only",
        ],
    )
    .unwrap()
}

fn per_backend(b: &Bed, n: usize) -> Vec<usize> {
    assert!(wait_until(Duration::from_secs(5), || b
        .sinks
        .iter()
        .map(|s| sink::read_dumps(&s.dir).unwrap().len())
        .sum::<usize>()
        >= n));
    b.sinks
        .iter()
        .map(|s| sink::read_dumps(&s.dir).unwrap().len())
        .collect()
}

#[test]
fn haproxy_spreads_sessions_over_backends() {
    let b = bed("h");
    let lb = &b.lab.lbs[0];
    let backends: Vec<IpAddr> = b.lab.mtas.iter().map(|m| IpAddr::V4(m.addr4())).collect();
    let dir = tempfile::tempdir().unwrap();
    let _hap = frontdoor::haproxy(&lb.ns, topo::VIP4, 25, &backends, 2, dir.path()).unwrap();
    // HAProxy's first health checks must pass before it routes anything.
    assert!(wait_until(Duration::from_secs(10), || {
        Command::new("ip")
            .args(["netns", "exec", b.lab.client.ns.name(), "bash", "-c"])
            .arg(format!(
                "exec 3<>/dev/tcp/{}/25 && head -c3 <&3",
                topo::VIP4
            ))
            .output()
            .map(|o| o.stdout.starts_with(b"220"))
            .unwrap_or(false)
    }));
    let r = send(&b.lab, 90);
    assert_eq!(r["messages_accepted"], 90, "{r}");
    let counts = per_backend(&b, 90);
    assert!(
        counts.iter().all(|&c| c >= 15),
        "leastconn spreads: {counts:?}"
    );
    frontdoor::haproxy_cleanup(&lb.ns, topo::VIP4);
}

#[test]
fn nftables_dnat_spreads_sessions_over_backends() {
    let b = bed("n");
    let lb = &b.lab.lbs[0];
    let backends: Vec<_> = b.lab.mtas.iter().map(|m| m.addr4()).collect();
    frontdoor::nft_dnat(&lb.ns, topo::VIP4, 25, &backends, lb.ifname).unwrap();
    let r = send(&b.lab, 90);
    assert_eq!(r["messages_accepted"], 90, "{r}");
    // numgen inc is strict round robin.
    assert_eq!(per_backend(&b, 90), vec![30, 30, 30]);
    // The backends saw the balancer (masquerade), not the client.
    let seen = sink::read_dumps(&b.sinks[0].dir).unwrap();
    assert_eq!(seen[0].client_addr, lb.addr4().to_string());
    frontdoor::nft_cleanup(&lb.ns);
}
