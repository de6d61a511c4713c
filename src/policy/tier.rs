//! WhatsApp's business-initiated tier: Meta lets a number open conversations with at most
//! 1K / 10K / 100K unique people per rolling 24 h, and a number that pushes past it gets
//! restricted. The gateway counts unique recipients it reached *outside* their service window
//! (no message from them in the last 24 h) and, at `[policy.whatsapp] tier`, sends marketing
//! to the next channel instead (`cap_reached`). Transactional messages count but are never
//! held back: they matter more than the promotion that would have used the room.
//!
//! Warm-up (off by default): a brand-new number that mass-sends on day one is a ban trigger, so
//! with `warmup = { start = 50, growth = 1.5, per = "1d" }` the cap starts at 50 and grows by
//! half every day since the first business-initiated send.
//!
//! The ledger is kept in hourly buckets (namespace `policy_tier`, keys
//! `whatsapp/<hour since epoch>` holding the contact ids first reached that hour, and
//! `whatsapp/first_send`), so the 24 h roll is in hourly steps and a restart keeps the count.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{Contact, Timestamp};
use crate::store::{Store, StoreResult};

const NAMESPACE: &str = "policy_tier";
const FIRST_SEND: &str = "whatsapp/first_send";
const HOURS: i64 = 24;

/// `warmup = { start, growth, per }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    pub start: u32,
    pub growth: f64,
    pub per: Duration,
}

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

#[derive(Default)]
struct Ledger {
    hours: BTreeMap<i64, HashSet<String>>,
    first_send: Option<Timestamp>,
}

impl Ledger {
    fn live(&self, now: Timestamp) -> impl Iterator<Item = &HashSet<String>> {
        let h = hour(now);
        self.hours.range(h - HOURS + 1..=h).map(|(_, set)| set)
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

    async fn loaded<'a>(
        &self,
        cache: &'a mut Option<Ledger>,
        now: Timestamp,
    ) -> StoreResult<&'a mut Ledger> {
        if cache.is_none() {
            let mut ledger = Ledger::default();
            let h = hour(now);
            for at in h - HOURS + 1..=h {
                if let Some(raw) = self
                    .store
                    .kv_get(NAMESPACE, &format!("whatsapp/{at}"))
                    .await?
                {
                    if let Ok(set) = serde_json::from_slice::<HashSet<String>>(&raw) {
                        ledger.hours.insert(at, set);
                    }
                }
            }
            ledger.first_send = self
                .store
                .kv_get(NAMESPACE, FIRST_SEND)
                .await?
                .and_then(|raw| serde_json::from_slice(&raw).ok());
            *cache = Some(ledger);
        }
        Ok(cache.as_mut().expect("just loaded"))
    }

    /// The count and whether `contact_id` is in it, at `now`.
    pub async fn snapshot(&self, contact_id: &str, now: Timestamp) -> StoreResult<Snapshot> {
        let mut cache = self.cache.lock().await;
        let ledger = self.loaded(&mut cache, now).await?;
        let mut count = 0;
        let mut counted = false;
        let mut seen = HashSet::new();
        for set in ledger.live(now) {
            for id in set {
                if seen.insert(id.as_str()) {
                    count += 1;
                    counted |= id == contact_id;
                }
            }
        }
        Ok(Snapshot {
            count,
            counted,
            first_send: ledger.first_send,
        })
    }

    /// Counts a business-initiated send to `contact_id` now (once per 24 h per contact).
    pub async fn record(&self, contact_id: &str, now: Timestamp) -> StoreResult<()> {
        let mut cache = self.cache.lock().await;
        let ledger = self.loaded(&mut cache, now).await?;
        if ledger.live(now).any(|set| set.contains(contact_id)) {
            return Ok(());
        }
        if ledger.first_send.is_none() {
            let bytes = serde_json::to_vec(&now).expect("a timestamp serializes");
            self.store.kv_put(NAMESPACE, FIRST_SEND, &bytes).await?;
            ledger.first_send = Some(now);
        }
        let h = hour(now);
        let set = ledger.hours.entry(h).or_default();
        set.insert(contact_id.to_string());
        let bytes = serde_json::to_vec(set).expect("a set of strings serializes");
        self.store
            .kv_put_relaxed(NAMESPACE, &format!("whatsapp/{h}"), &bytes)
            .await?;
        // Forget buckets that rolled off (memory only; old keys are never read again).
        ledger.hours = ledger.hours.split_off(&(h - HOURS + 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use lifeboat_channel::ChannelKind;

    fn at(text: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

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
}
