//! One connection task: opens a session for a (source, site) pair, then sends messages
//! from that pair's ready queue over it (same route only) until messages-per-connection,
//! an idle wait on an empty queue (`queue.connection_idle`), a broken connection or a
//! suspension ends it. Message pacing (per site and per source) is enforced here, right
//! before each transaction.

use super::counters;
use super::outcome::{self, feed_adaptive, Ctx};
use super::session::{self, OpenError, Reply, Txn};
use super::Shared;
use crate::queue::state::{Ready, Route};
use crate::shaping::config::SourceConfig;
use crate::spool::Envelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

type Key = (Arc<str>, Arc<str>);

fn release(sh: &Shared, key: &Key) {
    let mut st = sh.state.lock().expect("state lock");
    if let Some(p) = st.pairs.get_mut(key) {
        p.active = p.active.saturating_sub(1);
    }
    if let Some(s) = st.sites.get_mut(&key.1) {
        s.active = s.active.saturating_sub(1);
    }
    drop(st);
    sh.wake.notify_one();
}

/// Puts ready items back on their domain schedules, due now, without counting an attempt.
fn requeue(sh: &Shared, items: Vec<Ready>) {
    let now = sh.clock.now_ms();
    let mut st = sh.state.lock().expect("state lock");
    for r in items {
        if let Some(dq) = st.domains.get_mut(&r.domain) {
            dq.in_flight = dq.in_flight.saturating_sub(1);
        }
        st.schedule(&r.domain, r.entry, now);
    }
}

/// Waits until both the site and the pair may send one more message, then claims it.
async fn pace(sh: &Shared, key: &Key) {
    loop {
        let wait = {
            let cfg = sh.cfg.get();
            let s = cfg.shaping(&key.1);
            let now = sh.clock.now_ms();
            let mut guard = sh.state.lock().expect("state lock");
            let st = &mut *guard;
            let scale = st
                .pairs
                .get(key)
                .map(|p| p.adaptive.scale(now, &s))
                .unwrap_or(1.0)
                .max(0.001);
            let site_iv = s.message_rate.map(|r| r.interval_ms(1.0));
            let pair_iv = s.source_message_rate.map(|r| r.interval_ms(scale));
            let site_wait = match (site_iv, st.sites.get(&key.1)) {
                (Some(_), Some(q)) => q.msg_pacer.wait_ms(now),
                _ => 0,
            };
            let pair_wait = match (pair_iv, st.pairs.get(key)) {
                (Some(_), Some(p)) => p.msg_pacer.wait_ms(now),
                _ => 0,
            };
            let wait = site_wait.max(pair_wait);
            if wait == 0 {
                if let (Some(iv), Some(q)) = (site_iv, st.sites.get_mut(&key.1)) {
                    let _ = q.msg_pacer.try_take(now, iv);
                }
                if let (Some(iv), Some(p)) = (pair_iv, st.pairs.get_mut(key)) {
                    let _ = p.msg_pacer.try_take(now, iv);
                }
            }
            wait
        };
        if wait == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(wait.min(1000))).await;
    }
}

/// What a connection does once a message is done.
enum Next {
    Send(Ready),
    /// The ready queue is empty: wait on this for the scheduler to refill it.
    Park(Arc<Notify>),
    Close,
}

/// Takes the next ready message of the same route, or parks (counted in `idle`) when the
/// queue is empty and `may_park`. A queue holding only other routes' mail closes the
/// connection so that a connection for those routes can start.
fn take_next(sh: &Shared, key: &Key, route: &Arc<Route>, may_park: bool) -> Next {
    let now = sh.clock.now_ms();
    let mut guard = sh.state.lock().expect("state lock");
    let st = &mut *guard;
    let site_suspended = st.sites.get(&key.1).is_some_and(|s| s.manual_suspend);
    let Some(p) = st.pairs.get_mut(key) else {
        return Next::Close;
    };
    if p.adaptive.suspended(now) {
        return Next::Close;
    }
    let pos = p
        .ready
        .iter()
        .take(64)
        .position(|r| Arc::ptr_eq(&r.route, route) || *r.route == **route);
    match pos.and_then(|i| p.ready.remove(i)) {
        Some(n) => {
            // More work than this connection can take: pass the wake-up on (a Notify
            // holds one permit, so the scheduler's single notify may not reach them all).
            if !p.ready.is_empty() && p.idle > 0 {
                p.wake.notify_one();
            }
            Next::Send(n)
        }
        None if p.ready.is_empty() && may_park && !site_suspended => {
            p.idle += 1;
            Next::Park(p.wake.clone())
        }
        None => Next::Close,
    }
}

/// The next message for this connection, waiting up to `idle` for the scheduler to queue
/// one (a reused connection saves the handshake, EHLO and QUIT on both ends).
async fn next_item(
    sh: &Shared,
    key: &Key,
    route: &Arc<Route>,
    idle: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<Ready> {
    let deadline = tokio::time::Instant::now() + idle;
    loop {
        let wake = match take_next(sh, key, route, !idle.is_zero()) {
            Next::Send(n) => return Some(n),
            Next::Close => return None,
            Next::Park(w) => w,
        };
        let woken = tokio::select! {
            _ = wake.notified() => true,
            _ = tokio::time::sleep_until(deadline) => false,
            _ = stop.wait_for(|s| *s) => false,
        };
        if let Some(p) = sh.state.lock().expect("state lock").pairs.get_mut(key) {
            p.idle = p.idle.saturating_sub(1);
        }
        if !woken {
            // One last look, without parking again.
            return match take_next(sh, key, route, false) {
                Next::Send(n) => Some(n),
                _ => None,
            };
        }
    }
}

pub async fn run(sh: Arc<Shared>, key: Key, source: SourceConfig, pool: String, first: Ready) {
    let cfg = sh.cfg.get();
    let shaping = cfg.shaping(&key.1);
    let mut ctx = Ctx {
        site: key.1.to_string(),
        pool,
        source: source.name.clone(),
        source_ip: Some(source.ip.to_string()),
        mx: None,
        tls: "none".into(),
    };
    sh.counters
        .add(counters::CONNECTIONS, &ctx.site, &ctx.source, 1);
    let mut session = match session::open(&first.route, &source, &shaping, &sh.tls).await {
        Ok(s) => s,
        Err(OpenError::SourceUnavailable(why)) => {
            sh.egress.mark_unusable(&source.name, why);
            sh.egress.unreserve(&source.name);
            let mut items = vec![first];
            if let Some(p) = sh.state.lock().expect("state lock").pairs.get_mut(&key) {
                items.extend(p.ready.drain(..));
            }
            requeue(&sh, items);
            release(&sh, &key);
            return;
        }
        Err(OpenError::Failed { reply, mx, tls }) => {
            ctx.mx = mx;
            ctx.tls = tls;
            feed_adaptive(&sh, &source.name, &key.1, &reply);
            let results: Vec<(usize, Reply)> = first
                .entry
                .rcpt_indices()
                .map(|i| (i, reply.clone()))
                .collect();
            outcome::apply(&sh, &first.domain, first.entry, None, &results, &ctx, true);
            release(&sh, &key);
            return;
        }
    };
    ctx.mx = Some(session.mx.clone());
    ctx.tls = session.tls.clone();
    if session.tls.starts_with("tls ") {
        sh.counters
            .add(counters::TLS_SUCCESS, &ctx.site, &ctx.source, 1);
    }
    let idle = cfg.raw.queue.connection_idle.0;
    // Pipelining the next message behind this one's body takes it off the ready queue
    // before pacing could hold it back, so only where no message rate applies.
    let unpaced = shaping.message_rate.is_none() && shaping.source_message_rate.is_none();
    let mut stop = sh.stop.clone();
    let mut cur = load(&sh, first, &ctx);
    let mut sent = 0u32;
    loop {
        pace(&sh, &key).await;
        let want_next = unpaced && sent + 1 < shaping.messages_per_connection;
        let next = match &cur {
            Some(c) => deliver_one(&sh, &key, &mut session, c, &ctx, want_next).await,
            None => None,
        };
        sent += 1;
        if session.broken || sent >= shaping.messages_per_connection {
            // A message taken to pipeline but not sent goes back, no attempt counted.
            if let Some(n) = next {
                requeue(&sh, vec![n.item]);
            }
            break;
        }
        cur = match next {
            Some(n) => Some(n),
            None => {
                let Some(route) = cur.as_ref().map(|c| c.item.route.clone()) else {
                    break;
                };
                match next_item(&sh, &key, &route, idle, &mut stop).await {
                    Some(r) => load(&sh, r, &ctx),
                    None => break,
                }
            }
        };
    }
    if !session.broken {
        session.quit().await;
    }
    release(&sh, &key);
}

/// A ready message with what the spool holds for it.
struct Loaded {
    item: Ready,
    env: Envelope,
    data: Vec<u8>,
    /// Indices of the entry's recipients in `env.recipients`.
    idx: Vec<usize>,
}

impl Loaded {
    fn rcpts(&self) -> Vec<&str> {
        self.idx
            .iter()
            .map(|&i| self.env.recipients[i].as_str())
            .collect()
    }
}

/// Reads a ready message from the spool. `None` when it cannot be sent: removed behind
/// our back (admin bounce: nothing to do) or unreadable (a transient failure).
fn load(sh: &Arc<Shared>, item: Ready, ctx: &Ctx) -> Option<Loaded> {
    match sh.store.load(item.entry.id) {
        Ok((env, data)) => {
            let idx = item
                .entry
                .rcpt_indices()
                .filter(|&i| i < env.recipients.len())
                .collect();
            Some(Loaded {
                item,
                env,
                data,
                idx,
            })
        }
        Err(crate::queue::StoreError::NotFound { .. }) => {
            let mut st = sh.state.lock().expect("state lock");
            if let Some(dq) = st.domains.get_mut(&item.domain) {
                dq.in_flight = dq.in_flight.saturating_sub(1);
            }
            None
        }
        Err(err) => {
            let reply = Reply::local(451, "4.3.0", err.to_string());
            let results: Vec<(usize, Reply)> = item
                .entry
                .rcpt_indices()
                .map(|i| (i, reply.clone()))
                .collect();
            outcome::apply(sh, &item.domain, item.entry, None, &results, ctx, true);
            None
        }
    }
}

/// Sends one message and applies the outcome. With `want_next` on a pipelining server,
/// also takes the next ready message of the route (without waiting) and sends its
/// commands along with this body; it is returned for the caller to send next.
async fn deliver_one(
    sh: &Arc<Shared>,
    key: &Key,
    session: &mut session::Session,
    cur: &Loaded,
    ctx: &Ctx,
    want_next: bool,
) -> Option<Loaded> {
    let Loaded {
        item, env, data, ..
    } = cur;
    let rcpts = cur.rcpts();
    let cfg = sh.cfg.get();
    // The DKIM header goes out as its own part: the spooled copy is never copied to
    // prepend it.
    let header = cfg.dkim.sign(&env.sender, data);
    let mut parts: [&[u8]; 2] = [b"", data];
    if let Some(h) = &header {
        parts[0] = h.as_bytes();
    }
    let mut next = None;
    if want_next && session.pipelining() {
        while let Next::Send(r) = take_next(sh, key, &item.route, false) {
            // An unreadable one is dealt with by `load`; try the one after it.
            if let Some(l) = load(sh, r, ctx) {
                next = Some(l);
                break;
            }
        }
    }
    let next_rcpts = next.as_ref().map(Loaded::rcpts);
    let next_txn = next.as_ref().zip(next_rcpts.as_deref()).map(|(n, r)| Txn {
        sender: &n.env.sender,
        rcpts: r,
        body_8bit: n.env.body_8bit,
    });
    let txn = Txn {
        sender: &env.sender,
        rcpts: &rcpts,
        body_8bit: env.body_8bit,
    };
    let replies = match session.send(txn, &parts, next_txn).await {
        Ok(r) => r,
        Err(r) => vec![r; rcpts.len()],
    };
    let mut seen = Vec::new();
    for r in &replies {
        if !r.is_positive() && !seen.contains(&r.code) {
            seen.push(r.code);
            feed_adaptive(sh, &ctx.source, &ctx.site, r);
        }
    }
    let results: Vec<(usize, Reply)> = cur.idx.iter().copied().zip(replies).collect();
    outcome::apply(
        sh,
        &item.domain,
        item.entry,
        Some((env, data)),
        &results,
        ctx,
        true,
    );
    next
}
