//! One connection task: opens a session for a (source, site) pair, then sends messages
//! from that pair's ready queue over it (same route only) until messages-per-connection,
//! an empty queue, a broken connection or a suspension ends it. Message pacing (per site
//! and per source) is enforced here, right before each transaction.

use super::counters;
use super::outcome::{self, feed_adaptive, Ctx};
use super::session::{self, OpenError, Reply};
use super::Shared;
use crate::queue::state::Ready;
use crate::shaping::config::SourceConfig;
use std::sync::Arc;
use std::time::Duration;

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
    let mut item = first;
    let mut sent = 0u32;
    loop {
        pace(&sh, &key).await;
        deliver_one(&sh, &mut session, &item, &ctx).await;
        sent += 1;
        if session.broken || sent >= shaping.messages_per_connection {
            break;
        }
        let now = sh.clock.now_ms();
        let next = {
            let mut st = sh.state.lock().expect("state lock");
            match st.pairs.get_mut(&key) {
                Some(p) if !p.adaptive.suspended(now) => {
                    let pos = p.ready.iter().take(64).position(|r| {
                        Arc::ptr_eq(&r.route, &item.route) || *r.route == *item.route
                    });
                    pos.and_then(|i| p.ready.remove(i))
                }
                _ => None,
            }
        };
        match next {
            Some(n) => item = n,
            None => break,
        }
    }
    if !session.broken {
        session.quit().await;
    }
    release(&sh, &key);
}

async fn deliver_one(sh: &Arc<Shared>, session: &mut session::Session, item: &Ready, ctx: &Ctx) {
    let (env, data) = match sh.store.load(item.entry.id) {
        Ok(x) => x,
        Err(crate::queue::StoreError::NotFound { .. }) => {
            // Removed behind our back (admin bounce): nothing to do.
            let mut st = sh.state.lock().expect("state lock");
            if let Some(dq) = st.domains.get_mut(&item.domain) {
                dq.in_flight = dq.in_flight.saturating_sub(1);
            }
            return;
        }
        Err(err) => {
            let reply = Reply::local(451, "4.3.0", err.to_string());
            let results: Vec<(usize, Reply)> = item
                .entry
                .rcpt_indices()
                .map(|i| (i, reply.clone()))
                .collect();
            outcome::apply(sh, &item.domain, item.entry, None, &results, ctx, true);
            return;
        }
    };
    let idx: Vec<usize> = item
        .entry
        .rcpt_indices()
        .filter(|&i| i < env.recipients.len())
        .collect();
    let rcpts: Vec<&str> = idx.iter().map(|&i| env.recipients[i].as_str()).collect();
    let cfg = sh.cfg.get();
    let signed;
    let wire: &[u8] = match cfg.dkim.sign(&env.sender, &data) {
        Some(h) => {
            let mut v = h.into_bytes();
            v.extend_from_slice(&data);
            signed = v;
            &signed
        }
        None => &data,
    };
    let replies = match session.send(&env.sender, &rcpts, wire, env.body_8bit).await {
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
    let results: Vec<(usize, Reply)> = idx.into_iter().zip(replies).collect();
    outcome::apply(
        sh,
        &item.domain,
        item.entry,
        Some((&env, &data)),
        &results,
        ctx,
        true,
    );
}
