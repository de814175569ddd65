//! Logging: tracing for operators, plus the JSON-lines reception log with one record per
//! accepted or rejected message, for audits and for matching client-side queue ids.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

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

/// Append-only JSON-lines file; each record is one `write` so lines never interleave.
#[derive(Debug, Default)]
pub struct ReceptionLog {
    file: Option<Mutex<File>>,
}

impl ReceptionLog {
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        Ok(Self { file })
    }

    pub fn record(&self, r: &Reception<'_>) {
        let Some(f) = &self.file else { return };
        let mut line = serde_json::to_vec(r).expect("record serialises");
        line.push(b'\n');
        if let Err(err) = f.lock().expect("reception log lock").write_all(&line) {
            tracing::warn!(%err, "reception log write failed");
        }
    }
}
