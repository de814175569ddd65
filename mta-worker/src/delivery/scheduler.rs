//! The scheduler loop: due entries → ready queues (per source and site, bounded) →
//! connection tasks (within per-site and per-source connection limits, connection rates
//! and the adaptive scale). DNS lookups run in their own tasks so a slow resolver never
//! stalls the loop.

use super::outcome::{self, Ctx};
use super::session::Reply;
use super::{conn, Shared};
use crate::dns::site::site_for;
use crate::dns::DnsError;
use crate::queue::state::{PairQ, Ready, Route, RouteState, State, Target};
use crate::queue::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// How long a resolved route is used before asking the (TTL-caching) resolver again.
const ROUTE_REFRESH_MS: u64 = 30_000;

pub async fn run(sh: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let tick = sh.cfg.get().raw.queue.tick.0;
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = sh.wake.notified() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
        schedule_due(&sh);
        start_connections(&sh);
    }
    sh.log.flush();
    tracing::info!("outbound scheduler stopped");
}

fn pair_blocked(st: &State, src: &str, site: &str, now: u64, limit: usize) -> bool {
    st.pairs
        .iter()
        .find(|((s, si), _)| &**s == src && &**si == site)
        .is_some_and(|(_, p)| p.adaptive.suspended(now) || p.ready.len() >= limit)
}

fn schedule_due(sh: &Arc<Shared>) {
    let cfg = sh.cfg.get();
    let now = sh.clock.now_ms();
    let limit = cfg.raw.queue.ready_queue_size.max(1);
    let mut resolve = Vec::new();
    let mut dns_failed: Vec<(Arc<str>, Entry, DnsError)> = Vec::new();
    let mut expired: Vec<(Arc<str>, Entry, String)> = Vec::new();
    {
        let mut guard = sh.state.lock().expect("state lock");
        let st = &mut *guard;
        let due: Vec<Arc<str>> = st
            .domains
            .iter()
            .filter(|(_, q)| {
                !q.manual_suspend && q.sched.first_key_value().is_some_and(|(k, _)| k.0 <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for d in due {
            let route = {
                let q = st.domains.get_mut(&d).expect("listed above");
                match &q.route {
                    RouteState::Unknown => None,
                    RouteState::Resolving => continue,
                    RouteState::Ready { expires_ms, .. }
                    | RouteState::Failed { expires_ms, .. }
                        if *expires_ms <= now =>
                    {
                        None
                    }
                    RouteState::Ready { route, .. } => Some(Ok(route.clone())),
                    RouteState::Failed { err, .. } => Some(Err(err.clone())),
                }
            };
            let route = match route {
                None => {
                    st.domains.get_mut(&d).expect("listed").route = RouteState::Resolving;
                    resolve.push(d.clone());
                    continue;
                }
                Some(Err(err)) => {
                    let q = st.domains.get_mut(&d).expect("listed");
                    while let Some(e) = q.sched.first_entry().filter(|e| e.key().0 <= now) {
                        dns_failed.push((d.clone(), e.remove(), err.clone()));
                    }
                    continue;
                }
                Some(Ok(r)) => r,
            };
            if st.sites.get(&route.site).is_some_and(|s| s.manual_suspend) {
                continue;
            }
            let shaping = cfg.shaping(&route.site);
            while let Some((key, e)) = st
                .domains
                .get(&d)
                .and_then(|q| q.sched.first_key_value())
                .filter(|(k, _)| k.0 <= now)
                .map(|(k, e)| (*k, *e))
            {
                let age = (now / 1000).saturating_sub(e.received_s as u64);
                if e.attempts > 0 && age >= shaping.max_age.as_secs() {
                    st.domains.get_mut(&d).expect("listed").sched.remove(&key);
                    expired.push((d.clone(), e, route.site.to_string()));
                    continue;
                }
                let pool = st.pool_name(e.pool).to_string();
                let site = route.site.clone();
                let Some(picked) = sh.egress.pick(&cfg, &pool, now, |src| {
                    pair_blocked(st, src, &site, now, limit)
                }) else {
                    break;
                };
                let q = st.domains.get_mut(&d).expect("listed");
                q.sched.remove(&key);
                q.in_flight += 1;
                let pk = (Arc::<str>::from(picked.source.name.as_str()), site.clone());
                let pair = st.pairs.entry(pk).or_insert_with(|| PairQ {
                    source: picked.source.clone(),
                    pool: picked.pool.clone(),
                    ready: Default::default(),
                    active: 0,
                    idle: 0,
                    wake: Default::default(),
                    msg_pacer: Default::default(),
                    conn_pacer: Default::default(),
                    adaptive: Default::default(),
                });
                pair.source = picked.source;
                pair.pool = picked.pool;
                pair.ready.push_back(Ready {
                    domain: d.clone(),
                    route: route.clone(),
                    entry: e,
                });
                st.sites.entry(site).or_default();
            }
        }
    }
    for d in resolve {
        tokio::spawn(resolve_route(sh.clone(), d));
    }
    for (d, e, err) in dns_failed {
        let reply = match &err {
            DnsError::Permanent { .. } => Reply::local(550, "5.1.2", err.to_string()),
            DnsError::Temporary { .. } => Reply::local(451, "4.4.3", err.to_string()),
        };
        let results: Vec<(usize, Reply)> = e.rcpt_indices().map(|i| (i, reply.clone())).collect();
        let ctx = Ctx {
            site: d.to_string(),
            tls: "none".into(),
            ..Default::default()
        };
        outcome::apply(sh, &d, e, None, &results, &ctx, false);
    }
    for (d, e, site) in expired {
        let ctx = Ctx {
            site,
            tls: "none".into(),
            ..Default::default()
        };
        outcome::apply(
            sh,
            &d,
            Entry {
                attempts: e.attempts.saturating_sub(1),
                ..e
            },
            None,
            &[],
            &ctx,
            false,
        );
    }
}

async fn resolve_route(sh: Arc<Shared>, domain: Arc<str>) {
    let cfg = sh.cfg.get();
    let port = cfg.raw.mx_port;
    let result: Result<Route, DnsError> = if let Some(t) = cfg.raw.transport.get(&*domain) {
        match crate::egress::parse_transport(t) {
            Ok((host, p)) => sh.dns.addrs(&host).await.map(|(addrs, _)| Route {
                site: cfg
                    .provider_by_domain(&domain)
                    .map(|p| Arc::from(p.name.as_str()))
                    .unwrap_or_else(|| Arc::from(format!("smarthost:{host}:{p}"))),
                targets: vec![Target {
                    host,
                    addrs: addrs.into_iter().map(|a| SocketAddr::new(a, p)).collect(),
                }],
            }),
            Err(reason) => Err(DnsError::Temporary {
                domain: domain.to_string(),
                reason,
            }),
        }
    } else {
        sh.dns.mx(&domain).await.map(|mx| Route {
            site: Arc::from(site_for(&cfg, &domain, &mx)),
            targets: mx
                .hosts
                .iter()
                .map(|h| Target {
                    host: h.name.clone(),
                    addrs: h.addrs.iter().map(|a| SocketAddr::new(*a, port)).collect(),
                })
                .collect(),
        })
    };
    let now = sh.clock.now_ms();
    let mut st = sh.state.lock().expect("state lock");
    let q = st.domains.entry(domain.clone()).or_default();
    q.route = match result {
        Ok(r) => {
            // Reuse the Arc when nothing changed so connections keep matching routes.
            let same = match &q.route {
                RouteState::Ready { route, .. } if **route == r => Some(route.clone()),
                _ => None,
            };
            RouteState::Ready {
                route: same.unwrap_or_else(|| Arc::new(r)),
                expires_ms: now + ROUTE_REFRESH_MS,
            }
        }
        Err(err) => {
            tracing::info!(domain = %domain, %err, "route lookup failed");
            let wait = if err.is_permanent() {
                300_000
            } else {
                cfg.raw.queue.dns_retry.0.as_millis() as u64
            };
            RouteState::Failed {
                err,
                expires_ms: now + wait,
            }
        }
    };
    drop(st);
    sh.wake.notify_one();
}

fn start_connections(sh: &Arc<Shared>) {
    let cfg = sh.cfg.get();
    let now = sh.clock.now_ms();
    let mut spawn = Vec::new();
    {
        let mut guard = sh.state.lock().expect("state lock");
        let State { pairs, sites, .. } = &mut *guard;
        for (key, pair) in pairs.iter_mut() {
            if pair.ready.is_empty() {
                continue;
            }
            let sh_cfg = cfg.shaping(&key.1);
            let scale = pair.adaptive.scale(now, &sh_cfg);
            let site = sites.entry(key.1.clone()).or_default();
            if scale <= 0.0 || site.manual_suspend {
                continue;
            }
            // A parked connection takes the work first (no new handshake); it wakes the
            // next parked one itself if more is left.
            if pair.idle > 0 {
                pair.wake.notify_one();
            }
            let allowed =
                ((sh_cfg.max_connections_per_source as f64 * scale).floor() as u32).max(1);
            while pair.ready.len() > pair.idle as usize
                && pair.active < allowed
                && site.active < sh_cfg.max_connections
            {
                let site_iv = sh_cfg.connection_rate.map(|r| r.interval_ms(1.0));
                let pair_iv = sh_cfg.source_connection_rate.map(|r| r.interval_ms(scale));
                if site_iv.is_some() && site.conn_pacer.wait_ms(now) > 0
                    || pair_iv.is_some() && pair.conn_pacer.wait_ms(now) > 0
                {
                    break;
                }
                if let Some(iv) = site_iv {
                    let _ = site.conn_pacer.try_take(now, iv);
                }
                if let Some(iv) = pair_iv {
                    let _ = pair.conn_pacer.try_take(now, iv);
                }
                let first = pair.ready.pop_front().expect("checked non-empty");
                pair.active += 1;
                site.active += 1;
                spawn.push((key.clone(), pair.source.clone(), pair.pool.clone(), first));
            }
        }
    }
    for (key, source, pool, first) in spawn {
        tokio::spawn(conn::run(sh.clone(), key, source, pool, first));
    }
}
