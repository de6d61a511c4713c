//! Liveness and readiness for load balancers and orchestrators.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// The process is up and serving HTTP.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`", body = serde_json::Value))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store answers and the delivery workers run: safe to send traffic here.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = serde_json::Value),
        (status = 503, description = "Not ready: store failing or workers stopped", body = serde_json::Value))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store_ok = state.store.get_contact("readyz-probe").await.is_ok();
    let workers_ok = state.ready.load(Ordering::Relaxed);
    let ok = store_ok && workers_ok;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ready" } else { "not_ready" },
            "store": if store_ok { "ok" } else { "failing" },
            "workers": if workers_ok { "running" } else { "stopped" },
            "queue_depth": state.store.queue_depth(),
        })),
    )
}
