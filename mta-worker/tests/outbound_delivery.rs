//! End to end over real sockets: dnsmasq serves the MX records, in-test SMTP servers on
//! 127.0.0.x play the providers, the worker delivers from a spool in a temp dir.

mod outbound_common;

use mta_worker::shaping::SystemClock;
use outbound_common::*;
use std::net::Ipv4Addr;
use std::sync::Arc;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_providers_partial_rcpt_failure_and_dsn() {
    let dns = Dnsmasq::start(&[
        "--mx-host=a.test,mx.a.test,10".into(),
        // b.test: the preferred MX (127.0.0.3) has no server; delivery must fall back to mx2.
        "--mx-host=b.test,mx1.b.test,10".into(),
        "--mx-host=b.test,mx2.b.test,20".into(),
        "--mx-host=c.test,mx.c.test,10".into(),
        "--mx-host=null.test,.,0".into(),
        "--host-record=mx.a.test,127.0.0.2".into(),
        "--host-record=mx1.b.test,127.0.0.3".into(),
        "--host-record=mx2.b.test,127.0.0.4".into(),
        "--host-record=mx.c.test,127.0.0.6".into(),
    ]);
    let script = Script {
        reject_rcpt: Some(("bad".into(), "550 5.1.1 no such user".into())),
        ..Default::default()
    };
    let sink = Sink::start(&[ip("127.0.0.2"), ip("127.0.0.4"), ip("127.0.0.6")], script).await;
    let toml = config(
        dns.addr,
        sink.port,
        &[("default", &[("out5", "127.0.0.5", "out5.worker.test")])],
        "",
        "",
    );
    let w = Worker::start(&toml, Arc::new(SystemClock));
    for i in 0..10 {
        for d in ["a.test", "b.test", "c.test"] {
            w.submit(
                &format!("s{i}@c.test"),
                &[&format!("u{i}@{d}")],
                &format!("m{i}-{d}"),
                "",
            )
            .await;
        }
    }
    w.submit(
        "sender@c.test",
        &["good@a.test", "bad@a.test", "x@b.test"],
        "mixed",
        "",
    )
    .await;
    w.submit("sender2@c.test", &["u@null.test"], "nullmx", "")
        .await;
    w.submit("", &["bad2@a.test"], "nullsender", "").await;
    // 30 + 2 (mixed: a.test good, b.test x) + 2 DSNs (bad@a.test, null MX) = 34
    assert!(
        wait_for(30, || sink.rec.msgs().len() >= 34).await,
        "got {}",
        sink.rec.msgs().len()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let msgs = sink.rec.msgs();
    assert_eq!(msgs.len(), 34, "no DSN for the null sender, nothing twice");
    for m in &msgs {
        assert_eq!(m.peer.ip().to_string(), "127.0.0.5");
        assert_eq!(m.ehlo, "out5.worker.test");
    }
    let at = |ip: &str| {
        msgs.iter()
            .filter(|m| m.local.ip().to_string() == ip)
            .count()
    };
    assert_eq!(at("127.0.0.2"), 11);
    assert_eq!(at("127.0.0.4"), 11, "b.test falls back to the second MX");
    assert_eq!(at("127.0.0.6"), 12, "c.test got its 10 plus two DSNs");
    let mixed = msgs
        .iter()
        .find(|m| {
            String::from_utf8_lossy(&m.data).contains("Subject: mixed")
                && m.local.ip().to_string() == "127.0.0.2"
        })
        .unwrap();
    assert_eq!(
        mixed.rcpts,
        vec!["good@a.test".to_string()],
        "accepted recipient delivered alone"
    );
    let dsns: Vec<_> = msgs.iter().filter(|m| m.from.is_empty()).collect();
    assert_eq!(dsns.len(), 2);
    let d1 = dsns
        .iter()
        .find(|m| m.rcpts == vec!["sender@c.test".to_string()])
        .expect("DSN to the mixed sender");
    let text = String::from_utf8_lossy(&d1.data);
    assert!(
        text.contains("Content-Type: multipart/report; report-type=delivery-status;"),
        "{text}"
    );
    assert!(text.contains("Content-Type: message/delivery-status"));
    assert!(text.contains("Final-Recipient: rfc822; bad@a.test"));
    assert!(text.contains("Action: failed"));
    assert!(text.contains("Status: 5.1.1"));
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
    assert!(text.contains("Remote-MTA: dns; mx.a.test"));
    assert!(text.contains("Content-Type: text/rfc822-headers"));
    assert!(text.contains("Subject: mixed"));
    assert!(
        !text.contains("x@b.test"),
        "the delivered recipient is not in the DSN"
    );
    let d2 = dsns
        .iter()
        .find(|m| m.rcpts == vec!["sender2@c.test".to_string()])
        .expect("DSN for null MX");
    let t2 = String::from_utf8_lossy(&d2.data);
    assert!(
        t2.contains("Final-Recipient: rfc822; u@null.test")
            && t2.contains("Status: 5.1.2")
            && t2.contains("null MX"),
        "{t2}"
    );
    // The leading-dot line survived dot-stuffing both ways.
    assert!(String::from_utf8_lossy(&msgs[0].data).contains("\r\n.leading dot line\r\n"));
    assert!(
        wait_for(10, || w.spool.queue_depth() == 0).await,
        "spool drained: {}",
        w.spool.queue_depth()
    );
    let log = w.log();
    let count = |ev: &str| log.iter().filter(|r| r["event"] == ev).count();
    assert_eq!(count("delivery"), 34);
    assert_eq!(count("bounce"), 3, "bad@a.test, u@null.test, bad2@a.test");
    assert!(count("reception") >= 35);
    let b = log
        .iter()
        .find(|r| r["event"] == "bounce" && r["rcpt"] == "bad@a.test")
        .unwrap();
    assert_eq!(b["code"], 550);
    assert_eq!(b["enhanced"], "5.1.1");
    assert_eq!(b["site"], "a.test");
    assert_eq!(b["pool"], "default");
    assert_eq!(b["source"], "out5");
    assert_eq!(b["mx"], "mx.a.test");
    let m = w.handle.metrics();
    assert!(
        m.contains("mta_outbound_delivered_total{site=\"a.test\",source=\"out5\"} 11"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_map_and_sender_dependent_pools_pick_the_source() {
    let dns = Dnsmasq::start(&[
        "--mx-host=a.test,mx.a.test,10".into(),
        "--host-record=mx.a.test,127.0.0.12".into(),
    ]);
    let sink = Sink::start(&[ip("127.0.0.12")], Script::default()).await;
    let relay = Sink::start(&[ip("127.0.0.19")], Script::default()).await;
    let top = format!(
        "[transport]\n\"relay.test\" = \"127.0.0.19:{}\"\n",
        relay.port
    );
    let rules = "[[pool_rule]]\nsender_domain = \"bulk.test\"\npool = \"bulk\"\n\n[[pool_rule]]\ntenant = \"acme\"\npool = \"acme\"\n\n[[pool_rule]]\nsender_domain = \"broken.test\"\npool = \"broken\"\n";
    let toml = config(
        dns.addr,
        sink.port,
        &[
            ("default", &[("s15", "127.0.0.15", "out15.worker.test")]),
            ("bulk", &[("s17", "127.0.0.17", "bulk17.worker.test")]),
            ("acme", &[("s18", "127.0.0.18", "acme18.worker.test")]),
            // 198.18.0.77 is not on this host: bind fails locally, the source is skipped.
            (
                "broken",
                &[
                    ("gone", "198.18.0.77", "gone.worker.test"),
                    ("s16", "127.0.0.16", "out16.worker.test"),
                ],
            ),
        ],
        "",
        &format!("{rules}\n{top}"),
    );
    let w = Worker::start(&toml, Arc::new(SystemClock));
    w.submit("x@bulk.test", &["u@a.test"], "bulk", "").await;
    w.submit(
        "y@other.test",
        &["u@a.test"],
        "tenant",
        "X-Tenant: acme\r\n",
    )
    .await;
    w.submit("z@other.test", &["u@a.test"], "plain", "").await;
    w.submit("z@other.test", &["r@relay.test"], "relayed", "")
        .await;
    for i in 0..6 {
        w.submit("b@broken.test", &["u@a.test"], &format!("broken{i}"), "")
            .await;
    }
    assert!(
        wait_for(20, || sink.rec.msgs().len() >= 9
            && !relay.rec.msgs().is_empty())
        .await
    );
    let by_subject = |s: &str| {
        sink.rec
            .msgs()
            .into_iter()
            .chain(relay.rec.msgs())
            .find(|m| String::from_utf8_lossy(&m.data).contains(&format!("Subject: {s}\r\n")))
            .unwrap_or_else(|| panic!("{s} not delivered"))
    };
    let m = by_subject("bulk");
    assert_eq!(
        (m.peer.ip().to_string(), m.ehlo.as_str()),
        ("127.0.0.17".into(), "bulk17.worker.test")
    );
    let m = by_subject("tenant");
    assert_eq!(
        (m.peer.ip().to_string(), m.ehlo.as_str()),
        ("127.0.0.18".into(), "acme18.worker.test")
    );
    let m = by_subject("plain");
    assert_eq!(
        (m.peer.ip().to_string(), m.ehlo.as_str()),
        ("127.0.0.15".into(), "out15.worker.test")
    );
    let m = by_subject("relayed");
    assert_eq!(
        m.local.ip().to_string(),
        "127.0.0.19",
        "transport map overrides MX (relay.test has no DNS at all)"
    );
    assert_eq!(m.peer.ip().to_string(), "127.0.0.15");
    for i in 0..6 {
        let m = by_subject(&format!("broken{i}"));
        assert_eq!(m.peer.ip().to_string(), "127.0.0.16");
    }
    let unusable = w.handle.shared.egress.unusable();
    assert_eq!(unusable.len(), 1);
    assert_eq!(unusable[0].0, "gone");
    let conns_from_gone = w.log().iter().filter(|r| r["source"] == "gone").count();
    assert_eq!(
        conns_from_gone, 0,
        "no attempt is logged against the missing source"
    );
}

/// A backlog on one connection: each next message's MAIL/RCPT/DATA rides with the
/// previous body (pipelining). Refused recipients in the middle of the stream (some, and
/// all of one message's) must not shift any reply onto the wrong message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_backlog_on_one_connection() {
    let dns = Dnsmasq::start(&[
        "--mx-host=p.test,mx.p.test,10".into(),
        "--host-record=mx.p.test,127.0.0.22".into(),
    ]);
    let script = Script {
        reject_rcpt: Some(("bad".into(), "550 5.1.1 no such user".into())),
        // Slow enough that the queue builds up behind the first message.
        data_delay: std::time::Duration::from_millis(30),
        ..Default::default()
    };
    let sink = Sink::start(&[ip("127.0.0.22")], script).await;
    let toml = config(
        dns.addr,
        sink.port,
        &[("default", &[("out23", "127.0.0.23", "out23.worker.test")])],
        "",
        "[defaults]\nmax_connections = 1\nmessages_per_connection = 100\n",
    );
    let w = Worker::start(&toml, Arc::new(SystemClock));
    for i in 0..12 {
        let (from, to): (&str, Vec<String>) = match i {
            // Every recipient refused, null sender (no DSN).
            4 => ("", vec![format!("bad{i}@p.test")]),
            7 => (
                "s@p.test",
                vec![format!("bad{i}@p.test"), format!("ok{i}@p.test")],
            ),
            _ => ("s@p.test", vec![format!("ok{i}@p.test")]),
        };
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        w.submit(from, &to, &format!("p{i}"), "").await;
    }
    // 11 messages, plus the DSN for bad7 (to s@p.test, through the same sink).
    assert!(
        wait_for(20, || sink.rec.msgs().len() >= 12).await,
        "got {}",
        sink.rec.msgs().len()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let msgs = sink.rec.msgs();
    assert_eq!(msgs.len(), 12, "each message exactly once");
    for i in (0..12).filter(|&i| i != 4) {
        let subject = format!("Subject: p{i}\r\n");
        let m: Vec<_> = msgs
            .iter()
            // The DSN for bad7 quotes p7's headers; it comes from <>.
            .filter(|m| !m.from.is_empty() && String::from_utf8_lossy(&m.data).contains(&subject))
            .collect();
        assert_eq!(m.len(), 1, "p{i}");
        assert_eq!(m[0].rcpts, vec![format!("ok{i}@p.test")], "p{i}");
        assert!(String::from_utf8_lossy(&m[0].data).contains("\r\n.leading dot line\r\n"));
    }
    assert!(
        sink.rec.conns().len() <= 2,
        "the backlog reuses the connection: {} connections",
        sink.rec.conns().len()
    );
    let log = w.log();
    let events = |e: &str| log.iter().filter(|r| r["event"] == e).count();
    assert_eq!(events("delivery"), 12, "11 messages and the DSN");
    assert_eq!(events("bounce"), 2, "bad4, bad7");
}
