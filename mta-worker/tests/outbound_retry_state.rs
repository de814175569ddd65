//! Retry state survives a restart: a deferred message keeps its attempt count, its
//! pending recipients and its next-retry time (the spool's defer log), expiry uses the
//! recovered values, and a torn defer record costs only the retry state, never the
//! message. Real dnsmasq, a real in-test SMTP sink, a manual clock for the schedule.

mod outbound_common;

use mta_worker::shaping::{Clock, ManualClock};
use mta_worker::spool::QueueId;
use outbound_common::*;
use std::sync::Arc;
use std::time::Duration;

const RETRY: &str = "retry = [\"10m\", \"30m\"]\nretry_jitter = 0.0\n";

struct Setup {
    _dns: Dnsmasq,
    sink: Sink,
    w: Worker,
    clock: Arc<ManualClock>,
    id: QueueId,
    t0: u64,
}

/// One message to a@ and b@slow.test and c@fast.test (same MX). The sink takes a and c
/// and answers 452 for b, so after the first attempt the slow.test entry is deferred
/// (attempt 1, only b pending, next try at t0 + 10m) and the fast.test entry is done.
async fn deferred_once(sender: &str, max_age: &str) -> Setup {
    let dns = Dnsmasq::start(&[
        "--mx-host=slow.test,mx.slow.test,10".into(),
        "--mx-host=fast.test,mx.slow.test,10".into(),
        "--host-record=mx.slow.test,127.0.0.121".into(),
    ]);
    let script = Script {
        reject_rcpt: Some(("b@".into(), "452 4.2.2 mailbox full".into())),
        ..Default::default()
    };
    let sink = Sink::start(&["127.0.0.121".parse().unwrap()], script).await;
    let t0 = mta_worker::shaping::SystemClock.now_ms();
    let clock = Arc::new(ManualClock::new(t0));
    let toml = config(
        dns.addr,
        sink.port,
        &[("default", &[("s", "127.0.0.122", "s.worker.test")])],
        "",
        &format!("[defaults]\n{RETRY}max_age = \"{max_age}\"\n"),
    );
    let w = Worker::start(&toml, clock.clone());
    let id = w
        .submit(
            sender,
            &["a@slow.test", "b@slow.test", "c@fast.test"],
            "retry",
            "",
        )
        .await;
    assert!(
        wait_for(10, || transient_attempts(&w, "b@slow.test") == vec![1]).await,
        "{:?}",
        w.log()
    );
    // The connection has ended and the defer record is down before the "restart".
    assert!(
        wait_for(10, || sink
            .rec
            .active
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0)
        .await
    );
    assert!(wait_for(10, || w.spool.deferred(id).len() == 2).await);
    assert_eq!(delivered(&sink), vec!["a@slow.test", "c@fast.test"]);
    Setup {
        _dns: dns,
        sink,
        w,
        clock,
        id,
        t0,
    }
}

/// Recipients the sink accepted, sorted (one per delivered copy).
fn delivered(sink: &Sink) -> Vec<String> {
    let mut v: Vec<String> = sink.rec.msgs().into_iter().flat_map(|m| m.rcpts).collect();
    v.sort();
    v
}

/// The recorded state of `domain`'s entry.
fn state(w: &Worker, id: QueueId, domain: &str) -> mta_worker::spool::DeferRecord {
    w.spool
        .deferred(id)
        .into_iter()
        .find(|r| r.domain == domain)
        .unwrap_or_else(|| panic!("no record for {domain}"))
}

/// `attempts` of each transient record for `rcpt`, in log order.
fn transient_attempts(w: &Worker, rcpt: &str) -> Vec<u64> {
    w.log()
        .iter()
        .filter(|r| r["event"] == "transient" && r["rcpt"] == rcpt)
        .map(|r| r["attempts"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_attempts_pending_recipients_and_next_retry_time() {
    let Setup {
        _dns,
        sink,
        mut w,
        clock,
        id,
        t0,
    } = deferred_once("s@x.test", "5d").await;
    let rec = state(&w, id, "slow.test");
    assert_eq!(
        (rec.attempts, rec.next_ms, rec.first_ms),
        (1, t0 + 600_000, t0)
    );
    assert_eq!(rec.mask, 0b10, "only b is pending");
    assert_eq!(rec.last_code, 452);
    assert_eq!(state(&w, id, "fast.test").mask, 0, "fast.test entry done");

    let conns = sink.rec.conns().len();
    clock.advance(Duration::from_secs(60));
    assert_eq!(w.restart(clock.clone()).await, 1);
    // Before the recorded retry time nothing is tried (it would be at once with the
    // in-memory state alone), and the finished fast.test entry is not sent again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        sink.rec.conns().len(),
        conns,
        "retried before its next-retry time"
    );
    let q = w.handle.queues();
    let d = q.domains.iter().find(|d| d.domain == "slow.test").unwrap();
    assert_eq!(d.depth, 1);

    // At the recorded time the entry is tried again, as attempt 2, for b only.
    clock.set(t0 + 600_000);
    assert!(
        wait_for(10, || transient_attempts(&w, "b@slow.test") == vec![1, 2]).await,
        "{:?}",
        w.log()
    );
    assert_eq!(sink.rec.conns().len(), conns + 1);
    assert_eq!(
        delivered(&sink),
        vec!["a@slow.test", "c@fast.test"],
        "a and c were not delivered twice"
    );
    let deliveries = w.log().iter().filter(|r| r["event"] == "delivery").count();
    assert_eq!(deliveries, 2);
    // The schedule carries on: after attempt 2 comes the second delay (30m), and the
    // first failure time is still the original one.
    assert!(wait_for(10, || state(&w, id, "slow.test").attempts == 2).await);
    let rec = state(&w, id, "slow.test");
    assert_eq!((rec.next_ms, rec.first_ms), (t0 + 600_000 + 1_800_000, t0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_after_restart_uses_recovered_attempts_and_last_reply() {
    // Null sender: no DSN, so the only traffic the sink could see is a new attempt.
    let Setup {
        _dns,
        sink,
        mut w,
        clock,
        id,
        t0,
    } = deferred_once("", "1h").await;
    let conns = sink.rec.conns().len();
    clock.set(t0 + 2 * 3_600_000);
    w.restart(clock.clone()).await;
    assert!(
        wait_for(10, || w.log().iter().any(|r| r["event"] == "expiry")).await,
        "{:?}",
        w.log()
    );
    let log = w.log();
    let exp = log.iter().find(|r| r["event"] == "expiry").unwrap();
    assert_eq!(exp["rcpt"], "b@slow.test");
    assert_eq!(exp["attempts"], 1, "recovered count, not a fresh attempt");
    let text = exp["text"].as_str().unwrap();
    assert!(text.contains("452 4.2.2 mailbox full"), "{text}");
    assert_eq!(
        sink.rec.conns().len(),
        conns,
        "an expired message is not tried again"
    );
    assert_eq!(log.iter().filter(|r| r["event"] == "expiry").count(), 1);
    assert!(
        wait_for(5, || w.spool.load(id).is_err()).await,
        "expired message removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_defer_log_keeps_the_message_and_restarts_at_attempt_zero() {
    let Setup {
        _dns,
        sink,
        mut w,
        clock,
        id,
        t0: _,
    } = deferred_once("s@x.test", "5d").await;
    // Cut the log in the middle of its first line (the second is lost entirely), and
    // append a line of garbage, as a crash and a bad disk block would leave it.
    let log_path = w.path("spool/segments/defer.log");
    let bytes = std::fs::read(&log_path).unwrap();
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 2);
    let mut damaged = bytes[..bytes.len() / 4].to_vec();
    damaged.extend_from_slice(b"\n\xff\x00garbage\n");
    std::fs::write(&log_path, damaged).unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(w.restart(clock.clone()).await, 1, "message still queued");
    assert!(w.spool.deferred(id).is_empty(), "damaged records dropped");
    // Unknown state: retried at once from attempt 0, for every recipient (a and c may
    // get a second copy: at-least-once, never lost).
    assert!(
        wait_for(10, || transient_attempts(&w, "b@slow.test") == vec![1, 1]).await,
        "{:?}",
        w.log()
    );
    assert!(wait_for(10, || delivered(&sink).len() == 4).await);
    assert!(wait_for(10, || state(&w, id, "slow.test").attempts == 1).await);
    assert!(w.spool.load(id).is_ok());
}
