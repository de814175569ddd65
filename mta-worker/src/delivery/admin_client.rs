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
        let (code, body) = parse_response(&raw).map_err(|reason| ClientError::Malformed {
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

/// Splits an HTTP/1.1 response into status code and body (plain or chunked).
pub fn parse_response(raw: &[u8]) -> Result<(u16, String), &'static str> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("bad status line")?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("truncated chunk")?);
        b = b.get(size + 2..).ok_or("truncated chunk")?;
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
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope\nEXTRA";
        assert_eq!(parse_response(plain), Ok((401, "nope\n".into())));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Ok((200, "{\"a\":1}".into())));
        let no_len = b"HTTP/1.0 200 OK\r\n\r\nbody";
        assert_eq!(parse_response(no_len), Ok((200, "body".into())));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
    }

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
