//! The daemon's local HTTP API (`/status`, `/metrics`, drain / undrain / weight,
//! `/reload`) and the small HTTP client the CLI and the feedback poller use.

pub mod client;
mod handlers;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::control::daemon::Daemon;

pub use handlers::router;

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, daemon: Arc<Daemon>) {
    let app = router(daemon).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "API server stopped");
    }
}
