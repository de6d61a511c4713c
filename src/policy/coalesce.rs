//! Figures counted on hot paths (priced messages per status webhook, marketing sends for the
//! risk monitor) gathered in memory and written to their store records in one atomic update per
//! record every [`EVERY`], instead of one read-modify-write per event. On a shared database
//! every such update locks its row for a few round trips: one per event serialised the
//! webhooks and sends that counted (and held pool connections while they waited).
//!
//! What a crash loses: the last [`EVERY`] of counts, like the store's other relaxed writes.
//! Readers see the stored figures, at most [`EVERY`] behind (plus the store's flush).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{Durability, Store};

/// How long a change waits in memory before it is written.
pub const EVERY: Duration = Duration::from_millis(250);

/// A change to one record that can absorb the next change to the same record.
pub trait Delta: Send + Sync + 'static {
    fn merge(&mut self, next: Self);
    /// The record after the change (`old`: the stored bytes, if any).
    fn apply(&self, old: Option<&[u8]>) -> Vec<u8>;
}

/// Changes waiting, per record key, in one namespace.
pub struct Coalesced<D: Delta> {
    store: Arc<dyn Store>,
    namespace: &'static str,
    pending: Arc<Mutex<BTreeMap<String, D>>>,
}

impl<D: Delta> Coalesced<D> {
    pub fn new(store: Arc<dyn Store>, namespace: &'static str) -> Self {
        Coalesced {
            store,
            namespace,
            pending: Arc::default(),
        }
    }

    /// Adds `delta` to `key`'s pending change; the first change after a write starts a timer
    /// that writes everything pending [`EVERY`] later (no task runs while nothing changes).
    pub fn add(&self, key: String, delta: D) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let start = pending.is_empty();
        match pending.get_mut(&key) {
            Some(d) => d.merge(delta),
            None => {
                pending.insert(key, delta);
            }
        }
        drop(pending);
        if start {
            let (store, namespace, pending) =
                (self.store.clone(), self.namespace, self.pending.clone());
            // Outside a runtime (a unit test's plain fn) the change waits for the next one.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    tokio::time::sleep(EVERY).await;
                    write(store.as_ref(), namespace, &pending).await;
                });
            }
        }
    }

    /// Writes what is pending now (tests, and a clean stop).
    pub async fn flush(&self) {
        write(self.store.as_ref(), self.namespace, &self.pending).await;
    }
}

async fn write<D: Delta>(
    store: &dyn Store,
    namespace: &'static str,
    pending: &Mutex<BTreeMap<String, D>>,
) {
    let batch = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
    for (key, delta) in batch {
        let delta = Arc::new(delta);
        let edit = {
            let delta = delta.clone();
            Box::new(move |old: Option<&[u8]>| Some(delta.apply(old)))
        };
        if let Err(e) = store
            .kv_update(namespace, &key, edit, Durability::Relaxed)
            .await
        {
            // Figures, not records: logged, and this batch's counts are lost.
            tracing::warn!(namespace, key, error = %e, "counted figures were not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pricing, PricingCategory};
    use crate::policy::pricing::{self, Counts};
    use crate::store::SledStore;

    async fn stored(store: &dyn Store, key: &str) -> Counts {
        store
            .kv_get(pricing::NAMESPACE, key)
            .await
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_from_many_tasks_all_land_in_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let tally = Arc::new(pricing::Tally::new(store.clone(), pricing::NAMESPACE));
        let utility = |billable| Pricing {
            billable,
            category: PricingCategory::Utility,
        };
        let key = pricing::key(lifeboat_channel::ChannelKind::Whatsapp, utility(true));
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let tally = tally.clone();
                tokio::spawn(async move {
                    for i in 0..250 {
                        tally.add(
                            pricing::key(lifeboat_channel::ChannelKind::Whatsapp, utility(true)),
                            Counts::one(utility((t + i) % 4 != 0)),
                        );
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        tally.flush().await;
        assert_eq!(
            stored(store.as_ref(), &key).await,
            Counts {
                billable: 1500,
                free: 500
            }
        );

        // Without an explicit flush, the timer writes what came after.
        tally.add(key.clone(), Counts::one(utility(false)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stored(store.as_ref(), &key).await.free != 501 {
            assert!(
                std::time::Instant::now() < deadline,
                "the timer never wrote the pending count"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn merged_marketing_sends_keep_the_last_window() {
        use crate::policy::risk::Sends;
        let mut a = Sends {
            at: vec![1, 2, 3],
            window: 4,
        };
        a.merge(Sends {
            at: vec![4, 5, 6],
            window: 4,
        });
        let record: serde_json::Value = serde_json::from_slice(&a.apply(None)).unwrap();
        assert_eq!(record["sends"], serde_json::json!([3, 4, 5, 6]), "{record}");
    }
}
