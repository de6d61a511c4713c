//! Meta's per-user marketing limit (131049): when Meta decides a person has had enough
//! marketing, it stops delivering marketing templates to them ("to maintain healthy ecosystem
//! engagement") and asking again within about a day only earns the same answer. So a 131049
//! (a send's answer or a `failed` status webhook) holds that person's WhatsApp marketing for
//! [`HOLD`]: no request to Meta meanwhile, their marketing falls over to their other consented
//! channels (`skipped`, `marketing_held`), and neither their transactional messages nor anyone
//! else's marketing are touched. (131050, "stopped marketing", revokes the `marketing` scope of
//! their WhatsApp consent instead: permanent until they opt in again.)
//!
//! One record per number in namespace `whatsapp_marketing_holds` (the hold is about the
//! number, whoever holds it), keyed by the SHA-256 of the number
//! ([`crate::store::namespaces::marketing_hold_key`]: no phone number in the key; an erasure of
//! a contact deletes the hold on its number), written with
//! [`crate::store::Store::kv_update`]. An expired record is deleted when read, and by the
//! retention purge. Records of earlier versions, keyed by the number itself, are still read
//! until they expire.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::model::Timestamp;
use crate::store::namespaces::marketing_hold_key;
use crate::store::{Durability, Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::WHATSAPP_MARKETING_HOLDS;

/// How long a 131049 holds a person's marketing.
pub const HOLD: Duration = Duration::hours(24);

/// One number's hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub until: Timestamp,
    /// The provider code that started it (`131049`).
    pub code: String,
}

fn decode(bytes: Option<&[u8]>) -> Option<Hold> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// Holds marketing to `address` until `now + HOLD` (a later hold never shortens one).
pub async fn hold(
    store: &dyn Store,
    address: &str,
    code: &str,
    now: Timestamp,
) -> StoreResult<Hold> {
    let code = code.to_string();
    let edit = Box::new(move |old: Option<&[u8]>| {
        let until = now + HOLD;
        let hold = match decode(old) {
            Some(h) if h.until >= until => h,
            _ => Hold {
                until,
                code: code.clone(),
            },
        };
        Some(serde_json::to_vec(&hold).expect("a hold serializes"))
    });
    let stored = store
        .kv_update(
            NAMESPACE,
            &marketing_hold_key(address),
            edit,
            Durability::Durable,
        )
        .await?;
    Ok(decode(stored.as_deref()).expect("just written"))
}

/// The hold on `address` in force at `now`, if any.
pub async fn held(store: &dyn Store, address: &str, now: Timestamp) -> StoreResult<Option<Hold>> {
    // The record under the number's digest, else one an earlier version keyed by the number.
    for key in [marketing_hold_key(address), address.to_string()] {
        let Some(hold) = decode(store.kv_get(NAMESPACE, &key).await?.as_deref()) else {
            continue;
        };
        if hold.until <= now {
            store.kv_delete_relaxed(NAMESPACE, &key).await?;
            continue;
        }
        return Ok(Some(hold));
    }
    Ok(None)
}

/// Whether `address` is a US/Canada (+1) number, to which Meta does not deliver marketing
/// templates.
pub fn is_us_number(address: &str) -> bool {
    address.starts_with("+1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::at;
    use crate::store::SledStore;

    #[tokio::test]
    async fn a_hold_lasts_a_day_per_number_and_is_never_shortened() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
        let t0 = at("2026-03-01T10:00:00Z");
        hold(&store, "+48600100200", "131049", t0).await.unwrap();
        // Under the number's digest, not the number.
        let keys: Vec<String> = store
            .kv_scan(NAMESPACE, "")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [marketing_hold_key("+48600100200")]);
        let h = held(&store, "+48600100200", at("2026-03-02T09:59:59Z"))
            .await
            .unwrap();
        assert_eq!(h.map(|h| h.until), Some(at("2026-03-02T10:00:00Z")));
        assert_eq!(held(&store, "+48600100201", t0).await.unwrap(), None);
        assert_eq!(
            held(&store, "+48600100200", at("2026-03-02T10:00:00Z"))
                .await
                .unwrap(),
            None
        );
        // A record an earlier version kept under the number itself is honoured too.
        let legacy = serde_json::to_vec(&Hold {
            until: at("2026-03-02T10:00:00Z"),
            code: "131049".into(),
        })
        .unwrap();
        store
            .kv_put(NAMESPACE, "+48600100207", &legacy)
            .await
            .unwrap();
        assert!(held(&store, "+48600100207", t0).await.unwrap().is_some());
        assert!(is_us_number("+16505551234"));
        assert!(!is_us_number("+48600100200"));
    }
}
