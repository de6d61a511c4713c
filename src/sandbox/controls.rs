//! The `/sandbox/...` routes, mounted only by `lifeboat sandbox`: set how a simulated provider
//! answers, and list what it received. They let a newcomer cause a ban or a restriction on
//! purpose and watch the gateway fail over.
//!
//! Every route takes the sandbox's admin token (`Authorization: Bearer sandbox-admin-token`);
//! an api key gets 403, anything else 401. Errors use the API's one error shape
//! ([`ApiError`]). Bodies:
//!
//! - `GET /sandbox/providers` → `[{"channel", "url", "mode", "address", "answers", "received",
//!   "refused", "last_refusal"}, …]`, one row per channel;
//! - `GET /sandbox/providers/{channel}` → that row;
//! - `POST /sandbox/providers/{channel}` with `{"mode": "accept" | "transient" | "throttle" |
//!   "restrict" | "ban"}` or `{"mode": "reject_recipient", "address": "+48600100200"}` → the
//!   row after the change;
//! - `GET /sandbox/providers/{channel}/received` → `[{"at", "to", "text", "message_id",
//!   "subject"?, "request"}, …]`, oldest first (newest last);
//! - `DELETE /sandbox/providers/{channel}/received` → 204;
//! - `GET /sandbox/providers/{channel}/refused` → `["<time>", …]`, when each refused send came
//!   in (the benchmark counts sends that reached a banned channel);
//! - `POST /sandbox/providers/whatsapp/templates/{name}` with `{"state": "paused"}`: the
//!   simulated WhatsApp answers 132015 (template paused) to sends with that template; with
//!   `{"state": "approved"}` it accepts them again and, like Meta, sends the gateway a signed
//!   `message_template_status_update` webhook (`APPROVED`) → the WhatsApp row.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lifeboat_channel::ChannelKind;
use serde::Deserialize;
use serde_json::{json, Value};

use super::providers::{describe, Mode, Simulated};
use super::smtp::Email;
use super::{ADMIN_TOKEN, API_KEY};
use crate::api::extract::JsonBody;
use crate::api::ApiError;

/// Every simulated provider, by channel.
#[derive(Clone)]
pub struct Providers {
    pub http: BTreeMap<ChannelKind, Arc<Simulated>>,
    pub email: Arc<Email>,
    /// The gateway's own base URL, for the webhooks the simulated WhatsApp sends it.
    pub gateway: String,
}

impl Providers {
    fn sim(&self, kind: ChannelKind) -> &Arc<Simulated> {
        match kind {
            ChannelKind::Email => &self.email.sim,
            other => &self.http[&other],
        }
    }

    fn set_mode(&self, kind: ChannelKind, mode: Mode) {
        match kind {
            ChannelKind::Email => self.email.set_mode(mode),
            other => self.http[&other].set_mode(mode),
        }
    }

    fn clear(&self, kind: ChannelKind) {
        match kind {
            ChannelKind::Email => self.email.clear_received(),
            other => self.http[&other].clear_received(),
        }
    }

    /// One provider as the controls show it.
    pub fn row(&self, kind: ChannelKind) -> Value {
        let sim = self.sim(kind);
        let mode = sim.mode();
        json!({
            "channel": kind,
            "url": sim.url,
            "mode": mode.name(),
            "address": mode.address(),
            "answers": describe(kind, &mode),
            "received": sim.received_count(),
            "refused": sim.refused(),
            "last_refusal": sim.last_refusal(),
            "paused_templates": (kind == ChannelKind::Whatsapp).then(|| sim.paused_templates()),
        })
    }
}

/// The routes, ready to merge into the API.
pub fn router(providers: Providers) -> Router {
    Router::new()
        .route("/sandbox/providers", get(list))
        .route("/sandbox/providers/{channel}", get(show).post(set_mode))
        .route(
            "/sandbox/providers/{channel}/received",
            get(received).delete(clear),
        )
        .route("/sandbox/providers/{channel}/refused", get(refused))
        .route(
            "/sandbox/providers/whatsapp/templates/{name}",
            axum::routing::post(set_template),
        )
        .route_layer(axum::middleware::from_fn(require_admin_token))
        .with_state(providers)
}

/// The sandbox's admin token, and nothing else. The token is a fixed, printed demo value, so
/// a plain comparison is enough here (the real API's keys go through `api::auth`).
pub(super) async fn require_admin_token(req: Request, next: Next) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <key>` header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|t| t.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
    if token == ADMIN_TOKEN {
        return Ok(next.run(req).await);
    }
    if token == API_KEY {
        return Err(ApiError::forbidden(
            "an api key cannot use /sandbox; use the admin token",
        ));
    }
    Err(ApiError::unauthorized("unknown admin token"))
}

fn channel(name: &str) -> Result<ChannelKind, ApiError> {
    name.parse::<ChannelKind>()
        .map_err(|e| ApiError::not_found(e.to_string()))
}

async fn list(State(p): State<Providers>) -> Json<Value> {
    Json(Value::Array(
        ChannelKind::ALL.iter().map(|k| p.row(*k)).collect(),
    ))
}

async fn show(
    State(p): State<Providers>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(p.row(channel(&name)?)))
}

/// Body of `POST /sandbox/providers/{channel}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    mode: String,
    #[serde(default)]
    address: Option<String>,
}

impl ModeBody {
    fn into_mode(self) -> Result<Mode, ApiError> {
        let mode = match self.mode.as_str() {
            "accept" => Mode::Accept,
            "transient" => Mode::Transient,
            "throttle" => Mode::Throttle,
            "restrict" => Mode::Restrict,
            "ban" => Mode::Ban,
            "reject_recipient" => {
                let address = self.address.as_deref().map(str::trim).unwrap_or_default();
                if address.is_empty() {
                    return Err(ApiError::validation(
                        "address",
                        "reject_recipient needs the address to reject (a phone number, chat id, mailbox or LINE user id)",
                    ));
                }
                return Ok(Mode::RejectRecipient {
                    address: address.to_string(),
                });
            }
            other => {
                return Err(ApiError::validation(
                    "mode",
                    format!("`{other}` is not a mode; expected one of {}", Mode::NAMES),
                ))
            }
        };
        if self.address.is_some() {
            return Err(ApiError::validation(
                "address",
                "only reject_recipient takes an address",
            ));
        }
        Ok(mode)
    }
}

async fn set_mode(
    State(p): State<Providers>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ModeBody>,
) -> Result<Json<Value>, ApiError> {
    let kind = channel(&name)?;
    let mode = body.into_mode()?;
    tracing::info!(channel = %kind, mode = mode.name(), "sandbox: simulated provider mode set");
    p.set_mode(kind, mode);
    Ok(Json(p.row(kind)))
}

/// Body of `POST /sandbox/providers/whatsapp/templates/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    state: String,
}

async fn set_template(
    State(p): State<Providers>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<TemplateBody>,
) -> Result<Json<Value>, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 512 {
        return Err(ApiError::validation("name", "must be 1–512 characters"));
    }
    let paused = match body.state.as_str() {
        "paused" => true,
        "approved" => false,
        other => {
            return Err(ApiError::validation(
                "state",
                format!("`{other}` is not a template state; expected paused or approved"),
            ))
        }
    };
    let sim = p.sim(ChannelKind::Whatsapp);
    sim.set_template_paused(name, paused);
    tracing::info!(template = name, state = %body.state, "sandbox: simulated WhatsApp template state set");
    if !paused {
        approve_at_gateway(&p.gateway, name).await?;
    }
    Ok(Json(p.row(ChannelKind::Whatsapp)))
}

/// Tells the gateway, the way Meta does, that `name` (every language the sandbox uses,
/// `en_US`) is approved again: a signed `message_template_status_update` webhook.
async fn approve_at_gateway(gateway: &str, name: &str) -> Result<(), ApiError> {
    use hmac::Mac;
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "time": chrono::Utc::now().timestamp(),
            "changes": [{"field": "message_template_status_update", "value": {
                "event": "APPROVED", "message_template_id": 1,
                "message_template_name": name, "message_template_language": "en_US",
                "reason": "NONE"}}]}]
    }))
    .expect("a webhook serializes");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(
        super::providers::WHATSAPP_APP_SECRET.as_bytes(),
    )
    .expect("any key length");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let answer = reqwest::Client::new()
        .post(format!("{gateway}/webhooks/whatsapp"))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(ApiError::internal(format!(
            "the gateway refused the template webhook: HTTP {}",
            r.status()
        ))),
        Err(e) => Err(ApiError::internal(format!(
            "the gateway could not be reached for the template webhook: {e}"
        ))),
    }
}

async fn received(
    State(p): State<Providers>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let kind = channel(&name)?;
    Ok(Json(p.sim(kind).received()).into_response())
}

async fn clear(
    State(p): State<Providers>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let kind = channel(&name)?;
    p.clear(kind);
    Ok(StatusCode::NO_CONTENT)
}

async fn refused(
    State(p): State<Providers>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let kind = channel(&name)?;
    Ok(Json(p.sim(kind).refused_at()).into_response())
}
