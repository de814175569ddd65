//! One SMTP client connection: connect from the source address to the first MX address
//! that answers, EHLO, STARTTLS per policy, then transactions. Transactions are driven
//! command by command on mail-send's low-level `SmtpClient` (its `send()` gives up on the
//! first refused RCPT), so a partly refused recipient list still delivers to the rest.

use crate::egress::socket::{connect_from, ConnectError};
use crate::queue::state::Route;
use crate::shaping::config::SourceConfig;
use crate::shaping::{Shaping, TlsPolicy};
use mail_send::SmtpClient;
use smtp_proto::{Response, EXT_8BIT_MIME, EXT_PIPELINING, EXT_START_TLS};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::tls::TlsConnectors;

/// An SMTP reply, from the server or made up locally for network failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: String,
    pub text: String,
}

impl Reply {
    fn from_resp(r: &Response<String>) -> Self {
        let enhanced = if r.esc[0] != 0 {
            format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2])
        } else {
            String::new()
        };
        Self {
            code: r.code,
            enhanced,
            text: r.message.replace(['\r', '\n'], " ").trim().to_string(),
        }
    }

    pub fn local(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: enhanced.into(),
            text: text.into(),
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// "550 5.1.1 text".
    pub fn line(&self) -> String {
        if self.enhanced.is_empty() {
            format!("{} {}", self.code, self.text)
        } else {
            format!("{} {} {}", self.code, self.enhanced, self.text)
        }
    }

    /// Enhanced code, or one derived from the basic code class.
    pub fn status(&self) -> String {
        if !self.enhanced.is_empty() {
            return self.enhanced.clone();
        }
        format!("{}.0.0", self.code / 100)
    }
}

fn net_err(e: impl std::fmt::Display) -> Reply {
    Reply::local(451, "4.4.2", format!("connection lost: {e}"))
}

enum Stream {
    Plain(SmtpClient<TcpStream>),
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
}

macro_rules! on {
    ($s:expr, $c:ident => $e:expr) => {
        match $s {
            Stream::Plain($c) => $e,
            Stream::Tls($c) => $e,
        }
    };
}

/// An open, greeted connection.
pub struct Session {
    stream: Stream,
    pub mx: String,
    pub peer: SocketAddr,
    /// TLS outcome for the log: "off", "none" (not offered), "tls TLSv1_3 ..." .
    pub tls: String,
    caps: u32,
    timeout: Duration,
    /// Set after an I/O error: the connection must not be reused.
    pub broken: bool,
}

/// Why no session could be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The source address is not on this host.
    SourceUnavailable(String),
    /// No MX address gave a usable session; the last reply and the host that gave it.
    Failed {
        reply: Reply,
        mx: Option<String>,
        tls: String,
    },
}

struct AddrFail {
    reply: Reply,
    tls: String,
    /// Opportunistic TLS failed mid-handshake: worth one more try in plaintext.
    retry_plain: bool,
    source_missing: Option<String>,
}

async fn try_addr(
    host: &str,
    addr: SocketAddr,
    src: &SourceConfig,
    sh: &Shaping,
    tls: &TlsConnectors,
    allow_tls: bool,
) -> Result<Session, AddrFail> {
    let fail = |reply: Reply, tls: &str| AddrFail {
        reply,
        tls: tls.to_string(),
        retry_plain: false,
        source_missing: None,
    };
    let tcp = match connect_from(src.ip, addr, sh.connect_timeout).await {
        Ok(s) => s,
        Err(e @ ConnectError::SourceUnavailable { .. }) => {
            return Err(AddrFail {
                reply: Reply::local(451, "4.4.0", e.to_string()),
                tls: "none".into(),
                retry_plain: false,
                source_missing: Some(e.to_string()),
            })
        }
        Err(e) => return Err(fail(Reply::local(451, "4.4.1", e.to_string()), "none")),
    };
    let mut c = SmtpClient {
        stream: tcp,
        timeout: sh.command_timeout,
    };
    let greet = tokio::time::timeout(sh.command_timeout, c.read())
        .await
        .map_err(|_| fail(net_err("greeting timed out"), "none"))?
        .map_err(|e| fail(net_err(e), "none"))?;
    if !(200..300).contains(&greet.code) {
        let r = Reply::from_resp(&greet);
        let _ = tokio::time::timeout(Duration::from_secs(2), c.cmd(b"QUIT\r\n")).await;
        return Err(fail(r, "none"));
    }
    let ehlo = c.ehlo(&src.ehlo).await.map_err(|e| match e {
        mail_send::Error::UnexpectedReply(r) => fail(Reply::from_resp(&r), "none"),
        e => fail(net_err(e), "none"),
    })?;
    let offered = ehlo.has_capability(EXT_START_TLS);
    let policy = sh.tls;
    let mut session = Session {
        stream: Stream::Plain(c),
        mx: host.to_string(),
        peer: addr,
        tls: if policy == TlsPolicy::Off {
            "off".into()
        } else {
            "none".into()
        },
        caps: ehlo.capabilities,
        timeout: sh.command_timeout,
        broken: false,
    };
    if policy == TlsPolicy::Off || (!allow_tls && policy == TlsPolicy::Opportunistic) {
        return Ok(session);
    }
    if !offered {
        if policy == TlsPolicy::Required {
            session.quit().await;
            return Err(fail(
                Reply::local(
                    451,
                    "4.7.4",
                    format!("TLS required but {host} does not offer STARTTLS"),
                ),
                "failed: not offered",
            ));
        }
        return Ok(session);
    }
    let Stream::Plain(mut c) = session.stream else {
        unreachable!("fresh session is plaintext")
    };
    let r = c
        .cmd(b"STARTTLS\r\n")
        .await
        .map_err(|e| fail(net_err(e), "failed"))?;
    if r.code != 220 {
        let reply = Reply::from_resp(&r);
        if policy == TlsPolicy::Required {
            return Err(fail(reply, "failed: STARTTLS refused"));
        }
        session.stream = Stream::Plain(c);
        session.tls = format!("failed: STARTTLS refused ({})", reply.code);
        return Ok(session);
    }
    let connector = if policy == TlsPolicy::Required {
        &tls.verified
    } else {
        &tls.any_cert
    };
    let mut t = match c.into_tls(connector, host).await {
        Ok(t) => t,
        Err(e) => {
            let outcome = format!("failed: {e}");
            return Err(AddrFail {
                reply: Reply::local(
                    451,
                    "4.7.5",
                    format!("TLS handshake with {host} failed: {e}"),
                ),
                tls: outcome,
                retry_plain: policy == TlsPolicy::Opportunistic,
                source_missing: None,
            });
        }
    };
    let (_, conn) = t.stream.get_ref();
    session.tls = format!(
        "tls {:?} {:?}",
        conn.protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        conn.negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default()
    )
    .replace('"', "");
    let ehlo = t
        .ehlo(&src.ehlo)
        .await
        .map_err(|e| fail(net_err(e), &session.tls))?;
    session.caps = ehlo.capabilities;
    session.stream = Stream::Tls(Box::new(t));
    Ok(session)
}

/// Opens a session to the first reachable MX of `route`, in preference order.
pub async fn open(
    route: &Route,
    src: &SourceConfig,
    sh: &Shaping,
    tls: &TlsConnectors,
) -> Result<Session, OpenError> {
    let mut last: Option<(Reply, String, String)> = None;
    for t in &route.targets {
        for addr in t.addrs.iter().filter(|a| a.is_ipv4() == src.ip.is_ipv4()) {
            match try_addr(&t.host, *addr, src, sh, tls, true).await {
                Ok(s) => return Ok(s),
                Err(f) if f.source_missing.is_some() => {
                    return Err(OpenError::SourceUnavailable(
                        f.source_missing.unwrap_or_default(),
                    ))
                }
                Err(f) if f.retry_plain => {
                    tracing::info!(mx = %t.host, tls = %f.tls, "opportunistic TLS failed; retrying in plaintext");
                    match try_addr(&t.host, *addr, src, sh, tls, false).await {
                        Ok(mut s) => {
                            s.tls = f.tls;
                            return Ok(s);
                        }
                        Err(f2) => last = Some((f2.reply, t.host.clone(), f.tls)),
                    }
                }
                Err(f) => last = Some((f.reply, t.host.clone(), f.tls)),
            }
        }
    }
    let (reply, mx, tls) = last.map(|(r, m, t)| (r, Some(m), t)).unwrap_or_else(|| {
        (
            Reply::local(
                451,
                "4.4.4",
                format!("no MX address of the same family as source {}", src.ip),
            ),
            None,
            "none".into(),
        )
    });
    Err(OpenError::Failed { reply, mx, tls })
}

/// Dot-stuffs and CRLF-normalises `data`, ending with the terminating dot line.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 8);
    let mut lines = data.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && line.is_empty() {
            break;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl Session {
    /// One transaction. Returns one reply per recipient (in order); `Err` when the
    /// connection failed (the reply then applies to every recipient not yet answered).
    pub async fn send(
        &mut self,
        sender: &str,
        rcpts: &[&str],
        data: &[u8],
        body_8bit: bool,
    ) -> Result<Vec<Reply>, Reply> {
        let r = self.transaction(sender, rcpts, data, body_8bit).await;
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    async fn transaction(
        &mut self,
        sender: &str,
        rcpts: &[&str],
        data: &[u8],
        body_8bit: bool,
    ) -> Result<Vec<Reply>, Reply> {
        let body = if body_8bit && self.caps & EXT_8BIT_MIME != 0 {
            " BODY=8BITMIME"
        } else {
            ""
        };
        let mut cmds = vec![format!("MAIL FROM:<{sender}>{body}\r\n")];
        cmds.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
        let replies: Vec<Reply> = if self.caps & EXT_PIPELINING != 0 {
            let rs = on!(&mut self.stream, c => c.cmds(cmds.iter()).await).map_err(net_err)?;
            rs.iter().map(Reply::from_resp).collect()
        } else {
            let mut out = Vec::new();
            for (i, cmd) in cmds.iter().enumerate() {
                let r = Reply::from_resp(
                    &on!(&mut self.stream, c => c.cmd(cmd.as_bytes()).await).map_err(net_err)?,
                );
                let stop = i == 0 && !r.is_positive();
                out.push(r);
                if stop {
                    break;
                }
            }
            out
        };
        let mail = replies
            .first()
            .cloned()
            .ok_or_else(|| net_err("no reply to MAIL"))?;
        if !mail.is_positive() {
            self.rset().await;
            return Ok(vec![mail; rcpts.len()]);
        }
        let mut per: Vec<Reply> = replies.into_iter().skip(1).collect();
        if per.len() != rcpts.len() {
            return Err(net_err("reply count mismatch"));
        }
        if !per.iter().any(Reply::is_positive) {
            self.rset().await;
            return Ok(per);
        }
        let r = Reply::from_resp(
            &on!(&mut self.stream, c => c.cmd(b"DATA\r\n").await).map_err(net_err)?,
        );
        let final_reply = if r.code != 354 {
            self.rset().await;
            r
        } else {
            let stuffed = dot_stuff(data);
            let timeout = self.timeout;
            let fut = async {
                on!(&mut self.stream, c => {
                    c.stream.write_all(&stuffed).await.map_err(net_err)?;
                    c.stream.flush().await.map_err(net_err)?;
                    c.read().await.map_err(net_err)
                })
            };
            let resp = tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| net_err("timeout after DATA"))??;
            Reply::from_resp(&resp)
        };
        for p in per.iter_mut() {
            if p.is_positive() {
                *p = final_reply.clone();
            }
        }
        Ok(per)
    }

    async fn rset(&mut self) {
        if on!(&mut self.stream, c => c.cmd(b"RSET\r\n").await).is_err() {
            self.broken = true;
        }
    }

    /// Polite close; errors do not matter any more.
    pub async fn quit(self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            on!(self.stream, c => c.quit().await)
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\n.\nc"), b"a\r\n..\r\nc\r\n.\r\n");
    }
}
