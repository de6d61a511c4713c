//! The admin API: every channel's state, and switching channels off and on during a ban.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lifeboat_channel::ChannelKind;
use serde::Deserialize;
use serde_json::{json, Value};

use super::contacts::parse_channel;
use super::extract::JsonBody;
use super::{ApiError, AppState};

/// One row of the channel table, as `GET /v1/admin/channels` and the CLI show it.
pub fn channel_row(state: &AppState, kind: ChannelKind) -> Value {
    let now = state.clock.now();
    let status = state.states.current(kind);
    let (sent, failed) = state.states.counts(kind, now);
    let configured = state.registry.get(kind).is_some();
    json!({
        "channel": kind,
        "configured": configured,
        "not_configured_reason": state.registry.missing(kind),
        "state": status.state,
        "reason": status.reason,
        "since": status.since,
        "until": status.until,
        "last_error": status.last_error,
        "counts": {"sent_1h": sent, "failed_1h": failed},
    })
}

pub async fn list_channels(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        ChannelKind::ALL
            .iter()
            .map(|k| channel_row(&state, *k))
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    reason: String,
}

pub async fn disable(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    JsonBody(body): JsonBody<DisableBody>,
) -> Result<Response, ApiError> {
    let kind = parse_channel(&channel)?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::validation("reason", "must be 1–500 characters"));
    }
    state.states.disable(kind, reason).await?;
    Ok(Json(channel_row(&state, kind)).into_response())
}

pub async fn enable(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let kind = parse_channel(&channel)?;
    state.states.enable(kind).await?;
    state.wake.notify_one();
    Ok(Json(channel_row(&state, kind)).into_response())
}
