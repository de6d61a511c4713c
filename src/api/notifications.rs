//! `POST /v1/notifications` (accept), `GET /v1/notifications/{id}` and the paged list.
//!
//! Accepting validates everything first (nothing invalid is stored), then hands the
//! notification to the store, which answers only once it is durable: the 202 is a promise.

use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lifeboat_channel::{Category, ChannelKind, WhatsappTemplate};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::contacts::{check_contact_id, ContactBody};
use super::extract::{is_canonical_uuid, page_limit, JsonBody, Query};
use super::{ApiError, AppState};
use crate::config::{parse_duration, RoutingConfig};
use crate::model::{
    ContactId, ContactPatch, Cursor, InvalidValue, Notification, NotificationId, Status, Timestamp,
};
use crate::store::{AcceptOutcome, IdempotencyKey, ListQuery, NewNotification};

/// The longest text any channel takes in one message (Telegram and WhatsApp: 4096).
const MAX_TEXT_CHARS: usize = 4096;
const MAX_EXPIRES_IN: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    #[schema(value_type = String, pattern = r"^[A-Za-z0-9._:@-]{1,128}$")]
    contact_id: ContactId,
    /// Addresses to set on the contact (created if missing). Addresses it already has change
    /// nothing, not even its `updated_at`; consent is never granted this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<ContactBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Default `transactional`.
    #[schema(value_type = Option<crate::api::openapi::Category>, example = "transactional")]
    category: Option<Category>,
    #[schema(min_length = 1, max_length = 4096)]
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 998)]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::api::openapi::WhatsappTemplate>)]
    whatsapp_template: Option<WhatsappTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Overrides `routing.order`; each channel at most once.
    #[schema(value_type = Option<Vec<crate::api::openapi::Channel>>, min_items = 1, max_items = 4)]
    channels: Option<Vec<ChannelKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fallback_after: Option<String>,
}

pub use crate::model::NotificationView;

/// A template's name and language, named in errors by `field` (`whatsapp_template`, or its
/// `alternative`).
fn check_template(t: &WhatsappTemplate, field: &str) -> Result<(), ApiError> {
    if t.name.is_empty() || t.name.len() > 512 {
        return Err(ApiError::validation(
            format!("{field}.name"),
            "must be 1–512 characters",
        ));
    }
    if t.language.is_empty() || t.language.len() > 15 {
        return Err(ApiError::validation(
            format!("{field}.language"),
            "must be a language code like en_US",
        ));
    }
    Ok(())
}

fn duration_field(field: &str, value: &Option<String>) -> Result<Option<Duration>, ApiError> {
    match value {
        None => Ok(None),
        Some(text) => {
            let d = parse_duration(text).map_err(|m| ApiError::validation(field, m))?;
            if d.is_zero() {
                return Err(ApiError::validation(field, "must be longer than zero"));
            }
            Ok(Some(d))
        }
    }
}

/// A [`NotificationRequest`] that passed every check that needs nothing but the request;
/// what still depends on the config (`routing.order`, `routing.expires_in`) and on the store
/// (does the contact exist: `Store::accept_known`, with the write) is settled by
/// [`ValidatedRequest::into_new`] and `create`.
pub struct ValidatedRequest {
    contact_id: ContactId,
    patch: Option<ContactPatch>,
    category: Category,
    text: String,
    subject: Option<String>,
    html: Option<String>,
    whatsapp_template: Option<WhatsappTemplate>,
    channels: Option<Vec<ChannelKind>>,
    expires_in: Option<Duration>,
    fallback_after: Option<Duration>,
    idempotency_key: Option<String>,
    /// SHA-256 of the request without its idempotency key: a repeat must match it.
    fingerprint: String,
}

impl TryFrom<NotificationRequest> for ValidatedRequest {
    type Error = ApiError;

    fn try_from(mut req: NotificationRequest) -> Result<Self, ApiError> {
        let idempotency_key = req.idempotency_key.take();
        if let Some(k) = &idempotency_key {
            if k.is_empty() || k.len() > 255 || k.chars().any(char::is_control) {
                return Err(ApiError::validation(
                    "idempotency_key",
                    "must be 1–255 printable characters",
                ));
            }
        }
        let fingerprint = hex::encode(Sha256::digest(
            serde_json::to_vec(&req).expect("request serializes"),
        ));
        if req
            .to
            .as_ref()
            .is_some_and(|to| to.timezone.is_some() || to.locale.is_some())
        {
            return Err(ApiError::validation(
                "to",
                "`to` holds addresses only; set timezone and locale with PUT /v1/contacts/{id}",
            ));
        }
        if req
            .text
            .chars()
            .all(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::validation(
                "text",
                "must hold some visible text (it is empty, or only spaces and control characters)",
            ));
        }
        if req.text.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::validation(
                "text",
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            ));
        }
        if let Some(subject) = &req.subject {
            if subject.chars().count() > 998 || subject.contains(['\r', '\n']) {
                return Err(ApiError::validation(
                    "subject",
                    "must be one line of at most 998 characters",
                ));
            }
        }
        if let Some(t) = &req.whatsapp_template {
            check_template(t, "whatsapp_template")?;
            if let Some(alt) = &t.alternative {
                check_template(alt, "whatsapp_template.alternative")?;
                if alt.alternative.is_some() {
                    return Err(ApiError::validation(
                        "whatsapp_template.alternative.alternative",
                        "an alternative has no alternative of its own",
                    ));
                }
                if (alt.name.as_str(), alt.language.as_str())
                    == (t.name.as_str(), t.language.as_str())
                {
                    return Err(ApiError::validation(
                        "whatsapp_template.alternative",
                        "must name another template (name or language) than whatsapp_template",
                    ));
                }
            }
        }
        if let Some(list) = &req.channels {
            if list.is_empty() {
                return Err(ApiError::validation(
                    "channels",
                    "must name at least one channel",
                ));
            }
            for (i, c) in list.iter().enumerate() {
                if list[..i].contains(c) {
                    return Err(ApiError::validation("channels", format!("names {c} twice")));
                }
            }
        }
        let expires_in = duration_field("expires_in", &req.expires_in)?;
        if expires_in.is_some_and(|d| d > MAX_EXPIRES_IN) {
            return Err(ApiError::validation(
                "expires_in",
                "must be at most 30 days",
            ));
        }
        let fallback_after = duration_field("fallback_after", &req.fallback_after)?;
        // A receipt check later than the notification's life never comes due; past the longest
        // life it is a mistake (and `"300000y"` would not even fit in a timestamp).
        if fallback_after.is_some_and(|d| d > MAX_EXPIRES_IN) {
            return Err(ApiError::validation(
                "fallback_after",
                "must be at most 30 days",
            ));
        }
        Ok(ValidatedRequest {
            contact_id: req.contact_id,
            patch: req.to.map(ContactPatch::from),
            category: req.category.unwrap_or_default(),
            text: req.text,
            subject: req.subject,
            html: req.html,
            whatsapp_template: req.whatsapp_template,
            channels: req.channels,
            expires_in,
            fallback_after,
            idempotency_key,
            fingerprint,
        })
    }
}

impl ValidatedRequest {
    /// The queued notification (with the contact's new addresses and the idempotency record),
    /// the config's routing filling what the request left out.
    fn into_new(
        self,
        routing: &RoutingConfig,
        app: &super::auth::ApiKeyScope,
        now: Timestamp,
    ) -> Result<NewNotification, ApiError> {
        let expires_in = self.expires_in.unwrap_or(routing.expires_in);
        // The default is checked too: a `routing.expires_in` past the longest life fails
        // every request that does not set its own.
        if expires_in > MAX_EXPIRES_IN {
            return Err(ApiError::validation(
                "expires_in",
                "must be at most 30 days",
            ));
        }
        let idempotency = self.idempotency_key.as_ref().map(|k| IdempotencyKey {
            // Scoped to the api key that sent it (auth.rs): another app's key is another key.
            key: app.idempotency_key(k),
            fingerprint: self.fingerprint,
        });
        let notification = Notification {
            id: uuid::Uuid::now_v7().to_string(),
            contact_id: self.contact_id.into_string(),
            category: self.category,
            text: self.text,
            subject: self.subject,
            html: self.html,
            whatsapp_template: self.whatsapp_template,
            channels: self.channels.unwrap_or_else(|| routing.order.clone()),
            status: Status::Queued,
            channel: None,
            attempts: Vec::new(),
            created_at: now,
            updated_at: now,
            expires_at: crate::model::later(now, expires_in),
            fallback_after_secs: self.fallback_after.map(|d| d.as_secs().max(1)),
            idempotency_key: self.idempotency_key,
            cursor: Cursor::default(),
            next_attempt_at: Some(now),
        };
        Ok(NewNotification {
            notification,
            contact_patch: self.patch,
            idempotency,
        })
    }
}

/// The idempotency key may come as the body member or the header; both must agree.
fn merge_header_key(req: &mut NotificationRequest, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(());
    };
    let header = value.to_str().map_err(|_| {
        ApiError::validation(
            "idempotency_key",
            "the Idempotency-Key header is not valid text",
        )
    })?;
    match &req.idempotency_key {
        Some(body) if body != header => Err(ApiError::validation(
            "idempotency_key",
            "the body's idempotency_key and the Idempotency-Key header differ",
        )),
        _ => {
            req.idempotency_key = Some(header.to_string());
            Ok(())
        }
    }
}

#[utoipa::path(
    post, path = "/v1/notifications", tag = "notifications", operation_id = "create_notification",
    params(("Idempotency-Key" = Option<String>, Header, description = "Same as the `idempotency_key` member")),
    request_body = NotificationRequest,
    responses(
        (status = 202, description = "Durably stored: `{\"id\", \"status\": \"queued\"}`", body = crate::api::openapi::Accepted),
        (status = 200, description = "A repeat of an earlier request with the same key and body (from the same api key): the first id", body = crate::api::openapi::Accepted),
        (status = 400, description = "Broken JSON", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Same idempotency key, different body", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "The store is overloaded; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(app): Extension<super::auth::ApiKeyScope>,
    headers: HeaderMap,
    JsonBody(mut req): JsonBody<NotificationRequest>,
) -> Result<Response, ApiError> {
    merge_header_key(&mut req, &headers)?;
    let valid = ValidatedRequest::try_from(req)?;
    let contact_id = valid.contact_id.clone();
    let now = state.clock.now();
    let new = valid.into_new(&state.config.routing, &app, now)?;
    let id = new.notification.id.clone();
    let category = new.notification.category;
    // Without `to`, the contact must exist: checked by the store with the write (one call).
    match state.store.accept_known(new, now).await? {
        AcceptOutcome::UnknownContact => Err(ApiError::validation(
            "contact_id",
            format!(
                "no contact `{contact_id}`: create it with PUT /v1/contacts/{contact_id} or pass its addresses in `to`"
            ),
        )),
        AcceptOutcome::Created => {
            state.wake.notify_one();
            state.metrics.accepted(category);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "status": "queued"})),
            )
                .into_response())
        }
        AcceptOutcome::Duplicate { id } => {
            let status = state
                .store
                .get_notification(&id)
                .await?
                .map(|n| n.status)
                .unwrap_or(Status::Queued);
            Ok((StatusCode::OK, Json(json!({"id": id, "status": status}))).into_response())
        }
        AcceptOutcome::Conflict { id } => Err(ApiError::idempotency_conflict(format!(
            "this idempotency key was used within 24 h for a different request (notification {id})"
        ))),
    }
}

#[utoipa::path(
    get, path = "/v1/notifications/{id}", tag = "notifications", operation_id = "get_notification",
    params(("id" = String, Path, description = "From the 202 answer", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    responses(
        (status = 200, description = "The notification with its attempts", body = crate::api::openapi::NotificationView),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such notification", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: NotificationId = id
        .parse()
        .map_err(|e: InvalidValue| ApiError::validation("id", e.to_string()))?;
    match state.store.get_notification(id.as_str()).await? {
        Some(n) => Ok(Json(NotificationView::from(&n)).into_response()),
        None => Err(ApiError::not_found(format!("no notification `{id}`"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    contact_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/notifications", tag = "notifications", operation_id = "list_notifications",
    params(
        ("contact_id" = Option<String>, Query, description = "Only this contact's", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("status" = Option<crate::api::openapi::NotificationStatus>, Query, description = "Only those in this status"),
        ("limit" = Option<u32>, Query, description = "Page size, 1–100 (default 20)", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page (anything else is a 422)", pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses(
        (status = 200, description = "Newest first, paged", body = crate::api::openapi::NotificationPage),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    if let Some(c) = &params.contact_id {
        check_contact_id(c)?;
    }
    let status = match &params.status {
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::validation(
                "status",
                format!("`{s}` is not a status (queued, sending, sent, delivered, read, failed, expired, cancelled)"),
            )
        })?),
        None => None,
    };
    let limit = page_limit(params.limit.as_deref(), 20, 100)?;
    if let Some(c) = &params.cursor {
        // A cursor is the id of a notification (`next_cursor`): anything else would silently
        // page from an arbitrary place (often page one).
        if !is_canonical_uuid(c) {
            return Err(ApiError::validation(
                "cursor",
                "not a cursor: pass the `next_cursor` of the previous page",
            ));
        }
    }
    let (page, next) = state
        .store
        .list_notifications(&ListQuery {
            contact_id: params.contact_id,
            status,
            limit,
            cursor: params.cursor,
        })
        .await?;
    let data: Vec<NotificationView> = page.iter().map(NotificationView::from).collect();
    Ok(Json(json!({"data": data, "next_cursor": next})).into_response())
}
