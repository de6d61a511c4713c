//! Opt-in tokens: what lets a person opt in by themselves, through a Telegram `/start <token>`
//! deep link, a WhatsApp `START <token>` message or a LINE message carrying the token.
//!
//! A token is 32 characters of base64url from the OS's CSPRNG, stored with its contact, the
//! scopes the person agrees to and an expiry (7 days). Redeeming binds the channel address to
//! the contact and grants consent with the token's scopes; the consent history records where it
//! came from. A token may be redeemed on several channels until it expires.

use base64::Engine;
use lifeboat_channel::{Category, ChannelKind};
use rand::TryRngCore;

use crate::model::{Consent, ConsentStatus, Contact, Timestamp};
use crate::store::{Store, StoreError};

/// How long an opt-in link stays valid.
pub const TOKEN_LIFETIME: chrono::Duration = chrono::Duration::days(7);
pub(crate) const NAMESPACE: &str = crate::store::namespaces::OPTIN;

pub use crate::model::OptinToken;

/// Why a token could not be redeemed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("unknown opt-in token")]
    Unknown,
    #[error("the opt-in token expired at {0}")]
    Expired(Timestamp),
    #[error("the contact of this opt-in token no longer exists")]
    ContactGone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `text` has the shape of a token (16–64 of `A-Za-z0-9_-`).
pub fn looks_like_token(text: &str) -> bool {
    (16..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Creates and stores a token for `contact_id` with `scopes`.
pub async fn create(
    store: &dyn Store,
    contact_id: &str,
    scopes: Vec<Category>,
    now: Timestamp,
) -> Result<(String, OptinToken), StoreError> {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system provides random bytes");
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let record = OptinToken {
        contact_id: contact_id.to_string(),
        scopes,
        created_at: now,
        expires_at: now + TOKEN_LIFETIME,
    };
    store
        .kv_put(
            NAMESPACE,
            &token,
            &serde_json::to_vec(&record).expect("token record serializes"),
        )
        .await?;
    Ok((token, record))
}

/// Looks a token up without redeeming it.
pub async fn find(store: &dyn Store, token: &str) -> Result<Option<OptinToken>, StoreError> {
    if !looks_like_token(token) {
        return Ok(None);
    }
    Ok(store
        .kv_get(NAMESPACE, token)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Redeems `token` on `channel`: binds `address` to the token's contact and grants consent
/// with the token's scopes, recording `source` and `evidence` in the consent history.
#[allow(clippy::too_many_arguments)]
pub async fn redeem(
    store: &dyn Store,
    events: Option<&crate::events::Events>,
    token: &str,
    channel: ChannelKind,
    address: &str,
    source: &str,
    evidence: String,
    now: Timestamp,
) -> Result<(Contact, OptinToken), RedeemError> {
    let record = find(store, token).await?.ok_or(RedeemError::Unknown)?;
    if record.expires_at <= now {
        return Err(RedeemError::Expired(record.expires_at));
    }
    let address = address.to_string();
    let bound = store
        .update_contact(
            &record.contact_id,
            Box::new(move |c: &mut Contact| {
                match channel {
                    ChannelKind::Whatsapp => c.whatsapp = Some(address),
                    ChannelKind::Telegram => c.telegram = Some(address),
                    ChannelKind::Email => c.email = Some(address),
                    ChannelKind::Line => c.line = Some(address),
                }
                c.updated_at = now;
            }),
        )
        .await?;
    if bound.is_none() {
        return Err(RedeemError::ContactGone);
    }
    crate::events::set_consent(
        events,
        store,
        &record.contact_id,
        channel,
        Consent {
            status: ConsentStatus::Granted,
            scopes: record.scopes.clone(),
            source: source.to_string(),
            evidence: Some(evidence),
            at: now,
        },
    )
    .await?;
    let contact = store
        .get_contact(&record.contact_id)
        .await?
        .ok_or(RedeemError::ContactGone)?;
    Ok((contact, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContactPatch;
    use crate::store::SledStore;
    use chrono::Utc;

    #[tokio::test]
    async fn a_token_binds_the_address_and_grants_its_scopes_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
        let now = Utc::now();
        store
            .upsert_contact("ana", &ContactPatch::default(), now)
            .await
            .unwrap();
        let (token, _) = create(
            &store,
            "ana",
            vec![Category::Transactional, Category::Marketing],
            now,
        )
        .await
        .unwrap();
        assert!(looks_like_token(&token), "{token}");

        let (contact, _) = redeem(
            &store,
            None,
            &token,
            ChannelKind::Telegram,
            "5551234",
            "telegram_start",
            "update 1".into(),
            now,
        )
        .await
        .unwrap();
        assert_eq!(contact.telegram.as_deref(), Some("5551234"));
        assert!(contact.consents_to(ChannelKind::Telegram, Category::Marketing));
        let history = store
            .consent_history("ana", ChannelKind::Telegram)
            .await
            .unwrap();
        assert_eq!(history[0].source, "telegram_start");

        let later = now + TOKEN_LIFETIME + chrono::Duration::seconds(1);
        assert!(matches!(
            redeem(
                &store,
                None,
                &token,
                ChannelKind::Line,
                "U1",
                "line",
                String::new(),
                later
            )
            .await,
            Err(RedeemError::Expired(_))
        ));
        assert!(matches!(
            redeem(
                &store,
                None,
                "AAAAAAAAAAAAAAAAAAAAAAAA",
                ChannelKind::Line,
                "U1",
                "line",
                String::new(),
                now
            )
            .await,
            Err(RedeemError::Unknown)
        ));
    }
}
