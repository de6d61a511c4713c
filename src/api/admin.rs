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
        "quality": state.states.quality(kind),
    })
}

#[utoipa::path(
    get, path = "/v1/admin/channels", tag = "admin",
    responses(
        (status = 200, description = "One row per channel: state, reason, since, until, last_error, counts", body = serde_json::Value),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_channels(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        ChannelKind::ALL
            .iter()
            .map(|k| channel_row(&state, *k))
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    /// 1–500 characters, shown in the channel table.
    reason: String,
}

#[utoipa::path(
    post, path = "/v1/admin/channels/{channel}/disable", tag = "admin",
    params(("channel" = String, Path, description = "whatsapp, telegram, email or line")),
    request_body = DisableBody,
    responses(
        (status = 200, description = "The channel's row, now `disabled`", body = serde_json::Value),
        (status = 400, description = "Broken JSON", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
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

#[utoipa::path(
    post, path = "/v1/admin/channels/{channel}/enable", tag = "admin",
    params(("channel" = String, Path, description = "whatsapp, telegram, email or line")),
    responses(
        (status = 200, description = "The channel's row, now `active`", body = serde_json::Value),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn enable(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let kind = parse_channel(&channel)?;
    state.states.enable(kind).await?;
    state.wake.notify_one();
    Ok(Json(channel_row(&state, kind)).into_response())
}
