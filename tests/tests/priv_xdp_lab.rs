//! The XDP tier end to end in the lab: real clients, the ECMP router, two balancer hosts
//! running the daemon with the shipped lab config, backends receiving through the decap
//! program, and real SMTP servers behind them. Needs root.
#![cfg(feature = "privileged")]

use e2e::{
    proc::wait_until,
    sink, topo,
    xdp_tier::{bin_dir, XdpTier},
};
use std::collections::BTreeMap;
use std::time::Duration;

struct Bed {
    lab: topo::Lab,
    tier: XdpTier,
    sinks: Vec<sink::Sink>,
    // Postfix listens IPv6-only on [::]: a second sink per backend takes IPv6. It dumps
    // into a directory of its own (two smtp-sinks can pick the same dump file name).
    sinks6: Vec<sink::Sink>,
    _work: tempfile::TempDir,
}

fn bed(tag: &str, balancers: u8) -> Bed {
    let prefix = format!("slbx{}{tag}", std::process::id() % 100_000);
    let lab = topo::Lab::up(
        &prefix,
        topo::Shape {
            balancers,
            backends: 3,
            isps: 0,
        },
    )
    .expect("lab up");
    let work = tempfile::tempdir().unwrap();
    let sinks = sink::start_per_backend(&lab, "0.0.0.0:25", work.path(), "sink", "").unwrap();
    let sinks6 = sink::start_per_backend(&lab, "[::]:25", work.path(), "sink", "-v6").unwrap();
    let tier =
        XdpTier::start(&lab, &bin_dir(), &work.path().join("tier")).expect("XDP tier starts");
    Bed {
        lab,
        tier,
        sinks,
        sinks6,
        _work: work,
    }
}

/// Runs smtp-load in `ns` against `server` with a summary-only report.
fn load(ns: &e2e::netns::Netns, server: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--server", server, "--summary-only"];
    all.extend_from_slice(args);
    e2e::loadgen::run_in(ns, &all).unwrap()
}

/// Messages received per backend (its IPv4 and IPv6 sinks together), once `total` arrived.
fn counts(b: &Bed, total: usize) -> Vec<usize> {
    let per = || -> Vec<usize> {
        b.sinks
            .iter()
            .zip(&b.sinks6)
            .map(|(s4, s6)| {
                sink::read_dumps(&s4.dir).unwrap().len() + sink::read_dumps(&s6.dir).unwrap().len()
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || per().iter().sum::<usize>()
            >= total),
        "sinks got {:?} of {total}",
        per()
    );
    per()
}

fn drops(b: &Bed, i: usize) -> BTreeMap<String, u64> {
    let s = b.tier.status(&b.lab.lbs[i].ns, i).unwrap();
    serde_json::from_value(s["drops"].clone()).unwrap_or_default()
}

fn counter(b: &Bed, i: usize, name: &str) -> u64 {
    let s = b.tier.status(&b.lab.lbs[i].ns, i).unwrap();
    s["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn sessions_spread_by_weight_over_v4_and_v6_and_acl_refuses_outsiders() {
    let b = bed("d", 1);
    let v4 = format!("{}:25", topo::VIP4);
    let r = load(
        &b.lab.client.ns,
        &v4,
        &[
            "--sessions",
            "1500",
            "--concurrency",
            "20",
            "--run-id",
            "v4",
        ],
    );
    assert_eq!(r["messages_accepted"], 1500, "{r}");
    let c = counts(&b, 1500);
    for n in &c {
        let share = *n as f64 / 1500.0;
        assert!(
            (share - 1.0 / 3.0).abs() < 0.045,
            "equal weights, shares {c:?}"
        );
    }

    let v6 = format!("[{}]:25", topo::VIP6);
    let r = load(
        &b.lab.client.ns,
        &v6,
        &["--sessions", "300", "--concurrency", "20", "--run-id", "v6"],
    );
    assert_eq!(
        r["messages_accepted"],
        300,
        "{r}\nstatus: {}",
        b.tier.status(&b.lab.lbs[0].ns, 0).unwrap()["counters"]
    );
    let c6: Vec<usize> = counts(&b, 1800)
        .iter()
        .zip(&c)
        .map(|(a, b)| a - b)
        .collect();
    assert!(
        c6.iter().all(|&n| n > 50),
        "v6 sessions reach every backend: {c6:?}"
    );
    // The backends saw the real client address (DSR, no NAT).
    let d = sink::read_dumps(&b.sinks[0].dir).unwrap();
    assert!(
        d.iter().any(|m| m.client_addr.contains("198.18.1.10")),
        "{:?}",
        d.first()
    );

    // A client outside the VIP's allowlist cannot even complete the handshake.
    let before = drops(&b, 0);
    let r = load(
        &b.lab.outsider.ns,
        &v4,
        &["--sessions", "3", "--timeout", "2"],
    );
    assert_eq!(r["sessions_ok"], 0, "{r}");
    assert!(r["errors"][0].as_str().unwrap().contains("connect"), "{r}");
    let after = drops(&b, 0);
    let acl = |m: &BTreeMap<String, u64>| {
        m.iter()
            .filter(|(k, _)| k.contains("acl"))
            .map(|(_, v)| *v)
            .sum::<u64>()
    };
    assert!(
        acl(&after) >= acl(&before) + 3,
        "acl drops counted: {before:?} -> {after:?}"
    );
}

#[test]
fn large_messages_cross_the_encapsulated_path_with_either_mtu_mechanism() {
    let b = bed("m", 1);
    let v4 = format!("{}:25", topo::VIP4);
    let big = (20 << 20).to_string();
    let icmp0 = counter(&b, 0, "icmp_too_big_sent");
    // Mechanism 1: ICMP "fragmentation needed" from the balancer; PMTUD shrinks segments.
    let t = std::time::Instant::now();
    let r = load(
        &b.lab.client.ns,
        &v4,
        &["--sessions", "1", "--size", &big, "--timeout", "30"],
    );
    assert_eq!(r["messages_accepted"], 1, "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "20 MiB took {:?}",
        t.elapsed()
    );
    let icmp1 = counter(&b, 0, "icmp_too_big_sent");
    assert!(
        icmp1 > icmp0,
        "the balancer answered oversize packets with ICMP ({icmp0} -> {icmp1})"
    );

    // Mechanism 2: the backends clamp the MSS of their SYN-ACKs; the client never sends
    // an oversize segment, so no ICMP is needed.
    for m in &b.lab.mtas {
        let gw = topo::v4(m.link, 1).to_string();
        m.ns.ip(&["route", "change", "default", "via", &gw, "advmss", "1440"])
            .unwrap();
    }
    b.lab.client.ns.ip(&["route", "flush", "cache"]).unwrap();
    let r = load(
        &b.lab.client.ns,
        &v4,
        &["--sessions", "2", "--size", &big, "--timeout", "30"],
    );
    assert_eq!(r["messages_accepted"], 2, "{r}");
    assert_eq!(
        counter(&b, 0, "icmp_too_big_sent"),
        icmp1,
        "clamped MSS needs no ICMP"
    );

    // IPv6: ICMPv6 "packet too big".
    let v6 = format!("[{}]:25", topo::VIP6);
    let r = load(
        &b.lab.client.ns,
        &v6,
        &[
            "--sessions",
            "1",
            "--size",
            &(4 << 20).to_string(),
            "--timeout",
            "30",
        ],
    );
    assert_eq!(r["messages_accepted"], 1, "{r}");
}

/// Starts a long-running load in the background; returns the child and where its report goes.
fn background_load(ns: &e2e::netns::Netns, server: &str, args: &[&str]) -> std::process::Child {
    ns.command(bin_dir().join("smtp-load").to_str().unwrap())
        .args(["--server", server, "--summary-only"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn kill_9_of_the_daemon_breaks_no_session_and_restart_adopts_the_data_plane() {
    let mut b = bed("k", 1);
    let v4 = format!("{}:25", topo::VIP4);
    // Sessions of 512 KiB messages keep connections open across the kill and restart.
    let bg = background_load(
        &b.lab.client.ns,
        &v4,
        &[
            "--sessions",
            "60",
            "--concurrency",
            "6",
            "--size",
            "524288",
            "--timeout",
            "20",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let ids = |st: &serde_json::Value| -> Vec<(String, u64)> {
        st["vips"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["backends"].as_array().unwrap().iter())
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    b["id"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let ids_before = ids(&b.tier.status(&b.lab.lbs[0].ns, 0).unwrap());
    b.tier.balancers[0].guard.kill();
    std::thread::sleep(Duration::from_millis(500));
    // Forwarding continues without a daemon: new sessions too.
    let r = load(
        &b.lab.client.ns,
        &v4,
        &["--sessions", "30", "--concurrency", "5", "--timeout", "5"],
    );
    assert_eq!(
        r["messages_accepted"], 30,
        "no daemon, still forwarding: {r}"
    );
    b.tier
        .restart(&b.lab, 0)
        .expect("restarted daemon adopts the pinned set");
    let r = finish(bg);
    assert_eq!(r["messages_accepted"], 60, "{r}");
    assert_eq!(r["sessions_failed"], 0, "{r}");
    let log = std::fs::read_to_string(&b.tier.balancers[0].log).unwrap();
    assert!(log.contains("adopting the pinned XDP balancer"), "{log}");
    // The restarted daemon kept every backend id (pinned flows carry them), so it rebuilt
    // the same tables; and it serves new sessions.
    let st = b.tier.status(&b.lab.lbs[0].ns, 0).unwrap();
    assert_eq!(ids(&st), ids_before);
    assert!(e2e::xdp_tier::all_backends_up(&st));
    let r = load(
        &b.lab.client.ns,
        &v4,
        &["--sessions", "30", "--concurrency", "5"],
    );
    assert_eq!(r["messages_accepted"], 30, "{r}");
}

#[test]
fn drain_stops_new_sessions_and_a_dead_backend_is_skipped() {
    let mut b = bed("r", 1);
    let v4 = format!("{}:25", topo::VIP4);
    let lb = &b.lab.lbs[0];
    let new_flows = |i: usize| -> u64 {
        b.tier.status(&lb.ns, 0).unwrap()["vips"][0]["backends"][i]["new_flows"]
            .as_u64()
            .unwrap()
    };
    // Long sessions (60 messages each) are open on every backend when mta3 is drained.
    let mut open = background_load(
        &b.lab.client.ns,
        &v4,
        &[
            "--sessions",
            "12",
            "--concurrency",
            "12",
            "--messages",
            "60",
            "--size",
            "16384",
            "--pause-ms",
            "50",
            "--timeout",
            "20",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || new_flows(2) > 0
            && counts(&b, 0)[2] > 0),
        "mta3 has open sessions"
    );
    b.tier.ctl(&lb.ns, 0, &["drain", "mta3"]).unwrap();
    let mta3_sessions = new_flows(2);
    assert!(
        open.try_wait().unwrap().is_none(),
        "sessions still open at the drain"
    );
    let r = load(
        &b.lab.client.ns,
        &v4,
        &["--sessions", "200", "--concurrency", "10"],
    );
    assert_eq!(r["messages_accepted"], 200, "{r}");
    assert_eq!(
        new_flows(2),
        mta3_sessions,
        "drained mta3 got no new session"
    );
    // Its open sessions finished: every message of the long sessions was accepted.
    let r = finish(open);
    assert_eq!(r["messages_accepted"], 720, "{r}");
    assert_eq!(r["sessions_failed"], 0, "{r}");
    b.tier.ctl(&lb.ns, 0, &["undrain", "mta3"]).unwrap();

    // Kill mta1's SMTP server: within the health-check window it leaves the ring.
    b.sinks[0].guard.kill();
    let dead_at = std::time::Instant::now();
    assert!(wait_until(Duration::from_secs(3), || {
        let s = b.tier.status(&lb.ns, 0).unwrap();
        s["vips"][0]["backends"][0]["health"] == "down"
    }));
    let detect = dead_at.elapsed();
    assert!(detect < Duration::from_secs(2), "removed after {detect:?}");
    let r = load(
        &b.lab.client.ns,
        &v4,
        &["--sessions", "150", "--concurrency", "10"],
    );
    assert_eq!(
        r["messages_accepted"], 150,
        "sessions avoid the dead backend: {r}"
    );
}

#[test]
fn ecmp_move_between_balancers_keeps_every_session_on_its_backend() {
    let b = bed("e", 2);
    let v4 = format!("{}:25", topo::VIP4);
    // Long sessions (100 messages of 64 KiB each) so that flows are mid-stream when the
    // route changes.
    let mut bg = background_load(
        &b.lab.client.ns,
        &v4,
        &[
            "--sessions",
            "16",
            "--concurrency",
            "8",
            "--messages",
            "100",
            "--size",
            "65536",
            "--pause-ms",
            "20",
            "--timeout",
            "20",
        ],
    );
    // Both balancers carry established flows of the running sessions.
    assert!(
        wait_until(Duration::from_secs(10), || counter(&b, 0, "flow_hit") > 200
            && counter(&b, 1, "flow_hit") > 200),
        "ECMP spreads flows over both balancers"
    );
    let misses_before = counter(&b, 1, "flow_miss");
    // Withdraw lb1 from the multipath route: its flows move to lb2 mid-stream.
    b.lab.route_vip_to(&[1]).unwrap();
    assert!(
        bg.try_wait().unwrap().is_none(),
        "sessions still running at the move"
    );
    let r = finish(bg);
    assert_eq!(r["messages_accepted"], 1600, "{r}");
    assert_eq!(r["sessions_failed"], 0, "{r}");
    // lb2 picked lb1's flows up from the consistent hash (flow-table misses), not from
    // shared state, and sent them to the same backends: no session broke.
    assert!(
        counter(&b, 1, "flow_miss") > misses_before,
        "lb2 saw mid-stream packets of lb1's flows"
    );
}
