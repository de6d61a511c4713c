//! `GET /v1/admin/policy/preview`: the plan a notification would get right now, channel by
//! channel, with the reason for each skip or wait. It runs the workers' own decision
//! ([`crate::policy::Policy::decide`]) as a dry run: nothing is sent, no pacing slot is booked,
//! no counter moves and no probe slot is taken, so the preview and the real plan agree.

use axum::extract::State;
use axum::Json;
use lifeboat_channel::{Category, ChannelKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::Query;
use super::{ApiError, AppState};
use crate::policy::window::Form;
use crate::policy::{Candidate, Decision, Mode, WaitReason};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewParams {
    contact_id: String,
    #[serde(default)]
    category: Option<String>,
    /// Comma-separated channel order (default `routing.order`).
    #[serde(default)]
    channels: Option<String>,
    /// Whether the notification would carry a `whatsapp_template`.
    #[serde(default)]
    whatsapp_template: Option<bool>,
}

#[utoipa::path(
    get, path = "/v1/admin/policy/preview", tag = "admin", operation_id = "admin_policy_preview",
    params(
        ("contact_id" = String, Query, description = "The contact", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("category" = Option<crate::api::openapi::Category>, Query, description = "transactional (default) or marketing"),
        ("channels" = Option<String>, Query, description = "Comma-separated channel order; default routing.order"),
        ("whatsapp_template" = Option<bool>, Query, description = "Whether the notification would carry a whatsapp_template (default false)")),
    responses(
        (status = 200, description = "`plan`: per channel `decision` (send, skip, wait) with `reason`, `detail`, `until`, `form`; `outcome`: what the notification would do now. Nothing is sent or counted.", body = crate::api::openapi::PolicyPreview),
        (status = 401, description = "Missing or unknown admin token", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "An api key was used", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such contact", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "A parameter is invalid (`field` names it)", body = crate::api::openapi::ErrorBody),
        (status = 500, description = "`internal_error`: the store failed (I/O or a corrupt record); the body holds only a reference to the logged cause", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "`overloaded`: the store is stopping or the gateway is at its connection cap; see Retry-After", body = crate::api::openapi::ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn preview(
    State(state): State<AppState>,
    Query(params): Query<PreviewParams>,
) -> Result<Json<Value>, ApiError> {
    let category = match params.category.as_deref() {
        None | Some("transactional") => Category::Transactional,
        Some("marketing") => Category::Marketing,
        Some(_) => {
            return Err(ApiError::validation(
                "category",
                "must be transactional or marketing",
            ))
        }
    };
    let channels: Vec<ChannelKind> = match params.channels.as_deref() {
        None => state.config.routing.order.clone(),
        Some(list) => list
            .split(',')
            .map(|c| c.trim().parse::<ChannelKind>())
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::validation("channels", e.to_string()))?,
    };
    let Some(contact) = state.store.get_contact(&params.contact_id).await? else {
        return Err(ApiError::not_found("no such contact"));
    };
    let now = state.clock.now();
    let mut plan = Vec::new();
    let mut outcome = json!({"action": "fail", "detail": "no channel left to try"});
    let mut decided = false;
    for kind in channels {
        let candidate = Candidate {
            notification_id: "policy-preview",
            category,
            has_template: params.whatsapp_template.unwrap_or(false),
            template: None,
            kind,
            contact: Some(&contact),
        };
        let decision = state
            .policy
            .decide(
                &state.registry,
                &state.states,
                &candidate,
                now,
                Mode::DryRun,
            )
            .await?;
        let row = match decision {
            Decision::Skip { reason, detail } => {
                json!({"channel": kind, "decision": "skip", "reason": reason, "detail": detail})
            }
            Decision::Wait {
                until,
                reason,
                detail,
            } => {
                let too_long = reason == WaitReason::Throttled
                    && (until - now).to_std().unwrap_or_default() > state.config.routing.max_wait;
                if !decided && !too_long {
                    outcome = json!({"action": "wait", "channel": kind, "until": until, "reason": reason});
                    decided = true;
                }
                json!({"channel": kind, "decision": "wait", "reason": reason, "until": until, "detail": detail})
            }
            Decision::Go { probe, form, .. } => {
                if !decided {
                    outcome = json!({"action": "send", "channel": kind});
                    decided = true;
                }
                let form = match form {
                    Some(Form::Template | Form::Alternative) => "template",
                    _ => "text",
                };
                json!({"channel": kind, "decision": "send", "form": form, "probe": probe})
            }
        };
        plan.push(row);
    }
    Ok(Json(json!({
        "contact_id": contact.id,
        "category": category,
        "at": now,
        "plan": plan,
        "outcome": outcome,
    })))
}
