//! A minimal HTTP/1.1 client over a tokio socket, for the CLI (talking to the daemon's
//! API) and the feedback poller (talking to the MTAs' status endpoints). Both only ever
//! make one small request per connection to a known local or internal address, so a
//! full client stack would be weight without benefit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted.
const MAX_RESPONSE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("{url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: no response within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: malformed HTTP response: {reason}")]
    Malformed { url: String, reason: &'static str },
}

pub use http_response::Response;

/// `http://host:port/path` split into (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(String, String), ClientError> {
    let bad = |reason| ClientError::Url {
        url: url.to_string(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// is supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let has_port = match authority.rfind(']') {
        Some(b) => authority[b..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// One request; `token` adds `Authorization: Bearer`.
pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let fut = async {
        let (authority, path) = split_url(url)?;
        let io = |source| ClientError::Io {
            url: url.to_string(),
            source,
        };
        let mut s = TcpStream::connect(&authority).await.map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: balancer\r\n"
        );
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .await
            .map_err(io)?;
        http_response::parse(&raw).map_err(|reason| ClientError::Malformed {
            url: url.to_string(),
            reason,
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout {
            url: url.to_string(),
            timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9110/status").unwrap(),
            ("127.0.0.1:9110".into(), "/status".into())
        );
        assert_eq!(
            split_url("http://[::1]/x").unwrap(),
            ("[::1]:80".into(), "/x".into())
        );
        assert!(split_url("https://x/").is_err());
    }
}
