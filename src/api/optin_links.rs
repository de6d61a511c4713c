//! `POST /v1/contacts/{contact_id}/optin-links`: the links a business hands to a person so they
//! can opt in by themselves (a Telegram deep link, a WhatsApp `START <token>` message, a LINE
//! add-friend link), all carrying one fresh opt-in token from [`crate::optin`].
//!
//! Only channels the config can build a link for appear: Telegram needs `bot_username`,
//! WhatsApp `business_number`, LINE `basic_id` in their `[channels.*]` tables. The answer is
//! 201 (a token was created): `{"token", "scopes", "expires_at", "telegram"?, "whatsapp"?,
//! "line"?}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lifeboat_channel::{Category, ChannelKind};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::contacts::check_contact_id;
use super::extract::parse_json;
use super::{ApiError, AppState};
use crate::config::{ChannelSection, Config};

/// The optional request body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinksBody {
    /// Default `["transactional"]`.
    #[schema(value_type = Option<Vec<crate::api::openapi::Category>>)]
    scopes: Option<Vec<Category>>,
}

/// The body, if any: an empty body (with or without a content type) means the defaults.
async fn optional_body(req: Request) -> Result<LinksBody, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let bytes = Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::invalid_json(rejection.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(LinksBody::default());
    }
    let is_json = content_type.is_some_and(|mime| {
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    });
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    parse_json(&bytes)
}

/// A string key of a configured channel's table.
fn channel_key<'a>(config: &'a Config, kind: ChannelKind, key: &str) -> Option<&'a str> {
    match config.channels.get(&kind) {
        Some(ChannelSection::Configured { table, .. }) => table
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty()),
        _ => None,
    }
}

/// The links for every channel that can have one.
pub fn links(config: &Config, token: &str) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(name) = channel_key(config, ChannelKind::Telegram, "bot_username") {
        let name = name.trim_start_matches('@');
        out.insert(
            "telegram".into(),
            format!("https://t.me/{name}?start={token}").into(),
        );
    }
    if let Some(number) = channel_key(config, ChannelKind::Whatsapp, "business_number") {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            out.insert(
                "whatsapp".into(),
                format!("https://wa.me/{digits}?text=START%20{token}").into(),
            );
        }
    }
    if let Some(id) = channel_key(config, ChannelKind::Line, "basic_id") {
        let id = id.trim_start_matches('@');
        let ok = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            out.insert(
                "line".into(),
                format!("https://line.me/R/ti/p/%40{id}").into(),
            );
        }
    }
    out
}

/// `POST /v1/contacts/{contact_id}/optin-links`.
#[utoipa::path(
    post, path = "/v1/contacts/{contact_id}/optin-links", tag = "contacts", operation_id = "create_optin_links",
    params(("contact_id" = String, Path, description = "1–128 of A-Za-z0-9._:@-", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    request_body(content = Option<LinksBody>, description = "Optional; an empty body means the defaults"),
    responses(
        (status = 201, description = "The links of the configured channels", body = crate::api::openapi::OptinLinks),
        (status = 400, description = "Broken JSON", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or unknown api key", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The admin token was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such contact", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A member or parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    check_contact_id(&contact_id)?;
    let body = optional_body(req).await?;
    let mut scopes = body.scopes.unwrap_or_else(|| vec![Category::Transactional]);
    if scopes.is_empty() {
        return Err(ApiError::validation(
            "scopes",
            "name at least one scope (transactional, marketing)",
        ));
    }
    scopes.sort_by_key(|c| c.as_str());
    scopes.dedup();
    if state.store.get_contact(&contact_id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no contact `{contact_id}`: create it with PUT /v1/contacts/{contact_id} first"
        )));
    }
    let (token, record) =
        crate::optin::create(state.store.as_ref(), &contact_id, scopes, state.clock.now()).await?;
    let mut answer = links(&state.config, &token);
    answer.insert("token".into(), json!(token));
    answer.insert("contact_id".into(), json!(contact_id));
    answer.insert("scopes".into(), json!(record.scopes));
    answer.insert("expires_at".into(), json!(record.expires_at));
    Ok((StatusCode::CREATED, Json(Value::Object(answer))).into_response())
}
