//! The config file's shape: serde structs, one per TOML table, every field documented.
//! Unknown keys are errors (`deny_unknown_fields`), because a misspelt key that is
//! silently ignored is a production incident waiting for its day.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;
use super::values::{IpPrefix, MacSetting};

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how the XDP program runs, and how it builds outer frames.
    pub dataplane: DataplaneCfg,
    /// How backends are health-checked.
    #[serde(default)]
    pub health: HealthCfg,
    /// Queue-aware weights fed by the backends' `mta-worker` status endpoint.
    #[serde(default)]
    pub feedback: FeedbackCfg,
    /// The local HTTP API and metrics endpoint.
    #[serde(default)]
    pub api: ApiCfg,
    /// The virtual services, each with its backends (`[[vip]]`).
    #[serde(rename = "vip", default)]
    pub vips: Vec<VipCfg>,
}

/// XDP attachment mode.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver: the fast path.
    #[default]
    Native,
    /// In the kernel's generic (skb) path: works on any NIC, much slower. Logged loudly.
    Generic,
}

/// `[dataplane]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataplaneCfg {
    /// Interfaces the balancer program attaches to (the ones VIP traffic arrives on).
    pub interfaces: Vec<String>,
    /// `native` (default) or `generic`.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Source MAC of forwarded frames; `auto` reads the first interface's address.
    #[serde(default = "auto_mac")]
    pub own_mac: MacSetting,
    /// Destination MAC of forwarded frames (the next hop toward the backends); `auto`
    /// resolves the default gateway from the kernel's route and neighbour tables.
    #[serde(default = "auto_mac")]
    pub nexthop_mac: MacSetting,
    /// Outer IPv4 source address; needed when any backend is IPv4.
    #[serde(default)]
    pub encap_src4: Option<std::net::Ipv4Addr>,
    /// Outer IPv6 source address; needed when any backend is IPv6.
    #[serde(default)]
    pub encap_src6: Option<std::net::Ipv6Addr>,
    /// Low bits of the outer source that vary per flow, to spread flows over the
    /// backends' receive queues (0 = fixed source).
    #[serde(default)]
    pub src_vary_bits: u8,
    /// Largest IP packet (outer header included) the path to the backends carries.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// bpffs directory where the program, its maps and its link are pinned, so that a
    /// restarted daemon adopts them and forwarding never stops.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Where the daemon keeps its name → id allocation between runs: pinned flows carry
    /// backend ids, so a restarted daemon must give every backend the same id again.
    #[serde(default = "default_id_file")]
    pub id_file: PathBuf,
}

fn default_id_file() -> PathBuf {
    PathBuf::from("/var/lib/balancer/ids.json")
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/smtp-balancer")
}

fn auto_mac() -> MacSetting {
    MacSetting::Auto
}
fn default_mtu() -> u16 {
    1500
}

/// Health-check protocol.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthMode {
    /// Banner 220, EHLO → 250, QUIT: proves the MTA answers, not just the kernel.
    #[default]
    Smtp,
    /// A TCP connect only.
    Tcp,
}

/// `[health]`. The defaults remove a dead backend in under a second. Worst case, a hung
/// MTA (every check runs into the timeout) dying just after a good check: the next
/// regular check starts within `interval` and fails after `timeout`, then `fall - 1`
/// confirmations follow `fast_interval` apart: 250 + 200 + 2 × (10 + 200) = 870 ms. An
/// MTA that refuses connections or answers 4xx/5xx fails fast: about 270 ms.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCfg {
    /// `smtp` (default) or `tcp`.
    pub mode: HealthMode,
    /// Port checked on each backend's own address, unless the backend sets `health_port`.
    pub port: u16,
    /// Time between the starts of two checks of one backend.
    pub interval: HumanDuration,
    /// Budget for one whole check (connect, banner, EHLO); must be below `interval`.
    pub timeout: HumanDuration,
    /// Pause before the next check after a failed one, until `fall` failures in a row
    /// confirm the death (HAProxy's `fastinter`): a dead backend leaves quickly without
    /// checking healthy ones more often. After that, checks return to `interval`.
    pub fast_interval: HumanDuration,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take an up backend out.
    pub fall: u32,
    /// Name sent in `EHLO`.
    pub ehlo_name: String,
}

impl Default for HealthCfg {
    fn default() -> Self {
        HealthCfg {
            mode: HealthMode::Smtp,
            port: 25,
            interval: HumanDuration::from_millis(250),
            timeout: HumanDuration::from_millis(200),
            fast_interval: HumanDuration::from_millis(10),
            rise: 2,
            fall: 3,
            ehlo_name: "balancer.localdomain".into(),
        }
    }
}

/// `[feedback]`: queue-aware weights.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackCfg {
    /// Off by default: effective weight = configured weight.
    pub enabled: bool,
    /// Port of the backends' status endpoint (`http://<backend addr>:<port>/status`),
    /// unless a backend sets `status_url`.
    pub status_port: u16,
    /// Time between two polls of every backend.
    pub interval: HumanDuration,
    /// Budget for one poll.
    pub timeout: HumanDuration,
    /// A backend whose backlog exceeds `high_ratio` × the median of its VIP's backends
    /// (and `min_backlog`) loses weight.
    pub high_ratio: f64,
    /// It regains weight only once back below `low_ratio` × median (hysteresis).
    pub low_ratio: f64,
    /// Backlogs below this never count as overloaded (idle fleets are noisy).
    pub min_backlog: u64,
    /// Largest change of the weight factor per interval (fraction of configured weight).
    pub max_step: f64,
    /// The factor never goes below this: feedback sheds load, it never drains.
    pub min_factor: f64,
}

impl Default for FeedbackCfg {
    fn default() -> Self {
        FeedbackCfg {
            enabled: false,
            status_port: 8025,
            interval: HumanDuration::from_millis(2000),
            timeout: HumanDuration::from_millis(500),
            high_ratio: 2.0,
            low_ratio: 1.5,
            min_backlog: 100,
            max_step: 0.1,
            min_factor: 0.1,
        }
    }
}

/// `[api]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiCfg {
    /// Listen address; loopback by default.
    pub listen: SocketAddr,
    /// File holding the bearer token that mutating requests must present. Without it,
    /// every mutating request is refused.
    pub token_file: Option<PathBuf>,
}

impl Default for ApiCfg {
    fn default() -> Self {
        ApiCfg {
            listen: SocketAddr::from(([127, 0, 0, 1], 9110)),
            token_file: None,
        }
    }
}

/// How a VIP hashes clients onto its ring.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HashMode {
    /// Client address and port: connections of one host spread over backends.
    #[default]
    Maglev,
    /// Client address only: a sending host always lands on one backend.
    StickySource,
}

/// `[vip.syn_guard]`: per-client-prefix new-connection rate limit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SynGuardCfg {
    /// New flows per second per client prefix.
    pub rate: u32,
    /// Burst above the rate.
    pub burst: u32,
    /// IPv4 prefix length clients are grouped by.
    #[serde(default = "default_prefix4")]
    pub prefix4: u8,
    /// IPv6 prefix length clients are grouped by.
    #[serde(default = "default_prefix6")]
    pub prefix6: u8,
}

fn default_prefix4() -> u8 {
    24
}
fn default_prefix6() -> u8 {
    64
}

/// `[[vip]]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VipCfg {
    /// Unique name; keys the VIP's id across reloads.
    pub name: String,
    /// The service address clients connect to.
    pub addr: IpAddr,
    /// TCP ports steered (all share one ring).
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    /// `maglev` (default) or `sticky-source`.
    #[serde(default)]
    pub hash: HashMode,
    /// Maglev table size: a prime up to 65537.
    #[serde(default = "default_ring")]
    pub ring_size: u32,
    /// Allowed client prefixes; empty = open to all.
    #[serde(default)]
    pub acl: Vec<IpPrefix>,
    /// Optional new-connection rate limit.
    #[serde(default)]
    pub syn_guard: Option<SynGuardCfg>,
    /// The VIP's backends (`[[vip.backend]]`).
    #[serde(rename = "backend", default)]
    pub backends: Vec<BackendCfg>,
}

fn default_ports() -> Vec<u16> {
    vec![25, 587, 465]
}
fn default_ring() -> u32 {
    balancer_ebpf::MAGLEV_RING_MAX
}

/// `[[vip.backend]]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendCfg {
    /// Unique over the whole file; keys the backend's id, its API URL and its logs.
    pub name: String,
    /// Address packets are encapsulated to, and health-checked at.
    pub addr: IpAddr,
    /// Relative share of new flows; 0 = drained.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form label (e.g. the outbound IP pool this MTA sends from), shown in status.
    #[serde(default)]
    pub pool: Option<String>,
    /// Health-check port for this backend (default: `[health] port`).
    #[serde(default)]
    pub health_port: Option<u16>,
    /// Status URL for queue-aware weights (default: from `[feedback] status_port`).
    #[serde(default)]
    pub status_url: Option<String>,
}

fn default_weight() -> u32 {
    100
}
