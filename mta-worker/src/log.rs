//! Logging: tracing for operators, plus the JSON-lines reception log with one record per
//! accepted or rejected message, for audits and for matching client-side queue ids.

use crate::append::JsonLines;
use serde::Serialize;
use std::path::Path;

/// Installs the tracing subscriber; `RUST_LOG` wins over the config's level.
pub fn init_tracing(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or("info")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// One reception log record.
#[derive(Debug, Serialize)]
pub struct Reception<'a> {
    /// Seconds since the epoch.
    pub ts: u64,
    /// "accepted" or "rejected".
    pub outcome: &'a str,
    /// SMTP reply code sent for the message.
    pub code: u16,
    /// Enhanced status code, "x.y.z".
    pub esc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    pub peer: String,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Append-only JSON-lines file. Records are batched in memory for a few milliseconds and
/// written together ([`crate::append`]): one `write` per message was a syscall per
/// reception at tens of thousands of messages per second. A crash can lose the last few
/// milliseconds of this log, never a message: the spool is the record of what was
/// accepted. Lines are never torn or interleaved.
#[derive(Debug, Default)]
pub struct ReceptionLog {
    file: JsonLines,
}

impl ReceptionLog {
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        Ok(Self {
            file: JsonLines::open(path, "reception-log")?,
        })
    }

    pub fn record(&self, r: &Reception<'_>) {
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
