//! Liveness and readiness for load balancers and orchestrators, and the Prometheus metrics.
//!
//! All three are served without auth, like most exporters: they say nothing about people or
//! secrets (counts by channel, category and outcome; no addresses, ids or texts), and a
//! scraper or probe should not need a credential. Keep the port off the public internet, or
//! put the paths behind the reverse proxy's own auth, if even the volume is sensitive.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// The process is up and serving HTTP.
#[utoipa::path(
    get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses(
        (status = 200, description = "The process is up", body = crate::api::openapi::Health))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store answers and the delivery workers run: safe to send traffic here.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", body = crate::api::openapi::Readiness),
        (status = 503, description = "Not ready: store failing or workers stopped", body = crate::api::openapi::Readiness))
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

/// Prometheus metrics of this gateway ([`crate::metrics`] lists them), read at request time.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses(
        (status = 200, description = "The metrics in the OpenMetrics text format (Prometheus \
            scrapes it natively): counters of accepted notifications, attempts, failovers, \
            state changes and webhook events; channel states and queue depth as gauges; provider \
            latency as a histogram. No auth.",
            body = String, content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state
        .metrics
        .render(&state.states, state.store.queue_depth());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}
