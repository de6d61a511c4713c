//! The sandbox's own events receiver: the gateway's `[[events.endpoints]]` points at
//! `POST /sandbox/events/receive` on the sandbox's own server, which checks each request's
//! Standard Webhooks signature and keeps the last [`KEEP`] it received, so the walk-through can
//! show `notification.failed_over` without an app of its own.
//!
//! - `POST /sandbox/events/receive`: no token (it is the app's side); a request whose
//!   signature does not verify gets 401 and is kept as `"verified": false`;
//! - `GET /sandbox/events` (admin token) → `[{"id", "type", "timestamp", "verified", "data"}, …]`,
//!   oldest first; `DELETE /sandbox/events` → 204.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

/// The sandbox endpoint's signing secret (fixed and printed: the sandbox guards nothing real).
pub const EVENTS_SECRET: &str = "whsec_bGlmZWJvYXQtc2FuZGJveC1ldmVudHMta2V5LTAwMDE=";
/// Where the receiver listens, on the sandbox's own server.
pub const RECEIVE_PATH: &str = "/sandbox/events/receive";
/// Events kept (the oldest go first).
const KEEP: usize = 500;

/// What the receiver got.
#[derive(Default)]
pub struct Received(Mutex<VecDeque<Value>>);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Checks a delivery as an app would.
fn verified(headers: &HeaderMap, body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(EVENTS_SECRET.trim_start_matches("whsec_"))
        .expect("the sandbox secret is base64");
    let id = header(headers, "webhook-id");
    let Ok(ts) = header(headers, "webhook-timestamp").parse::<i64>() else {
        return false;
    };
    let expected = crate::events::sign::signature(&key, id, ts, body);
    header(headers, "webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

async fn receive(State(r): State<Arc<Received>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let ok = verified(&headers, &body);
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut kept = r.0.lock().unwrap_or_else(|p| p.into_inner());
    kept.push_back(json!({
        "id": header(&headers, "webhook-id"),
        "type": event["type"],
        "timestamp": event["timestamp"],
        "verified": ok,
        "data": event["data"],
    }));
    while kept.len() > KEEP {
        kept.pop_front();
    }
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

async fn list(State(r): State<Arc<Received>>) -> Json<Value> {
    let kept = r.0.lock().unwrap_or_else(|p| p.into_inner());
    Json(Value::Array(kept.iter().cloned().collect()))
}

async fn clear(State(r): State<Arc<Received>>) -> StatusCode {
    r.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    StatusCode::NO_CONTENT
}

/// The receiver and its listing.
pub fn router() -> Router {
    let received = Arc::new(Received::default());
    let listing = Router::new()
        .route("/sandbox/events", get(list).delete(clear))
        .route_layer(axum::middleware::from_fn(
            super::controls::require_admin_token,
        ))
        .with_state(received.clone());
    Router::new()
        .route(RECEIVE_PATH, post(receive))
        .with_state(received)
        .merge(listing)
}
