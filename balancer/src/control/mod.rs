//! Control: the daemon's desired state and how it reaches the data plane.
//!
//! - `controller`: config + health + weights → rings, pushed through `DataPlaneOps`;
//! - `reload`: applying a new config (first load and SIGHUP / API reloads);
//! - `feedback`: the queue-aware weight controller (pure);
//! - `memory`: an in-memory data plane for tests and `--dry-run`;
//! - `daemon`: the async runtime around the controller (health tasks, polls, reloads).

pub mod controller;
pub mod convert;
pub mod daemon;
pub mod feedback;
pub mod ids;
pub mod memory;
pub mod reload;
mod report;
pub mod status;

pub use controller::{BackendState, ControlError, Controller, VipState};
pub use memory::MemoryDataPlane;
pub use reload::ReloadSummary;
pub use status::{BackendStatus, Status, VipStatus};

#[cfg(test)]
mod tests;
