//! Admin API for the outbound side: queue visibility, suspend/resume/flush per domain or
//! site, bounce by queue id, Prometheus counters. Plain methods on the handle plus an
//! `axum::Router` the admin HTTP server can `merge`; mutating routes need the bearer token.

use super::outcome::send_dsn;
use super::{counters, DispatcherHandle};
use crate::bounce::FailedRcpt;
use crate::queue::state::RouteState;
use crate::spool::QueueId;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One destination domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainReport {
    pub domain: String,
    /// Site it resolved to (None until resolved).
    pub site: Option<String>,
    /// Waiting on the schedule plus in ready queues / connections.
    pub depth: u64,
    pub in_flight: u64,
    /// Age of the oldest scheduled message, seconds.
    pub oldest_age_s: u64,
    /// Suspended by an operator.
    pub suspended: bool,
    /// Last DNS failure, if the route is failing.
    pub route_error: Option<String>,
}

/// One (source, site) pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceReport {
    pub source: String,
    pub pool: String,
    pub ready: usize,
    pub active_connections: u32,
    /// Adaptive backoff is holding this pair.
    pub suspended: bool,
    pub suspended_until_ms: Option<u64>,
    /// Seconds until the adaptive suspension ends (on the worker's clock, so a client
    /// needs no clock of its own).
    #[serde(default)]
    pub suspended_left_s: Option<u64>,
    /// Share of the normal rate in use (1 = full; lower while ramping back).
    pub scale: f64,
}

/// One site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteReport {
    pub site: String,
    pub depth: u64,
    pub oldest_age_s: u64,
    pub active_connections: u32,
    /// Suspended by an operator.
    pub suspended: bool,
    pub sources: Vec<SourceReport>,
}

/// Body of `GET /queues`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueReport {
    pub total: u64,
    pub domains: Vec<DomainReport>,
    pub sites: Vec<SiteReport>,
}

/// What a suspend/resume/flush applies to (`?domain=` or `?site=`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub domain: Option<String>,
    pub site: Option<String>,
}

/// Admin action failures.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("give exactly one of domain= or site=")]
    BadTarget,
    #[error("queue id {id} is not queued")]
    NotQueued { id: String },
}

impl DispatcherHandle {
    /// Queue depth, oldest age and suspension state per domain and per site.
    pub fn queues(&self) -> QueueReport {
        let sh = &self.shared;
        let now = sh.clock.now_ms();
        let cfg = sh.cfg.get();
        let st = sh.state.lock().expect("state lock");
        let mut domains = Vec::new();
        let mut sites: BTreeMap<String, SiteReport> = BTreeMap::new();
        for (d, q) in &st.domains {
            let oldest = q.sched.values().map(|e| e.received_s).min();
            let oldest_age_s = oldest
                .map(|r| (now / 1000).saturating_sub(r as u64))
                .unwrap_or(0);
            let (site, route_error) = match &q.route {
                RouteState::Ready { route, .. } => (Some(route.site.to_string()), None),
                RouteState::Failed { err, .. } => (None, Some(err.to_string())),
                _ => (None, None),
            };
            let depth = q.sched.len() as u64 + q.in_flight;
            if let Some(s) = &site {
                let r = sites.entry(s.clone()).or_insert_with(|| SiteReport {
                    site: s.clone(),
                    depth: 0,
                    oldest_age_s: 0,
                    active_connections: 0,
                    suspended: false,
                    sources: Vec::new(),
                });
                r.depth += depth;
                r.oldest_age_s = r.oldest_age_s.max(oldest_age_s);
            }
            domains.push(DomainReport {
                domain: d.to_string(),
                site,
                depth,
                in_flight: q.in_flight,
                oldest_age_s,
                suspended: q.manual_suspend,
                route_error,
            });
        }
        for (s, q) in &st.sites {
            let r = sites.entry(s.to_string()).or_insert_with(|| SiteReport {
                site: s.to_string(),
                depth: 0,
                oldest_age_s: 0,
                active_connections: 0,
                suspended: false,
                sources: Vec::new(),
            });
            r.active_connections = q.active;
            r.suspended = q.manual_suspend;
        }
        for ((src, site), p) in &st.pairs {
            if let Some(r) = sites.get_mut(&**site) {
                let shaping = cfg.shaping(site);
                r.sources.push(SourceReport {
                    source: src.to_string(),
                    pool: p.pool.clone(),
                    ready: p.ready.len(),
                    active_connections: p.active,
                    suspended: p.adaptive.suspended(now),
                    suspended_until_ms: p.adaptive.suspended_until().filter(|&u| u > now),
                    suspended_left_s: p
                        .adaptive
                        .suspended_until()
                        .filter(|&u| u > now)
                        .map(|u| (u - now).div_ceil(1000)),
                    scale: p.adaptive.scale(now, &shaping),
                });
            }
        }
        domains.sort_by(|a, b| a.domain.cmp(&b.domain));
        QueueReport {
            total: st.depth(),
            domains,
            sites: sites.into_values().collect(),
        }
    }

    fn set_suspended(&self, t: &Target, on: bool) -> Result<(), AdminError> {
        let mut st = self.shared.state.lock().expect("state lock");
        match (&t.domain, &t.site) {
            (Some(d), None) => {
                let key = st.intern(&d.to_ascii_lowercase());
                st.domains.entry(key).or_default().manual_suspend = on;
            }
            (None, Some(s)) => {
                st.sites
                    .entry(Arc::from(s.as_str()))
                    .or_default()
                    .manual_suspend = on;
                if !on {
                    for ((_, site), p) in st.pairs.iter_mut() {
                        if **site == **s {
                            p.adaptive.set_manual(false);
                        }
                    }
                }
            }
            _ => return Err(AdminError::BadTarget),
        }
        drop(st);
        tracing::info!(domain = ?t.domain, site = ?t.site, suspended = on, "admin: suspension changed");
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Stops delivery to a domain or site until `resume`.
    pub fn suspend(&self, t: &Target) -> Result<(), AdminError> {
        self.set_suspended(t, true)
    }

    /// Lifts an operator suspension (and, for a site, any adaptive suspension).
    pub fn resume(&self, t: &Target) -> Result<(), AdminError> {
        self.set_suspended(t, false)
    }

    /// Makes every scheduled message of the domain or site due now; returns how many.
    pub fn flush(&self, t: &Target) -> Result<u64, AdminError> {
        let now = self.shared.clock.now_ms();
        let mut st = self.shared.state.lock().expect("state lock");
        let names: Vec<Arc<str>> = match (&t.domain, &t.site) {
            (Some(d), None) => st.domains.keys().filter(|k| k.eq_ignore_ascii_case(d)).cloned().collect(),
            (None, Some(s)) => st
                .domains
                .iter()
                .filter(|(_, q)| matches!(&q.route, RouteState::Ready { route, .. } if *route.site == **s))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => return Err(AdminError::BadTarget),
        };
        let mut n = 0;
        for d in names {
            let q = st.domains.get_mut(&d).expect("listed");
            let entries: Vec<_> = std::mem::take(&mut q.sched).into_values().collect();
            for e in entries {
                q.sched.insert((now, e.id.0, e.base), e);
                n += 1;
            }
        }
        drop(st);
        self.shared.wake.notify_one();
        Ok(n)
    }

    /// Bounces a queued message now (DSN to its sender) and removes it from the spool.
    /// A copy already handed to a connection may still be delivered.
    pub fn bounce(&self, id: QueueId) -> Result<usize, AdminError> {
        let sh = &self.shared;
        let taken = {
            let mut st = sh.state.lock().expect("state lock");
            let t = st.take_message(id);
            if !t.is_empty() {
                st.msgs.remove(&id.0);
            }
            t
        };
        if taken.is_empty() {
            return Err(AdminError::NotQueued { id: id.to_string() });
        }
        let loaded = sh.store.load(id).ok();
        let mut failed = Vec::new();
        for (domain, e) in &taken {
            for i in e.rcpt_indices() {
                let rcpt = loaded
                    .as_ref()
                    .and_then(|(env, _)| env.recipients.get(i).cloned())
                    .unwrap_or_default();
                sh.log.write(&super::log::Record {
                    ts_ms: sh.clock.now_ms(),
                    event: "bounce",
                    queue_id: id.to_string(),
                    sender: loaded
                        .as_ref()
                        .map(|(env, _)| env.sender.clone())
                        .unwrap_or_default(),
                    rcpt: Some(rcpt.clone()),
                    domain: domain.to_string(),
                    code: Some(550),
                    enhanced: Some("5.0.0".into()),
                    text: Some("bounced by administrator".into()),
                    tls: "none".into(),
                    attempts: e.attempts,
                    ..Default::default()
                });
                sh.counters.add(counters::BOUNCED, domain, "", 1);
                failed.push(FailedRcpt {
                    rcpt,
                    status: "5.0.0".into(),
                    diagnostic: "550 5.0.0 bounced by administrator".into(),
                    remote_mta: None,
                });
            }
        }
        let n = failed.len();
        let (env, data) = match loaded {
            Some((e, d)) => (Some(e), Some(d)),
            None => (None, None),
        };
        send_dsn(sh, taken[0].1, env, data, failed);
        if let Err(err) = sh.store.remove(id) {
            tracing::warn!(queue_id = %id, %err, "admin bounce: cannot remove from spool");
        }
        Ok(n)
    }
}

/// Reads the admin bearer token (first line of the file, trimmed).
pub fn load_token(path: &std::path::Path) -> std::io::Result<Arc<str>> {
    let t = std::fs::read_to_string(path)?;
    let t = t.lines().next().unwrap_or("").trim();
    if t.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "empty token file",
        ));
    }
    Ok(Arc::from(t))
}

#[derive(Clone)]
struct AppState {
    handle: DispatcherHandle,
    token: Option<Arc<str>>,
}

fn authorized(s: &AppState, headers: &HeaderMap, what: &str) -> bool {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = match &s.token {
        // Length check first, then a comparison that does not stop at the first difference.
        Some(t) => {
            t.len() == given.len()
                && t.bytes()
                    .zip(given.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        }
        None => false,
    };
    if !ok {
        tracing::warn!(
            action = what,
            presented = !given.is_empty(),
            "admin: unauthorized mutating request refused"
        );
    }
    ok
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "missing or invalid bearer token\n",
    )
        .into_response()
}

fn bad(e: AdminError) -> Response {
    let code = match e {
        AdminError::BadTarget => StatusCode::BAD_REQUEST,
        AdminError::NotQueued { .. } => StatusCode::NOT_FOUND,
    };
    (code, format!("{e}\n")).into_response()
}

async fn get_queues(State(s): State<AppState>) -> Json<QueueReport> {
    Json(s.handle.queues())
}

async fn get_metrics(State(s): State<AppState>) -> String {
    s.handle.metrics()
}

async fn post_suspend(
    State(s): State<AppState>,
    h: HeaderMap,
    Query(t): Query<Target>,
) -> Response {
    if !authorized(&s, &h, "suspend") {
        return unauthorized();
    }
    s.handle
        .suspend(&t)
        .map(|_| "suspended\n".into_response())
        .unwrap_or_else(bad)
}

async fn post_resume(State(s): State<AppState>, h: HeaderMap, Query(t): Query<Target>) -> Response {
    if !authorized(&s, &h, "resume") {
        return unauthorized();
    }
    s.handle
        .resume(&t)
        .map(|_| "resumed\n".into_response())
        .unwrap_or_else(bad)
}

async fn post_flush(State(s): State<AppState>, h: HeaderMap, Query(t): Query<Target>) -> Response {
    if !authorized(&s, &h, "flush") {
        return unauthorized();
    }
    s.handle
        .flush(&t)
        .map(|n| format!("flushed {n}\n").into_response())
        .unwrap_or_else(bad)
}

async fn post_bounce(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorized(&s, &h, "bounce") {
        return unauthorized();
    }
    let Ok(qid) = id.parse::<QueueId>() else {
        return (StatusCode::BAD_REQUEST, "bad queue id\n").into_response();
    };
    s.handle
        .bounce(qid)
        .map(|n| format!("bounced {n} recipients\n").into_response())
        .unwrap_or_else(bad)
}

/// Routes: `GET /queues`, `GET /metrics/outbound`, and (bearer token required)
/// `POST /queues/suspend|resume|flush?domain=..|site=..`, `POST /queues/bounce/{id}`.
/// Without a token every mutating route answers 401.
pub fn router(handle: DispatcherHandle, token: Option<Arc<str>>) -> Router {
    Router::new()
        .route("/queues", get(get_queues))
        .route("/metrics/outbound", get(get_metrics))
        .route("/queues/suspend", post(post_suspend))
        .route("/queues/resume", post(post_resume))
        .route("/queues/flush", post(post_flush))
        .route("/queues/bounce/{id}", post(post_bounce))
        .with_state(AppState { handle, token })
}
