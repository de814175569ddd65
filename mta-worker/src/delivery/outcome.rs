//! What a reply means for a message: 2xx delivered (and removed from the spool once every
//! recipient is done), 4xx deferred with exponential backoff and jitter until the
//! maximum age, 5xx or expiry bounced with a DSN to the sender (never for `<>`).

use super::counters;
use super::log::Record;
use super::session::Reply;
use super::Shared;
use crate::bounce::{build_dsn, FailedRcpt};
use crate::queue::Entry;
use crate::spool::{DeferRecord, Envelope};
use rand::Rng;
use std::sync::Arc;

/// Where an attempt happened, for logs and counters.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub site: String,
    pub pool: String,
    pub source: String,
    pub source_ip: Option<String>,
    pub mx: Option<String>,
    pub tls: String,
}

/// Feeds a reply to the (source, site) adaptive state.
pub fn feed_adaptive(sh: &Shared, source: &str, site: &str, reply: &Reply) {
    if reply.is_positive() {
        return;
    }
    let cfg = sh.cfg.get();
    let shaping = cfg.shaping(site);
    let now = sh.clock.now_ms();
    let mut st = sh.state.lock().expect("state lock");
    if let Some(p) = st.pairs.get_mut(&(Arc::from(source), Arc::from(site))) {
        if let Some(f) = p.adaptive.on_reply(
            &cfg.rules,
            reply.code,
            &reply.enhanced,
            &reply.text,
            now,
            &shaping,
        ) {
            tracing::warn!(source, site, reply = %reply.line(), action = ?f, "adaptive backoff fired");
        }
    }
}

/// Applies per-recipient replies for one entry. `in_flight` says whether the entry was
/// counted as in a ready queue / connection.
pub fn apply(
    sh: &Arc<Shared>,
    domain: &str,
    mut entry: Entry,
    msg: Option<(&Envelope, &[u8])>,
    results: &[(usize, Reply)],
    ctx: &Ctx,
    in_flight: bool,
) {
    let (env, data) = match msg {
        Some((e, d)) => (Some(e), Some(d)),
        None => (None, None),
    };
    let loaded;
    let env = match env {
        Some(e) => Some(e),
        None => {
            loaded = sh.store.load(entry.id).ok();
            loaded.as_ref().map(|(e, _)| e)
        }
    };
    let cfg = sh.cfg.get();
    let shaping = cfg.shaping(&ctx.site);
    let now = sh.clock.now_ms();
    let attempts = entry.attempts.saturating_add(1);
    let rcpt_of = |i: usize| {
        env.and_then(|e| e.recipients.get(i).cloned())
            .unwrap_or_default()
    };
    let mut failed = Vec::new();
    let base_rec = Record {
        ts_ms: now,
        queue_id: entry.id.to_string(),
        sender: env.map(|e| e.sender.clone()).unwrap_or_default(),
        domain: domain.to_string(),
        site: ctx.site.clone(),
        pool: ctx.pool.clone(),
        source: ctx.source.clone(),
        source_ip: ctx.source_ip.clone(),
        mx: ctx.mx.clone(),
        tls: ctx.tls.clone(),
        attempts,
        ..Default::default()
    };
    let mut remaining = entry.mask;
    let mut last_transient = None;
    for (idx, reply) in results {
        let bit = 1u64 << (idx - entry.base as usize);
        let event = if reply.is_positive() {
            remaining &= !bit;
            sh.counters
                .add(counters::DELIVERED, &ctx.site, &ctx.source, 1);
            "delivery"
        } else if reply.is_permanent() {
            remaining &= !bit;
            sh.counters
                .add(counters::BOUNCED, &ctx.site, &ctx.source, 1);
            failed.push(FailedRcpt {
                rcpt: rcpt_of(*idx),
                status: reply.status(),
                diagnostic: reply.line(),
                remote_mta: ctx.mx.clone(),
            });
            "bounce"
        } else {
            sh.counters
                .add(counters::DEFERRED, &ctx.site, &ctx.source, 1);
            last_transient = Some(reply.clone());
            "transient"
        };
        sh.log.write(&Record {
            event,
            rcpt: Some(rcpt_of(*idx)),
            code: Some(reply.code),
            enhanced: (!reply.enhanced.is_empty()).then(|| reply.enhanced.clone()),
            text: Some(reply.text.clone()),
            ..base_rec.clone()
        });
    }
    entry.mask = remaining;
    entry.attempts = attempts;
    let age_s = (now / 1000).saturating_sub(entry.received_s as u64);
    let mut remove = false;
    let mut defer = None;
    let recorded =
        if last_transient.is_none() && entry.mask != 0 && age_s >= shaping.max_age.as_secs() {
            sh.store
                .deferred(entry.id)
                .into_iter()
                .find(|r| r.domain == domain && r.base == entry.base)
        } else {
            None
        };
    {
        let mut st = sh.state.lock().expect("state lock");
        if in_flight {
            if let Some(dq) = st.domains.get_mut(domain) {
                dq.in_flight = dq.in_flight.saturating_sub(1);
            }
        }
        if entry.mask != 0 && age_s >= shaping.max_age.as_secs() {
            // Expired on the schedule (no reply this time): the last reply recorded with
            // the retry state, which survives restarts.
            let last = last_transient
                .clone()
                .or_else(|| recorded.as_ref().map(recorded_reply))
                .unwrap_or_else(|| Reply::local(451, "4.4.7", "no reply"));
            for idx in entry.rcpt_indices() {
                failed.push(FailedRcpt {
                    rcpt: rcpt_of(idx),
                    status: "4.4.7".into(),
                    diagnostic: format!(
                        "message expired after {attempts} attempts; last reply: {}",
                        last.line()
                    ),
                    remote_mta: ctx.mx.clone(),
                });
                sh.counters
                    .add(counters::BOUNCED, &ctx.site, &ctx.source, 1);
                sh.log.write(&Record {
                    event: "expiry",
                    rcpt: Some(rcpt_of(idx)),
                    code: Some(last.code),
                    enhanced: Some("4.4.7".into()),
                    text: Some(format!("expired; last reply: {}", last.line())),
                    ..base_rec.clone()
                });
            }
            entry.mask = 0;
        }
        if entry.mask == 0 {
            remove = st.entry_done(entry.id);
            if !remove {
                // Other entries of the message are still pending: note this one as done
                // (mask 0), so a restart does not send it again.
                defer = Some(DeferRecord {
                    id: entry.id,
                    domain: domain.to_string(),
                    base: entry.base,
                    mask: 0,
                    attempts,
                    next_ms: 0,
                    first_ms: now,
                    last_code: 0,
                    last_enhanced: String::new(),
                    last_text: String::new(),
                });
            }
        } else {
            let base = shaping.retry_delay(attempts as u32).as_millis() as u64;
            let jitter =
                (base as f64 * shaping.retry_jitter * rand::thread_rng().gen::<f64>()) as u64;
            let next_ms = now + base + jitter;
            st.schedule(domain, entry, next_ms);
            let last = last_transient
                .clone()
                .unwrap_or_else(|| Reply::local(451, "4.4.0", "no reply"));
            defer = Some(DeferRecord {
                id: entry.id,
                domain: domain.to_string(),
                base: entry.base,
                mask: entry.mask,
                attempts,
                next_ms,
                // The store keeps an earlier first-failure time for the entry.
                first_ms: now,
                last_code: last.code,
                last_enhanced: last.enhanced,
                last_text: last.text,
            });
        }
    }
    // Outside the state lock: one append to the spool's defer log (no fsync).
    if let Some(r) = defer {
        if let Err(err) = sh.store.record_defer(r) {
            tracing::warn!(queue_id = %entry.id, %err, "cannot record retry state; a restart would retry it from attempt 0");
        }
    }
    if !failed.is_empty() {
        // Read the original now: once removed below, the DSN task could not.
        let data = data
            .map(|d| d.to_vec())
            .or_else(|| sh.store.load(entry.id).ok().map(|(_, d)| d));
        send_dsn(sh, entry, env.cloned(), data, failed);
    }
    if remove {
        if let Err(err) = sh.store.remove(entry.id) {
            tracing::warn!(queue_id = %entry.id, %err, "cannot remove finished message");
        }
    }
}

fn recorded_reply(r: &DeferRecord) -> Reply {
    Reply::local(r.last_code, &r.last_enhanced, r.last_text.clone())
}

/// Builds and queues the DSN in the background (it needs the original headers and a
/// durable store write, neither of which may block the scheduler).
pub fn send_dsn(
    sh: &Arc<Shared>,
    entry: Entry,
    env: Option<Envelope>,
    data: Option<Vec<u8>>,
    failed: Vec<FailedRcpt>,
) {
    let sh = sh.clone();
    tokio::spawn(async move {
        let (env, data) = match (env, data) {
            (Some(e), Some(d)) => (e, d),
            _ => match sh.store.load(entry.id) {
                Ok(x) => x,
                Err(err) => {
                    tracing::warn!(queue_id = %entry.id, %err, "cannot read original for DSN");
                    return;
                }
            },
        };
        let now_s = sh.clock.now_ms() / 1000;
        let Some((denv, dsn)) = build_dsn(&sh.hostname, &env, entry.id, &failed, &data, now_s)
        else {
            tracing::info!(queue_id = %entry.id, "no DSN: null sender");
            return;
        };
        match sh.store.store(denv.clone(), dsn).await {
            Ok(id) => super::enqueue_inner(&sh, id, &denv),
            Err(err) => tracing::error!(queue_id = %entry.id, %err, "cannot store DSN"),
        }
    });
}
