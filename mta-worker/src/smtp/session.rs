//! One SMTP session: the command loop and the state that lives across commands.
//! Transaction commands (MAIL/RCPT/DATA/BDAT) live in `txn.rs`, AUTH in `sasl.rs`.

use super::body_buf::BodyBuf;
use super::conn::{Conn, Interrupt, Line};
use super::reply::{self, Reply};
use super::stream::Stream;
use crate::config::Role;
use crate::metrics::RejectReason;
use crate::state::Shared;
use smtp_proto::{EhloResponse, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// The envelope being built by MAIL/RCPT.
#[derive(Debug, Default)]
pub struct Txn {
    pub sender: String,
    pub recipients: Vec<String>,
    pub body_8bit: bool,
    pub smtputf8: bool,
    /// `SIZE=` of MAIL FROM (0 when absent): how much room the body buffer starts with.
    pub declared_size: usize,
    /// BDAT chunks so far; `Some` once BDAT has been used in this transaction.
    pub bdat: Option<Vec<u8>>,
    /// The BDAT transfer already exceeded the size limit.
    pub bdat_too_big: bool,
}

/// Whether the loop continues after a command.
pub enum Flow {
    Continue,
    Close,
}

pub struct Session {
    pub shared: Arc<Shared>,
    pub conn: Conn,
    pub peer: SocketAddr,
    pub role: Role,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub auth_user: Option<String>,
    /// Peer address is inside `relay.networks`.
    pub trusted_network: bool,
    pub bad_commands: u32,
    pub txn: Option<Txn>,
    /// The body buffer, reused from one message to the next.
    pub body_buf: BodyBuf,
}

/// Runs a session on an accepted socket (TLS already established for `smtps`).
pub async fn run(
    shared: Arc<Shared>,
    stream: Stream,
    peer: SocketAddr,
    role: Role,
    shutdown: watch::Receiver<bool>,
) {
    let trusted_network = shared
        .config
        .relay
        .networks
        .iter()
        .any(|n| n.contains(&peer.ip()));
    let idle = shared.config.limits.idle_timeout.0;
    let mut s = Session {
        conn: Conn::new(stream, idle, shutdown),
        shared,
        peer,
        role,
        helo: None,
        esmtp: false,
        auth_user: None,
        trusted_network,
        bad_commands: 0,
        txn: None,
        body_buf: BodyBuf::default(),
    };
    let greeting = Reply::owned(
        220,
        [0, 0, 0],
        format!("{} ESMTP mta-worker", s.shared.config.hostname),
    );
    s.send(&greeting);
    let end = s.command_loop().await;
    let final_reply = match end {
        Ok(()) => None,
        Err(Interrupt::Timeout) => {
            s.shared.metrics.reject(RejectReason::Timeout);
            Some(reply::TIMEOUT)
        }
        Err(Interrupt::Shutdown) => Some(reply::SHUTTING_DOWN),
        Err(Interrupt::Closed) | Err(Interrupt::Io(_)) => None,
    };
    if let Some(r) = final_reply {
        s.send(&r);
    }
    let _ = s.conn.flush().await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut s.conn.stream).await;
    tracing::debug!(peer = %s.peer, "session closed");
}

impl Session {
    pub fn send(&mut self, r: &Reply) {
        r.write_to(&mut self.conn.out);
    }

    pub fn is_tls(&self) -> bool {
        self.conn.stream.is_tls()
    }

    /// Counts a refused command; past the limit the session ends with 421.
    pub fn bad(&mut self, r: Reply) -> Flow {
        self.send(&r);
        self.bad_commands += 1;
        if self.bad_commands >= self.shared.config.limits.max_bad_commands {
            self.shared.metrics.reject(RejectReason::BadCommands);
            self.send(&reply::TOO_MANY_ERRORS);
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn command_loop(&mut self) -> Result<(), Interrupt> {
        let limits = self.shared.config.limits.clone();
        loop {
            let line = match self
                .conn
                .read_line(limits.max_line_length, limits.command_timeout.0)
                .await?
            {
                Line::Ok(l) => l,
                Line::TooLong => {
                    self.shared.metrics.reject(RejectReason::LineLength);
                    if let Flow::Close = self.bad(reply::LINE_TOO_LONG) {
                        return Ok(());
                    }
                    continue;
                }
            };
            let flow = match Request::parse(&mut line.iter()) {
                Ok(req) => {
                    let req = req.into_owned();
                    self.dispatch(req).await?
                }
                Err(e) => self.bad(parse_error(e)),
            };
            if let Flow::Close = flow {
                return Ok(());
            }
        }
    }

    async fn dispatch(&mut self, req: Request<String>) -> Result<Flow, Interrupt> {
        match req {
            Request::Ehlo { host } => self.ehlo(host, true),
            Request::Helo { host } => self.ehlo(host, false),
            Request::Mail { from } => return Ok(self.mail(from)),
            Request::Rcpt { to } => return Ok(self.rcpt(to)),
            Request::Data => return self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last).await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response).await,
            Request::StartTls => return self.starttls().await,
            Request::Rset => {
                self.txn = None;
                self.send(&reply::RESET_OK);
            }
            Request::Noop { .. } => self.send(&reply::OK),
            Request::Vrfy { .. } => self.send(&reply::VRFY_REFUSED),
            Request::Quit => {
                self.send(&reply::BYE);
                return Ok(Flow::Close);
            }
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Help { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => return Ok(self.bad(reply::NOT_IMPLEMENTED)),
        }
        Ok(Flow::Continue)
    }

    fn ehlo(&mut self, host: String, extended: bool) {
        self.txn = None;
        self.helo = Some(host);
        self.esmtp = extended;
        let hostname = self.shared.config.hostname.clone();
        if !extended {
            self.send(&Reply::owned(250, [0, 0, 0], hostname));
            return;
        }
        let mut e = EhloResponse::new(hostname.as_str());
        e.capabilities = smtp_proto::EXT_PIPELINING
            | smtp_proto::EXT_SIZE
            | smtp_proto::EXT_8BIT_MIME
            | smtp_proto::EXT_SMTP_UTF8
            | smtp_proto::EXT_ENHANCED_STATUS_CODES
            | smtp_proto::EXT_CHUNKING;
        e.size = self.shared.config.limits.max_message_size.0 as usize;
        if self.shared.tls.is_some() && !self.is_tls() {
            e.capabilities |= smtp_proto::EXT_START_TLS;
        }
        // AUTH is only offered where it may be used: over TLS, not yet authenticated.
        if self.shared.users.is_some() && self.is_tls() && self.auth_user.is_none() {
            e.capabilities |= smtp_proto::EXT_AUTH;
            e.auth_mechanisms = smtp_proto::AUTH_PLAIN | smtp_proto::AUTH_LOGIN;
        }
        let _ = e.write(&mut self.conn.out);
    }

    async fn starttls(&mut self) -> Result<Flow, Interrupt> {
        if self.is_tls() {
            return Ok(self.bad(reply::ALREADY_TLS));
        }
        let Some(acceptor) = self.shared.tls.clone() else {
            return Ok(self.bad(reply::TLS_UNAVAILABLE));
        };
        self.send(&reply::READY_TLS);
        self.conn.flush().await?;
        self.conn.discard_input();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.conn.stream, Stream::Upgrading) else {
            return Err(Interrupt::Closed);
        };
        let timeout = self.shared.config.limits.command_timeout.0;
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => self.conn.stream = Stream::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, err = %e, "TLS handshake failed");
                return Err(Interrupt::Closed);
            }
            Err(_) => return Err(Interrupt::Timeout),
        }
        // RFC 3207: forget everything learnt before TLS; the client must EHLO again.
        self.helo = None;
        self.esmtp = false;
        self.txn = None;
        Ok(Flow::Continue)
    }
}

fn parse_error(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => reply::UNKNOWN_COMMAND,
        E::SyntaxError { syntax } => reply::syntax(syntax),
        E::InvalidSenderAddress => Reply::new(501, [5, 1, 7], "Invalid sender address"),
        E::InvalidRecipientAddress => Reply::new(501, [5, 1, 3], "Invalid recipient address"),
        E::InvalidParameter { param } => reply::syntax(format!("invalid parameter {param}")),
        E::UnsupportedParameter { param } => {
            Reply::owned(555, [5, 5, 4], format!("Unsupported parameter {param}"))
        }
        E::ResponseTooLong => reply::LINE_TOO_LONG,
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => reply::syntax("incomplete command"),
    }
}
