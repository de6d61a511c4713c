//! `GET /v1/events` (the recent events, for replay) and `POST /v1/admin/events/{id}/retry`
//! (re-send one) (docs/events.md).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::extract::{is_canonical_uuid, page_limit, Query};
use super::{ApiError, AppState};
use crate::events::{EventQuery, EventType, Record};

/// Page size: default and most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    after: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<String>,
}

/// What the API shows of an event: the event and where each endpoint stands with it (the
/// lease is internal).
fn view(record: &Record) -> serde_json::Value {
    let deliveries: Vec<_> = record
        .deliveries
        .iter()
        .map(|d| {
            json!({
                "endpoint": d.name,
                "state": d.state,
                "attempts": d.attempts,
                "next_attempt_at": d.next_attempt_at,
                "last_status": d.last_status,
                "last_error": d.last_error,
                "delivered_at": d.delivered_at,
            })
        })
        .collect();
    json!({
        "id": record.event.id,
        "type": record.event.event_type,
        "timestamp": record.event.timestamp,
        "data": record.event.data,
        "deliveries": deliveries,
    })
}

#[utoipa::path(
    get, path = "/v1/events", tag = "events", operation_id = "list_events",
    params(
        ("after" = Option<String>, Query, description = "Only events after this id (`next_after` of the previous page, or the `webhook-id` of the last event you processed)", pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
        ("type" = Option<crate::api::openapi::EventTypeName>, Query, description = "Only events of this type"),
        ("limit" = Option<u32>, Query, description = "Page size, 1–1000 (default 100)", minimum = 1, maximum = 1000)),
    responses(
        (status = 200, description = "Oldest first (ids are time ordered), paged; only events recorded while `[[events.endpoints]]` are configured, kept like webhook events once delivered or failed", body = crate::api::openapi::EventPage),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    if let Some(after) = &params.after {
        if !is_canonical_uuid(after) {
            return Err(ApiError::validation(
                "after",
                "not an event id: pass `next_after` of the previous page or an event's id",
            ));
        }
    }
    let event_type = match &params.event_type {
        Some(t) => Some(t.parse::<EventType>().map_err(|_| {
            ApiError::validation(
                "type",
                format!(
                    "`{t}` is not an event type ({})",
                    crate::config::events::EVENT_TYPES.join(", ")
                ),
            )
        })?),
        None => None,
    };
    let limit = page_limit(params.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let (page, next) = state
        .events
        .list(&EventQuery {
            after: params.after,
            event_type,
            limit,
        })
        .await?;
    let data: Vec<_> = page.iter().map(view).collect();
    Ok(Json(json!({"data": data, "next_after": next})).into_response())
}

#[utoipa::path(
    post, path = "/v1/admin/events/{id}/retry", tag = "admin", operation_id = "admin_retry_event",
    params(("id" = String, Path, description = "The event's id (its `webhook-id`)")),
    responses(
        (status = 202, description = "Queued for delivery again, now, to every endpoint whose `types` want it (also those that had it already)", body = crate::api::openapi::EventView),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such event (or purged by retention)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !is_canonical_uuid(&id) {
        return Err(ApiError::not_found("no such event"));
    }
    match state.events.retry(&id).await? {
        Some(record) => Ok((StatusCode::ACCEPTED, Json(view(&record))).into_response()),
        None => Err(ApiError::not_found("no such event")),
    }
}
