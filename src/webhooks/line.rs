//! LINE Messaging API webhooks (LINE's webhook event objects): a message carrying an opt-in token binds the
//! LINE user to the token's contact and grants consent; `unfollow` (the person blocked the
//! account) revokes it; `follow` is only logged, since adding a friend is not consent to
//! notifications. Messages of a known contact record `last_inbound[line]`.
//!
//! Every event is applied once per `webhookEventId` ([`super::once`]), so LINE's redeliveries
//! and replayed bodies change nothing twice; `last_inbound` takes the event's `timestamp`. Only one-to-one chats (`source.type == "user"`) change consent; a token posted in a
//! group chat is ignored. An empty `events` array is LINE's "verify" call: 200.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use lifeboat_channel::ChannelKind;
use secrecy::SecretString;
use serde::Deserialize;

use super::{signature, Hooks};
use crate::model::Timestamp;
use crate::optin::{self, RedeemError};
use crate::web::{ApiError, AppState};

/// What the LINE webhook needs from `[channels.line]`.
pub struct Settings {
    pub channel_secret: Option<SecretString>,
}

impl Settings {
    pub fn from_table(table: &toml::Table) -> Settings {
        Settings {
            channel_secret: table
                .get("channel_secret")
                .and_then(toml::Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(|s| SecretString::from(s.to_string())),
        }
    }
}

/// `CallbackRequest`: only what is used.
#[derive(Deserialize)]
struct Callback {
    events: Vec<serde_json::Value>,
}

/// One webhook event; events of other shapes are skipped one by one.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "webhookEventId", default)]
    id: String,
    /// When the event happened (Unix milliseconds).
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Source {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "userId", default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// `POST /webhooks/line`.
pub async fn receive(
    State(state): State<AppState>,
    Extension(hooks): Extension<Arc<Hooks>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(settings) = hooks.line.as_ref() else {
        return Err(ApiError::not_found(
            "LINE is not configured ([channels.line])",
        ));
    };
    signature::require(
        &signature::Scheme {
            provider: "LINE",
            secret_key: "[channels.line] channel_secret",
            header: "X-Line-Signature",
            valid: signature::line_valid,
        },
        settings.channel_secret.as_ref(),
        &headers,
        &body,
    )?;
    let callback: Callback = serde_json::from_slice(&body).map_err(|e| {
        let what = super::describe_json_error(&e);
        tracing::warn!(bytes = body.len(), "LINE webhook body refused: {what}");
        ApiError::invalid_json(format!("the body is not a LINE webhook payload: {what}"))
    })?;
    if callback.events.is_empty() {
        tracing::info!("LINE webhook verification call answered");
    }
    let now = state.clock.now();
    for raw in callback.events {
        state
            .metrics
            .webhook_event(ChannelKind::Line, raw["type"].as_str().unwrap_or(""));
        match serde_json::from_value::<Event>(raw) {
            Ok(event) => {
                let work = handle_event(&state, &event, now);
                super::once(
                    state.store.as_ref(),
                    ChannelKind::Line,
                    &event.id,
                    now,
                    work,
                )
                .await?;
            }
            Err(e) => tracing::warn!(
                "LINE webhook event skipped: {}",
                super::describe_json_error(&e)
            ),
        }
    }
    Ok(StatusCode::OK.into_response())
}

async fn handle_event(state: &AppState, event: &Event, now: Timestamp) -> Result<(), ApiError> {
    let store = state.store.as_ref();
    let Some(user_id) = event
        .source
        .as_ref()
        .filter(|s| s.kind == "user")
        .and_then(|s| s.user_id.as_deref())
        .filter(|u| !u.is_empty())
    else {
        tracing::debug!(kind = %event.kind, "LINE event not from a one-to-one chat; ignored");
        return Ok(());
    };

    match event.kind.as_str() {
        "message" => {
            let text = event
                .message
                .as_ref()
                .filter(|m| m.kind == "text")
                .and_then(|m| m.text.as_deref());
            if let Some(text) = text {
                redeem_token_in(state, text, user_id, &event.id, now).await?;
            }
            let sent = event
                .timestamp
                .and_then(chrono::DateTime::from_timestamp_millis);
            let sent = super::sent_at(sent, now);
            super::record_inbound(store, ChannelKind::Line, user_id, sent).await?;
        }
        "unfollow" => {
            let revoked = super::revoke_address(
                store,
                &state.events,
                ChannelKind::Line,
                user_id,
                "line_unfollow",
                &event.id,
                now,
            )
            .await?;
            if revoked == 0 {
                tracing::info!("LINE unfollow from a user no contact has; nothing to revoke")
            }
        }
        "follow" => {
            // Adding the account as a friend (or unblocking it) is not consent: consent comes
            // from an opt-in token or the API. Only logged.
            let known = store
                .find_contact_by_address(ChannelKind::Line, user_id)
                .await?;
            tracing::info!(
                contact = known.as_ref().map(|c| c.id.as_str()),
                "LINE follow received; no consent recorded"
            );
        }
        other => tracing::debug!(kind = other, "LINE event type not handled; ignored"),
    }
    Ok(())
}

/// Redeems the first word of `text` that is a known opt-in token.
async fn redeem_token_in(
    state: &AppState,
    text: &str,
    user_id: &str,
    event_id: &str,
    now: Timestamp,
) -> Result<(), ApiError> {
    let store = state.store.as_ref();
    for word in candidate_tokens(text) {
        let Some(_) = optin::find(store, word).await? else {
            continue;
        };
        match optin::redeem(
            store,
            Some(&*state.events),
            word,
            ChannelKind::Line,
            user_id,
            "line_optin",
            event_id.to_string(),
            now,
        )
        .await
        {
            Ok((contact, _)) => {
                tracing::info!(contact = %contact.id, "LINE opt-in redeemed");
            }
            Err(RedeemError::Store(e)) => return Err(e.into()),
            Err(e) => tracing::info!("LINE opt-in not applied: {e}"),
        }
        return Ok(());
    }
    Ok(())
}

/// The words of `text` shaped like a token, with surrounding punctuation trimmed.
fn candidate_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '/' | '=' | '?' | '&'))
        .map(|w| w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')))
        .filter(|w| optin::looks_like_token(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_as_words() {
        let token = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";
        let text = format!("Hi! my code is {token}. thanks");
        assert_eq!(candidate_tokens(&text).collect::<Vec<_>>(), [token]);
        let text = format!("({token})");
        assert_eq!(candidate_tokens(&text).collect::<Vec<_>>(), [token]);
        assert_eq!(candidate_tokens("hello there").count(), 0);
    }
}
