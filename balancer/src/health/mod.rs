//! Health checking: one tokio task per backend runs a check every interval and reports
//! each result to the control loop, which feeds it through the rise/fall state machine.
//!
//! Tasks do not decide anything: they only observe. Keeping decisions in one place (the
//! controller) makes every transition one log line and one ring rebuild.

pub mod check;
pub mod state;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::HealthMode;
pub use check::CheckError;
pub use state::{Health, HealthTracker};

/// What one checker task checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub backend: String,
    pub target: SocketAddr,
    pub mode: HealthMode,
    pub ehlo_name: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Pause after a failed check while fewer than `fall` failures are in a row.
    pub fast_interval: Duration,
    pub fall: u32,
}

/// One check result, sent to the controller.
#[derive(Clone, Debug)]
pub struct HealthReport {
    pub backend: String,
    /// Which spawn of the checker produced it: reports of a replaced checker (the
    /// backend's address changed on reload) are ignored.
    pub generation: u64,
    pub result: Result<(), CheckError>,
}

/// Spawns the checker of one backend. The first check starts after a delay derived from
/// the name (spreads many backends over the interval); it stops when `tx` closes or the
/// handle is aborted.
pub fn spawn_checker(
    spec: CheckSpec,
    generation: u64,
    tx: mpsc::Sender<HealthReport>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let spread = spec.interval.as_millis().max(1) as u64;
        let delay = crate::maglev::name_hash(&spec.backend, 0x6865_616c_7468) % spread;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let mut tick = tokio::time::interval(spec.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Consecutive failures seen by this task (the controller sees the same stream).
        let mut failures = 0u32;
        loop {
            tick.tick().await;
            let mut checks = 0;
            loop {
                checks += 1;
                let result =
                    check::check(spec.target, spec.mode, &spec.ehlo_name, spec.timeout).await;
                let ok = result.is_ok();
                let report = HealthReport {
                    backend: spec.backend.clone(),
                    generation,
                    result,
                };
                if tx.send(report).await.is_err() {
                    return;
                }
                if ok {
                    failures = 0;
                    break;
                }
                failures = failures.saturating_add(1);
                // Confirmed (or long) dead: back to the normal cadence, so a dead host
                // is not hammered.
                if failures >= spec.fall {
                    break;
                }
                tokio::time::sleep(spec.fast_interval).await;
            }
            if checks > 1 {
                tick.reset();
            }
        }
    })
}
