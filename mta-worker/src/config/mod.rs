//! The worker's TOML configuration: serde structs (unknown fields are errors) plus the
//! semantic checks serde cannot express, each reported with file, line and field.

mod error;
mod units;

pub use error::ConfigError;
pub use units::{parse_duration, parse_size, ByteSize, HumanDuration};

use error::{line_of_key, line_of_offset};
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name used in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// Durable message store.
    pub spool: SpoolConfig,
    /// Protocol limits.
    #[serde(default)]
    pub limits: Limits,
    /// Who may relay without authenticating.
    #[serde(default)]
    pub relay: RelayConfig,
    /// Certificate for STARTTLS and implicit TLS; required by `submission` and `smtps` listeners.
    pub tls: Option<TlsConfig>,
    /// SMTP AUTH credentials; required by `submission` and `smtps` listeners.
    pub auth: Option<AuthConfig>,
    /// SMTP listeners, one table per role (each may bind several addresses).
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Admin/status HTTP endpoint.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Outbound delivery; without this table the worker only accepts and spools mail.
    pub outbound: Option<OutboundConfig>,
}

/// `[outbound]`: where the delivery side's own file is, and its admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The outbound file: DNS, shaping, backoff, pools, transport, DKIM (see
    /// `mta-worker/examples/shaping.toml`). Re-read on SIGHUP; a bad file changes nothing.
    pub file: PathBuf,
    /// Queue admin API (`GET /queues`, suspend, resume, flush, bounce); loopback by default.
    #[serde(default = "default_outbound_admin")]
    pub admin_listen: SocketAddr,
    /// File holding the bearer token that mutating admin requests must present; without
    /// it every mutating request is refused (401).
    pub token_file: Option<PathBuf>,
}

fn default_outbound_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8026))
}

/// Spool location and group-commit tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory holding `data/`, `tmp/`; created if missing.
    pub dir: PathBuf,
    /// Most messages made durable together in one group commit.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How a batch's segment file is flushed: `fdatasync` of that file (default), or
    /// `syncfs` (one flush of the whole file system; only sensible when the spool has a
    /// file system of its own).
    #[serde(default)]
    pub flush: FlushMode,
}

/// Disk flush strategy of a group commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    #[default]
    Fdatasync,
    Syncfs,
}

fn default_max_batch() -> usize {
    512
}

/// Protocol limits; each violation has its own reply code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted (552 5.3.4 beyond), advertised in EHLO SIZE.
    pub max_message_size: ByteSize,
    /// Recipients per message (452 4.5.3 beyond).
    pub max_recipients: usize,
    /// Longest line, CRLF included (500 5.5.2 beyond). RFC 5321 says 1000.
    pub max_line_length: usize,
    /// Longest wait for one complete command line (421 4.4.2).
    pub command_timeout: HumanDuration,
    /// Longest time for a whole DATA/BDAT transfer (421 4.4.2).
    pub data_timeout: HumanDuration,
    /// Longest silence from the client in any state (421 4.4.2).
    pub idle_timeout: HumanDuration,
    /// Concurrent SMTP connections in total (421 4.7.0 beyond).
    pub max_connections: usize,
    /// Concurrent SMTP connections per client address (421 4.7.0 beyond).
    pub max_connections_per_ip: usize,
    /// Rejected commands tolerated per session before 421 and disconnect.
    pub max_bad_commands: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: ByteSize(25 * 1024 * 1024),
            max_recipients: 100,
            max_line_length: 1000,
            command_timeout: HumanDuration(Duration::from_secs(300)),
            data_timeout: HumanDuration(Duration::from_secs(600)),
            idle_timeout: HumanDuration(Duration::from_secs(300)),
            max_connections: 1000,
            max_connections_per_ip: 100,
            max_bad_commands: 10,
        }
    }
}

/// Relay policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Client networks (CIDR) allowed to relay on `relay` listeners without AUTH.
    #[serde(default)]
    pub networks: Vec<IpNet>,
}

/// PEM certificate chain and private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// SMTP AUTH credential source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File of `user:argon2-PHC-hash` lines (`#` comments allowed).
    pub users_file: PathBuf,
}

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Port 25 style: relay for `relay.networks`, STARTTLS offered when TLS is configured.
    Relay,
    /// Port 587 style: STARTTLS, then AUTH, before MAIL.
    Submission,
    /// Port 465 style: implicit TLS, then AUTH, before MAIL.
    Smtps,
}

/// One listener role bound on one or more addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Role of these sockets.
    pub role: Role,
    /// `ip:port` pairs, e.g. the VIP on loopback and the host address.
    pub addresses: Vec<SocketAddr>,
}

/// Admin endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where `GET /status` and `GET /metrics` are served; loopback by default. Omit to disable.
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8025))),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "mta_worker=debug"; `RUST_LOG` overrides it.
    pub level: Option<String>,
    /// JSON-lines reception log (one record per accepted or rejected message).
    pub reception_log: Option<PathBuf>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `path` only labels errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start)).unwrap_or(0);
            let (field, message) = split_toml_message(e.message());
            ConfigError::Invalid {
                file: path.to_path_buf(),
                line,
                field,
                message,
            }
        })?;
        cfg.validate(path, text)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let err = |section: &str, index: usize, key: &str, message: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            line: line_of_key(text, section, index, key),
            field: if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            },
            message,
        };
        if self.hostname.trim().is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(err(
                "",
                0,
                "hostname",
                "must be a host name without spaces".into(),
            ));
        }
        let l = &self.limits;
        if !(80..=65536).contains(&l.max_line_length) {
            return Err(err(
                "limits",
                0,
                "max_line_length",
                "must be between 80 and 65536 (RFC 5321: 1000)".into(),
            ));
        }
        for (key, v) in [
            ("max_recipients", l.max_recipients),
            ("max_connections", l.max_connections),
            ("max_connections_per_ip", l.max_connections_per_ip),
            ("max_message_size", l.max_message_size.0 as usize),
        ] {
            if v == 0 {
                return Err(err("limits", 0, key, "must be greater than 0".into()));
            }
        }
        if self.spool.max_batch == 0 {
            return Err(err(
                "spool",
                0,
                "max_batch",
                "must be greater than 0".into(),
            ));
        }
        if self.listeners.is_empty() {
            return Err(err(
                "",
                0,
                "listener",
                "at least one [[listener]] is required".into(),
            ));
        }
        for (i, lst) in self.listeners.iter().enumerate() {
            if lst.addresses.is_empty() {
                return Err(err(
                    "listener",
                    i,
                    "addresses",
                    "needs at least one address".into(),
                ));
            }
            if matches!(lst.role, Role::Submission | Role::Smtps) {
                if self.tls.is_none() {
                    return Err(err(
                        "listener",
                        i,
                        "role",
                        format!("{:?} listeners need a [tls] section", lst.role).to_lowercase(),
                    ));
                }
                if self.auth.is_none() {
                    return Err(err(
                        "listener",
                        i,
                        "role",
                        format!("{:?} listeners need an [auth] section", lst.role).to_lowercase(),
                    ));
                }
            }
        }
        if let Some(tls) = &self.tls {
            for (key, p) in [("cert", &tls.cert), ("key", &tls.key)] {
                if !p.is_file() {
                    return Err(err(
                        "tls",
                        0,
                        key,
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        if let Some(auth) = &self.auth {
            if !auth.users_file.is_file() {
                return Err(err(
                    "auth",
                    0,
                    "users_file",
                    format!("{} is not a readable file", auth.users_file.display()),
                ));
            }
        }
        Ok(())
    }
}

/// toml's messages read like "unknown field `x`, expected one of ..."; the field name is
/// pulled out so every error has the same file:line: field: message shape.
fn split_toml_message(msg: &str) -> (String, String) {
    let field = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.contains("field"))
        .unwrap_or("-")
        .to_string();
    (field, msg.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "hostname = \"mx.test\"\n[spool]\ndir = \"/tmp/x\"\n[[listener]]\nrole = \"relay\"\naddresses = [\"127.0.0.1:2525\"]\n";

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(Path::new("t.toml"), MIN).unwrap();
        assert_eq!(c.limits.max_line_length, 1000);
        assert_eq!(c.listeners[0].role, Role::Relay);
    }

    #[test]
    fn unknown_field_names_file_line_field() {
        let text = format!("{MIN}bogus = 1\n");
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:7: bogus:"), "{e}");
    }

    #[test]
    fn bad_duration_names_line() {
        let text = format!("{MIN}[limits]\ncommand_timeout = \"5x\"\n");
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:8:"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn semantic_error_names_line_and_field() {
        let text = format!("{MIN}[limits]\nmax_line_length = 10\n");
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:8: limits.max_line_length:"), "{e}");
        let text = MIN.replace("\"relay\"", "\"submission\"");
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:5: listener.role:"), "{e}");
    }
}
