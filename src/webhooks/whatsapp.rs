//! WhatsApp Cloud API webhooks (Meta's `messages` field; schema in
//! `channels/whatsapp/vendor/`): the subscribe handshake, and inbound
//! messages that opt a person in (`START <token>`, the text a `wa.me` opt-in link pre-fills) or
//! out (a STOP word), each recording the contact's last inbound time (the 24 h window).
//!
//! Each message is applied once per message id, and its `timestamp` (not its arrival) is the
//! contacts' last inbound time. A STOP revokes every WhatsApp scope of every contact holding
//! the number and gets one confirmation reply: the person just wrote,
//! so the service window is open and a free-form text is allowed. The reply goes out in the
//! background so Meta gets its 200 at once. Statuses of our messages go to
//! [`super::whatsapp_receipts`], account and quality signals to [`super::whatsapp_account`];
//! other fields are stored and ignored ([`handle_other_field`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use lifeboat_channel::{Category, ChannelKind, OutboundMessage};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{signature, Hooks};
pub use crate::config::extra_stop_words;
use crate::model::Timestamp;
use crate::optin::{self, RedeemError};
use crate::web::{ApiError, AppState};

/// STOP words understood by default (compared trimmed and case-insensitively, whole message):
/// English, Scandinavian/German "stopp", Indonesian "berhenti", Polish "wypisz" (and Polish
/// people write "stop" too). `[channels.whatsapp] stop_words` adds more.
pub const DEFAULT_STOP_WORDS: &[&str] = &[
    "stop",
    "stopall",
    "unsubscribe",
    "stopp",
    "berhenti",
    "berhenti langganan",
    "wypisz",
    "wypisz mnie",
];

/// What the WhatsApp webhooks need from `[channels.whatsapp]`.
pub struct Settings {
    pub app_secret: Option<SecretString>,
    pub verify_token: Option<SecretString>,
    /// Lower-cased, whitespace-normalised.
    pub stop_words: Vec<String>,
    pub business_name: String,
}

impl Settings {
    pub fn from_table(table: &toml::Table, business_name: &str) -> Settings {
        let secret = |key: &str| {
            table
                .get(key)
                .and_then(toml::Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(|s| SecretString::from(s.to_string()))
        };
        let mut stop_words: Vec<String> =
            DEFAULT_STOP_WORDS.iter().map(|w| w.to_string()).collect();
        stop_words.extend(
            extra_stop_words(table)
                .unwrap_or_default()
                .iter()
                .map(|w| normalise(w)),
        );
        stop_words.retain(|w| !w.is_empty());
        Settings {
            app_secret: secret("app_secret"),
            verify_token: secret("verify_token"),
            stop_words,
            business_name: business_name.to_string(),
        }
    }

    fn is_stop(&self, text: &str) -> bool {
        let text = normalise(text.trim_end_matches(['.', '!']));
        self.stop_words.contains(&text)
    }
}

fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `GET /webhooks/whatsapp`: Meta's subscribe handshake. The right `hub.verify_token` gets the
/// raw `hub.challenge` back; anything else a 403.
pub async fn verify(
    Extension(hooks): Extension<Arc<Hooks>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(expected) = hooks
        .whatsapp
        .as_ref()
        .and_then(|s| s.verify_token.as_ref())
    else {
        tracing::warn!(
            "WhatsApp webhook handshake refused: no [channels.whatsapp] verify_token is configured"
        );
        return Err(ApiError::forbidden(
            "no verify_token is configured in [channels.whatsapp]",
        ));
    };
    let mode_ok = query.get("hub.mode").map(String::as_str) == Some("subscribe");
    let token_ok = query
        .get("hub.verify_token")
        .is_some_and(|t| super::secret_eq(t.as_bytes(), expected.expose_secret().as_bytes()));
    match query.get("hub.challenge") {
        Some(challenge) if mode_ok && token_ok => {
            tracing::info!("WhatsApp webhook subscription verified");
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                challenge.clone(),
            )
                .into_response())
        }
        _ => {
            tracing::warn!("WhatsApp webhook handshake refused: wrong mode or verify token");
            Err(ApiError::forbidden(
                "hub.mode must be `subscribe` and hub.verify_token must match the configured verify_token",
            ))
        }
    }
}

/// Meta's envelope (`WebhookPayload`): only what is used; unknown members are ignored.
#[derive(Deserialize)]
struct Payload {
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: String,
    #[serde(default)]
    value: serde_json::Value,
}

/// The `value` of a `messages` change: inbound messages and/or statuses of ours.
#[derive(Deserialize, Default)]
struct MessagesValue {
    #[serde(default)]
    messages: Vec<InboundMessage>,
    #[serde(default)]
    statuses: Vec<serde_json::Value>,
}

/// One inbound message. `from` is the sender's wa_id (digits, no `+`).
#[derive(Deserialize)]
pub struct InboundMessage {
    pub from: String,
    pub id: String,
    /// When the person sent it (Unix seconds, as a string): the service window runs from it.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub text: Option<TextBody>,
    /// A quick-reply button of a template ("Stop promotions" and the like).
    #[serde(default)]
    pub button: Option<ButtonBody>,
}

#[derive(Deserialize)]
pub struct TextBody {
    pub body: String,
}

#[derive(Deserialize)]
pub struct ButtonBody {
    #[serde(default)]
    pub text: Option<String>,
}

impl InboundMessage {
    /// Meta's `timestamp`, if it is one.
    fn sent(&self) -> Option<Timestamp> {
        let secs: i64 = self.timestamp.as_deref()?.trim().parse().ok()?;
        chrono::DateTime::from_timestamp(secs, 0)
    }

    fn text(&self) -> Option<&str> {
        match (&self.text, &self.button) {
            (Some(t), _) => Some(&t.body),
            (None, Some(b)) => b.text.as_deref(),
            _ => None,
        }
    }
}

/// What an inbound text asks for.
#[derive(Debug, PartialEq)]
enum Intent<'a> {
    Start(&'a str),
    Stop,
    Other,
}

fn intent<'a>(settings: &Settings, text: &'a str) -> Intent<'a> {
    let mut words = text.split_whitespace();
    if words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("start"))
    {
        if let Some(token) = words.next() {
            return Intent::Start(token);
        }
    }
    if settings.is_stop(text) {
        Intent::Stop
    } else {
        Intent::Other
    }
}

/// `POST /webhooks/whatsapp`: signature first, then the events.
pub async fn receive(
    State(state): State<AppState>,
    Extension(hooks): Extension<Arc<Hooks>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(settings) = hooks.whatsapp.as_ref() else {
        return Err(ApiError::not_found(
            "WhatsApp is not configured ([channels.whatsapp])",
        ));
    };
    signature::require(
        &signature::Scheme {
            provider: "WhatsApp",
            secret_key: "[channels.whatsapp] app_secret",
            header: "X-Hub-Signature-256",
            valid: signature::whatsapp_valid,
        },
        settings.app_secret.as_ref(),
        &headers,
        &body,
    )?;

    let parsed = parse(&body)?;
    state
        .metrics
        .whatsapp_webhook(parsed.messages.len(), &parsed.statuses, &parsed.others);
    let now = state.clock.now();
    for message in &parsed.messages {
        handle_message(&state, settings, message, now).await?;
    }
    super::whatsapp_receipts::handle(&state, parsed.statuses, now).await?;
    for (field, value) in &parsed.others {
        handle_other_field(&state, field, value, now).await?;
    }
    Ok(StatusCode::OK.into_response())
}

/// A webhook body, read whole.
struct Parsed {
    messages: Vec<InboundMessage>,
    statuses: Vec<serde_json::Value>,
    /// Changes of fields other than `messages`, with their raw value.
    others: Vec<(String, serde_json::Value)>,
}

/// Parses the whole body before anything is applied, so a bad body changes nothing.
fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let bad = |e: serde_json::Error| {
        let what = super::describe_json_error(&e);
        tracing::warn!(bytes = body.len(), "WhatsApp webhook body refused: {what}");
        ApiError::invalid_json(format!(
            "the body is not a WhatsApp webhook payload: {what}"
        ))
    };
    let payload: Payload = serde_json::from_slice(body).map_err(bad)?;
    let mut parsed = Parsed {
        messages: Vec::new(),
        statuses: Vec::new(),
        others: Vec::new(),
    };
    for change in payload.entry.into_iter().flat_map(|e| e.changes) {
        match change.field.as_str() {
            "messages" => {
                let value: MessagesValue = serde_json::from_value(change.value).map_err(bad)?;
                parsed.messages.extend(value.messages);
                parsed.statuses.extend(value.statuses);
            }
            other => parsed.others.push((other.to_string(), change.value)),
        }
    }
    Ok(parsed)
}

/// Fields other than `messages`: account and quality signals change the channel's state;
/// the rest (`message_template_status_update`, `user_preferences`, new ones) is stored in
/// `webhook_events` and ignored.
async fn handle_other_field(
    state: &AppState,
    field: &str,
    value: &serde_json::Value,
    now: Timestamp,
) -> Result<(), ApiError> {
    use super::whatsapp_account as account;
    match field {
        "account_update" => account::handle_account_update(state, value, now).await?,
        "phone_number_quality_update" => account::handle_quality_update(state, value, now).await?,
        "business_capability_update" => {
            account::handle_capability_update(state, value, now).await?
        }
        "message_template_status_update" => {
            account::handle_template_status(state, value, now).await?
        }
        "message_template_quality_update" => {
            account::handle_template_quality(state, value, now).await?
        }
        _ => {
            super::store_event(
                state.store.as_ref(),
                ChannelKind::Whatsapp,
                field,
                value,
                now,
            )
            .await?
        }
    }
    Ok(())
}

/// One inbound message, applied once per message id (Meta redelivers, and a signed body can be
/// replayed).
async fn handle_message(
    state: &AppState,
    settings: &Settings,
    message: &InboundMessage,
    now: Timestamp,
) -> Result<(), ApiError> {
    let digits = message.from.trim_start_matches('+');
    if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        tracing::warn!("WhatsApp inbound message with a sender that is not a wa_id; ignored");
        return Ok(());
    }
    let address = format!("+{digits}");
    let store = state.store.as_ref();
    super::once(
        store,
        ChannelKind::Whatsapp,
        &message.id,
        now,
        apply_message(state, settings, message, &address, now),
    )
    .await?;
    Ok(())
}

async fn apply_message(
    state: &AppState,
    settings: &Settings,
    message: &InboundMessage,
    address: &str,
    now: Timestamp,
) -> Result<(), ApiError> {
    let store = state.store.as_ref();
    match message.text().map(|t| intent(settings, t)) {
        Some(Intent::Start(token)) => {
            match optin::redeem(
                store,
                Some(&*state.events),
                token,
                ChannelKind::Whatsapp,
                address,
                "whatsapp_start",
                message.id.clone(),
                now,
            )
            .await
            {
                Ok((contact, _)) => {
                    tracing::info!(contact = %contact.id, "WhatsApp opt-in redeemed");
                }
                Err(RedeemError::Store(e)) => return Err(e.into()),
                Err(e) => tracing::info!("WhatsApp START not applied: {e}"),
            }
        }
        Some(Intent::Stop) => {
            let revoked = super::revoke_address(
                store,
                &state.events,
                ChannelKind::Whatsapp,
                address,
                "whatsapp_stop",
                &message.id,
                now,
            )
            .await?;
            if revoked > 0 {
                confirm_stop(state, settings, address, &message.id);
            } else {
                tracing::info!("WhatsApp STOP from a number no contact has; nothing to revoke");
            }
        }
        Some(Intent::Other) | None => {}
    }
    let sent = super::sent_at(message.sent(), now);
    super::record_inbound(store, ChannelKind::Whatsapp, address, sent).await?;
    Ok(())
}

/// The one reply to a STOP, sent in the background (Meta wants its 200 fast).
fn confirm_stop(state: &AppState, settings: &Settings, address: &str, message_id: &str) {
    let Some(channel) = state.registry.get(ChannelKind::Whatsapp).cloned() else {
        return;
    };
    let reply = OutboundMessage {
        notification_id: format!("stop-confirmation:{message_id}"),
        category: Category::Transactional,
        to: address.to_string(),
        text: format!(
            "You're unsubscribed: {} will not message you on WhatsApp any more.",
            settings.business_name
        ),
        subject: None,
        html: None,
        whatsapp_template: None,
        retry_key: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, message_id.as_bytes())
            .to_string(),
        headers: Vec::new(),
    };
    state
        .background
        .spawn("WhatsApp STOP confirmation", async move {
            let answer = channel.send(&reply).await;
            tracing::info!(
                outcome = answer.class.as_str(),
                code = ?answer.code,
                "WhatsApp STOP confirmation sent"
            );
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let table: toml::Table = toml::from_str(extra).unwrap();
        Settings::from_table(&table, "Acme")
    }

    #[test]
    fn start_and_stop_words_are_recognised() {
        let s = settings("stop_words = [\"Zatrzymaj\"]");
        assert_eq!(
            intent(&s, "START abcdefghijklmnop1234"),
            Intent::Start("abcdefghijklmnop1234")
        );
        assert_eq!(intent(&s, "start  tok"), Intent::Start("tok"));
        assert_eq!(intent(&s, "START"), Intent::Other);
        for text in [
            "STOP",
            " stop ",
            "Berhenti",
            "wypisz",
            "STOPP",
            "Unsubscribe.",
            "zatrzymaj",
            "Wypisz  mnie",
        ] {
            assert_eq!(intent(&s, text), Intent::Stop, "{text}");
        }
        for text in ["stop it now", "don't stop", "hello", ""] {
            assert_eq!(intent(&s, text), Intent::Other, "{text}");
        }
    }

    #[test]
    fn stop_words_must_be_strings() {
        let table: toml::Table = toml::from_str("stop_words = [1]").unwrap();
        assert!(extra_stop_words(&table)
            .unwrap_err()
            .contains("channels.whatsapp.stop_words"));
        let table: toml::Table = toml::from_str("stop_words = \"stop\"").unwrap();
        assert!(extra_stop_words(&table).is_err());
    }

    #[test]
    fn parses_metas_documented_text_message_and_ignores_other_fields() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"419561257915477","changes":[
            {"value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
              "contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],
              "messages":[{"from":"16505551234","id":"wamid.HBgL","timestamp":"1749416383","type":"text","text":{"body":"Does it come in another color?"}}]},
             "field":"messages"},
            {"field":"account_update","value":{"event":"ACCOUNT_VIOLATION"}}]}]}"#;
        let parsed = parse(body).map_err(|e| e.message).unwrap();
        assert_eq!(parsed.messages.len(), 1);
        assert_eq!(parsed.messages[0].from, "16505551234");
        assert_eq!(
            parsed.messages[0].text(),
            Some("Does it come in another color?")
        );
        assert!(parsed.statuses.is_empty());
        assert_eq!(parsed.others.len(), 1);
        assert_eq!(parsed.others[0].0, "account_update");
        for bad in [
            &b"{\"entry\": 5}"[..],
            b"not json",
            b"{\"entry\":[{\"changes\":[{\"field\":\"messages\",\"value\":{\"messages\":[{}]}}]}]}",
        ] {
            assert_eq!(parse(bad).err().map(|e| e.code), Some("invalid_json"));
        }
    }
}
