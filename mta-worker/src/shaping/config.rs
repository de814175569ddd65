//! The outbound config file (`shaping.toml`): DNS, per-provider shaping, adaptive backoff
//! rules, egress pools, transport map and DKIM keys. See `examples/shaping.toml` for a
//! commented example and `docs/mta-outbound.md` for the semantics.

use super::units::{Dur, Rate, Threshold};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The whole outbound file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Resolver used for MX/A/AAAA lookups.
    pub dns: DnsConfig,
    /// Shaping for every site that no `[[provider]]` block matches, and the fallback for
    /// fields a provider leaves out.
    #[serde(default)]
    pub defaults: ShapingFields,
    /// Per-provider overrides, matched by recipient domain or by MX host suffix; the
    /// provider's name becomes the site name, so all its domains share limits.
    #[serde(default, rename = "provider")]
    pub providers: Vec<ProviderConfig>,
    /// Adaptive backoff rules, tried in order before the built-in ones.
    #[serde(default, rename = "backoff")]
    pub backoff: Vec<BackoffRule>,
    /// Append the built-in rules for well-known "try again later" / rate-limit replies.
    #[serde(default = "yes")]
    pub builtin_backoff_rules: bool,
    /// Egress pools; at least one.
    #[serde(rename = "pool")]
    pub pools: Vec<PoolConfig>,
    /// Which pool a message uses; first match wins, else `default_pool`.
    #[serde(default, rename = "pool_rule")]
    pub pool_rules: Vec<PoolRule>,
    /// Pool for messages no rule matches.
    #[serde(default = "default_pool_name")]
    pub default_pool: String,
    /// Header naming the tenant for `pool_rule.tenant` matches.
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    /// Domain → "host:port" (or "ip:port") smarthost; overrides the MX lookup.
    #[serde(default)]
    pub transport: BTreeMap<String, String>,
    /// DKIM keys, one per signing domain (the sender's domain picks the key).
    #[serde(default, rename = "dkim")]
    pub dkim: Vec<DkimConfig>,
    /// Scheduler tuning.
    #[serde(default)]
    pub queue: QueueTuning,
    /// Certificate checks for `tls = "required"`.
    #[serde(default)]
    pub tls: TlsClientConfig,
    /// TCP port of MX hosts (25; labs and tests use a high port).
    #[serde(default = "default_mx_port")]
    pub mx_port: u16,
    /// JSON-lines delivery log; none means log records only go to tracing.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_mx_port() -> u16 {
    25
}
fn default_pool_name() -> String {
    "default".into()
}
fn default_tenant_header() -> String {
    "X-Tenant".into()
}

/// Where DNS questions go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Resolver addresses ("127.0.0.1:53"); tried in order.
    pub servers: Vec<SocketAddr>,
    /// Per-query timeout.
    #[serde(default = "default_dns_timeout")]
    pub timeout: Dur,
}

fn default_dns_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

/// How STARTTLS is used toward a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS when offered, any certificate accepted (RFC 7435 opportunistic security:
    /// encryption against passive listeners; most MX certificates do not match the MX name).
    Opportunistic,
    /// STARTTLS must succeed with a certificate valid for the MX host name (system roots
    /// plus `tls.ca_file`), otherwise the message is deferred.
    Required,
    /// Never STARTTLS.
    Off,
}

/// Shaping knobs; every field optional so a provider block overrides only what it names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingFields {
    /// Most simultaneous connections to the site, all sources together (default 10).
    pub max_connections: Option<u32>,
    /// Most simultaneous connections to the site from one source (default: max_connections).
    pub max_connections_per_source: Option<u32>,
    /// Messages sent over one connection before it is closed (default 100).
    pub messages_per_connection: Option<u32>,
    /// Messages per period to the site, all sources together ("100/s"); none = no limit.
    pub message_rate: Option<Rate>,
    /// Messages per period to the site from one source.
    pub source_message_rate: Option<Rate>,
    /// New connections per period to the site, all sources together.
    pub connection_rate: Option<Rate>,
    /// New connections per period to the site from one source.
    pub source_connection_rate: Option<Rate>,
    /// STARTTLS policy (default opportunistic).
    pub tls: Option<TlsPolicy>,
    /// Delays between attempts; the last one repeats (default 5m 10m 30m 1h 2h 4h).
    pub retry: Option<Vec<Dur>>,
    /// Random spread added to each retry delay, as a fraction of it (default 0.1).
    pub retry_jitter: Option<f64>,
    /// Age after which a message still not delivered bounces (default 5d).
    pub max_age: Option<Dur>,
    /// TCP connect timeout per MX address (default 30s).
    pub connect_timeout: Option<Dur>,
    /// Timeout for each SMTP reply (default 5m).
    pub command_timeout: Option<Dur>,
    /// Share of the normal rate and connections used right after a suspension ends
    /// (default 0.1); it doubles every `ramp_step` until back to full.
    pub ramp_start: Option<f64>,
    /// How often the ramp doubles (default 1m).
    pub ramp_step: Option<Dur>,
}

/// A provider: the domains and MX suffixes that belong to it, and its shaping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Site name used in queues, logs and metrics.
    pub name: String,
    /// Recipient domains served by this provider (exact, case-insensitive).
    #[serde(default)]
    pub domains: Vec<String>,
    /// MX host suffixes (".google.com"): a domain whose MX hosts end so belongs here.
    #[serde(default)]
    pub mx_suffixes: Vec<String>,
    /// The overrides.
    #[serde(default)]
    pub shaping: ShapingFields,
}

/// What an adaptive rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffAction {
    /// Stop sending from the source to the site for `duration`, then ramp back.
    Suspend,
    /// Multiply the current rate and connection share by `factor`, then ramp back.
    Reduce,
}

/// "When replies like this come back N times in a window, back off".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffRule {
    /// Reply code prefix: "421", "45", "4".
    pub code: String,
    /// Regex over "<code> <enhanced code> <text>" (case-sensitive unless `(?i)`).
    #[serde(default)]
    pub text: Option<String>,
    /// How many matches in which window fire the rule (default "1 in 1m").
    #[serde(default)]
    pub threshold: Option<Threshold>,
    /// Suspend or reduce.
    pub action: BackoffAction,
    /// Suspension length (required for `suspend`).
    #[serde(default)]
    pub duration: Option<Dur>,
    /// Rate multiplier for `reduce` (default 0.5).
    #[serde(default)]
    pub factor: Option<f64>,
}

/// A named set of sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    /// At least one.
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
}

/// One egress identity: the local address connections bind to and the EHLO name that
/// matches its reverse DNS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique across pools; used in logs, metrics and suspension state.
    pub name: String,
    /// Local address to bind.
    pub ip: IpAddr,
    /// EHLO name.
    pub ehlo: String,
    /// Relative share within the pool (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Daily caps while the IP warms up.
    #[serde(default)]
    pub warmup: Option<Warmup>,
}

fn one() -> u32 {
    1
}

/// A warmup plan: on day N after `start` at most `daily_caps[N]` messages; past the
/// list, no cap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// First day of the plan, "YYYY-MM-DD" (UTC).
    pub start: String,
    /// Messages allowed per UTC day, day 0 first.
    pub daily_caps: Vec<u64>,
}

/// Picks a pool for a message. All given conditions must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRule {
    /// Exact envelope sender (case-insensitive).
    #[serde(default)]
    pub sender: Option<String>,
    /// Envelope sender domain (case-insensitive).
    #[serde(default)]
    pub sender_domain: Option<String>,
    /// Value of the tenant header.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Pool to use.
    pub pool: String,
}

/// DKIM key for one signing domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// `d=`; messages whose envelope sender is in this domain are signed.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// PEM private key (PKCS#8; RSA also PKCS#1).
    pub key_file: PathBuf,
    /// "rsa-sha256" or "ed25519-sha256".
    pub algorithm: String,
    /// Headers to sign (default From, To, Subject, Date, Message-ID, MIME-Version, Content-Type).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

/// Scheduler tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTuning {
    /// Most messages waiting in one (source, site) ready queue; the rest stay scheduled.
    #[serde(default = "default_ready")]
    pub ready_queue_size: usize,
    /// How often the scheduler looks for due messages.
    #[serde(default = "default_tick")]
    pub tick: Dur,
    /// How long a failed DNS lookup or an unroutable domain waits before the next try.
    #[serde(default = "default_dns_retry")]
    pub dns_retry: Dur,
    /// How long an outbound connection whose ready queue ran dry stays open waiting for
    /// more mail of its route before it says QUIT (a connection per message costs both
    /// ends a handshake, EHLO and QUIT). `"0s"` closes at once.
    #[serde(default = "default_connection_idle")]
    pub connection_idle: Dur,
}

impl Default for QueueTuning {
    fn default() -> Self {
        Self {
            ready_queue_size: default_ready(),
            tick: default_tick(),
            dns_retry: default_dns_retry(),
            connection_idle: default_connection_idle(),
        }
    }
}

fn default_ready() -> usize {
    1000
}
fn default_tick() -> Dur {
    Dur(std::time::Duration::from_millis(50))
}
fn default_dns_retry() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn default_connection_idle() -> Dur {
    Dur(std::time::Duration::from_secs(2))
}

/// Trust anchors for `tls = "required"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// Extra CA certificates (PEM) trusted besides `/etc/ssl/certs/ca-certificates.crt`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}
