//! Delivery status notifications (RFC 3464): a `multipart/report` with a human part, a
//! `message/delivery-status` part with one block per failed recipient, and the original
//! headers. Never generated for a null reverse path (RFC 5321 §4.5.5), so bounces cannot
//! loop.

use crate::smtp::received::rfc5322_date;
use crate::spool::{Envelope, QueueId};

/// One recipient that will not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRcpt {
    pub rcpt: String,
    /// Enhanced status ("5.1.1").
    pub status: String,
    /// Server reply or local reason, as in `Diagnostic-Code: smtp; ...`.
    pub diagnostic: String,
    /// MX host that gave the reply, when one did.
    pub remote_mta: Option<String>,
}

fn header_block(original: &[u8]) -> &[u8] {
    let end = memchr::memmem::find(original, b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| memchr::memmem::find(original, b"\n\n").map(|p| p + 1))
        .unwrap_or(original.len());
    &original[..end]
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The DSN envelope and message for `failed` recipients of `orig`, or None when the
/// original had a null sender.
pub fn build_dsn(
    reporting_mta: &str,
    orig: &Envelope,
    orig_id: QueueId,
    failed: &[FailedRcpt],
    original: &[u8],
    now_s: u64,
) -> Option<(Envelope, Vec<u8>)> {
    if orig.sender.is_empty() || failed.is_empty() {
        return None;
    }
    let boundary = format!("=_dsn_{orig_id}_{now_s}");
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
    ));
    m.push_str(&format!("To: <{}>\r\n", orig.sender));
    m.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(now_s)));
    m.push_str(&format!(
        "Message-ID: <dsn.{orig_id}.{now_s}@{reporting_mta}>\r\n"
    ));
    m.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    m.push_str(&format!(
        "This is the mail system at host {reporting_mta}.\r\n\r\nYour message (queue id {orig_id}) could not be delivered to one or more recipients.\r\n\r\n"
    ));
    for f in failed {
        m.push_str(&format!("<{}>: {}\r\n", f.rcpt, one_line(&f.diagnostic)));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {reporting_mta}\r\n"));
    m.push_str(&format!("X-Queue-ID: {orig_id}\r\n"));
    m.push_str(&format!(
        "Arrival-Date: {}\r\n",
        rfc5322_date(orig.received_at)
    ));
    for f in failed {
        m.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", f.rcpt));
        m.push_str("Action: failed\r\n");
        m.push_str(&format!("Status: {}\r\n", f.status));
        if let Some(r) = &f.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {r}\r\n"));
        }
        m.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\n",
            one_line(&f.diagnostic)
        ));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(header_block(original));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let env = Envelope {
        sender: String::new(),
        recipients: vec![orig.sender.clone()],
        peer: "127.0.0.1:0".into(),
        helo: reporting_mta.into(),
        auth_user: None,
        received_at: now_s,
        body_8bit: false,
        smtputf8: false,
    };
    Some((env, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_796_428_800),
            "Sat, 05 Dec 2026 00:00:00 +0000"
        );
    }

    #[test]
    fn never_for_null_sender() {
        let env = Envelope {
            sender: String::new(),
            recipients: vec!["a@b.test".into()],
            peer: String::new(),
            helo: String::new(),
            auth_user: None,
            received_at: 0,
            body_8bit: false,
            smtputf8: false,
        };
        let f = FailedRcpt {
            rcpt: "a@b.test".into(),
            status: "5.1.1".into(),
            diagnostic: "550 no".into(),
            remote_mta: None,
        };
        assert!(build_dsn(
            "mx.test",
            &env,
            QueueId(1),
            &[f],
            b"Subject: x\r\n\r\nbody",
            0
        )
        .is_none());
    }
}
