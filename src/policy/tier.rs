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
//! The ledger is kept in hourly buckets, one record per person (namespace `policy_tier`, keys
//! `whatsapp/<hour since epoch>/<contact id>`, and `whatsapp/first_send`), so the 24 h roll is
//! in hourly steps and a restart keeps the count. Counting a new person writes one small
//! record and asking for the count costs nothing more at 100,000 people than at 10: the
//! ledger keeps, in memory, who was reached and in which hour. Buckets that roll off are
//! deleted. A ledger written by an earlier version (one `whatsapp/<hour>` record holding the
//! hour's ids) is still read, and deleted once it rolls off.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::model::{Contact, Timestamp};
use crate::store::{Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::POLICY_TIER;
const BUCKETS: &str = "whatsapp/";
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

/// What the ledger says at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Unique recipients reached in the last 24 h.
    pub count: usize,
    /// Whether this contact is one of them (a repeat costs nothing).
    pub counted: bool,
    pub first_send: Option<Timestamp>,
}

/// Where a stored record of the ledger came from.
enum Bucket {
    /// `whatsapp/<hour>/<contact id>`.
    One(i64, String),
    /// `whatsapp/<hour>`: a whole hour as a JSON list of ids (earlier versions).
    Whole(i64),
}

fn parse_bucket_key(key: &str) -> Option<Bucket> {
    let rest = key.strip_prefix(BUCKETS)?;
    match rest.split_once('/') {
        Some((h, contact)) => Some(Bucket::One(h.parse().ok()?, contact.to_string())),
        None => Some(Bucket::Whole(rest.parse().ok()?)),
    }
}

#[derive(Default)]
struct Ledger {
    /// Everyone reached in the rolling 24 h, with the hour they were first reached in.
    reached: HashMap<String, i64>,
    /// The same people by hour, so a bucket rolls off without a search.
    hours: BTreeMap<i64, Vec<String>>,
    /// Stored keys of earlier versions' whole-hour records, by hour.
    whole_hours: BTreeMap<i64, String>,
    first_send: Option<Timestamp>,
    /// The hour the ledger was last rolled to (a roll within the same hour has nothing to do).
    rolled_at: Option<i64>,
}

impl Ledger {
    fn add(&mut self, contact_id: String, h: i64) {
        if self.reached.contains_key(&contact_id) {
            return;
        }
        self.reached.insert(contact_id.clone(), h);
        self.hours.entry(h).or_default().push(contact_id);
    }

    /// Drops the buckets older than 24 h at `now`; returns the stored keys to delete.
    fn roll(&mut self, now: Timestamp) -> Vec<String> {
        if self.rolled_at == Some(hour(now)) {
            return Vec::new();
        }
        self.rolled_at = Some(hour(now));
        let oldest = hour(now) - HOURS + 1;
        let live = self.hours.split_off(&oldest);
        let gone = std::mem::replace(&mut self.hours, live);
        let mut keys = Vec::new();
        for (h, ids) in gone {
            for id in ids {
                if self.reached.get(&id) == Some(&h) {
                    self.reached.remove(&id);
                }
                keys.push(format!("{BUCKETS}{h}/{id}"));
            }
        }
        let live = self.whole_hours.split_off(&oldest);
        keys.extend(std::mem::replace(&mut self.whole_hours, live).into_values());
        keys
    }
}

/// The durable ledger of unique business-initiated recipients, cached in memory.
pub struct TierLedger {
    store: Arc<dyn Store>,
    cache: tokio::sync::Mutex<Option<Ledger>>,
}

impl TierLedger {
    pub fn new(store: Arc<dyn Store>) -> TierLedger {
        TierLedger {
            store,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The ledger, read from the store at first use and rolled forward to `now` (rolled-off
    /// records are deleted from the store).
    async fn current<'a>(
        &self,
        cache: &'a mut Option<Ledger>,
        now: Timestamp,
    ) -> StoreResult<&'a mut Ledger> {
        if cache.is_none() {
            let mut ledger = Ledger::default();
            let mut stale = Vec::new();
            let oldest = hour(now) - HOURS + 1;
            for (key, value) in self.store.kv_scan(NAMESPACE, BUCKETS).await? {
                if key == FIRST_SEND {
                    ledger.first_send = serde_json::from_slice(&value).ok();
                    continue;
                }
                match parse_bucket_key(&key) {
                    Some(Bucket::One(h, _) | Bucket::Whole(h)) if h < oldest => stale.push(key),
                    Some(Bucket::One(h, contact)) => ledger.add(contact, h),
                    Some(Bucket::Whole(h)) => {
                        if let Ok(ids) = serde_json::from_slice::<HashSet<String>>(&value) {
                            for id in ids {
                                ledger.add(id, h);
                            }
                        }
                        ledger.whole_hours.insert(h, key);
                    }
                    None => {}
                }
            }
            for key in stale {
                self.store.kv_delete_relaxed(NAMESPACE, &key).await?;
            }
            *cache = Some(ledger);
        }
        let ledger = cache.as_mut().expect("just loaded");
        for key in ledger.roll(now) {
            self.store.kv_delete_relaxed(NAMESPACE, &key).await?;
        }
        Ok(ledger)
    }

    /// The count and whether `contact_id` is in it, at `now`.
    pub async fn snapshot(&self, contact_id: &str, now: Timestamp) -> StoreResult<Snapshot> {
        let mut cache = self.cache.lock().await;
        let ledger = self.current(&mut cache, now).await?;
        Ok(Snapshot {
            count: ledger.reached.len(),
            counted: ledger.reached.contains_key(contact_id),
            first_send: ledger.first_send,
        })
    }

    /// Counts a business-initiated send to `contact_id` now (once per 24 h per contact).
    pub async fn record(&self, contact_id: &str, now: Timestamp) -> StoreResult<()> {
        let mut cache = self.cache.lock().await;
        let ledger = self.current(&mut cache, now).await?;
        if ledger.reached.contains_key(contact_id) {
            return Ok(());
        }
        if ledger.first_send.is_none() {
            let bytes = serde_json::to_vec(&now).expect("a timestamp serializes");
            self.store.kv_put(NAMESPACE, FIRST_SEND, &bytes).await?;
            ledger.first_send = Some(now);
        }
        let h = hour(now);
        self.store
            .kv_put_relaxed(NAMESPACE, &format!("{BUCKETS}{h}/{contact_id}"), &[])
            .await?;
        ledger.add(contact_id.to_string(), h);
        Ok(())
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
        let records = store.kv_scan(NAMESPACE, BUCKETS).await.unwrap();
        assert_eq!(records.len(), 10_001, "one per person, and the first send");
        let largest = records.iter().map(|(_, v)| v.len()).max().unwrap();
        assert!(largest < 64, "a record of {largest} bytes");
    }

    #[tokio::test]
    async fn an_earlier_versions_hourly_records_still_count_and_rolled_off_records_go() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let h = hour(at("2025-06-10T10:15:00Z"));
        // What an earlier version wrote: the hour's ids in one record.
        store
            .kv_put(NAMESPACE, &format!("whatsapp/{h}"), br#"["a","b"]"#)
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
            (3, true),
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
        assert_eq!(stored().await.len(), 2);

        // A day later the 10:xx hour rolls off, and its record is deleted.
        let s = ledger
            .snapshot("b", at("2025-06-11T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!((s.count, s.counted), (1, false));
        assert_eq!(stored().await, vec![format!("whatsapp/{}/c", h + 1)]);
        let s = ledger
            .snapshot("c", at("2025-06-11T11:00:00Z"))
            .await
            .unwrap();
        assert_eq!((s.count, s.counted), (0, false));
        assert!(stored().await.is_empty());
    }
}
