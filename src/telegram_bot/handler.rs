//! What the bot does with one update: `/start <token>` opts the person in, `/stop` and blocking
//! the bot opt them out, `/status` tells them where they stand. Everything else is ignored.
//!
//! [`handle`] only touches the store (and records `consent.changed` events for the app's
//! endpoints, as the API's consent changes do) and returns the reply to send (if any), so it
//! can be tested without a Bot API; [`BotContext::process`] sends that reply. Handling is idempotent:
//! every update is applied once per `update_id` (a durable record, [`crate::webhooks::once`]),
//! so an update seen again (a crash between handling and saving the offset, a webhook retry,
//! a replay) changes nothing twice. `/stop` and blocking the bot revoke every contact holding
//! the chat.

use std::sync::Arc;
use std::time::Duration;

use lifeboat_channel::{Category, ChannelKind};
use teloxide::requests::Requester;
use teloxide::types::{ChatId, ChatMemberKind, Update, UpdateKind, User};
use teloxide::Bot;

use crate::clock::Clock;
use crate::events::Events;
use crate::model::{Consent, ConsentStatus, Contact, Timestamp};
use crate::optin::{self, RedeemError};
use crate::store::{Store, StoreResult};

/// What processing an update needs.
pub struct BotContext {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// `server.business_name`, named in every reply.
    pub business: String,
    /// The teloxide bot. Its `Debug` shows the token: never log it.
    pub bot: Bot,
    /// Bounds each reply (and `setMyCommands`).
    pub call_timeout: Duration,
    /// Counts the updates (`lifeboat_webhook_events_total{provider="telegram"}`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where `consent.changed` events go (`None`: not recorded).
    pub events: Option<Arc<Events>>,
}

/// A message to send back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub chat_id: i64,
    pub text: String,
}

impl BotContext {
    /// Handles an update and sends its reply. A store failure is returned (the update is
    /// retried); a failed reply is only logged.
    pub async fn process(&self, update: &Update) -> StoreResult<()> {
        self.metrics.telegram_update(update);
        let reply = handle(
            self.store.as_ref(),
            self.events.as_deref(),
            &self.business,
            update,
            self.clock.now(),
        )
        .await?;
        if let Some(reply) = reply {
            self.send(reply, update.id.0).await;
        }
        Ok(())
    }

    async fn send(&self, reply: Reply, update_id: u32) {
        let call = self.bot.send_message(ChatId(reply.chat_id), reply.text);
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                update_id,
                error = %lifeboat_telegram::classify::scrub(&e.to_string(), self.bot.token()),
                "telegram: could not reply"
            ),
            Err(_) => tracing::warn!(
                update_id,
                timeout = ?self.call_timeout,
                "telegram: the reply got no answer in time"
            ),
        }
    }
}

/// Applies `update` to the store and says what to answer. Each update is applied once per
/// `update_id` (recorded durably first, see [`crate::webhooks::once`]): a webhook retry or a
/// replayed update changes nothing and gets no reply, even after the person opted in again.
/// Each consent it changes is a `consent.changed` event in `events`.
pub async fn handle(
    store: &dyn Store,
    events: Option<&Events>,
    business: &str,
    update: &Update,
    now: Timestamp,
) -> StoreResult<Option<Reply>> {
    let seen = format!("update/{}", update.id.0);
    let work = apply(store, events, business, update, now);
    Ok(
        crate::webhooks::once(store, ChannelKind::Telegram, &seen, now, work)
            .await?
            .flatten(),
    )
}

async fn apply(
    store: &dyn Store,
    events: Option<&Events>,
    business: &str,
    update: &Update,
    now: Timestamp,
) -> StoreResult<Option<Reply>> {
    let update_id = update.id.0;
    match &update.kind {
        UpdateKind::Message(msg) if msg.chat.is_private() => {
            let Some(text) = msg.text() else {
                return Ok(None);
            };
            let chat_id = msg.chat.id.0;
            let (command, argument) = parse_command(text);
            let text = match command.as_deref() {
                Some("start") => {
                    start(
                        store,
                        events,
                        business,
                        update_id,
                        chat_id,
                        msg.from.as_ref(),
                        argument,
                        now,
                    )
                    .await?
                }
                Some("stop") => stop(store, events, business, update_id, chat_id, now).await?,
                Some("status") => status(store, business, chat_id).await?,
                Some("help") => help(business),
                _ => return Ok(None),
            };
            Ok(Some(Reply { chat_id, text }))
        }
        UpdateKind::MyChatMember(change) if change.chat.is_private() => {
            let chat_id = change.chat.id.0;
            match &change.new_chat_member.kind {
                ChatMemberKind::Banned(_) => {
                    let evidence = format!("update {update_id}: the person blocked the bot");
                    for contact_id in
                        revoke_chat(store, events, chat_id, "telegram_blocked", evidence, now)
                            .await?
                    {
                        tracing::info!(
                            update_id,
                            contact_id = %contact_id,
                            "telegram: blocked by the person; consent revoked"
                        );
                    }
                }
                ChatMemberKind::Member(_) => {
                    // Unblocking is not consent: the person opts in again with a link.
                    tracing::info!(
                        update_id,
                        "telegram: the bot was unblocked in a private chat; consent stays as it is"
                    );
                }
                _ => {}
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// `/start@acme_bot abc` → (`start`, `abc`). Not a command → (`None`, "").
fn parse_command(text: &str) -> (Option<String>, &str) {
    let text = text.trim();
    let Some(rest) = text.strip_prefix('/') else {
        return (None, "");
    };
    let (word, argument) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let name = word.split('@').next().unwrap_or("").to_ascii_lowercase();
    (Some(name), argument)
}

fn describe(scopes: &[Category]) -> String {
    let parts: Vec<&str> = scopes
        .iter()
        .map(|s| match s {
            Category::Transactional => {
                "transactional messages (about your orders, bookings and account)"
            }
            Category::Marketing => "marketing messages (news and offers)",
        })
        .collect();
    parts.join(" and ")
}

/// Whether `contact`'s current Telegram consent came from this very update.
fn applied(contact: &Contact, update_id: u32) -> bool {
    let mark = format!("update {update_id}");
    contact
        .consents
        .get(&ChannelKind::Telegram)
        .and_then(|c| c.evidence.as_deref())
        .is_some_and(|e| {
            e == mark || e.starts_with(&format!("{mark} ")) || e.starts_with(&format!("{mark}:"))
        })
}

fn confirmation(business: &str, scopes: &[Category]) -> String {
    format!(
        "You're subscribed: {business} will send you {} here on Telegram. \
         Send /stop at any time to unsubscribe, or /status to check.",
        describe(scopes)
    )
}

fn help(business: &str) -> String {
    format!(
        "Hello! This is {business}'s notification bot. To subscribe, open the personal link \
         {business} gave you. Send /status to see your subscription, /stop to unsubscribe."
    )
}

#[allow(clippy::too_many_arguments)]
async fn start(
    store: &dyn Store,
    events: Option<&Events>,
    business: &str,
    update_id: u32,
    chat_id: i64,
    from: Option<&User>,
    token: &str,
    now: Timestamp,
) -> StoreResult<String> {
    if token.is_empty() {
        return Ok(help(business));
    }
    let address = chat_id.to_string();
    if let Some(contact) = store
        .find_contact_by_address(ChannelKind::Telegram, &address)
        .await?
    {
        if applied(&contact, update_id) {
            let scopes = contact.consents[&ChannelKind::Telegram].scopes.clone();
            return Ok(confirmation(business, &scopes));
        }
    }
    let who = match from {
        Some(User {
            username: Some(name),
            ..
        }) => format!("@{name}"),
        Some(user) => format!("user {}", user.id),
        None => "an unknown user".to_string(),
    };
    let evidence = format!("update {update_id} from {who}");
    match optin::redeem(
        store,
        events,
        token,
        ChannelKind::Telegram,
        &address,
        "telegram_start",
        evidence,
        now,
    )
    .await
    {
        Ok((contact, record)) => {
            tracing::info!(update_id, contact_id = %contact.id, "telegram: opted in with /start");
            Ok(confirmation(business, &record.scopes))
        }
        Err(RedeemError::Expired(_)) => Ok(format!(
            "This link has expired, so nothing changed. Please ask {business} for a new one."
        )),
        Err(RedeemError::Unknown) | Err(RedeemError::ContactGone) => Ok(format!(
            "This link isn't valid (it may be incomplete), so nothing changed. \
             Please open the link {business} sent you again, or ask for a new one."
        )),
        Err(RedeemError::Store(e)) => Err(e),
    }
}

/// Revokes the Telegram consent of every contact holding `chat_id` (an opt-out is about the
/// chat, not about one of the contacts sharing it), skipping those revoked already, each with
/// its own history entry and `consent.changed` event; one opt-out for the risk figures.
/// Returns the contacts it revoked.
async fn revoke_chat(
    store: &dyn Store,
    events: Option<&Events>,
    chat_id: i64,
    source: &str,
    evidence: String,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let mut revoked = Vec::new();
    for contact in store
        .find_contacts_by_address(ChannelKind::Telegram, &chat_id.to_string())
        .await?
    {
        if contact
            .consents
            .get(&ChannelKind::Telegram)
            .is_some_and(|c| c.status == ConsentStatus::Revoked)
        {
            continue;
        }
        let consent = Consent {
            status: ConsentStatus::Revoked,
            scopes: Vec::new(),
            source: source.to_string(),
            evidence: Some(evidence.clone()),
            at: now,
        };
        if crate::events::set_consent(events, store, &contact.id, ChannelKind::Telegram, consent)
            .await?
            .is_some()
        {
            revoked.push(contact.id);
        }
    }
    if !revoked.is_empty() {
        crate::policy::risk::signal(store, ChannelKind::Telegram, source, now).await?;
    }
    Ok(revoked)
}

async fn stop(
    store: &dyn Store,
    events: Option<&Events>,
    business: &str,
    update_id: u32,
    chat_id: i64,
    now: Timestamp,
) -> StoreResult<String> {
    if store
        .find_contacts_by_address(ChannelKind::Telegram, &chat_id.to_string())
        .await?
        .is_empty()
    {
        return Ok(format!(
            "You aren't subscribed to {business} messages here, so there is nothing to stop."
        ));
    }
    let evidence = format!("update {update_id}");
    for contact_id in revoke_chat(store, events, chat_id, "telegram_stop", evidence, now).await? {
        tracing::info!(update_id, contact_id = %contact_id, "telegram: opted out with /stop");
    }
    Ok(format!(
        "Done: {business} won't send you messages on Telegram any more. \
         To subscribe again, open a new link from {business}."
    ))
}

async fn status(store: &dyn Store, business: &str, chat_id: i64) -> StoreResult<String> {
    let contacts = store
        .find_contacts_by_address(ChannelKind::Telegram, &chat_id.to_string())
        .await?;
    let granted = contacts
        .iter()
        .filter_map(|c| c.consents.get(&ChannelKind::Telegram))
        .find(|c| c.status == ConsentStatus::Granted && !c.scopes.is_empty());
    Ok(match granted {
        Some(consent) => format!(
            "You're subscribed to {business} here: {}. Send /stop to unsubscribe.",
            describe(&consent.scopes)
        ),
        None => format!(
            "You aren't subscribed to {business} messages here. To subscribe, open the \
             personal link {business} gave you."
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContactPatch;
    use crate::store::SledStore;
    use chrono::Utc;
    use serde_json::json;

    fn message(update_id: u32, chat_id: i64, text: &str) -> Update {
        // From text, as the Bot API answer arrives (teloxide's flattened `Update` does not
        // deserialize from a `Value`).
        serde_json::from_str(&json!({
            "update_id": update_id,
            "message": {
                "message_id": 1, "date": 1_700_000_000,
                "chat": {"id": chat_id, "type": "private", "first_name": "Ana"},
                "from": {"id": chat_id, "is_bot": false, "first_name": "Ana", "username": "ana"},
                "text": text
            }
        })
        .to_string())
        .unwrap()
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("/start abc"), (Some("start".into()), "abc"));
        assert_eq!(
            parse_command(" /Start@acme_bot  abc "),
            (Some("start".into()), "abc")
        );
        assert_eq!(parse_command("/stop"), (Some("stop".into()), ""));
        assert_eq!(parse_command("hello"), (None, ""));
    }

    #[tokio::test]
    async fn expired_and_replayed_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
        let now = Utc::now();
        store
            .upsert_contact("ana", &ContactPatch::default(), now)
            .await
            .unwrap();
        let (token, _) = optin::create(&store, "ana", vec![Category::Transactional], now)
            .await
            .unwrap();

        let later = now + optin::TOKEN_LIFETIME + chrono::Duration::seconds(1);
        let reply = handle(
            &store,
            None,
            "Acme",
            &message(6, 555, &format!("/start {token}")),
            later,
        )
        .await
        .unwrap()
        .unwrap();
        assert!(reply.text.contains("expired"), "{}", reply.text);
        assert!(reply.text.contains("Acme"), "{}", reply.text);
        let contact = store.get_contact("ana").await.unwrap().unwrap();
        assert!(contact.telegram.is_none());
        assert!(contact.consents.is_empty());

        // Redeemed once, then the same update again (a replay): one history entry, no reply.
        let update = message(7, 555, &format!("/start {token}"));
        let reply = handle(&store, None, "Acme", &update, now)
            .await
            .unwrap()
            .unwrap();
        assert!(reply.text.contains("/stop"), "{}", reply.text);
        assert_eq!(
            handle(&store, None, "Acme", &update, now).await.unwrap(),
            None
        );
        let history = store
            .consent_history("ana", ChannelKind::Telegram)
            .await
            .unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].evidence.as_deref(), Some("update 7 from @ana"));

        // /stop twice: one revocation.
        for id in [8, 9] {
            handle(&store, None, "Acme", &message(id, 555, "/stop"), now)
                .await
                .unwrap();
        }
        let history = store
            .consent_history("ana", ChannelKind::Telegram)
            .await
            .unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[1].source, "telegram_stop");

        // Plain text is ignored.
        assert!(handle(&store, None, "Acme", &message(10, 555, "hi"), now)
            .await
            .unwrap()
            .is_none());
    }
}
