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
    let missing = state.registry.missing(kind);
    json!({
        "channel": kind,
        "configured": configured,
        "not_configured_reason": missing,
        // A channel without config can't send: its stored state (`active` by default) would
        // mislead, so it shows as `not_configured` with the reason.
        "state": if configured { json!(status.state) } else { json!("not_configured") },
        "reason": if configured { json!(status.reason) } else { json!(missing) },
        "since": status.since,
        "until": status.until,
        "last_error": status.last_error,
        "counts": {"sent_1h": sent, "failed_1h": failed},
        "quality": state.states.quality(kind),
    })
}

/// [`channel_row`] plus the guardrails' view: `marketing` (paused or not, why, and the risk
/// monitor's figures) and the pacing `rate` in force.
async fn row_with_policy(state: &AppState, kind: ChannelKind) -> Result<Value, ApiError> {
    let mut row = channel_row(state, kind);
    let marketing = state.policy.marketing_status(&state.states, kind).await?;
    row["marketing"] = json!(marketing);
    row["rate"] = json!(state.policy.rate(kind, state.clock.now()));
    Ok(row)
}

#[utoipa::path(
    get, path = "/v1/admin/channels", tag = "admin",
    responses(
        (status = 200, description = "One row per channel: state, reason, since, until, last_error, counts, marketing (risk monitor: paused, reason, figures), rate", body = serde_json::Value),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_channels(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut rows = Vec::new();
    for kind in ChannelKind::ALL {
        rows.push(row_with_policy(&state, kind).await?);
    }
    Ok(Json(Value::Array(rows)))
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
        (status = 200, description = "The channel's row, now `active`; a marketing pause by the risk monitor is lifted too", body = serde_json::Value),
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
    crate::policy::risk::resume(state.store.as_ref(), kind, state.clock.now()).await?;
    state.wake.notify_one();
    Ok(Json(row_with_policy(&state, kind).await?).into_response())
}

#[utoipa::path(
    post, path = "/v1/admin/channels/{channel}/marketing/resume", tag = "admin",
    params(("channel" = String, Path, description = "whatsapp, telegram, email or line")),
    responses(
        (status = 200, description = "The channel's row: the risk monitor's marketing pause lifted, its figures reset (the channel state is left as it is)", body = serde_json::Value),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn resume_marketing(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let kind = parse_channel(&channel)?;
    crate::policy::risk::resume(state.store.as_ref(), kind, state.clock.now()).await?;
    state.wake.notify_one();
    Ok(Json(row_with_policy(&state, kind).await?).into_response())
}
