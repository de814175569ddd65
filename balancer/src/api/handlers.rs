//! The HTTP API's routes. Reads are open (the listener is local); every mutating route
//! checks the bearer token first, so a refused request changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::control::daemon::Daemon;
use crate::control::ControlError;

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/backends/{name}/drain", post(drain))
        .route("/backends/{name}/undrain", post(undrain))
        .route("/backends/{name}/weight", post(weight))
        .route("/reload", post(reload))
        .with_state(daemon)
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "error": msg.into() }))).into_response()
}

/// Byte comparison whose time does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request carries the configured token; the refusal otherwise (logged).
fn refuse(d: &Daemon, headers: &HeaderMap, peer: SocketAddr, what: &str) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (d.token(), given) {
        (Some(t), Some(g)) => same(t.as_bytes(), g.as_bytes()),
        _ => false,
    };
    if ok {
        return None;
    }
    warn!(peer = %peer, request = what, token_present = given.is_some(), "API request refused: missing or wrong bearer token");
    Some(error(
        StatusCode::UNAUTHORIZED,
        "a valid 'Authorization: Bearer <token>' is required",
    ))
}

fn control_error(e: ControlError) -> Response {
    let code = match e {
        ControlError::UnknownBackend { .. } => StatusCode::NOT_FOUND,
        ControlError::BadWeight { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, e.to_string())
}

async fn status(State(d): State<Arc<Daemon>>) -> Response {
    match d.with_ctl(|c| c.status()).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => control_error(e),
    }
}

async fn metrics(State(d): State<Arc<Daemon>>) -> Response {
    match d.with_ctl(|c| c.status()).await {
        Ok(s) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            super::metrics::render(&s),
        )
            .into_response(),
        Err(e) => control_error(e),
    }
}

async fn backend_reply(d: &Daemon, name: &str) -> Response {
    let ctl = d.ctl.lock().await;
    match ctl.backend(name) {
        Some(b) => Json(json!({
            "backend": name,
            "drained": b.drained,
            "weight": b.weight(),
            "effective_weight": b.effective(),
        }))
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no backend named {name:?}")),
    }
}

async fn drain(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = refuse(&d, &headers, peer, "drain") {
        return r;
    }
    if let Err(e) = d.with_ctl(|c| c.drain(&name)).await {
        return control_error(e);
    }
    backend_reply(&d, &name).await
}

async fn undrain(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = refuse(&d, &headers, peer, "undrain") {
        return r;
    }
    if let Err(e) = d.with_ctl(|c| c.undrain(&name)).await {
        return control_error(e);
    }
    backend_reply(&d, &name).await
}

#[derive(Deserialize)]
struct WeightQuery {
    weight: Option<u32>,
}

/// The weight from `?weight=N`, or a body of `N` or `{"weight": N}`.
fn weight_from(q: &WeightQuery, body: &str) -> Option<u32> {
    if let Some(w) = q.weight {
        return Some(w);
    }
    let body = body.trim();
    body.parse().ok().or_else(|| {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()?
            .get("weight")?
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
    })
}

async fn weight(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<WeightQuery>,
    body: String,
) -> Response {
    if let Some(r) = refuse(&d, &headers, peer, "weight") {
        return r;
    }
    let Some(w) = weight_from(&q, &body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "give the weight as ?weight=N, a body of N, or {\"weight\": N}",
        );
    };
    if let Err(e) = d.with_ctl(|c| c.set_weight(&name, w)).await {
        return control_error(e);
    }
    backend_reply(&d, &name).await
}

async fn reload(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&d, &headers, peer, "reload") {
        return r;
    }
    match d.reload().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}
