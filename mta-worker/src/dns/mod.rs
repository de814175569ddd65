//! MX resolution for delivery: hickory-resolver against the configured servers, with a
//! TTL-honouring cache of the whole answer (MX set plus addresses), RFC 7505 null MX,
//! the RFC 5321 §5.1 A/AAAA fallback, and errors typed as permanent (bounce now) or
//! temporary (retry later).

pub mod site;

use crate::shaping::config::DnsConfig;
use crate::shaping::SharedClock;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A lookup that did not yield a usable MX set.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// The domain cannot receive mail (null MX, NXDOMAIN, no address at all): bounce.
    #[error("{domain}: {reason}")]
    Permanent { domain: String, reason: String },
    /// The answer could not be had right now (timeout, SERVFAIL): retry later.
    #[error("{domain}: temporary DNS failure: {reason}")]
    Temporary { domain: String, reason: String },
}

impl DnsError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, DnsError::Permanent { .. })
    }
}

/// One MX host with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
}

/// A domain's mail exchangers in preference order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxSet {
    pub hosts: Vec<MxHost>,
    /// The set came from the A/AAAA fallback (no MX records).
    pub implicit: bool,
}

/// An answer and the clock time (ms) it expires.
type CachedAnswer = (Result<Arc<MxSet>, DnsError>, u64);

/// Resolver plus answer cache.
pub struct Dns {
    resolver: TokioResolver,
    clock: SharedClock,
    cache: Mutex<HashMap<String, CachedAnswer>>,
}

/// Negative answers are cached this long when the server gives no SOA minimum.
const NEGATIVE_TTL_S: u64 = 300;

impl Dns {
    pub fn new(cfg: &DnsConfig, clock: SharedClock) -> Result<Self, NetError> {
        let servers = cfg
            .servers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut opts = ResolverOpts::default();
        opts.timeout = cfg.timeout.0;
        opts.attempts = 2;
        opts.ndots = 0;
        // The answer cache lives here, on the scheduler's clock; a second cache inside
        // hickory (on the wall clock) would keep stale answers past a simulated TTL.
        opts.cache_size = 0;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()?;
        Ok(Self {
            resolver,
            clock,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// MX set of `domain`, from cache while its TTL lasts.
    pub async fn mx(&self, domain: &str) -> Result<Arc<MxSet>, DnsError> {
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = self.clock.now_ms();
        if let Some((r, exp)) = self.cache.lock().expect("dns cache").get(&key) {
            if *exp > now {
                return r.clone();
            }
        }
        let (r, ttl) = match self.lookup(&key).await {
            Ok((set, ttl)) => (Ok(Arc::new(set)), ttl as u64),
            Err(e @ DnsError::Permanent { .. }) => (Err(e), NEGATIVE_TTL_S),
            Err(e) => return Err(e),
        };
        self.cache
            .lock()
            .expect("dns cache")
            .insert(key, (r.clone(), now + ttl * 1000));
        r
    }

    /// Addresses of a host (used for transport-map smarthosts given by name).
    pub async fn addrs(&self, host: &str) -> Result<(Vec<IpAddr>, u32), DnsError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok((vec![ip], u32::MAX));
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let mut out = Vec::new();
        let mut ttl = u32::MAX;
        let mut last_err = None;
        for v6 in [false, true] {
            let r = if v6 {
                self.resolver.ipv6_lookup(fqdn.as_str()).await
            } else {
                self.resolver.ipv4_lookup(fqdn.as_str()).await
            };
            match r {
                Ok(l) => {
                    for rec in l.answers() {
                        match &rec.data {
                            RData::A(a) => out.push(IpAddr::V4(a.0)),
                            RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                            _ => continue,
                        }
                        ttl = ttl.min(rec.ttl);
                    }
                }
                Err(e) if e.is_no_records_found() => {}
                Err(e) => last_err = Some(e),
            }
        }
        if out.is_empty() {
            if let Some(e) = last_err {
                return Err(DnsError::Temporary {
                    domain: host.into(),
                    reason: e.to_string(),
                });
            }
            return Err(DnsError::Permanent {
                domain: host.into(),
                reason: "host has no A or AAAA record".into(),
            });
        }
        Ok((out, ttl))
    }

    async fn lookup(&self, domain: &str) -> Result<(MxSet, u32), DnsError> {
        let fqdn = format!("{domain}.");
        let temp = |e: NetError| DnsError::Temporary {
            domain: domain.into(),
            reason: e.to_string(),
        };
        let mut mx: Vec<(u16, String, u32)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(m) => Some((
                        m.preference,
                        m.exchange
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                        r.ttl,
                    )),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => {
                return Err(DnsError::Permanent {
                    domain: domain.into(),
                    reason: "domain does not exist (NXDOMAIN)".into(),
                })
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(temp(e)),
        };
        if mx.iter().any(|(_, h, _)| h.is_empty()) {
            // RFC 7505: "MX 0 ." says the domain accepts no mail at all.
            return Err(DnsError::Permanent {
                domain: domain.into(),
                reason: "domain publishes a null MX (RFC 7505): it accepts no mail".into(),
            });
        }
        if mx.is_empty() {
            let (addrs, ttl) = self.addrs(domain).await?;
            let host = MxHost {
                name: domain.into(),
                preference: 0,
                addrs,
            };
            return Ok((
                MxSet {
                    hosts: vec![host],
                    implicit: true,
                },
                ttl,
            ));
        }
        mx.sort();
        let mut ttl = mx.iter().map(|m| m.2).min().unwrap_or(300);
        let mut hosts = Vec::new();
        let mut temp_err = None;
        for (pref, name, _) in mx {
            match self.addrs(&name).await {
                Ok((addrs, t)) => {
                    ttl = ttl.min(t);
                    hosts.push(MxHost {
                        name,
                        preference: pref,
                        addrs,
                    });
                }
                Err(e) => {
                    tracing::debug!(domain, mx = %name, err = %e, "MX host has no usable address");
                    if !e.is_permanent() {
                        temp_err = Some(e);
                    }
                }
            }
        }
        if hosts.is_empty() {
            return Err(temp_err.unwrap_or(DnsError::Permanent {
                domain: domain.into(),
                reason: "no MX host has an address".into(),
            }));
        }
        Ok((
            MxSet {
                hosts,
                implicit: false,
            },
            ttl,
        ))
    }
}
