//! Process-wide counters and histograms, lock-free so the hot path pays one atomic add;
//! rendered in Prometheus text format by the admin endpoint.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A fixed-bucket histogram (cumulative buckets are computed at render time).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn sum(&self) -> f64 {
        self.sum_micro.load(Relaxed) as f64 / 1e6
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            acc += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        acc += self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {acc}");
        let _ = writeln!(out, "{name}_sum {}", self.sum());
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Why a message or command was refused; each is a Prometheus label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Size,
    Recipients,
    LineLength,
    BareLineEnding,
    Relay,
    AuthRequired,
    Timeout,
    TooManyConnections,
    BadCommands,
    Spool,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        Self::Size,
        Self::Recipients,
        Self::LineLength,
        Self::BareLineEnding,
        Self::Relay,
        Self::AuthRequired,
        Self::Timeout,
        Self::TooManyConnections,
        Self::BadCommands,
        Self::Spool,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Recipients => "recipients",
            Self::LineLength => "line_length",
            Self::BareLineEnding => "bare_line_ending",
            Self::Relay => "relay_denied",
            Self::AuthRequired => "auth_required",
            Self::Timeout => "timeout",
            Self::TooManyConnections => "too_many_connections",
            Self::BadCommands => "bad_commands",
            Self::Spool => "spool_error",
        }
    }
}

/// Every metric the worker exports.
#[derive(Debug)]
pub struct Metrics {
    pub sessions_total: AtomicU64,
    pub sessions_active: AtomicU64,
    pub messages_accepted: AtomicU64,
    pub bytes_accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Messages per group commit.
    pub commit_batch_size: Histogram,
    /// Seconds per group commit (write-back + fdatasync + rename + directory fsync).
    pub commit_latency: Histogram,
}

const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions_total: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            messages_accepted: AtomicU64::new(0),
            bytes_accepted: AtomicU64::new(0),
            rejected: Default::default(),
            commit_batch_size: Histogram::new(BATCH_BOUNDS),
            commit_latency: Histogram::new(LATENCY_BOUNDS),
        }
    }
}

impl Metrics {
    pub fn reject(&self, r: RejectReason) {
        self.rejected[r as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, r: RejectReason) -> u64 {
        self.rejected[r as usize].load(Relaxed)
    }

    /// Prometheus text exposition; `queue_depth` and `spool_bytes` come from the spool.
    pub fn render(&self, queue_depth: u64, spool_bytes: u64) -> String {
        let mut o = String::new();
        let g = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut o,
            "mta_sessions_total",
            "counter",
            "SMTP sessions accepted",
            self.sessions_total.load(Relaxed),
        );
        g(
            &mut o,
            "mta_sessions_active",
            "gauge",
            "SMTP sessions open now",
            self.sessions_active.load(Relaxed),
        );
        g(
            &mut o,
            "mta_messages_accepted_total",
            "counter",
            "Messages spooled and answered 250",
            self.messages_accepted.load(Relaxed),
        );
        g(
            &mut o,
            "mta_bytes_accepted_total",
            "counter",
            "Bytes of accepted messages",
            self.bytes_accepted.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP mta_rejected_total Refusals by reason\n# TYPE mta_rejected_total counter"
        );
        for r in RejectReason::ALL {
            let _ = writeln!(
                o,
                "mta_rejected_total{{reason=\"{}\"}} {}",
                r.label(),
                self.rejected(r)
            );
        }
        g(
            &mut o,
            "mta_queue_depth",
            "gauge",
            "Messages in the spool",
            queue_depth,
        );
        g(
            &mut o,
            "mta_spool_bytes",
            "gauge",
            "Bytes of messages in the spool",
            spool_bytes,
        );
        self.commit_batch_size.render(
            &mut o,
            "mta_spool_commit_batch_size",
            "Messages per group commit",
        );
        self.commit_latency.render(
            &mut o,
            "mta_spool_commit_seconds",
            "Duration of one group commit",
        );
        o
    }
}
