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
use crate::model::ChannelState;
use crate::states::history;

/// One row of the channel table, as `GET /v1/admin/channels` and the CLI show it. The counts
/// and the quality signal are the fleet's, read from the store (the same on every instance).
pub async fn channel_row(state: &AppState, kind: ChannelKind) -> crate::store::StoreResult<Value> {
    let now = state.clock.now();
    let status = state.states.current(kind);
    let (sent, failed) = state.states.counts(kind, now).await?;
    let quality = state.states.stored_quality(kind).await?;
    let configured = state.registry.get(kind).is_some();
    let missing = state.registry.missing(kind);
    Ok(json!({
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
        "quality": quality,
    }))
}

/// [`channel_row`] plus the guardrails' view: `marketing` (paused or not, why, and the risk
/// monitor's figures) and the pacing `rate` in force.
async fn row_with_policy(state: &AppState, kind: ChannelKind) -> Result<Value, ApiError> {
    let mut row = channel_row(state, kind).await?;
    let marketing = state.policy.marketing_status(&state.states, kind).await?;
    row["marketing"] = json!(marketing);
    row["rate"] = json!(state.policy.rate(kind, state.clock.now()));
    row["pricing"] = json!(crate::policy::pricing::counts(state.store.as_ref(), kind).await?);
    if kind == ChannelKind::Whatsapp {
        for (key, value) in whatsapp_details(state).await? {
            row[key] = value;
        }
    }
    Ok(row)
}

/// What only the WhatsApp row has: `templates` (each used template's state at Meta) and
/// `portfolio` (the messaging limit in force, its source, how many new people were reached in
/// 24 h and how many are left) and `restrictions` (Meta's typed restrictions in force, each
/// with its type, end and effect).
pub async fn whatsapp_details(
    state: &AppState,
) -> crate::store::StoreResult<Vec<(&'static str, Value)>> {
    let now = state.clock.now();
    let store = state.store.as_ref();
    let templates: Vec<Value> = crate::policy::templates::list(store)
        .await?
        .into_iter()
        .map(|t| {
            json!({
                "name": t.name,
                "language": t.language,
                "state": t.state_at(now),
                "paused_until": if t.state_at(now) == crate::policy::templates::TemplateState::Paused { json!(t.paused_until) } else { Value::Null },
                "quality": t.quality,
                "reason": t.reason,
                "since": t.since,
            })
        })
        .collect();
    let portfolio = state.policy.portfolio_status(now).await?;
    let restrictions: Vec<Value> = crate::policy::portfolio::restrictions(store, now)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "restriction_type": r.restriction_type,
                "until": r.until,
                "effect": r.restriction_type.effect(),
                "at": r.at,
            })
        })
        .collect();
    let pricing = crate::policy::pricing::counts(store, ChannelKind::Whatsapp).await?;
    Ok(vec![
        ("pricing", json!(pricing)),
        ("templates", json!(templates)),
        ("portfolio", portfolio),
        ("restrictions", json!(restrictions)),
    ])
}

#[utoipa::path(
    get, path = "/v1/admin/channels", tag = "admin", operation_id = "admin_list_channels",
    responses(
        (status = 200, description = "One row per channel: state, reason, since, until, last_error, counts, marketing (risk monitor: paused, reason, figures), rate", body = Vec<crate::api::openapi::ChannelRow>),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_channels(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut rows = Vec::new();
    for kind in ChannelKind::ALL {
        rows.push(row_with_policy(&state, kind).await?);
    }
    Ok(Json(Value::Array(rows)))
}

/// The recent channel state changes, newest first, as `GET /v1/admin/channels/history` and
/// the admin page's timeline show them. A change that took a channel out of rotation also
/// says when it came back (`back_at`, null while it is still out) and what every other channel
/// sent meanwhile (`carried_by_others`; null when the gateway restarted in between, as those
/// counts are kept in memory).
pub fn history_rows(state: &AppState) -> Vec<Value> {
    let changes = state.states.history();
    let (now_totals, boot) = state.states.sent_totals();
    let mut rows = Vec::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate().rev() {
        let mut row = json!({
            "seq": c.seq,
            "at": c.at,
            "channel": c.channel,
            "from": c.from,
            "to": c.to,
            "reason": c.reason,
            "until": c.until,
        });
        if c.to != ChannelState::Active {
            let back = changes[i + 1..]
                .iter()
                .find(|later| later.channel == c.channel && later.to == ChannelState::Active);
            let carried = match back {
                Some(b) => history::carried(c, &b.sent_totals, &b.boot),
                None => history::carried(c, &now_totals, &boot),
            };
            row["back_at"] = json!(back.map(|b| b.at));
            row["carried_by_others"] = json!(carried);
        }
        rows.push(row);
    }
    rows
}

#[utoipa::path(
    get, path = "/v1/admin/channels/history", tag = "admin",
    responses(
        (status = 200, description = "`{\"history\": [...]}`: the recent channel state changes (the last 200, kept in the store across restarts; moves between active and throttled are not recorded), newest first. Each: `seq`, `at`, `channel`, `from`, `to`, `reason` (why: the provider's words, the admin's reason, `enabled by admin`, `probe succeeded`), `until`; a change out of rotation also has `back_at` (when the channel was next active, or null) and `carried_by_others` (per other channel, the notifications it sent from the change until `back_at` or now; null when the gateway restarted in between)", body = crate::api::openapi::ChannelHistory),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn channel_history(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "history": history_rows(&state) }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableBody {
    /// 1–500 characters, shown in the channel table.
    #[schema(min_length = 1, max_length = 500)]
    reason: String,
}

#[utoipa::path(
    post, path = "/v1/admin/channels/{channel}/disable", tag = "admin", operation_id = "admin_disable_channel",
    params(("channel" = crate::api::openapi::Channel, Path, description = "whatsapp, telegram, email or line (another name is a 404)")),
    request_body = DisableBody,
    responses(
        (status = 200, description = "The channel's row, now `disabled`", body = crate::api::openapi::ChannelRow),
        (status = 400, description = "Broken JSON", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
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
    Ok(Json(channel_row(&state, kind).await?).into_response())
}

#[utoipa::path(
    post, path = "/v1/admin/channels/{channel}/enable", tag = "admin", operation_id = "admin_enable_channel",
    params(("channel" = crate::api::openapi::Channel, Path, description = "whatsapp, telegram, email or line (another name is a 404)")),
    responses(
        (status = 200, description = "The channel's row, now `active`; a marketing pause by the risk monitor is lifted too", body = crate::api::openapi::ChannelRow),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
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
    post, path = "/v1/admin/channels/{channel}/marketing/resume", tag = "admin", operation_id = "admin_resume_marketing",
    params(("channel" = crate::api::openapi::Channel, Path, description = "whatsapp, telegram, email or line (another name is a 404)")),
    responses(
        (status = 200, description = "The channel's row: the risk monitor's marketing pause lifted, its figures reset (the channel state is left as it is)", body = crate::api::openapi::ChannelRow),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
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
