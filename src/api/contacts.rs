//! Contacts, their addresses and their consents (with the append-only history).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lifeboat_channel::{Category, ChannelKind};
use serde::Deserialize;
use serde_json::json;

use super::extract::JsonBody;
use super::{ApiError, AppState};
use crate::model::{
    Consent, ConsentStatus, ContactId, ContactPatch, EmailAddress, InvalidValue, LineUserId,
    Locale, TelegramChat, TimeZoneName, Timestamp, E164,
};

/// Body of `PUT /v1/contacts/{id}` and the `to` member of a notification. Every member is
/// parsed while the JSON is read, so a bad one is a 422 naming it (`whatsapp`, `to.email`).
#[derive(Debug, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    #[schema(value_type = Option<String>)]
    pub whatsapp: Option<E164>,
    #[schema(value_type = Option<String>)]
    pub telegram: Option<TelegramChat>,
    #[schema(value_type = Option<String>)]
    pub email: Option<EmailAddress>,
    #[schema(value_type = Option<String>)]
    pub line: Option<LineUserId>,
    #[schema(value_type = Option<String>)]
    pub timezone: Option<TimeZoneName>,
    #[schema(value_type = Option<String>)]
    pub locale: Option<Locale>,
}

impl From<ContactBody> for ContactPatch {
    fn from(body: ContactBody) -> ContactPatch {
        ContactPatch {
            whatsapp: body.whatsapp,
            telegram: body.telegram,
            email: body.email,
            line: body.line,
            timezone: body.timezone,
            locale: body.locale,
        }
    }
}

/// A contact id from a path or query parameter; a bad one is a 422 on `contact_id`.
pub fn check_contact_id(id: &str) -> Result<ContactId, ApiError> {
    id.parse()
        .map_err(|e: InvalidValue| ApiError::validation("contact_id", e.to_string()))
}

pub fn parse_channel(name: &str) -> Result<ChannelKind, ApiError> {
    name.parse::<ChannelKind>()
        .map_err(|e| ApiError::not_found(e.to_string()))
}

#[utoipa::path(
    put, path = "/v1/contacts/{contact_id}", tag = "contacts", operation_id = "put_contact",
    params(("contact_id" = String, Path, description = "1–128 of A-Za-z0-9._:@-", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    request_body = ContactBody,
    responses(
        (status = 200, description = "The contact", body = crate::api::openapi::Contact),
        (status = 400, description = "Broken JSON", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An empty contact id (no such route)", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "The store is overloaded; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn put_contact(
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
    JsonBody(body): JsonBody<ContactBody>,
) -> Result<Response, ApiError> {
    let contact_id = check_contact_id(&contact_id)?;
    let contact = state
        .store
        .upsert_contact(contact_id.as_str(), &body.into(), state.clock.now())
        .await?;
    Ok(Json(contact).into_response())
}

#[utoipa::path(
    get, path = "/v1/contacts/{contact_id}", tag = "contacts", operation_id = "get_contact",
    params(("contact_id" = String, Path, description = "1–128 of A-Za-z0-9._:@-", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    responses(
        (status = 200, description = "The contact with its `consents`", body = crate::api::openapi::Contact),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such contact", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_contact(
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
) -> Result<Response, ApiError> {
    let contact_id = check_contact_id(&contact_id)?;
    match state.store.get_contact(contact_id.as_str()).await? {
        Some(contact) => Ok(Json(contact).into_response()),
        None => Err(ApiError::not_found(format!("no contact `{contact_id}`"))),
    }
}

#[utoipa::path(
    delete, path = "/v1/contacts/{contact_id}", tag = "contacts", operation_id = "delete_contact",
    params(("contact_id" = String, Path, description = "1–128 of A-Za-z0-9._:@-", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    responses(
        (status = 204, description = "Erased (right to be forgotten)"),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such contact", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete_contact(
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
) -> Result<Response, ApiError> {
    let contact_id = check_contact_id(&contact_id)?;
    if state
        .store
        .erase_contact(contact_id.as_str(), state.clock.now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no contact `{contact_id}`")))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    /// `granted` or `revoked`.
    #[schema(value_type = crate::api::openapi::ConsentStatus, example = "granted")]
    status: ConsentStatus,
    /// `transactional` and/or `marketing`; default `["transactional"]`.
    #[schema(value_type = Option<Vec<crate::api::openapi::Category>>)]
    scopes: Option<Vec<Category>>,
    /// Where the consent came from; default `api`.
    #[schema(min_length = 1, max_length = 64)]
    source: Option<String>,
    #[schema(max_length = 4096)]
    evidence: Option<String>,
}

impl ConsentBody {
    /// The consent record this body asks for (defaults filled in), stamped `at`.
    fn into_consent(self, at: Timestamp) -> Result<Consent, ApiError> {
        let mut scopes = self.scopes.unwrap_or_else(|| vec![Category::Transactional]);
        scopes.sort_by_key(|c| c.as_str());
        scopes.dedup();
        if self.status == ConsentStatus::Granted && scopes.is_empty() {
            return Err(ApiError::validation(
                "scopes",
                "a granted consent needs at least one scope (transactional, marketing)",
            ));
        }
        let source = self.source.unwrap_or_else(|| "api".to_string());
        if source.is_empty() || source.len() > 64 {
            return Err(ApiError::validation("source", "must be 1–64 characters"));
        }
        if self.evidence.as_ref().is_some_and(|e| e.len() > 4096) {
            return Err(ApiError::validation(
                "evidence",
                "must be at most 4096 characters",
            ));
        }
        Ok(Consent {
            status: self.status,
            scopes,
            source,
            evidence: self.evidence,
            at,
        })
    }
}

#[utoipa::path(
    put, path = "/v1/contacts/{contact_id}/consents/{channel}", tag = "contacts", operation_id = "put_consent",
    params(("contact_id" = String, Path, description = "1–128 of A-Za-z0-9._:@-", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"), ("channel" = crate::api::openapi::Channel, Path, description = "whatsapp, telegram, email or line (another name is a 404)")),
    request_body = ConsentBody,
    responses(
        (status = 200, description = "The consent record", body = crate::api::openapi::ConsentRecord),
        (status = 400, description = "Broken JSON", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such contact or channel", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn put_consent(
    State(state): State<AppState>,
    Path((contact_id, channel)): Path<(String, String)>,
    JsonBody(body): JsonBody<ConsentBody>,
) -> Result<Response, ApiError> {
    let contact_id = check_contact_id(&contact_id)?;
    let kind = parse_channel(&channel)?;
    let consent = body.into_consent(state.clock.now())?;
    match state
        .events
        .set_consent(state.store.as_ref(), contact_id.as_str(), kind, consent)
        .await?
    {
        Some(record) => Ok(Json(json!({
            "contact_id": contact_id,
            "channel": kind,
            "status": record.status,
            "scopes": record.scopes,
            "source": record.source,
            "evidence": record.evidence,
            "at": record.at,
        }))
        .into_response()),
        None => Err(ApiError::not_found(format!(
            "no contact `{contact_id}`: create it with PUT /v1/contacts/{contact_id} first"
        ))),
    }
}

#[utoipa::path(
    get, path = "/v1/contacts/{contact_id}/consents/{channel}/history", tag = "contacts", operation_id = "consent_history",
    params(("contact_id" = String, Path, description = "1–128 of A-Za-z0-9._:@-", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"), ("channel" = crate::api::openapi::Channel, Path, description = "whatsapp, telegram, email or line (another name is a 404)")),
    responses(
        (status = 200, description = "Every change, oldest first", body = crate::api::openapi::ConsentHistory),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such contact or channel", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn consent_history(
    State(state): State<AppState>,
    Path((contact_id, channel)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let contact_id = check_contact_id(&contact_id)?;
    let kind = parse_channel(&channel)?;
    if state
        .store
        .get_contact(contact_id.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no contact `{contact_id}`")));
    }
    let history = state
        .store
        .consent_history(contact_id.as_str(), kind)
        .await?;
    Ok(
        Json(json!({ "contact_id": contact_id, "channel": kind, "history": history }))
            .into_response(),
    )
}
