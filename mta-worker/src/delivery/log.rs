//! The delivery log: one JSON object per line per event (reception, delivery, transient
//! failure, bounce, expiry), with everything an operator needs to answer "what happened
//! to this message and why" without correlating several lines.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

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

/// Where records go: an append-only file (one `write` per line, so lines from
/// concurrent connections never interleave) and tracing.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    file: Option<Mutex<std::fs::File>>,
}

impl DeliveryLog {
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Self { file })
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
        if let Some(f) = &self.file {
            let mut line = serde_json::to_vec(r).expect("record serialises");
            line.push(b'\n');
            if let Err(err) = f.lock().expect("log lock").write_all(&line) {
                tracing::error!(%err, "cannot write delivery log");
            }
        }
    }
}
