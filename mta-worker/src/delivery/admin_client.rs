//! Client side of the queue admin API, for the `mta-worker queues` subcommand.
//!
//! The CLI makes one small request per run to a loopback address, so a minimal HTTP/1.1
//! exchange over a tokio socket (`Connection: close`, read to end) is all it needs; a
//! full client stack would be weight without benefit. Errors are worded for an operator:
//! a refused connection names the address and the likely causes, a 401 says the token
//! is wrong or missing.

use super::admin::QueueReport;
use crate::config::OutboundConfig;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (a queue report of many thousand domains fits).
const MAX_RESPONSE: u64 = 16 << 20;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the queue admin API at {addr}: connection refused (is the worker running, with an [outbound] table? admin_listen may differ)")]
    Refused { addr: SocketAddr },
    #[error("cannot connect to the queue admin API at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("queue admin API at {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("queue admin API at {addr}: no complete answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("queue admin API at {addr} refused the request (401): {}", unauthorized_hint(*.token_sent))]
    Unauthorized { addr: SocketAddr, token_sent: bool },
    #[error("queue admin API at {addr}: HTTP {code}: {body}")]
    Status {
        addr: SocketAddr,
        code: u16,
        body: String,
    },
    #[error("queue admin API at {addr}: malformed answer: {reason}")]
    Malformed { addr: SocketAddr, reason: String },
}

fn unauthorized_hint(token_sent: bool) -> &'static str {
    if token_sent {
        "the bearer token is wrong (compare --token-file or [outbound] token_file with the worker's)"
    } else {
        "no bearer token was sent (set [outbound] token_file in the config, or pass --token-file)"
    }
}

/// What a suspend/resume/flush applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRef {
    Domain(String),
    Site(String),
}

impl TargetRef {
    fn query(&self) -> String {
        match self {
            TargetRef::Domain(d) => format!("domain={}", encode_query(d)),
            TargetRef::Site(s) => format!("site={}", encode_query(s)),
        }
    }
}

/// A connection target plus the token for mutating requests.
#[derive(Debug, Clone)]
pub struct AdminClient {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl AdminClient {
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Self {
            addr,
            token,
            timeout: Duration::from_secs(10),
        }
    }

    /// Where to reach the API of a worker running with `ob`: its `admin_listen`, with a
    /// wildcard address (`0.0.0.0`, `::`) replaced by loopback of the same family.
    pub fn address_of(ob: &OutboundConfig) -> SocketAddr {
        let a = ob.admin_listen;
        match a.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port())
            }
            _ => a,
        }
    }

    /// `GET /queues`.
    pub async fn queues(&self) -> Result<QueueReport, ClientError> {
        let body = self.call("GET", "/queues").await?;
        serde_json::from_str(&body).map_err(|e| ClientError::Malformed {
            addr: self.addr,
            reason: format!("queue report: {e}"),
        })
    }

    /// `POST /queues/suspend?...`; returns the API's one-line answer.
    pub async fn suspend(&self, t: &TargetRef) -> Result<String, ClientError> {
        self.call("POST", &format!("/queues/suspend?{}", t.query()))
            .await
    }

    /// `POST /queues/resume?...`.
    pub async fn resume(&self, t: &TargetRef) -> Result<String, ClientError> {
        self.call("POST", &format!("/queues/resume?{}", t.query()))
            .await
    }

    /// `POST /queues/flush?...` (answer: `flushed N`).
    pub async fn flush(&self, t: &TargetRef) -> Result<String, ClientError> {
        self.call("POST", &format!("/queues/flush?{}", t.query()))
            .await
    }

    /// `POST /queues/bounce/{id}` (answer: `bounced N recipients`).
    pub async fn bounce(&self, queue_id: &str) -> Result<String, ClientError> {
        self.call(
            "POST",
            &format!("/queues/bounce/{}", encode_query(queue_id)),
        )
        .await
    }

    /// One request; the body of a 2xx answer, or the matching error.
    async fn call(&self, method: &str, path: &str) -> Result<String, ClientError> {
        let addr = self.addr;
        let raw = tokio::time::timeout(self.timeout, self.exchange(method, path))
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                timeout: self.timeout,
            })??;
        let http_response::Response { status: code, body } =
            http_response::parse(&raw).map_err(|reason| ClientError::Malformed {
                addr,
                reason: reason.to_string(),
            })?;
        match code {
            200..=299 => Ok(body),
            401 => Err(ClientError::Unauthorized {
                addr,
                token_sent: self.token.is_some(),
            }),
            _ => Err(ClientError::Status {
                addr,
                code,
                body: body.trim().to_string(),
            }),
        }
    }

    async fn exchange(&self, method: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let addr = self.addr;
        let mut s = TcpStream::connect(addr).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::ConnectionRefused {
                ClientError::Refused { addr }
            } else {
                ClientError::Connect { addr, source }
            }
        })?;
        // The token only goes with mutating requests; GET /queues needs none.
        let auth = match (&self.token, method) {
            (Some(t), "POST") => format!("Authorization: Bearer {t}\r\n"),
            _ => String::new(),
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: mta-worker-cli\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let io = |source| ClientError::Io { addr, source };
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut out = Vec::new();
        (&mut s)
            .take(MAX_RESPONSE)
            .read_to_end(&mut out)
            .await
            .map_err(io)?;
        Ok(out)
    }
}

/// Percent-encodes everything but unreserved characters and `:` (site names such as
/// `smarthost:relay.test:2525` stay readable in logs).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            TargetRef::Site("smarthost:relay.test:25".into()).query(),
            "site=smarthost:relay.test:25"
        );
        assert_eq!(
            TargetRef::Domain("a b&c.test".into()).query(),
            "domain=a%20b%26c.test"
        );
    }

    #[tokio::test]
    async fn refused_connection_names_the_address() {
        // Bind then drop: nothing listens on that port any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = AdminClient::new(addr, None).queues().await.unwrap_err();
        assert!(matches!(err, ClientError::Refused { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&addr.to_string()) && text.contains("worker running"),
            "{text}"
        );
    }

    #[test]
    fn wildcard_listen_address_is_reached_on_loopback() {
        let ob = |listen: &str| OutboundConfig {
            file: "x".into(),
            admin_listen: listen.parse().unwrap(),
            token_file: None,
        };
        assert_eq!(
            AdminClient::address_of(&ob("0.0.0.0:8026")),
            "127.0.0.1:8026".parse().unwrap()
        );
        assert_eq!(
            AdminClient::address_of(&ob("[::]:9")),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(
            AdminClient::address_of(&ob("10.0.0.5:8026")),
            "10.0.0.5:8026".parse().unwrap()
        );
    }
}
