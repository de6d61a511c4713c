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
use lifeboat_channel::ChannelKind;
use serde_json::{json, Value};

use super::AppState;
use crate::model::ChannelState;

/// The process is up and serving HTTP.
#[utoipa::path(
    get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses(
        (status = 200, description = "The process is up", body = crate::api::openapi::Health))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// How long `/readyz` waits for the store before calling it failing.
const READYZ_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The store answers, the delivery workers run and at least one channel is configured: safe
/// to send traffic here. Every configured channel being disabled or banned still counts as
/// ready (the queue accepts and keeps notifications until a channel is back), but the body
/// says so in `warning`.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: `ready: true`; `warning` when no configured channel can send now", body = crate::api::openapi::Readiness),
        (status = 503, description = "Not ready: `ready: false` and `reason` (store failing, workers stopped, or no channel is configured)", body = crate::api::openapi::Readiness))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    // A store that does not answer within READYZ_STORE_WAIT is failing: a readiness probe must
    // answer quickly (a database behind a dead network would otherwise hold it until the
    // store's own timeouts, longer than any load balancer waits).
    let probe = async {
        let ok = state.store.check().await.is_ok()
            && state.store.get_contact("readyz-probe").await.is_ok();
        let (depth, leases) = if ok {
            (
                state.store.queue_depth().await.unwrap_or(0),
                held_leases(&state).await,
            )
        } else {
            (0, Vec::new())
        };
        (ok, depth, leases)
    };
    let (store_ok, queue_depth, leases) = tokio::time::timeout(READYZ_STORE_WAIT, probe)
        .await
        .unwrap_or((false, 0, Vec::new()));
    let workers_ok = state.ready.load(Ordering::Relaxed);
    let configured: Vec<_> = state.registry.configured().map(|(kind, _)| kind).collect();
    let usable = configured
        .iter()
        .filter(|kind| {
            !matches!(
                state.states.current(**kind).state,
                ChannelState::Disabled | ChannelState::Banned
            )
        })
        .count();
    let reason = if !store_ok {
        Some("the store is failing")
    } else if !workers_ok {
        Some("the delivery workers are stopped")
    } else if configured.is_empty() {
        Some("no channel is configured")
    } else {
        None
    };
    let warning = (!configured.is_empty() && usable == 0).then_some(
        "every configured channel is disabled or banned: notifications wait in the queue",
    );
    let ok = reason.is_none();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "ready" } else { "not_ready" },
            "ready": ok,
            "reason": reason,
            "warning": warning,
            "channels": {"configured": configured.len(), "usable": usable},
            "store": if store_ok { "ok" } else { "failing" },
            "workers": if workers_ok { "running" } else { "stopped" },
            "queue_depth": queue_depth,
            "instance": state.states.instance().as_str(),
            "database": state.store.database_status().map(|db| database_json(&db, store_ok)),
            "leases": {
                "claims": state.claims.get(),
                "held": leases,
            },
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
    let channel_states: Vec<_> = ChannelKind::ALL
        .iter()
        .map(|&kind| (kind, state.states.current(kind).state))
        .collect();
    // A store that cannot count its queue right now shows 0 rather than failing the scrape
    // (`/readyz` says the store is failing).
    let queue_depth = state.store.queue_depth().await.unwrap_or(0);
    let held = tokio::time::timeout(READYZ_STORE_WAIT, held_leases(&state))
        .await
        .unwrap_or_default();
    let leases = known_leases(&state)
        .into_iter()
        .map(|lease| {
            let is_held = held.contains(&lease);
            (lease, is_held)
        })
        .collect();
    let fleet = crate::metrics::FleetFigures {
        claims: state.claims.get(),
        leases,
        database: state.store.database_status(),
    };
    let text = state.metrics.render(&channel_states, queue_depth, &fleet);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

/// The leases this gateway may take: the Telegram poller's (Telegram configured) and each
/// configured channel's probe lease.
fn known_leases(state: &AppState) -> Vec<String> {
    let mut out = Vec::new();
    let configured: Vec<ChannelKind> = state.registry.configured().map(|(k, _)| k).collect();
    if configured.contains(&ChannelKind::Telegram) {
        let (ns, key) = crate::fleet::lease::TELEGRAM_POLLER;
        out.push(format!("{ns}/{key}"));
    }
    for kind in configured {
        out.push(format!(
            "{}/{kind}",
            crate::store::namespaces::CHANNEL_PROBE
        ));
    }
    out
}

/// The leases this instance holds now, as the store says (none if it cannot say).
async fn held_leases(state: &AppState) -> Vec<String> {
    crate::fleet::lease::held_by(
        state.store.as_ref(),
        state.states.instance(),
        state.clock.now(),
    )
    .await
    .unwrap_or_default()
}

/// `/readyz`'s `database`: reachable or not, the pool, the announcement listener.
fn database_json(db: &crate::store::DatabaseStatus, reachable: bool) -> Value {
    json!({
        "status": if reachable { "ok" } else { "failing" },
        "pool": {
            "size": db.pool_max,
            "open": db.pool_open,
            "available": db.pool_available,
            "waiting": db.pool_waiting,
        },
        "listener": if db.listening { "listening" } else { "reconnecting" },
        "work": db.work.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}
