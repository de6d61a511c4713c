//! WhatsApp's business-initiated tier: Meta lets a number open conversations with at most
//! 1K / 10K / 100K unique people per rolling 24 h, and a number that pushes past it gets
//! restricted. The gateway counts unique recipients it reached *outside* their service window
//! (no message from them in the last 24 h) and, at `[policy.whatsapp] tier`, sends marketing
//! to the next channel instead (`cap_reached`). Transactional messages count but are never
//! held back: they matter more than the promotion that would have used the room.
//!
//! The same ledger counts Meta's messaging limit per business portfolio
//! ([`super::portfolio`]): its keys name people and hours, never a phone number, so every
//! number the gateway sends from (the portfolio's) shares it.
//!
//! Warm-up (off by default): a brand-new number that mass-sends on day one is a ban trigger, so
//! with `warmup = { start = 50, growth = 1.5, per = "1d" }` the cap starts at 50 and grows by
//! half every day since the first business-initiated send.
//!
//! The ledger lives in the store only, so every instance sharing the store counts the same
//! people at once (docs/fleet.md): namespace `policy_tier`,
//!
//! - `whatsapp/reached/<contact id>`: the hour (since the epoch) the person was first reached
//!   in the current 24 h, with the nonce of the writer. Counting a person is a compare-and-set
//!   ([`Store::kv_update`]): written only if the record is missing or its hour rolled off, and
//!   the writer whose nonce the store kept is the one that counted them (two instances reaching
//!   the same new person at once count them once);
//! - `whatsapp/count/<hour>`: how many people were first reached in that hour (added to by the
//!   writer that counted them), so the 24 h count is the sum of at most 24 small records and
//!   costs nothing more at 100,000 people than at 10;
//! - `whatsapp/first_send`: the first business-initiated send (the warm-up's start), first
//!   writer wins.
//!
//! No count is kept in memory: a person another instance reached counts here at the next
//! decision. What an instance remembers cannot under-count: `first_send` (never changes once
//! written) and the people it knows to be counted with their hour (a counted person stays
//! counted until that hour rolls off, whoever counted them), so a repeat send costs no store
//! access. Records that roll off are deleted
//! by the first instance to see a new hour (and by the store's purge). Ledgers of earlier
//! versions (`whatsapp/<hour>/<contact id>`, and `whatsapp/<hour>` holding a JSON list of the
//! hour's ids) are moved into this layout when an instance first uses the ledger.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::{Contact, Timestamp};
use crate::store::{Durability, Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::POLICY_TIER;
const BUCKETS: &str = "whatsapp/";
const REACHED: &str = "whatsapp/reached/";
const COUNTS: &str = "whatsapp/count/";
const FIRST_SEND: &str = "whatsapp/first_send";
const HOURS: i64 = 24;

pub use crate::config::policy::Warmup;

/// The warm-up cap at `now`: `start * growth^(whole periods since the first send)`.
pub fn warmup_cap(w: &Warmup, first_send: Option<Timestamp>, now: Timestamp) -> u32 {
    let periods = first_send
        .and_then(|first| (now - first).to_std().ok())
        .map(|age| (age.as_secs_f64() / w.per.as_secs_f64().max(1.0)).floor())
        .unwrap_or(0.0);
    let cap = w.start as f64 * w.growth.powf(periods.min(1000.0));
    if cap >= u32::MAX as f64 {
        u32::MAX
    } else {
        cap as u32
    }
}

/// The cap in force: the tier, lowered by the warm-up while it is below the tier.
pub fn cap(
    tier: u32,
    warmup: Option<&Warmup>,
    first_send: Option<Timestamp>,
    now: Timestamp,
) -> u32 {
    match warmup {
        Some(w) => tier.min(warmup_cap(w, first_send, now)),
        None => tier,
    }
}

/// Whether a send to this contact now opens a business-initiated conversation.
pub fn business_initiated(contact: &Contact, now: Timestamp) -> bool {
    !super::window::within_window(contact, now)
}

fn hour(t: Timestamp) -> i64 {
    t.timestamp().div_euclid(3600)
}

/// The oldest hour still in the rolling 24 h at `now`.
fn oldest(now: Timestamp) -> i64 {
    hour(now) - HOURS + 1
}

/// What the ledger says at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Unique recipients reached in the last 24 h.
    pub count: usize,
    /// Whether this contact is one of them (a repeat costs nothing).
    pub counted: bool,
    pub first_send: Option<Timestamp>,
}

/// `whatsapp/reached/<contact id>`: when the person was first reached, and by whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reached {
    hour: i64,
    /// The writer's nonce: the one whose nonce the store kept counted the person.
    by: String,
}

fn decode_reached(bytes: Option<&[u8]>) -> Option<Reached> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// The hour of a `whatsapp/count/<hour>` key.
fn count_hour(key: &str) -> Option<i64> {
    key.strip_prefix(COUNTS)?.parse().ok()
}

/// Counts `contact_id` as first reached in hour `h` unless they already count at `now`; says
/// whether this call counted them (and added them to `h`'s count), and the hour they count
/// from.
async fn count_person(
    store: &dyn Store,
    contact_id: &str,
    h: i64,
    now: Timestamp,
) -> StoreResult<(bool, i64)> {
    let live_from = oldest(now);
    let key = format!("{REACHED}{contact_id}");
    // A repeat is a read, not a read-modify-write.
    let current = store.kv_get(NAMESPACE, &key).await?;
    if let Some(r) = decode_reached(current.as_deref()).filter(|r| r.hour >= live_from) {
        return Ok((false, r.hour));
    }
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mine = serde_json::to_vec(&Reached {
        hour: h,
        by: nonce.clone(),
    })
    .expect("a record serializes");
    let edit = Box::new(move |old: Option<&[u8]>| match decode_reached(old) {
        Some(r) if r.hour >= live_from => old.map(<[u8]>::to_vec),
        _ => Some(mine.clone()),
    });
    let stored = store
        .kv_update(NAMESPACE, &key, edit, Durability::Relaxed)
        .await?;
    match decode_reached(stored.as_deref()) {
        Some(r) if r.by != nonce => return Ok((false, r.hour)),
        None => return Ok((false, h)),
        Some(_) => {}
    }
    let add = Box::new(|old: Option<&[u8]>| {
        let n: u64 = old
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(0);
        Some(serde_json::to_vec(&(n + 1)).expect("a number serializes"))
    });
    store
        .kv_update(NAMESPACE, &format!("{COUNTS}{h}"), add, Durability::Relaxed)
        .await?;
    Ok((true, h))
}

/// The durable ledger of unique business-initiated recipients, kept in the store (shared by
/// every instance on it).
pub struct TierLedger {
    store: Arc<dyn Store>,
    /// The first business-initiated send, once known (it never changes).
    first_send: Mutex<Option<Timestamp>>,
    /// Whether an earlier version's records were looked for (once per process).
    migrated: tokio::sync::OnceCell<()>,
    /// The hour this instance last cleared rolled-off records in.
    swept_at: Mutex<Option<i64>>,
    /// People this instance knows to be counted, with the hour they count from: an
    /// optimisation that cannot under-count (a person counted stays counted until their hour
    /// rolls off, whoever counted them), so a repeat send to them costs no store access.
    known: Mutex<HashMap<String, i64>>,
}

impl TierLedger {
    pub fn new(store: Arc<dyn Store>) -> TierLedger {
        TierLedger {
            store,
            first_send: Mutex::new(None),
            migrated: tokio::sync::OnceCell::new(),
            swept_at: Mutex::new(None),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Moves an earlier version's records (`whatsapp/<hour>/<id>`, `whatsapp/<hour>`) into
    /// this layout, once per process; several instances doing it at once count each person
    /// once (the compare-and-set of [`count_person`]).
    async fn migrate(&self, now: Timestamp) -> StoreResult<()> {
        self.migrated
            .get_or_try_init(|| async {
                for digit in '0'..='9' {
                    let prefix = format!("{BUCKETS}{digit}");
                    for (key, value) in self.store.kv_scan(NAMESPACE, &prefix).await? {
                        let rest = &key[BUCKETS.len()..];
                        let (h, ids) = match rest.split_once('/') {
                            Some((h, id)) => (h.parse::<i64>().ok(), vec![id.to_string()]),
                            None => (
                                rest.parse::<i64>().ok(),
                                serde_json::from_slice::<HashSet<String>>(&value)
                                    .map(|s| s.into_iter().collect())
                                    .unwrap_or_default(),
                            ),
                        };
                        let Some(h) = h else { continue };
                        if h >= oldest(now) {
                            for id in ids {
                                count_person(self.store.as_ref(), &id, h, now).await?;
                            }
                        }
                        self.store.kv_delete(NAMESPACE, &key).await?;
                    }
                }
                Ok::<(), crate::store::StoreError>(())
            })
            .await?;
        Ok(())
    }

    /// Deletes rolled-off records, once per hour per instance: the hourly counts past the
    /// 24 h, and the people whose hour rolled off (compare-and-set: not one counted again
    /// meanwhile).
    async fn sweep(&self, now: Timestamp) -> StoreResult<()> {
        {
            let mut swept = self.swept_at.lock().unwrap_or_else(|p| p.into_inner());
            if *swept == Some(hour(now)) {
                return Ok(());
            }
            *swept = Some(hour(now));
        }
        let live_from = oldest(now);
        (self.known.lock().unwrap_or_else(|p| p.into_inner())).retain(|_, h| *h >= live_from);
        for (key, _) in self.store.kv_scan(NAMESPACE, COUNTS).await? {
            if count_hour(&key).is_some_and(|h| h < live_from) {
                self.store.kv_delete_relaxed(NAMESPACE, &key).await?;
            }
        }
        for (key, value) in self.store.kv_scan(NAMESPACE, REACHED).await? {
            if decode_reached(Some(&value)).is_some_and(|r| r.hour < live_from) {
                let edit = Box::new(move |old: Option<&[u8]>| match decode_reached(old) {
                    Some(r) if r.hour < live_from => None,
                    _ => old.map(<[u8]>::to_vec),
                });
                self.store
                    .kv_update(NAMESPACE, &key, edit, Durability::Relaxed)
                    .await?;
            }
        }
        Ok(())
    }

    async fn first_send(&self) -> StoreResult<Option<Timestamp>> {
        if let Some(t) = *self.first_send.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(Some(t));
        }
        let stored = self
            .store
            .kv_get(NAMESPACE, FIRST_SEND)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
        *self.first_send.lock().unwrap_or_else(|p| p.into_inner()) = stored;
        Ok(stored)
    }

    /// The count and whether `contact_id` is in it, at `now`, as the store says.
    pub async fn snapshot(&self, contact_id: &str, now: Timestamp) -> StoreResult<Snapshot> {
        self.migrate(now).await?;
        self.sweep(now).await?;
        let live_from = oldest(now);
        let count: u64 = (self.store.kv_scan(NAMESPACE, COUNTS).await?)
            .into_iter()
            .filter(|(k, _)| count_hour(k).is_some_and(|h| h >= live_from))
            .filter_map(|(_, v)| serde_json::from_slice::<u64>(&v).ok())
            .sum();
        let counted = !contact_id.is_empty()
            && match self.known_hour(contact_id, now) {
                Some(_) => true,
                None => {
                    let key = format!("{REACHED}{contact_id}");
                    let stored =
                        decode_reached(self.store.kv_get(NAMESPACE, &key).await?.as_deref())
                            .filter(|r| r.hour >= live_from);
                    if let Some(r) = &stored {
                        self.remember(contact_id, r.hour);
                    }
                    stored.is_some()
                }
            };
        Ok(Snapshot {
            count: count as usize,
            counted,
            first_send: self.first_send().await?,
        })
    }

    /// Counts a business-initiated send to `contact_id` now (once per 24 h per contact, across
    /// every instance on the store).
    pub async fn record(&self, contact_id: &str, now: Timestamp) -> StoreResult<()> {
        self.migrate(now).await?;
        if self.first_send().await?.is_none() {
            let bytes = serde_json::to_vec(&now).expect("a timestamp serializes");
            self.store
                .kv_insert_new(NAMESPACE, FIRST_SEND, &bytes)
                .await?;
        }
        if self.known_hour(contact_id, now).is_some() {
            return Ok(());
        }
        let (_, h) = count_person(self.store.as_ref(), contact_id, hour(now), now).await?;
        self.remember(contact_id, h);
        Ok(())
    }

    /// The hour `contact_id` counts from, if this instance knows them counted at `now`.
    fn known_hour(&self, contact_id: &str, now: Timestamp) -> Option<i64> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(contact_id).copied().filter(|h| *h >= oldest(now))
    }

    fn remember(&self, contact_id: &str, h: i64) {
        (self.known.lock().unwrap_or_else(|p| p.into_inner())).insert(contact_id.to_string(), h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::at;
    use crate::store::SledStore;
    use lifeboat_channel::ChannelKind;
    use std::time::Duration;

    #[test]
    fn warmup_starts_low_and_grows_per_period() {
        let w = Warmup {
            start: 50,
            growth: 1.5,
            per: Duration::from_secs(86_400),
        };
        let first = at("2025-06-01T10:00:00Z");
        assert_eq!(warmup_cap(&w, None, first), 50, "before the first send");
        assert_eq!(warmup_cap(&w, Some(first), at("2025-06-02T09:59:59Z")), 50);
        assert_eq!(warmup_cap(&w, Some(first), at("2025-06-02T10:00:00Z")), 75);
        assert_eq!(warmup_cap(&w, Some(first), at("2025-06-04T10:00:00Z")), 168);
        assert_eq!(
            cap(1000, Some(&w), Some(first), at("2025-06-04T10:00:00Z")),
            168
        );
        assert_eq!(
            cap(1000, Some(&w), Some(first), at("2025-07-01T10:00:00Z")),
            1000
        );
        assert_eq!(cap(1000, None, None, first), 1000);
        assert_eq!(
            warmup_cap(&w, Some(first), at("2030-01-01T00:00:00Z")),
            u32::MAX
        );
    }

    #[test]
    fn only_people_outside_their_window_are_business_initiated() {
        let now = at("2025-06-10T12:00:00Z");
        let mut c = Contact::new("c", now);
        assert!(business_initiated(&c, now));
        c.last_inbound
            .insert(ChannelKind::Whatsapp, at("2025-06-10T02:00:00Z"));
        assert!(!business_initiated(&c, now));
    }

    #[tokio::test]
    async fn unique_recipients_per_rolling_day_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let t0 = at("2025-06-10T10:15:00Z");
        {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(&path, 8).unwrap());
            let ledger = TierLedger::new(store.clone());
            for (who, t) in [
                ("a", "2025-06-10T10:15:00Z"),
                ("b", "2025-06-10T11:00:00Z"),
                ("a", "2025-06-10T12:00:00Z"),
                ("c", "2025-06-11T09:30:00Z"),
            ] {
                ledger.record(who, at(t)).await.unwrap();
            }
            let s = ledger
                .snapshot("a", at("2025-06-11T09:45:00Z"))
                .await
                .unwrap();
            assert_eq!((s.count, s.counted, s.first_send), (3, true, Some(t0)));
            store.flush().await.unwrap();
        }
        let store: Arc<dyn Store> = Arc::new(super::super::reopen(&path).await);
        let ledger = TierLedger::new(store);
        let s = ledger
            .snapshot("a", at("2025-06-11T09:45:00Z"))
            .await
            .unwrap();
        assert_eq!((s.count, s.counted, s.first_send), (3, true, Some(t0)));
        // 24 h after 10:xx, a's bucket has rolled off; b's follows an hour later.
        let s = ledger
            .snapshot("a", at("2025-06-11T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!((s.count, s.counted), (2, false));
        let s = ledger
            .snapshot("z", at("2025-06-11T11:00:00Z"))
            .await
            .unwrap();
        assert_eq!((s.count, s.counted), (1, false));
    }

    #[tokio::test]
    async fn counting_a_person_writes_one_small_record_whatever_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let ledger = TierLedger::new(store.clone());
        let now = at("2025-06-10T10:15:00Z");
        for i in 0..10_000 {
            ledger.record(&format!("contact-{i}"), now).await.unwrap();
        }
        let s = ledger.snapshot("contact-9999", now).await.unwrap();
        assert_eq!((s.count, s.counted), (10_000, true));
        let people = store.kv_scan(NAMESPACE, REACHED).await.unwrap();
        assert_eq!(people.len(), 10_000, "one per person");
        let counts = store.kv_scan(NAMESPACE, COUNTS).await.unwrap();
        assert_eq!(counts.len(), 1, "one count for the hour");
        let largest = people.iter().map(|(_, v)| v.len()).max().unwrap();
        assert!(largest < 64, "a record of {largest} bytes");
    }

    #[tokio::test]
    async fn an_earlier_versions_records_still_count_and_rolled_off_records_go() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let h = hour(at("2025-06-10T10:15:00Z"));
        // What earlier versions wrote: the hour's ids in one record, and one record per person.
        store
            .kv_put(NAMESPACE, &format!("whatsapp/{h}"), br#"["a","b"]"#)
            .await
            .unwrap();
        store
            .kv_put(NAMESPACE, &format!("whatsapp/{}/d", h + 1), &[])
            .await
            .unwrap();
        let ledger = TierLedger::new(store.clone());
        ledger
            .record("c", at("2025-06-10T11:00:00Z"))
            .await
            .unwrap();
        ledger
            .record("a", at("2025-06-10T11:30:00Z"))
            .await
            .unwrap();
        let s = ledger
            .snapshot("a", at("2025-06-10T12:00:00Z"))
            .await
            .unwrap();
        assert_eq!(
            (s.count, s.counted),
            (4, true),
            "a was counted at 10:xx already"
        );
        let stored = || async {
            let mut keys: Vec<String> = store
                .kv_scan(NAMESPACE, BUCKETS)
                .await
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            keys.retain(|k| k != FIRST_SEND);
            keys
        };
        let keys = stored().await;
        assert!(
            keys.iter()
                .all(|k| k.starts_with(REACHED) || k.starts_with(COUNTS)),
            "the earlier records were moved: {keys:?}"
        );

        // A day later the 10:xx hour rolls off (a and b), then the 11:xx hour (c and d), and
        // their records are deleted.
        let s = ledger
            .snapshot("b", at("2025-06-11T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!((s.count, s.counted), (2, false));
        assert!(!stored().await.contains(&format!("{REACHED}a")));
        let s = ledger
            .snapshot("c", at("2025-06-11T11:00:00Z"))
            .await
            .unwrap();
        assert_eq!((s.count, s.counted), (0, false));
        assert!(stored().await.is_empty(), "{:?}", stored().await);
    }
}
