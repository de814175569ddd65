//! The whole system end to end: a client sends through the VIP; the XDP balancers steer
//! sessions to three mta-workers, which spool the mail and deliver it to the right "ISP"
//! (found through the lab's DNS server) from their own egress addresses. Needs root.
#![cfg(feature = "privileged")]

use e2e::{mail_lab::MailLab, proc::wait_until, sink::message_id, topo, xdp_tier::bin_dir};
use std::collections::HashMap;
use std::time::Duration;

const RCPTS: &str = "alice@gmail.test,bob@outlook.test,carol@yahoo.test";

fn load(ns: &e2e::netns::Netns, server: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--server", server, "--to", RCPTS];
    all.extend_from_slice(args);
    e2e::loadgen::run_in(ns, &all).unwrap()
}

/// Message-ID → (times delivered, ISP index), over every ISP sink.
fn deliveries(ml: &MailLab) -> HashMap<String, (usize, usize)> {
    let mut m: HashMap<String, (usize, usize)> = HashMap::new();
    for (isp, msgs) in ml.delivered().iter().enumerate() {
        for r in msgs {
            let e = m.entry(message_id(r)).or_insert((0, isp));
            e.0 += 1;
        }
    }
    m
}

fn accepted_ids(report: &serde_json::Value) -> Vec<(String, String)> {
    report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["accepted"] == true)
        .map(|m| {
            (
                m["message_id"].as_str().unwrap().to_string(),
                m["recipient"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn isp_of(rcpt: &str) -> usize {
    topo::ISP_NAMES
        .iter()
        .position(|n| rcpt.ends_with(&format!("@{n}.test")))
        .unwrap()
}

#[test]
fn mail_through_the_vip_reaches_each_isp_exactly_once_even_when_a_backend_dies() {
    let prefix = format!("slbm{}", std::process::id() % 100_000);
    let lab = topo::Lab::up(
        &prefix,
        topo::Shape {
            balancers: 1,
            backends: 3,
            isps: 3,
        },
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut ml = MailLab::start(&lab, &bin_dir(), work.path()).expect("mail lab starts");

    // IPv4 and IPv6 VIPs.
    let v4 = load(
        &lab.client.ns,
        &format!("{}:25", topo::VIP4),
        &["--sessions", "300", "--concurrency", "15", "--run-id", "a"],
    );
    let v6 = load(
        &lab.client.ns,
        &format!("[{}]:25", topo::VIP6),
        &["--sessions", "90", "--concurrency", "15", "--run-id", "b"],
    );
    assert_eq!(v4["messages_accepted"], 300, "{}", v4["errors"]);
    assert_eq!(v6["messages_accepted"], 90, "{}", v6["errors"]);
    let mut sent = accepted_ids(&v4);
    sent.extend(accepted_ids(&v6));

    // Backend death mid-stream: kill -9 mta2's worker while a batch is being sent.
    let bg = lab
        .client
        .ns
        .command(bin_dir().join("smtp-load").to_str().unwrap())
        .args([
            "--server",
            &format!("{}:25", topo::VIP4),
            "--to",
            RCPTS,
            "--sessions",
            "300",
            "--concurrency",
            "10",
            "--timeout",
            "5",
            "--run-id",
            "c",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    ml.kill_worker(1);
    let out = bg.wait_with_output().unwrap();
    let during: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok_during = during["messages_accepted"].as_u64().unwrap();
    // Sessions in flight on mta2 fail, new ones go to the survivors after the health
    // check removes it: most of the batch still gets through.
    assert!(
        ok_during >= 200,
        "accepted during the failure: {ok_during}: {}",
        during["errors"]
    );
    sent.extend(accepted_ids(&during));
    ml.restart_worker(&lab, 1).unwrap();

    // Every message that got a 250 is delivered, to the right ISP, once (a duplicate is
    // possible only for a message mta2 was delivering when it died).
    let want = sent.len();
    assert!(
        wait_until(Duration::from_secs(90), || {
            let d = deliveries(&ml);
            sent.iter().all(|(id, _)| d.contains_key(id))
        }),
        "delivered {} of {want}",
        deliveries(&ml).len()
    );
    let d = deliveries(&ml);
    let mut dups = 0;
    for (id, rcpt) in &sent {
        let (n, isp) = d[id];
        assert_eq!(
            isp,
            isp_of(rcpt),
            "{id} for {rcpt} went to {}",
            topo::ISP_NAMES[isp]
        );
        dups += n - 1;
    }
    assert!(dups <= 10, "{dups} duplicate deliveries");
    eprintln!("sent {want}, accepted during the backend's death {ok_during}, duplicates {dups}");

    // Each ISP saw the workers' own egress addresses with matching EHLO names.
    for msgs in ml.delivered() {
        for r in &msgs {
            let (link, host) = {
                let o: Vec<u8> = r
                    .client_addr
                    .split('.')
                    .filter_map(|x| x.parse().ok())
                    .collect();
                (o[2], o[3])
            };
            assert!(
                (11..=13).contains(&link) && (3..=4).contains(&host),
                "egress from {}",
                r.client_addr
            );
            let want_helo = format!(
                "out-{}.mta{}.lab.test",
                if host == 3 { "a" } else { "b" },
                link - 10
            );
            assert_eq!(
                r.helo, want_helo,
                "HELO matches the source address {}",
                r.client_addr
            );
        }
    }
    // The balancer spread sessions over all three backends.
    let st = ml.tier.status(&lab.lbs[0].ns, 0).unwrap();
    for b in st["vips"][0]["backends"].as_array().unwrap() {
        assert!(b["new_flows"].as_u64().unwrap() > 50, "{}", b);
    }
}
