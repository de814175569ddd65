//! Per-site shaping: the outbound config file, compiled into lookups, held behind an
//! `ArcSwap` so `reload` swaps it atomically (a bad file changes nothing), plus the pacing
//! and adaptive-backoff state the scheduler consults.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod limiter;
pub mod units;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{OutboundConfig, TlsPolicy};

use crate::config::ConfigError;
use arc_swap::ArcSwap;
use backoff::CompiledRule;
use config::{ProviderConfig, ShapingFields};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use units::Rate;

/// Shaping for one site with every default filled in.
#[derive(Debug, Clone)]
pub struct Shaping {
    pub max_connections: u32,
    pub max_connections_per_source: u32,
    pub messages_per_connection: u32,
    pub message_rate: Option<Rate>,
    pub source_message_rate: Option<Rate>,
    pub connection_rate: Option<Rate>,
    pub source_connection_rate: Option<Rate>,
    pub tls: TlsPolicy,
    pub retry: Vec<Duration>,
    pub retry_jitter: f64,
    pub max_age: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub ramp_start: f64,
    pub ramp_step: Duration,
}

impl Shaping {
    fn resolve(p: &ShapingFields, d: &ShapingFields) -> Self {
        let max_connections = p.max_connections.or(d.max_connections).unwrap_or(10).max(1);
        let min = |a: Duration| a.max(Duration::from_millis(1));
        Self {
            max_connections,
            max_connections_per_source: p
                .max_connections_per_source
                .or(d.max_connections_per_source)
                .unwrap_or(max_connections)
                .clamp(1, max_connections),
            messages_per_connection: p
                .messages_per_connection
                .or(d.messages_per_connection)
                .unwrap_or(100)
                .max(1),
            message_rate: p.message_rate.or(d.message_rate),
            source_message_rate: p.source_message_rate.or(d.source_message_rate),
            connection_rate: p.connection_rate.or(d.connection_rate),
            source_connection_rate: p.source_connection_rate.or(d.source_connection_rate),
            tls: p.tls.or(d.tls).unwrap_or(TlsPolicy::Opportunistic),
            retry: p
                .retry
                .clone()
                .or_else(|| d.retry.clone())
                .map(|v| v.into_iter().map(|x| min(x.0)).collect())
                .unwrap_or_else(|| {
                    [300, 600, 1800, 3600, 7200, 14400]
                        .map(Duration::from_secs)
                        .to_vec()
                }),
            retry_jitter: p
                .retry_jitter
                .or(d.retry_jitter)
                .unwrap_or(0.1)
                .clamp(0.0, 1.0),
            max_age: p
                .max_age
                .or(d.max_age)
                .map(|x| x.0)
                .unwrap_or(Duration::from_secs(5 * 86400)),
            connect_timeout: min(p
                .connect_timeout
                .or(d.connect_timeout)
                .map(|x| x.0)
                .unwrap_or(Duration::from_secs(30))),
            command_timeout: min(p
                .command_timeout
                .or(d.command_timeout)
                .map(|x| x.0)
                .unwrap_or(Duration::from_secs(300))),
            ramp_start: p
                .ramp_start
                .or(d.ramp_start)
                .unwrap_or(0.1)
                .clamp(0.001, 1.0),
            ramp_step: min(p
                .ramp_step
                .or(d.ramp_step)
                .map(|x| x.0)
                .unwrap_or(Duration::from_secs(60))),
        }
    }

    /// Delay before attempt number `attempts + 1` (attempts already made ≥ 1), without jitter.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.retry.len().saturating_sub(1));
        self.retry
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(300))
    }
}

/// The config file after validation, with lookups built.
pub struct Compiled {
    pub file: PathBuf,
    pub raw: OutboundConfig,
    default_shaping: Arc<Shaping>,
    by_site: HashMap<String, Arc<Shaping>>,
    pub rules: Vec<CompiledRule>,
    pub dkim: crate::delivery::dkim::DkimKeys,
}

impl Compiled {
    /// Shaping for `site` (a provider name or a derived site).
    pub fn shaping(&self, site: &str) -> Arc<Shaping> {
        self.by_site
            .get(site)
            .cloned()
            .unwrap_or_else(|| self.default_shaping.clone())
    }

    /// The provider whose domain list names `domain`.
    pub fn provider_by_domain(&self, domain: &str) -> Option<&ProviderConfig> {
        self.raw
            .providers
            .iter()
            .find(|p| p.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }

    /// The provider owning any of these MX hosts (by suffix).
    pub fn provider_by_mx<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
    ) -> Option<&ProviderConfig> {
        let hosts: Vec<String> = hosts
            .into_iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        self.raw.providers.iter().find(|p| {
            p.mx_suffixes.iter().any(|s| {
                let s = s.trim_end_matches('.').to_ascii_lowercase();
                let bare = s.trim_start_matches('.');
                hosts
                    .iter()
                    .any(|h| h == bare || h.ends_with(&format!(".{bare}")))
            })
        })
    }
}

/// Reads and validates a file.
pub fn load(path: &Path) -> Result<Compiled, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// "table.key" of the assignment on 1-based `line` (serde's errors do not name it).
fn field_at(text: &str, line: usize) -> String {
    let mut table = String::new();
    for (n, l) in text.lines().enumerate().take(line) {
        let l = l.trim();
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if n + 1 == line {
            if let Some((k, _)) = l.split_once('=') {
                let k = k.trim().trim_matches('"');
                return if table.is_empty() {
                    k.to_string()
                } else {
                    format!("{table}.{k}")
                };
            }
        }
    }
    table
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|n| n + 1)
        .unwrap_or(0)
}

/// Parses and validates; `path` only labels errors and resolves relative key files.
pub fn parse(path: &Path, text: &str) -> Result<Compiled, ConfigError> {
    let invalid = |line: usize, field: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        line,
        field: field.to_string(),
        message,
    };
    let raw: OutboundConfig = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                text[..s.start.min(text.len())]
                    .bytes()
                    .filter(|&b| b == b'\n')
                    .count()
                    + 1
            })
            .unwrap_or(0);
        invalid(line, &field_at(text, line), e.message().to_string())
    })?;
    if raw.dns.servers.is_empty() {
        return Err(invalid(
            line_of(text, "servers"),
            "dns.servers",
            "at least one resolver is needed".into(),
        ));
    }
    if raw.pools.is_empty() {
        return Err(invalid(0, "pool", "at least one [[pool]] is needed".into()));
    }
    let mut names = HashSet::new();
    for p in &raw.pools {
        if p.sources.is_empty() {
            return Err(invalid(
                line_of(text, &p.name),
                "pool.source",
                format!("pool {:?} has no sources", p.name),
            ));
        }
        for s in &p.sources {
            if !names.insert(s.name.clone()) {
                return Err(invalid(
                    line_of(text, &format!("\"{}\"", s.name)),
                    "pool.source.name",
                    format!("source name {:?} is used twice", s.name),
                ));
            }
            if let Some(w) = &s.warmup {
                crate::egress::parse_day(&w.start)
                    .map_err(|m| invalid(line_of(text, &w.start), "pool.source.warmup.start", m))?;
            }
        }
    }
    let pool_exists = |n: &str| raw.pools.iter().any(|p| p.name == n);
    if !pool_exists(&raw.default_pool) {
        return Err(invalid(
            line_of(text, "default_pool"),
            "default_pool",
            format!("no [[pool]] named {:?}", raw.default_pool),
        ));
    }
    for r in &raw.pool_rules {
        if !pool_exists(&r.pool) {
            return Err(invalid(
                line_of(text, &format!("\"{}\"", r.pool)),
                "pool_rule.pool",
                format!("no [[pool]] named {:?}", r.pool),
            ));
        }
    }
    for (domain, target) in &raw.transport {
        crate::egress::parse_transport(target)
            .map_err(|m| invalid(line_of(text, target), &format!("transport.{domain}"), m))?;
    }
    let mut rules = Vec::new();
    for r in &raw.backoff {
        rules.push(
            CompiledRule::compile(r).map_err(|m| invalid(line_of(text, &r.code), "backoff", m))?,
        );
    }
    if raw.builtin_backoff_rules {
        rules.extend(backoff::builtin_rules());
    }
    let default_shaping = Arc::new(Shaping::resolve(&ShapingFields::default(), &raw.defaults));
    let by_site = raw
        .providers
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                Arc::new(Shaping::resolve(&p.shaping, &raw.defaults)),
            )
        })
        .collect();
    let base = path.parent().unwrap_or(Path::new("."));
    let dkim = crate::delivery::dkim::DkimKeys::load(&raw.dkim, base)
        .map_err(|(domain, m)| invalid(line_of(text, &domain), "dkim", m))?;
    Ok(Compiled {
        file: path.to_path_buf(),
        raw,
        default_shaping,
        by_site,
        rules,
        dkim,
    })
}

/// The live config, swapped whole on reload.
#[derive(Clone)]
pub struct ShapingHandle {
    cur: Arc<ArcSwap<Compiled>>,
}

impl ShapingHandle {
    pub fn new(c: Compiled) -> Self {
        Self {
            cur: Arc::new(ArcSwap::from_pointee(c)),
        }
    }

    pub fn get(&self) -> Arc<Compiled> {
        self.cur.load_full()
    }

    /// Loads `path` and switches to it only if it is valid; on error nothing changes.
    pub fn reload(&self, path: &Path) -> Result<(), ConfigError> {
        let c = load(path)?;
        tracing::info!(file = %path.display(), "outbound config reloaded");
        self.cur.store(Arc::new(c));
        Ok(())
    }
}
