//! SMTP AUTH (RFC 4954) with the PLAIN and LOGIN mechanisms, accepted only over TLS so
//! passwords never cross the network in clear.

use super::conn::{Interrupt, Line};
use super::reply::{self, Reply};
use super::session::{Flow, Session};
use crate::auth::{b64, b64_encode, parse_plain};

const AUTH_NEEDS_TLS: Reply = Reply::new(
    538,
    [5, 7, 11],
    "Encryption required for requested authentication mechanism",
);

impl Session {
    pub async fn auth(&mut self, mechanism: u64, initial: String) -> Result<Flow, Interrupt> {
        let Some(users) = self.shared.users.clone() else {
            return Ok(self.bad(reply::NOT_IMPLEMENTED));
        };
        if !self.is_tls() {
            return Ok(self.bad(AUTH_NEEDS_TLS));
        }
        if self.helo.is_none() {
            return Ok(self.bad(reply::NEED_EHLO));
        }
        if self.auth_user.is_some() {
            return Ok(self.bad(reply::ALREADY_AUTH));
        }
        if self.txn.is_some() {
            return Ok(self.bad(reply::BAD_SEQUENCE));
        }
        let creds = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let msg = if initial.is_empty() {
                    match self.challenge("").await? {
                        Some(m) => m,
                        None => return Ok(self.bad(reply::AUTH_CANCELLED)),
                    }
                } else {
                    initial
                };
                match b64(&msg).and_then(|m| parse_plain(&m)) {
                    Some(c) => c,
                    None => return Ok(self.bad(reply::AUTH_SYNTAX)),
                }
            }
            smtp_proto::AUTH_LOGIN => {
                let user = if initial.is_empty() {
                    match self.challenge(&b64_encode(b"Username:")).await? {
                        Some(m) => m,
                        None => return Ok(self.bad(reply::AUTH_CANCELLED)),
                    }
                } else {
                    initial
                };
                let pass = match self.challenge(&b64_encode(b"Password:")).await? {
                    Some(m) => m,
                    None => return Ok(self.bad(reply::AUTH_CANCELLED)),
                };
                let decode = |s: &str| b64(s).and_then(|b| String::from_utf8(b).ok());
                match (decode(&user), decode(&pass)) {
                    (Some(u), Some(p)) if !u.is_empty() => (u, p),
                    _ => return Ok(self.bad(reply::AUTH_SYNTAX)),
                }
            }
            _ => return Ok(self.bad(reply::AUTH_MECH_UNSUPPORTED)),
        };
        let (user, pass) = creds;
        let check_user = user.clone();
        let ok = tokio::task::spawn_blocking(move || users.verify(&check_user, &pass))
            .await
            .unwrap_or(false);
        if ok {
            tracing::info!(peer = %self.peer, %user, "authenticated");
            self.auth_user = Some(user);
            self.send(&reply::AUTH_OK);
            Ok(Flow::Continue)
        } else {
            tracing::warn!(peer = %self.peer, %user, "authentication failed");
            Ok(self.bad(reply::AUTH_FAILED))
        }
    }

    /// Sends a 334 challenge and reads the answer; `None` when the client cancels with `*`.
    async fn challenge(&mut self, text: &str) -> Result<Option<String>, Interrupt> {
        self.conn
            .out
            .extend_from_slice(format!("334 {text}\r\n").as_bytes());
        let limits = &self.shared.config.limits;
        let line = match self
            .conn
            .read_line(limits.max_line_length.max(12288), limits.command_timeout.0)
            .await?
        {
            Line::Ok(l) => l,
            Line::TooLong => return Ok(None),
        };
        let s = String::from_utf8_lossy(&line).trim_end().to_string();
        Ok((s != "*").then_some(s))
    }
}
