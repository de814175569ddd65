//! One SMTP client connection: connect from the source address to the first MX address
//! that answers, EHLO, STARTTLS per policy, then transactions. Transactions are driven
//! command by command on mail-send's low-level `SmtpClient` (its `send()` gives up on the
//! first refused RCPT), so a partly refused recipient list still delivers to the rest.

use crate::egress::socket::{connect_from, ConnectError};
use crate::queue::state::Route;
use crate::shaping::config::SourceConfig;
use crate::shaping::{Shaping, TlsPolicy};
use mail_send::SmtpClient;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{Response, EXT_8BIT_MIME, EXT_PIPELINING, EXT_START_TLS};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// The dot-stuffed message being sent, kept to reuse its allocation.
    wire: Vec<u8>,
    /// Received bytes not yet parsed into replies.
    rbuf: Vec<u8>,
    /// The next transaction's MAIL/RCPT/DATA went out with the last message body.
    group_sent: bool,
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
        wire: Vec::new(),
        rbuf: Vec::new(),
        group_sent: false,
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
    stuff_into(&mut out, data);
    out.extend_from_slice(b".\r\n");
    out
}

/// Appends `part` dot-stuffed and CRLF-normalised to `out` (no terminating dot line).
/// A part that does not end with a line break gets one, so consecutive parts (a DKIM
/// header, then the message) stuff exactly like their concatenation.
fn stuff_into(out: &mut Vec<u8>, part: &[u8]) {
    out.reserve(part.len() + part.len() / 64 + 8);
    let mut rest = part;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        rest = next;
    }
}

/// The envelope of a transaction, for [`Session::send`]: the message itself and, to
/// pipeline, the one after it.
#[derive(Debug, Clone, Copy)]
pub struct Txn<'a> {
    pub sender: &'a str,
    pub rcpts: &'a [&'a str],
    pub body_8bit: bool,
}

impl Session {
    /// Whether the server offered PIPELINING (RFC 2920).
    pub fn pipelining(&self) -> bool {
        self.caps & EXT_PIPELINING != 0
    }

    /// One transaction for the concatenation of `parts` (e.g. a DKIM header, then the
    /// message). Returns one reply per recipient (in order); `Err` when the connection
    /// failed (the reply then applies to every recipient not yet answered).
    ///
    /// `next`, on a pipelining server, is the transaction the caller will send right
    /// after this one: its MAIL/RCPT/DATA group then travels in the same write as this
    /// message's body (RFC 2920 lets message content start a group), so a steady stream
    /// costs one round trip per message instead of two. The caller must make `next` its
    /// next call to `send` on this session (or drop the session).
    pub async fn send(
        &mut self,
        txn: Txn<'_>,
        parts: &[&[u8]],
        next: Option<Txn<'_>>,
    ) -> Result<Vec<Reply>, Reply> {
        let r = self.transaction(txn, parts, next).await;
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Appends the MAIL, RCPT and DATA commands of `t` to `out`.
    fn push_group(&self, out: &mut Vec<u8>, t: Txn<'_>) {
        out.extend_from_slice(b"MAIL FROM:<");
        out.extend_from_slice(t.sender.as_bytes());
        out.push(b'>');
        if t.body_8bit && self.caps & EXT_8BIT_MIME != 0 {
            out.extend_from_slice(b" BODY=8BITMIME");
        }
        out.extend_from_slice(b"\r\n");
        for r in t.rcpts {
            out.extend_from_slice(b"RCPT TO:<");
            out.extend_from_slice(r.as_bytes());
            out.extend_from_slice(b">\r\n");
        }
        out.extend_from_slice(b"DATA\r\n");
    }

    /// Writes `buf` and reads `n` replies, within the command timeout.
    async fn exchange(&mut self, buf: &[u8], n: usize) -> Result<Vec<Reply>, Reply> {
        let timeout = self.timeout;
        let fut = async {
            if !buf.is_empty() {
                on!(&mut self.stream, c => {
                    c.stream.write_all(buf).await.map_err(net_err)?;
                    c.stream.flush().await.map_err(net_err)?;
                });
            }
            self.read_replies(n).await
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| net_err("reply timed out"))?
    }

    /// Reads `n` replies. Bytes after the last one stay buffered for the next call: with
    /// pipelining, one segment often carries the replies of two transactions.
    async fn read_replies(&mut self, n: usize) -> Result<Vec<Reply>, Reply> {
        let mut out = Vec::with_capacity(n);
        let mut parser = ResponseReceiver::default();
        while out.len() < n {
            if self.rbuf.is_empty() {
                let mut chunk = [0u8; 4096];
                let got =
                    on!(&mut self.stream, c => c.stream.read(&mut chunk).await).map_err(net_err)?;
                if got == 0 {
                    return Err(net_err("connection closed by the server"));
                }
                self.rbuf.extend_from_slice(&chunk[..got]);
            }
            let mut it = self.rbuf.iter();
            match parser.parse(&mut it) {
                Ok(r) => {
                    let used = self.rbuf.len() - it.as_slice().len();
                    self.rbuf.drain(..used);
                    out.push(Reply::from_resp(&r));
                    parser.reset();
                }
                // The parser keeps the partial reply; everything buffered is consumed.
                Err(smtp_proto::Error::NeedsMoreData { .. }) => self.rbuf.clear(),
                Err(_) => return Err(net_err("unparseable reply")),
            }
        }
        Ok(out)
    }

    async fn transaction(
        &mut self,
        txn: Txn<'_>,
        parts: &[&[u8]],
        next: Option<Txn<'_>>,
    ) -> Result<Vec<Reply>, Reply> {
        let rcpts = txn.rcpts;
        let mut replies: Vec<Reply>;
        let data_reply: Option<Reply>;
        if self.pipelining() {
            // RFC 2920: MAIL, every RCPT and DATA in one write (one segment, one wake-up
            // of the server), then one read for all their replies. The group may already
            // be on the wire, sent with the previous message's body.
            let mut group = std::mem::take(&mut self.wire);
            group.clear();
            if !std::mem::take(&mut self.group_sent) {
                self.push_group(&mut group, txn);
            }
            let n = rcpts.len() + 2;
            let rs = self.exchange(&group, n).await;
            self.wire = group;
            replies = rs?;
            data_reply = replies.pop();
            let accepted = replies[0].is_positive() && replies[1..].iter().any(Reply::is_positive);
            if !accepted && data_reply.as_ref().is_some_and(|r| r.code == 354) {
                // The server should have refused DATA (no valid recipient); it opened a
                // message anyway: end it empty before resetting.
                self.exchange(b".\r\n", 1).await?;
            }
        } else {
            let body = if txn.body_8bit && self.caps & EXT_8BIT_MIME != 0 {
                " BODY=8BITMIME"
            } else {
                ""
            };
            let mut cmds = vec![format!("MAIL FROM:<{}>{body}\r\n", txn.sender)];
            cmds.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
            replies = Vec::new();
            for (i, cmd) in cmds.iter().enumerate() {
                let r = self.exchange(cmd.as_bytes(), 1).await?.remove(0);
                let stop = i == 0 && !r.is_positive();
                replies.push(r);
                if stop {
                    break;
                }
            }
            data_reply = None;
        }
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
        let r = match data_reply {
            Some(r) => r,
            None => self.exchange(b"DATA\r\n", 1).await?.remove(0),
        };
        let final_reply = if r.code != 354 {
            self.rset().await;
            r
        } else {
            // Stuffed into the session's reused buffer: no allocation per message.
            let mut wire = std::mem::take(&mut self.wire);
            wire.clear();
            for p in parts {
                stuff_into(&mut wire, p);
            }
            wire.extend_from_slice(b".\r\n");
            if let Some(nx) = next.filter(|_| self.pipelining()) {
                self.push_group(&mut wire, nx);
                self.group_sent = true;
            }
            let resp = self.exchange(&wire, 1).await;
            self.wire = wire;
            resp?.remove(0)
        };
        for p in per.iter_mut() {
            if p.is_positive() {
                *p = final_reply.clone();
            }
        }
        Ok(per)
    }

    async fn rset(&mut self) {
        if self.exchange(b"RSET\r\n", 1).await.is_err() {
            self.broken = true;
        }
    }

    /// Polite close; errors do not matter any more. Not while a pipelined transaction
    /// waits for its body (the server would take QUIT as message text): then the
    /// connection is just dropped, which aborts that transaction.
    pub async fn quit(self) {
        if self.group_sent {
            return;
        }
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
        let mut v = Vec::new();
        stuff_into(&mut v, b"H: x\r\n");
        stuff_into(&mut v, b".a\r\nb");
        assert_eq!(v, b"H: x\r\n..a\r\nb\r\n");
    }
}
