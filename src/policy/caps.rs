//! The marketing frequency cap: at most `marketing_per_day` marketing messages per contact
//! per rolling 24 h, over all channels together (docs/guardrails.md: more than 2–3 pushes a day is
//! what makes people block and report). Transactional messages are neither capped nor counted.
//!
//! Each contact's marketing sends of the last 24 h are kept in the store (namespace
//! `policy_marketing_sends`, key = contact id, a JSON list of epoch milliseconds), so a restart
//! does not reset the count. Sends in flight in this process are held as reservations by
//! [`super::Policy`] so that concurrent workers cannot overshoot the cap together.

use crate::model::Timestamp;
use crate::store::{Durability, Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::POLICY_MARKETING_SENDS;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The sends of the last 24 h out of `times` (epoch ms). A send stamped after `now` counts
/// too: a worker reads the clock before it waits for the caps' lock, and a send another
/// worker recorded meanwhile is stamped later than that reading. Leaving it out let two
/// marketing messages through where the cap allowed one.
pub fn recent(times: &[i64], now: Timestamp) -> Vec<i64> {
    let now = now.timestamp_millis();
    times
        .iter()
        .copied()
        .filter(|t| *t > now - DAY_MS)
        .collect()
}

/// Whether one more marketing message may go: `sent` in the last 24 h plus `in_flight`
/// reservations stay below `per_day` (0 turns the cap off).
pub fn allows(per_day: u32, sent: usize, in_flight: usize) -> bool {
    per_day == 0 || sent + in_flight < per_day as usize
}

/// One recorded send: its time (epoch ms) and, since fleet-wide places, the notification it
/// was (older records hold the time alone).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Sent {
    Of(i64, String),
    At(i64),
}

impl Sent {
    fn at(&self) -> i64 {
        match self {
            Sent::Of(t, _) | Sent::At(t) => *t,
        }
    }
}

/// A stored list (an unreadable one counts as empty).
fn parse(bytes: Option<&[u8]>) -> Vec<Sent> {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

/// The sends of the last 24 h of a stored list (see [`recent`]).
fn recent_sends(sends: Vec<Sent>, now: Timestamp) -> Vec<Sent> {
    let from = now.timestamp_millis() - DAY_MS;
    sends.into_iter().filter(|s| s.at() > from).collect()
}

/// Marketing messages sent to the contact in the last 24 h.
pub async fn sent_in_window(
    store: &dyn Store,
    contact_id: &str,
    now: Timestamp,
) -> StoreResult<usize> {
    Ok(sent_with_ids(store, contact_id, now).await?.0)
}

/// Marketing messages sent to the contact in the last 24 h, and which notifications they were
/// (those recorded with their id): a notification whose send is recorded but whose in-flight
/// place is not given back yet must not count twice.
pub async fn sent_with_ids(
    store: &dyn Store,
    contact_id: &str,
    now: Timestamp,
) -> StoreResult<(usize, std::collections::HashSet<String>)> {
    let sends = recent_sends(
        parse(store.kv_get(NAMESPACE, contact_id).await?.as_deref()),
        now,
    );
    let ids = sends
        .iter()
        .filter_map(|s| match s {
            Sent::Of(_, id) => Some(id.clone()),
            Sent::At(_) => None,
        })
        .collect();
    Ok((sends.len(), ids))
}

/// Counts a marketing message sent to the contact now (without its notification id).
pub async fn record(store: &dyn Store, contact_id: &str, now: Timestamp) -> StoreResult<()> {
    record_sent(store, contact_id, now, None).await
}

/// Counts notification `id`'s marketing message, sent to the contact now.
/// An atomic update of the stored list, so concurrent sends (other workers, other instances
/// on a shared store) each add theirs.
pub async fn record_sent(
    store: &dyn Store,
    contact_id: &str,
    now: Timestamp,
    id: Option<&str>,
) -> StoreResult<()> {
    let entry = match id {
        Some(id) => Sent::Of(now.timestamp_millis(), id.to_string()),
        None => Sent::At(now.timestamp_millis()),
    };
    let edit = Box::new(move |old: Option<&[u8]>| {
        let mut sends = recent_sends(parse(old), now);
        sends.push(entry.clone());
        Some(serde_json::to_vec(&sends).expect("a list of sends serializes"))
    });
    // Relaxed: a crash may forget the last half second of counts, not the cap itself.
    store
        .kv_update(NAMESPACE, contact_id, edit, Durability::Relaxed)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::at;
    use crate::store::SledStore;

    #[test]
    fn the_fourth_in_a_day_is_over_a_cap_of_three() {
        assert!(allows(3, 2, 0));
        assert!(!allows(3, 3, 0));
        assert!(!allows(3, 2, 1), "a send in flight holds its place");
        assert!(allows(0, 100, 100), "0 turns the cap off");
    }

    #[test]
    fn a_send_recorded_after_the_checkers_clock_reading_still_counts() {
        let now = at("2025-06-10T20:00:00Z");
        let later = now.timestamp_millis() + 3;
        assert_eq!(recent(&[later], now), [later]);
    }

    /// Sends recorded for one contact from many tasks at once are all counted (the store's
    /// atomic update, no lock of this process: instances sharing a store count together).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_recorded_at_once_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let now = at("2025-06-10T09:00:00Z");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        record(store.as_ref(), "ana", now).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            sent_in_window(store.as_ref(), "ana", now).await.unwrap(),
            160
        );
    }

    /// Between a send's record and the return of its in-flight place the notification is in
    /// both; the next decision counts it once (it skipped a message the cap allowed: with a
    /// cap of 3 and two sends, the third was refused as "2 sent + 1 in flight").
    #[tokio::test]
    async fn a_recorded_send_still_holding_its_place_counts_once() {
        use crate::policy::places;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
        let now = at("2025-06-10T09:00:00Z");
        record_sent(&store, "ana", now, Some("n1")).await.unwrap();
        places::take(&store, "ana", "n2", now).await.unwrap();
        record_sent(&store, "ana", now, Some("n2")).await.unwrap();
        // n2's place is not given back yet; n3 asks.
        let before = places::take(&store, "ana", "n3", now).await.unwrap();
        assert_eq!(before, ["n2"]);
        let (sent, ids) = sent_with_ids(&store, "ana", now).await.unwrap();
        assert_eq!(sent, 2);
        let in_flight = before.iter().filter(|id| !ids.contains(*id)).count();
        assert!(
            allows(3, sent, in_flight),
            "2 sends, n2 counted once: n3 may go"
        );
        // An older record (times only) still counts its sends.
        record(&store, "ana", now).await.unwrap();
        assert_eq!(sent_in_window(&store, "ana", now).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn counts_survive_in_the_store_and_roll_off_after_24_hours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStore::open(&path, 8).unwrap();
            for t in [
                "2025-06-10T09:00:00Z",
                "2025-06-10T12:00:00Z",
                "2025-06-10T18:00:00Z",
            ] {
                record(&store, "ana", at(t)).await.unwrap();
            }
            record(&store, "bo", at("2025-06-10T18:00:00Z"))
                .await
                .unwrap();
            store.flush().await.unwrap();
        }
        let store = super::super::reopen(&path).await;
        let n = |t: &'static str| sent_in_window(&store, "ana", at(t));
        assert_eq!(n("2025-06-10T20:00:00Z").await.unwrap(), 3);
        assert_eq!(
            n("2025-06-11T09:00:00Z").await.unwrap(),
            2,
            "09:00 rolled off"
        );
        assert_eq!(n("2025-06-11T18:00:01Z").await.unwrap(), 0);
        assert_eq!(
            sent_in_window(&store, "bo", at("2025-06-10T20:00:00Z"))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            sent_in_window(&store, "nobody", at("2025-06-10T20:00:00Z"))
                .await
                .unwrap(),
            0
        );
    }
}
