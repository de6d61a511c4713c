//! What the channel table keeps for the fleet beside the states themselves (docs/fleet.md):
//!
//! - [`Counts`]: notifications sent and failed per channel and minute over the last hour (the
//!   admin table's `sent_1h` / `failed_1h` and its chart). Each instance adds its results in
//!   memory and writes them to the store in batches ([`Counts::flush`], every
//!   [`COUNTS_FLUSH_EVERY`] and before each read): one relaxed [`Store::kv_update`] per channel
//!   and minute that had results, not one write per send. Records are
//!   `channel_counts/<channel>/<minute since the epoch>` holding `[sent, failed]`; the first
//!   instance to flush in a new minute deletes the minutes older than an hour. Every instance
//!   reads the same records, so `GET /v1/admin/channels` shows the same counts everywhere (an
//!   instance's last second of results shows once it flushed).
//! - [`Pauses`]: per-recipient pauses a provider asked for (WhatsApp's pair rate limit),
//!   stored first (`recipient_pauses/<channel>/<SHA-256 of the address>`, the later end wins),
//!   then live; every instance re-reads them with the states ([`Pauses::reload`]), so a
//!   recipient paused by one instance's answer waits on every instance within
//!   [`super::FRESH_AT_SEND`] of a send. The address itself is not stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use lifeboat_channel::ChannelKind;
use sha2::{Digest, Sha256};

use crate::model::Timestamp;
use crate::store::{Durability, Store, StoreResult};

const COUNTS_NAMESPACE: &str = crate::store::namespaces::CHANNEL_COUNTS;
const PAUSES_NAMESPACE: &str = crate::store::namespaces::RECIPIENT_PAUSES;

/// How often an instance writes its counts to the store (besides before each read).
pub const COUNTS_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Minutes of counts kept (the admin table's hour).
const MINUTES: i64 = 60;

fn minute(now: Timestamp) -> i64 {
    now.timestamp().div_euclid(60)
}

fn decode_pair(bytes: Option<&[u8]>) -> (u64, u64) {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or((0, 0))
}

/// Sent and failed per channel and minute, for the fleet.
#[derive(Default)]
pub struct Counts {
    /// Results not written yet: (channel, minute) → (sent, failed).
    pending: Mutex<BTreeMap<(ChannelKind, i64), (u64, u64)>>,
    /// One flush at a time (its writes and its put-back on failure stay in order).
    flushing: tokio::sync::Mutex<()>,
    /// The minute this instance last deleted old records in.
    swept_at: Mutex<Option<i64>>,
}

impl Counts {
    /// Counts one result now (in memory until the next flush).
    pub fn add(&self, kind: ChannelKind, sent: bool, now: Timestamp) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (s, f) = pending.entry((kind, minute(now))).or_default();
        if sent {
            *s += 1
        } else {
            *f += 1
        }
    }

    /// Writes the pending results to the store (added to what the fleet stored). On a store
    /// error they stay pending for the next flush.
    pub async fn flush(&self, store: &dyn Store, now: Timestamp) -> StoreResult<()> {
        let _one = self.flushing.lock().await;
        let batch: Vec<_> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        for (i, &((kind, m), (s, f))) in batch.iter().enumerate() {
            let edit = Box::new(move |old: Option<&[u8]>| {
                let (os, of) = decode_pair(old);
                Some(serde_json::to_vec(&(os + s, of + f)).expect("a pair serializes"))
            });
            let key = format!("{kind}/{m}");
            if let Err(e) = store
                .kv_update(COUNTS_NAMESPACE, &key, edit, Durability::Relaxed)
                .await
            {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                for &(k, (s, f)) in &batch[i..] {
                    let slot = pending.entry(k).or_default();
                    slot.0 += s;
                    slot.1 += f;
                }
                return Err(e);
            }
        }
        self.sweep(store, now).await
    }

    /// Deletes the minutes older than an hour, once per minute per instance.
    async fn sweep(&self, store: &dyn Store, now: Timestamp) -> StoreResult<()> {
        {
            let mut swept = self.swept_at.lock().unwrap_or_else(|p| p.into_inner());
            if *swept == Some(minute(now)) {
                return Ok(());
            }
            *swept = Some(minute(now));
        }
        for kind in ChannelKind::ALL {
            for (key, _) in store.kv_scan(COUNTS_NAMESPACE, &format!("{kind}/")).await? {
                let m: Option<i64> = key.rsplit('/').next().and_then(|m| m.parse().ok());
                if m.is_some_and(|m| minute(now) - m >= MINUTES) {
                    store.kv_delete_relaxed(COUNTS_NAMESPACE, &key).await?;
                }
            }
        }
        Ok(())
    }

    /// The fleet's sent and failed per minute on `kind` over the last hour, oldest first (60
    /// entries, the last one the current minute), this instance's pending results included.
    pub async fn per_minute(
        &self,
        store: &dyn Store,
        kind: ChannelKind,
        now: Timestamp,
    ) -> StoreResult<Vec<(u64, u64)>> {
        self.flush(store, now).await?;
        let mut out = vec![(0, 0); MINUTES as usize];
        for (key, value) in store.kv_scan(COUNTS_NAMESPACE, &format!("{kind}/")).await? {
            let Some(m) = key.rsplit('/').next().and_then(|m| m.parse::<i64>().ok()) else {
                continue;
            };
            let age = minute(now) - m;
            if (0..MINUTES).contains(&age) {
                out[(MINUTES - 1 - age) as usize] = decode_pair(Some(&value));
            }
        }
        Ok(out)
    }
}

/// Per-recipient pauses, for the fleet: stored, and mirrored in memory for the send path.
#[derive(Default)]
pub struct Pauses {
    /// Key (see [`pause_key`]) → end of the pause, as last read or written.
    live: Mutex<HashMap<String, Timestamp>>,
}

/// `<channel>/<SHA-256 of the address, hex>`.
fn pause_key(kind: ChannelKind, address: &str) -> String {
    format!("{kind}/{}", hex::encode(Sha256::digest(address.as_bytes())))
}

impl Pauses {
    /// Pauses `address` on `kind` until `until` (a later end already stored stays): stored
    /// first, then live here.
    pub async fn pause(
        &self,
        store: &dyn Store,
        kind: ChannelKind,
        address: &str,
        until: Timestamp,
    ) -> StoreResult<()> {
        let key = pause_key(kind, address);
        let edit = Box::new(move |old: Option<&[u8]>| {
            let old: Option<Timestamp> = old.and_then(|b| serde_json::from_slice(b).ok());
            let end = old.map_or(until, |o| o.max(until));
            Some(serde_json::to_vec(&end).expect("a timestamp serializes"))
        });
        let stored = store
            .kv_update(PAUSES_NAMESPACE, &key, edit, Durability::Relaxed)
            .await?;
        let end = stored
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(until);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, end);
        Ok(())
    }

    /// The end of `address`'s pause on `kind`, if it lasts past `now`.
    pub fn until(&self, kind: ChannelKind, address: &str, now: Timestamp) -> Option<Timestamp> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.is_empty() {
            return None;
        }
        live.get(&pause_key(kind, address))
            .copied()
            .filter(|until| *until > now)
    }

    /// Reads the stored pauses (every instance's) and makes them live here. Pauses over for
    /// a day are deleted (a day, not at once: a test or sandbox clock may run ahead).
    pub async fn reload(&self, store: &dyn Store) -> StoreResult<()> {
        let mut stored = HashMap::new();
        let long_ago = chrono::Utc::now() - chrono::Duration::days(1);
        for (key, value) in store.kv_scan(PAUSES_NAMESPACE, "").await? {
            let Ok(until) = serde_json::from_slice::<Timestamp>(&value) else {
                continue;
            };
            if until < long_ago {
                store.kv_delete_relaxed(PAUSES_NAMESPACE, &key).await?;
            } else {
                stored.insert(key, until);
            }
        }
        // Merged, not replaced: a pause this instance wrote while the scan ran stays (a pause
        // is never shortened, so nothing stored can undo one held here).
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, until| *until >= long_ago);
        for (key, until) in stored {
            let end = live.entry(key).or_insert(until);
            *end = (*end).max(until);
        }
        Ok(())
    }
}
