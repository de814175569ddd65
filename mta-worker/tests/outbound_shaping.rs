//! Shaping measured at real SMTP servers: site connection and rate limits, adaptive
//! suspension and ramp-up, warmup caps and the retry schedule (on a manual clock).

mod outbound_common;

use mta_worker::shaping::{Clock, ManualClock, SystemClock};
use outbound_common::*;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_connection_and_rate_limits_hold_while_other_sites_run_free() {
    let dns = Dnsmasq::start(&[
        "--mx-host=d1.test,mx.slow.test,10".into(),
        "--mx-host=d2.test,mx.slow.test,10".into(),
        "--mx-host=fast.test,mx.fast.test,10".into(),
        "--host-record=mx.slow.test,127.0.0.51".into(),
        "--host-record=mx.fast.test,127.0.0.52".into(),
    ]);
    let (port, mut ls) = bind_same_port(&[ip("127.0.0.51"), ip("127.0.0.52")]).await;
    let fast_l = ls.pop().unwrap();
    let slow = Sink::on(
        port,
        ls,
        Script {
            data_delay: Duration::from_millis(30),
            ..Default::default()
        },
    );
    let fast = Sink::on(
        port,
        vec![fast_l],
        Script {
            data_delay: Duration::from_millis(30),
            ..Default::default()
        },
    );
    let tables = "[[provider]]\nname = \"slowisp\"\nmx_suffixes = [\".slow.test\"]\n[provider.shaping]\nmax_connections = 2\nmessages_per_connection = 5\nmessage_rate = \"20/s\"\nconnection_rate = \"10/s\"\n";
    let toml = config(
        dns.addr,
        port,
        &[(
            "default",
            &[
                ("a", "127.0.0.53", "a.worker.test"),
                ("b", "127.0.0.54", "b.worker.test"),
            ],
        )],
        "",
        tables,
    );
    let w = Worker::start(&toml, Arc::new(SystemClock));
    let start = Instant::now();
    for i in 0..40 {
        let d = if i % 2 == 0 { "d1.test" } else { "d2.test" };
        w.submit("s@x.test", &[&format!("u{i}@{d}")], &format!("slow{i}"), "")
            .await;
        w.submit(
            "s@x.test",
            &[&format!("u{i}@fast.test")],
            &format!("fast{i}"),
            "",
        )
        .await;
    }
    assert!(
        wait_for(30, || slow.rec.msgs().len() == 40
            && fast.rec.msgs().len() == 40)
        .await
    );
    let fast_done = fast.rec.msgs().iter().map(|m| m.at).max().unwrap();
    let slow_msgs = slow.rec.msgs();
    let slow_done = slow_msgs.iter().map(|m| m.at).max().unwrap();
    // 40 messages at 20/s cannot finish in under ~1.95 s; the unshaped site is not held up.
    assert!(
        slow_done - start >= Duration::from_millis(1900),
        "{:?}",
        slow_done - start
    );
    assert!(
        fast_done < slow_done - Duration::from_millis(500),
        "fast site waited for the slow one"
    );
    assert!(
        slow.rec.max_active.load(Ordering::SeqCst) <= 2,
        "site connection limit across both sources"
    );
    assert!(
        fast.rec.max_active.load(Ordering::SeqCst) > 2,
        "other sites use their default limit"
    );
    // Rate: no one-second window holds more than 20 (+1 for the window edge).
    let mut times: Vec<Instant> = slow_msgs.iter().map(|m| m.at).collect();
    times.sort();
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(n <= 21, "{n} messages within 1 s");
    }
    // Connection rate 10/s and reuse up to 5 messages per connection.
    let conns = slow.rec.conns();
    assert!(
        conns.len() >= 8,
        "at most 5 messages per connection: {} connections",
        conns.len()
    );
    let mut ct: Vec<Instant> = conns.iter().map(|c| c.at).collect();
    ct.sort();
    for (i, t) in ct.iter().enumerate() {
        let n = ct[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(n <= 11, "{n} connections within 1 s");
    }
    let sources: std::collections::BTreeSet<String> =
        slow_msgs.iter().map(|m| m.peer.ip().to_string()).collect();
    assert_eq!(sources.len(), 2, "both sources used: {sources:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_answering_421_is_suspended_then_ramped_while_others_flow() {
    let dns = Dnsmasq::start(&[
        "--mx-host=angry.test,mx.angry.test,10".into(),
        "--mx-host=calm.test,mx.calm.test,10".into(),
        "--host-record=mx.angry.test,127.0.0.61".into(),
        "--host-record=mx.calm.test,127.0.0.62".into(),
    ]);
    let (port, mut ls) = bind_same_port(&[ip("127.0.0.61"), ip("127.0.0.62")]).await;
    let calm_l = ls.pop().unwrap();
    let angry_script = Script {
        data_delay: Duration::from_millis(150),
        ..Default::default()
    };
    *angry_script.greeting.lock().unwrap() = "421 4.7.0 Try again later, closing connection".into();
    let angry = Sink::on(port, ls, angry_script.clone());
    let calm = Sink::on(
        port,
        vec![calm_l],
        Script {
            data_delay: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let tables = "[[provider]]\nname = \"angry\"\nmx_suffixes = [\".angry.test\"]\n[provider.shaping]\nmax_connections = 4\nretry = [\"500ms\"]\nretry_jitter = 0.0\nramp_start = 0.5\nramp_step = \"3s\"\n\n[[backoff]]\ncode = \"421\"\ntext = \"(?i)try again later\"\nthreshold = \"3 in 1m\"\naction = \"suspend\"\nduration = \"2s\"\n";
    let toml = config(
        dns.addr,
        port,
        &[("default", &[("s", "127.0.0.63", "s.worker.test")])],
        "",
        tables,
    );
    let w = Worker::start(&toml, Arc::new(SystemClock));
    for i in 0..12 {
        w.submit(
            "s@x.test",
            &[&format!("u{i}@angry.test")],
            &format!("angry{i}"),
            "",
        )
        .await;
    }
    for i in 0..30 {
        w.submit(
            "s@x.test",
            &[&format!("u{i}@calm.test")],
            &format!("calm{i}"),
            "",
        )
        .await;
    }
    // Suspended: the state says so and connections stop.
    let suspended = || {
        let st = w.handle.shared.state.lock().unwrap();
        let now = w.handle.shared.clock.now_ms();
        st.pairs
            .iter()
            .any(|((_, site), p)| &**site == "angry" && p.adaptive.suspended(now))
    };
    assert!(wait_for(10, suspended).await, "421s suspend the pair");
    let t_susp = Instant::now();
    let conns_at_susp = angry.rec.conns().len();
    // The third 421 fires the rule; connections already open (at most max_connections = 4)
    // may still finish, but none may start afterwards.
    assert!(
        (3..=3 + 4).contains(&conns_at_susp),
        "{conns_at_susp} connections before suspension"
    );
    // The calm site keeps full speed meanwhile.
    assert!(wait_for(10, || calm.rec.msgs().len() == 30).await);
    assert!(
        Instant::now() < t_susp + Duration::from_millis(1800),
        "calm finished during the suspension"
    );
    assert_eq!(
        angry.rec.conns().len(),
        conns_at_susp,
        "no connection while suspended"
    );
    // The provider recovers; after the suspension sending resumes at half concurrency.
    *angry_script.greeting.lock().unwrap() = "220 angry.test ESMTP".into();
    angry.rec.max_active.store(0, Ordering::SeqCst);
    assert!(
        wait_for(20, || angry.rec.msgs().len() == 12).await,
        "all delivered after the ramp"
    );
    let conns = angry.rec.conns();
    let first_after = conns[conns_at_susp].at;
    // The suspension began when the worker read the third 421, so after the sink
    // accepted the third connection: timed from there, by the sink's clock, it is not
    // shortened by how late this test noticed it (a loaded machine delays the poll).
    let third_421 = conns[2].at;
    assert!(
        first_after >= third_421 + Duration::from_millis(1950),
        "suspension lasted at most {:?}",
        first_after - third_421
    );
    assert!(
        angry.rec.max_active.load(Ordering::SeqCst) <= 2,
        "ramp starts at half of 4 connections"
    );
    let log = w.log();
    assert!(log.iter().any(|r| r["event"] == "transient"
        && r["code"] == 421
        && r["enhanced"] == "4.7.0"
        && r["site"] == "angry"));
}

/// 2026-12-04 00:00:00 UTC.
const DAY0_MS: u64 = 1_796_342_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_caps_hold_per_day() {
    let dns = Dnsmasq::start(&[
        "--mx-host=w.test,mx.w.test,10".into(),
        "--host-record=mx.w.test,127.0.0.71".into(),
    ]);
    let sink = Sink::start(&[ip("127.0.0.71")], Script::default()).await;
    let clock = Arc::new(ManualClock::new(DAY0_MS + 3_600_000));
    let mut toml = config(
        dns.addr,
        sink.port,
        &[("default", &[("new", "127.0.0.72", "new.worker.test")])],
        "",
        "",
    );
    toml.push_str("[pool.source.warmup]\nstart = \"2026-12-04\"\ndaily_caps = [3, 5]\n");
    let w = Worker::start(&toml, clock.clone());
    for i in 0..10 {
        w.submit("s@x.test", &[&format!("u{i}@w.test")], &format!("w{i}"), "")
            .await;
    }
    assert!(wait_for(10, || sink.rec.msgs().len() == 3).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.rec.msgs().len(), 3, "day 0 cap");
    clock.advance(Duration::from_secs(86_400));
    assert!(wait_for(10, || sink.rec.msgs().len() == 8).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.rec.msgs().len(), 8, "day 1 cap");
    clock.advance(Duration::from_secs(86_400));
    assert!(
        wait_for(10, || sink.rec.msgs().len() == 10).await,
        "past the plan: no cap"
    );
    assert_eq!(w.handle.shared.egress.sent_today("new"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_schedule_on_a_manual_clock() {
    let dns = Dnsmasq::start(&[
        "--mx-host=r.test,mx.r.test,10".into(),
        "--host-record=mx.r.test,127.0.0.81".into(),
    ]);
    let script = Script::default();
    script.data_replies.lock().unwrap().extend([
        "451 4.3.0 busy, come back".to_string(),
        "451 4.3.0 busy, come back".into(),
        "451 4.3.0 busy, come back".into(),
    ]);
    let sink = Sink::start(&[ip("127.0.0.81")], script).await;
    let t0 = DAY0_MS + 7_200_000;
    let clock = Arc::new(ManualClock::new(t0));
    let tables = "[defaults]\nretry = [\"10m\", \"30m\", \"1h\"]\nretry_jitter = 0.0\n";
    let toml = config(
        dns.addr,
        sink.port,
        &[("default", &[("s", "127.0.0.82", "s.worker.test")])],
        "",
        tables,
    );
    let w = Worker::start(&toml, clock.clone());
    w.submit("s@x.test", &["u@r.test"], "retry", "").await;
    let attempts = |w: &Worker| {
        w.log()
            .iter()
            .filter(|r| r["event"] == "transient" || r["event"] == "delivery")
            .count()
    };
    assert!(wait_for(10, || attempts(&w) == 1).await);
    let steps: [(u64, usize); 6] = [(599, 1), (1, 2), (1799, 2), (1, 3), (3599, 3), (1, 4)];
    for (secs, want) in steps {
        clock.advance(Duration::from_secs(secs));
        if attempts(&w) < want {
            assert!(
                wait_for(10, || attempts(&w) == want).await,
                "after +{secs}s expected {want} attempts"
            );
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(attempts(&w), want, "after +{secs}s");
    }
    let times: Vec<u64> = w
        .log()
        .iter()
        .filter(|r| r["event"] != "reception")
        .map(|r| r["ts_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(
        times,
        vec![t0, t0 + 600_000, t0 + 2_400_000, t0 + 6_000_000]
    );
    assert_eq!(sink.rec.msgs().len(), 1);
    assert_eq!(clock.now_ms(), t0 + 6_000_000);
}
