//! The delivery log: one JSON object per line per event (reception, delivery, transient
//! failure, bounce, expiry), with everything an operator needs to answer "what happened
//! to this message and why" without correlating several lines.

use crate::append::JsonLines;
use serde::Serialize;
use std::path::Path;

/// One log record.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Record {
    /// Milliseconds since the epoch (the scheduler's clock).
    pub ts_ms: u64,
    /// "reception", "delivery", "transient", "bounce" or "expiry".
    pub event: &'static str,
    pub queue_id: String,
    pub sender: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<String>,
    pub domain: String,
    pub site: String,
    pub pool: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mx: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// "none", "off", "tls" plus version/cipher, or "failed: reason".
    pub tls: String,
    pub attempts: u16,
}

/// Where records go: an append-only file and tracing. Lines are batched in memory and
/// written every few milliseconds ([`crate::append::FLUSH_DELAY`]) rather than one
/// `write(2)` each (two lines per relayed message made that a visible share of relay
/// CPU); a process crash can lose that last moment of lines, a clean stop loses nothing
/// (the scheduler flushes when it stops, and dropping the log flushes).
#[derive(Debug, Default)]
pub struct DeliveryLog {
    file: JsonLines,
}

impl DeliveryLog {
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        Ok(Self {
            file: JsonLines::open(path, "delivery-log")?,
        })
    }

    pub fn write(&self, r: &Record) {
        tracing::info!(
            event = r.event,
            queue_id = %r.queue_id,
            rcpt = r.rcpt.as_deref().unwrap_or(""),
            site = %r.site,
            source = %r.source,
            code = r.code.unwrap_or(0),
            text = r.text.as_deref().unwrap_or(""),
            "delivery log"
        );
        self.file.write(r);
    }

    /// Writes every record logged so far to the file.
    pub fn flush(&self) {
        self.file.flush();
    }

    /// Goes on in a newly opened file at the configured path (log rotation, on SIGHUP).
    pub fn reopen(&self) -> std::io::Result<()> {
        self.file.reopen()
    }
}
