//! In-flight places under the marketing cap, shared by every instance on the store: a
//! marketing send admitted but not answered yet holds a place, so two workers (of one instance
//! or of two) cannot both take the contact's last place under `marketing_per_day`.
//!
//! One record per contact (namespace `policy_cap_places`, key = contact id): the places in the
//! order they were taken, each with an expiry ([`TTL`], so a place of an instance that died
//! mid-send frees itself). A place is taken with one [`Store::kv_update`], and only the places
//! taken *before* it count against it: the record's order is the order the store applied the
//! updates in, the same for every instance, so of two sends racing for the last place exactly
//! one goes (no clock comparison between instances is involved). The caller takes its place
//! first and reads the contact's sends afterwards; a send is recorded with its notification's
//! id ([`super::caps::record_sent`]) before its place is given back, so at every moment a send
//! is counted in the one or the other and the check never under-counts; a place whose
//! notification is already among the recorded sends is not counted again (it would over-count
//! in the moment between the two writes and skip a message the cap allows).

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::model::Timestamp;
use crate::store::{Durability, Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::POLICY_CAP_PLACES;

/// How long a place lasts without being given back (a send takes well under a second; an
/// instance that died mid-send frees its places after this).
pub const TTL: Duration = Duration::minutes(2);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Place {
    /// The notification holding it.
    id: String,
    until: Timestamp,
}

fn decode(bytes: Option<&[u8]>) -> Vec<Place> {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

fn encode(places: &[Place]) -> Option<Vec<u8>> {
    (!places.is_empty()).then(|| serde_json::to_vec(places).expect("places serialize"))
}

/// Takes (or renews) notification `id`'s place under `contact_id`'s cap and says which
/// notifications hold the live places taken before it.
pub async fn take(
    store: &dyn Store,
    contact_id: &str,
    id: &str,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let owned = id.to_string();
    let edit = Box::new(move |old: Option<&[u8]>| {
        let mut places = decode(old);
        places.retain(|p| p.until > now);
        match places.iter_mut().find(|p| p.id == owned) {
            Some(p) => p.until = now + TTL,
            None => places.push(Place {
                id: owned.clone(),
                until: now + TTL,
            }),
        }
        encode(&places)
    });
    let stored = store
        .kv_update(NAMESPACE, contact_id, edit, Durability::Relaxed)
        .await?;
    let places = decode(stored.as_deref());
    Ok(places
        .into_iter()
        .take_while(|p| p.id != id)
        .filter(|p| p.until > now)
        .map(|p| p.id)
        .collect())
}

/// The notifications holding live places other than `id`'s (a dry run: nothing is taken).
pub async fn others(
    store: &dyn Store,
    contact_id: &str,
    id: &str,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let places = decode(store.kv_get(NAMESPACE, contact_id).await?.as_deref());
    Ok(places
        .into_iter()
        .filter(|p| p.id != id && p.until > now)
        .map(|p| p.id)
        .collect())
}

/// Gives notification `id`'s place back (its send was recorded, or it ends without a send).
pub async fn give_back(store: &dyn Store, contact_id: &str, id: &str) -> StoreResult<()> {
    let owned = id.to_string();
    let edit = Box::new(move |old: Option<&[u8]>| {
        let mut places = decode(old);
        places.retain(|p| p.id != owned);
        encode(&places)
    });
    store
        .kv_update(NAMESPACE, contact_id, edit, Durability::Relaxed)
        .await?;
    Ok(())
}
