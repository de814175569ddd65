//! The mail transaction: MAIL, RCPT, DATA and BDAT, and handing the finished message to
//! the spool. The 250 for a message is written only after the spool says it is durable.

use super::conn::Interrupt;
use super::data::{check_raw, BodyViolation, DataDecoder};
use super::received::{self, Trace};
use super::reply::{self, Reply};
use super::session::{Flow, Session, Txn};
use crate::config::Role;
use crate::log::Reception;
use crate::metrics::RejectReason;
use crate::spool::Envelope;
use smtp_proto::{MailFrom, RcptTo};
use std::sync::atomic::Ordering::Relaxed;
use tokio::time::Instant;

/// Room made in the message buffer before a read during DATA: a large body arrives in a
/// few reads (and task wake-ups) instead of one per 16 KiB.
const DATA_READ: usize = 64 * 1024;

impl Session {
    /// Whether this session may send mail at all (submission ports need AUTH first).
    fn may_submit(&self) -> Result<(), Reply> {
        match self.role {
            Role::Relay => Ok(()),
            Role::Submission | Role::Smtps if self.auth_user.is_some() => Ok(()),
            Role::Submission if !self.is_tls() => Err(reply::TLS_REQUIRED),
            Role::Submission | Role::Smtps => Err(reply::AUTH_REQUIRED),
        }
    }

    pub fn mail(&mut self, from: MailFrom<String>) -> Flow {
        if self.helo.is_none() {
            return self.bad(reply::NEED_EHLO);
        }
        if let Err(r) = self.may_submit() {
            self.shared.metrics.reject(RejectReason::AuthRequired);
            return self.bad(r);
        }
        if self.txn.is_some() {
            return self.bad(reply::NESTED_MAIL);
        }
        let max = self.shared.config.limits.max_message_size.0 as usize;
        if from.size > max {
            self.shared.metrics.reject(RejectReason::Size);
            self.send(&reply::MESSAGE_TOO_BIG);
            return Flow::Continue;
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !from.address.is_ascii() && !smtputf8 {
            return self.bad(reply::UTF8_NOT_DECLARED);
        }
        self.txn = Some(Txn {
            sender: from.address,
            body_8bit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            declared_size: from.size,
            ..Txn::default()
        });
        self.send(&reply::SENDER_OK);
        Flow::Continue
    }

    pub fn rcpt(&mut self, to: RcptTo<String>) -> Flow {
        let relay_ok =
            self.auth_user.is_some() || (self.role == Role::Relay && self.trusted_network);
        let max = self.shared.config.limits.max_recipients;
        let Some(txn) = self.txn.as_mut() else {
            return self.bad(reply::NEED_MAIL);
        };
        if !to.address.is_ascii() && !txn.smtputf8 {
            return self.bad(reply::UTF8_NOT_DECLARED);
        }
        if !relay_ok {
            self.shared.metrics.reject(RejectReason::Relay);
            tracing::info!(peer = %self.peer, rcpt = %to.address, "relay denied");
            self.send(&reply::RELAY_DENIED);
            return Flow::Continue;
        }
        if txn.recipients.len() >= max {
            self.shared.metrics.reject(RejectReason::Recipients);
            self.send(&reply::TOO_MANY_RCPTS);
            return Flow::Continue;
        }
        txn.recipients.push(to.address);
        self.send(&reply::RCPT_OK);
        Flow::Continue
    }

    /// Checks common to DATA and BDAT before any body byte is read.
    fn ready_for_body(&self, bdat: bool) -> Result<(), Reply> {
        match &self.txn {
            None => Err(reply::NEED_MAIL),
            Some(t) if t.recipients.is_empty() => Err(reply::NEED_RCPT),
            Some(t) if !bdat && t.bdat.is_some() => Err(reply::BAD_SEQUENCE),
            Some(_) => Ok(()),
        }
    }

    pub async fn data(&mut self) -> Result<Flow, Interrupt> {
        if let Err(r) = self.ready_for_body(false) {
            return Ok(self.bad(r));
        }
        self.send(&reply::START_DATA);
        let limits = &self.shared.config.limits;
        let deadline = Instant::now() + limits.data_timeout.0;
        let max = limits.max_message_size.0 as usize;
        let declared = self.txn.as_ref().map_or(0, |t| t.declared_size);
        let mut dec = DataDecoder::new(
            limits.max_line_length,
            max,
            self.body_buf.take(declared, max),
        );
        // What already sits in our input buffer is copied out; the rest of the body is
        // read straight into the message buffer and decoded there.
        let pending = self.conn.pending();
        if let Some(n) = dec.feed(pending) {
            self.conn.consume(n);
        } else {
            let n = pending.len();
            self.conn.consume(n);
            loop {
                if dec.body.capacity() - dec.body.len() < DATA_READ / 4 {
                    dec.body.reserve(DATA_READ);
                }
                let from = dec.body.len();
                self.conn.read_into(&mut dec.body, deadline).await?;
                if let Some(rest) = dec.feed_in_place(from) {
                    self.conn.unread(&rest);
                    break;
                }
            }
        }
        let violation = dec.violation();
        self.finish(dec.body, violation).await
    }

    pub async fn bdat(&mut self, size: usize, last: bool) -> Result<Flow, Interrupt> {
        let refused = self.ready_for_body(true).err();
        let max = self.shared.config.limits.max_message_size.0 as usize;
        let deadline = Instant::now() + self.shared.config.limits.data_timeout.0;
        // The chunk must be read even when refusing it, or its bytes would be taken as commands.
        let mut left = size;
        let mut keep = refused.is_none();
        if let Some(t) = self.txn.as_mut().filter(|_| keep) {
            let buf = t
                .bdat
                .get_or_insert_with(|| self.body_buf.take(t.declared_size, max));
            if buf.len() + size > max || t.bdat_too_big {
                t.bdat_too_big = true;
                buf.clear();
                keep = false;
            }
        }
        while left > 0 {
            if self.conn.pending().is_empty() {
                self.conn.fill(deadline, false).await?;
            }
            let take = left.min(self.conn.pending().len());
            if keep {
                if let Some(buf) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) {
                    buf.extend_from_slice(&self.conn.pending()[..take]);
                }
            }
            self.conn.consume(take);
            left -= take;
        }
        if let Some(r) = refused {
            return Ok(self.bad(r));
        }
        if !last {
            self.send(&Reply::owned(
                250,
                [2, 0, 0],
                format!("{size} octets received"),
            ));
            return Ok(Flow::Continue);
        }
        let txn = self.txn.as_mut().expect("checked above");
        let too_big = txn.bdat_too_big;
        let body = txn.bdat.take().unwrap_or_default();
        let max_line = self.shared.config.limits.max_line_length;
        let violation = if too_big {
            Some(BodyViolation::TooBig)
        } else {
            check_raw(&body, max_line)
        };
        self.finish(body, violation).await
    }

    /// Spools the message (or refuses it), answers, logs, and ends the transaction.
    async fn finish(
        &mut self,
        body: Vec<u8>,
        violation: Option<BodyViolation>,
    ) -> Result<Flow, Interrupt> {
        let txn = self.txn.take().expect("transaction present");
        let size = body.len();
        let (reply, id, reason) = match violation {
            Some(v) => {
                let (r, why) = match v {
                    BodyViolation::BareLineEnding => {
                        (reply::BARE_LINE_ENDING, RejectReason::BareLineEnding)
                    }
                    BodyViolation::LineTooLong => (reply::LINE_TOO_LONG, RejectReason::LineLength),
                    BodyViolation::TooBig => (reply::MESSAGE_TOO_BIG, RejectReason::Size),
                };
                self.shared.metrics.reject(why);
                self.body_buf.give_back(body);
                (r, None, Some(why.label()))
            }
            None => match self.spool(&txn, body).await {
                Ok(id) => (reply::queued(id), Some(id.to_string()), None),
                Err(err) => {
                    tracing::error!(peer = %self.peer, %err, "spool failed");
                    self.shared.metrics.reject(RejectReason::Spool);
                    (reply::SPOOL_FAILED, None, Some(RejectReason::Spool.label()))
                }
            },
        };
        if id.is_some() {
            self.shared.metrics.messages_accepted.fetch_add(1, Relaxed);
            self.shared
                .metrics
                .bytes_accepted
                .fetch_add(size as u64, Relaxed);
            tracing::info!(queue_id = id.as_deref().unwrap_or(""), peer = %self.peer, sender = %txn.sender, rcpts = txn.recipients.len(), size, "accepted");
        } else {
            tracing::info!(peer = %self.peer, sender = %txn.sender, code = reply.code, reason = reason.unwrap_or(""), "message rejected");
        }
        let [a, b, c] = reply.esc;
        self.shared.reception.record(&Reception {
            ts: received::now_unix(),
            outcome: if id.is_some() { "accepted" } else { "rejected" },
            code: reply.code,
            esc: format!("{a}.{b}.{c}"),
            queue_id: id,
            peer: self.peer.to_string(),
            sender: &txn.sender,
            recipients: &txn.recipients,
            size,
            reason,
        });
        self.send(&reply);
        Ok(Flow::Continue)
    }

    /// Spools the message; the body buffer comes back to the session for the next one.
    async fn spool(
        &mut self,
        txn: &Txn,
        body: Vec<u8>,
    ) -> Result<crate::spool::QueueId, crate::spool::SpoolError> {
        let spool = &self.shared.spool;
        let id = spool.next_id();
        let now = received::now_unix();
        let protocol = match (self.esmtp, self.is_tls(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let id_str = id.to_string();
        let header = received::header(&Trace {
            helo: self.helo.as_deref().unwrap_or(""),
            peer_ip: self.peer.ip(),
            hostname: &self.shared.config.hostname,
            protocol,
            queue_id: &id_str,
            recipient: (txn.recipients.len() == 1).then(|| txn.recipients[0].as_str()),
            unix_time: now,
        });
        let env = Envelope {
            sender: txn.sender.clone(),
            recipients: txn.recipients.clone(),
            peer: self.peer.to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            auth_user: self.auth_user.clone(),
            received_at: now,
            body_8bit: txn.body_8bit,
            smtputf8: txn.smtputf8,
        };
        let (stored, body) = spool.store_owned(id, env, &[&header], body).await;
        self.body_buf.give_back(body);
        stored?;
        Ok(id)
    }
}
