//! Provider webhooks: what people tell us through the providers, turned into consent.
//!
//! A person opts in (`START <token>` on WhatsApp, the token in a LINE message), opts out (a
//! STOP word on WhatsApp, blocking the LINE account) or simply writes to us (which opens
//! WhatsApp's 24 h service window, so `last_inbound` is recorded). Every request is checked
//! against the provider's HMAC signature on the raw body before anything is parsed: a missing
//! or wrong signature is a 401 and changes nothing.
//!
//! WhatsApp also reports on our own messages and on the account: delivery statuses move a
//! notification to `delivered`/`read` or make it fall over after a late `failed`
//! ([`whatsapp_receipts`]); `account_update` and `phone_number_quality_update` change the
//! channel's state as a send error would ([`whatsapp_account`]). Anything not understood is
//! stored ([`store_event`]) and answered 200, so a new Meta event type never makes Meta retry.
//!
//! Routes (outside `/v1`'s api-key auth, merged by [`routes`]):
//! `GET /webhooks/whatsapp` (subscribe handshake), `POST /webhooks/whatsapp`,
//! `POST /webhooks/line`, and the email opt-out pages of [`crate::unsubscribe`].
//!
//! Config read here, besides the channel crates' own keys: `[channels.whatsapp] stop_words`,
//! extra words (added to [`whatsapp::DEFAULT_STOP_WORDS`]) that revoke WhatsApp consent.

pub mod line;
pub mod signature;
pub mod whatsapp;
pub mod whatsapp_account;
pub mod whatsapp_receipts;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Extension, Router};
use lifeboat_channel::ChannelKind;

use crate::config::Config;
use crate::model::{Consent, ConsentStatus, Timestamp};
use crate::store::{Store, StoreError, StoreResult};
use crate::web::AppState;

/// Webhook bodies may batch many events: larger than the API's 64 KiB.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Where every provider event is recorded the first time it comes ([`once`]), so a
/// redelivery or a replay of a signed body is not applied again. Keys: `whatsapp/<wamid>`
/// (inbound messages), `whatsapp/status/<wamid>/<status>`, `whatsapp/failed/<wamid>`,
/// `line/<webhookEventId>`, `telegram/update/<update_id>`; value: when it came (RFC 3339),
/// for the retention work to prune old ones by.
pub const SEEN_NAMESPACE: &str = crate::store::namespaces::WEBHOOK_SEEN;

/// Where provider events that were not understood are kept (keyed by a UUIDv7, so in the
/// order they came), for an operator to look at and for later work to use.
pub const EVENTS_NAMESPACE: &str = crate::store::namespaces::WEBHOOK_EVENTS;

/// Stores an event that was not understood (an unknown field or event type, a shape we could
/// not read) with its raw value. Never an error for the provider: the caller answers 200.
pub(crate) async fn store_event(
    store: &dyn Store,
    provider: ChannelKind,
    field: &str,
    value: &serde_json::Value,
    now: Timestamp,
) -> StoreResult<()> {
    tracing::info!(%provider, field, "webhook event not handled; stored in {EVENTS_NAMESPACE}");
    let record = serde_json::json!({
        "provider": provider,
        "field": field,
        "received_at": now,
        "value": value,
    });
    let id = uuid::Uuid::now_v7().to_string();
    store
        .kv_put(EVENTS_NAMESPACE, &id, record.to_string().as_bytes())
        .await
}

/// The webhook settings read from the config once at start.
pub struct Hooks {
    pub whatsapp: Option<whatsapp::Settings>,
    pub line: Option<line::Settings>,
}

impl Hooks {
    pub fn from_config(config: &Config) -> Hooks {
        Hooks {
            whatsapp: channel_table(config, ChannelKind::Whatsapp)
                .map(|t| whatsapp::Settings::from_table(t, &config.server.business_name)),
            line: channel_table(config, ChannelKind::Line).map(line::Settings::from_table),
        }
    }
}

pub(crate) use crate::config::channel_table;

/// The webhook and unsubscribe routes, to merge into the API router (no api-key auth: each
/// is authenticated by its provider's signature or by its token).
pub fn routes(state: &AppState) -> Router<AppState> {
    let hooks = Arc::new(Hooks::from_config(&state.config));
    Router::new()
        .route(
            "/webhooks/whatsapp",
            get(whatsapp::verify).post(whatsapp::receive),
        )
        .route("/webhooks/line", post(line::receive))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
        .layer(Extension(hooks))
        .merge(crate::unsubscribe::routes(state))
}

/// Runs `work` only the first time the event `id` from `provider` comes: the event is recorded
/// durably first (insert-if-absent, so two deliveries at once, even to two instances on one
/// store, run it once), and forgotten again if `work` fails, so the provider's retry applies
/// it. `None` for an event seen before. An event without an id always runs.
pub(crate) async fn once<T, E: From<StoreError>>(
    store: &dyn Store,
    provider: ChannelKind,
    id: &str,
    now: Timestamp,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<Option<T>, E> {
    if id.is_empty() {
        return work.await.map(Some);
    }
    let seen_key = format!("{provider}/{id}");
    let first = store
        .kv_insert_new(SEEN_NAMESPACE, &seen_key, now.to_rfc3339().as_bytes())
        .await?;
    if !first {
        tracing::info!(%provider, "provider event seen before (a redelivery or a replay); ignored");
        return Ok(None);
    }
    match work.await {
        Ok(done) => Ok(Some(done)),
        Err(e) => {
            if let Err(forget) = store.kv_delete(SEEN_NAMESPACE, &seen_key).await {
                tracing::warn!(%provider, error = %forget, "could not forget a provider event that failed; its redelivery will be ignored");
            }
            Err(e)
        }
    }
}

/// Whether the event `id` from `provider` was applied already (a redelivery).
pub(crate) async fn already_applied(
    store: &dyn Store,
    provider: ChannelKind,
    id: &str,
) -> StoreResult<bool> {
    if id.is_empty() {
        return Ok(false);
    }
    Ok(store
        .kv_get(SEEN_NAMESPACE, &format!("{provider}/{id}"))
        .await?
        .is_some())
}

/// Remembers that the event `id` from `provider` was applied (for steps retried in the
/// background after their event was recorded by [`once`], like a 131050 revocation).
pub(crate) async fn mark_applied(
    store: &dyn Store,
    provider: ChannelKind,
    id: &str,
    now: Timestamp,
) -> StoreResult<()> {
    if id.is_empty() {
        return Ok(());
    }
    store
        .kv_put(
            SEEN_NAMESPACE,
            &format!("{provider}/{id}"),
            now.to_rfc3339().as_bytes(),
        )
        .await
}

/// When the provider says a message was sent (`sent`, its own timestamp), never later than
/// `now` (a sender's clock ahead of ours); `now` when the provider gave no usable time.
pub(crate) fn sent_at(sent: Option<Timestamp>, now: Timestamp) -> Timestamp {
    sent.map_or(now, |at| at.min(now))
}

/// Records that every contact holding `address` on `kind` wrote to us at `at` (the provider's
/// time of the message, so WhatsApp's 24 h window runs from when the person wrote, and a
/// message older than 24 h opens nothing). A later time is never moved back.
pub(crate) async fn record_inbound(
    store: &dyn Store,
    kind: ChannelKind,
    address: &str,
    at: Timestamp,
) -> StoreResult<()> {
    for contact in store.find_contacts_by_address(kind, address).await? {
        store
            .update_contact(
                &contact.id,
                Box::new(move |c| {
                    let last = c.last_inbound.entry(kind).or_insert(at);
                    if *last < at {
                        *last = at;
                    }
                }),
            )
            .await?;
    }
    Ok(())
}

/// Revokes every scope on `kind` of every contact holding `address` (an opt-out is about the
/// address, not about one of the contacts sharing it), each with its own history entry, and
/// counts one opt-out for the risk figures. Returns how many contacts it revoked.
pub(crate) async fn revoke_address(
    store: &dyn Store,
    events: &crate::events::Events,
    kind: ChannelKind,
    address: &str,
    source: &str,
    evidence: &str,
    now: Timestamp,
) -> StoreResult<usize> {
    let mut revoked = 0;
    for contact in store.find_contacts_by_address(kind, address).await? {
        let consent = Consent {
            status: ConsentStatus::Revoked,
            scopes: Vec::new(),
            source: source.to_string(),
            evidence: Some(evidence.to_string()),
            at: now,
        };
        if events
            .set_consent(store, &contact.id, kind, consent)
            .await?
            .is_some()
        {
            tracing::info!(contact = %contact.id, channel = %kind, source, "consent revoked by the person");
            revoked += 1;
        }
    }
    if revoked > 0 {
        crate::policy::risk::signal(store, kind, source, now).await?;
    }
    Ok(revoked)
}

/// Constant-time equality for shared secrets (the length is not hidden).
pub(crate) fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Describes a JSON error without quoting the body (webhook bodies hold personal data).
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "not valid JSON",
        Category::Data => "JSON of the wrong shape",
        Category::Eof => "cut short",
    };
    format!("{what} (line {} column {})", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_eq(b"verify-me", b"verify-me"));
        assert!(!secret_eq(b"verify-me", b"verify-mE"));
        assert!(!secret_eq(b"verify-me", b"verify"));
        assert!(!secret_eq(b"", b"x"));
    }

    #[test]
    fn json_errors_do_not_quote_the_body() {
        let e = serde_json::from_str::<Vec<u8>>(r#"["+48600100200 secret text"]"#).unwrap_err();
        let text = describe_json_error(&e);
        assert!(!text.contains("48600100200"), "{text}");
        assert!(text.contains("wrong shape"), "{text}");
    }
}
