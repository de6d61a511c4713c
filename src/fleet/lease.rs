//! A lease in the store: one record `{owner, until}` that at most one instance holds at a
//! time, taken and renewed by a compare-and-set (`Store::kv_update`) and lost by not renewing
//! it. For work one instance must do alone: probing a restricted channel after its cooldown,
//! long-polling Telegram.
//!
//! A holder that dies keeps the lease until `until`; then anyone may take it. Instances' clocks
//! are assumed to agree within a small part of the lease's length (NTP), which is why leases
//! last seconds, not milliseconds. A backend with a better tool (a PostgreSQL advisory lock on
//! a dedicated connection) can stand in behind the same calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::InstanceId;
use crate::model::{later, Timestamp};
use crate::store::{Durability, Store, StoreResult};

/// What the record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub owner: String,
    pub until: Timestamp,
}

fn parse(bytes: Option<&[u8]>) -> Option<Holder> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// One lease record, as seen by one instance.
#[derive(Clone)]
pub struct Lease {
    namespace: &'static str,
    key: String,
    owner: InstanceId,
    ttl: Duration,
}

impl Lease {
    /// The lease at `namespace`/`key`, taken for `ttl` at a time by `owner`.
    pub fn new(
        namespace: &'static str,
        key: impl Into<String>,
        owner: InstanceId,
        ttl: Duration,
    ) -> Lease {
        Lease {
            namespace,
            key: key.into(),
            owner,
            ttl,
        }
    }

    pub fn owner(&self) -> &InstanceId {
        &self.owner
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if nobody holds it (or the holder's time is up), or renews it if this
    /// instance holds it: until `now + ttl`. Says whether this instance holds it now.
    pub async fn acquire(&self, store: &dyn Store, now: Timestamp) -> StoreResult<bool> {
        let me = self.owner.as_str().to_string();
        let until = later(now, self.ttl);
        let edit = Box::new(move |old: Option<&[u8]>| match parse(old) {
            Some(h) if h.owner != me && h.until > now => old.map(<[u8]>::to_vec),
            _ => Some(
                serde_json::to_vec(&Holder {
                    owner: me.clone(),
                    until,
                })
                .expect("a lease serializes"),
            ),
        });
        let after = store
            .kv_update(self.namespace, &self.key, edit, Durability::Durable)
            .await?;
        Ok(parse(after.as_deref()).is_some_and(|h| h.owner == self.owner.as_str()))
    }

    /// Gives the lease up if this instance holds it (anyone may take it at once).
    pub async fn release(&self, store: &dyn Store) -> StoreResult<()> {
        let me = self.owner.as_str().to_string();
        let edit = Box::new(move |old: Option<&[u8]>| match parse(old) {
            Some(h) if h.owner == me => None,
            _ => old.map(<[u8]>::to_vec),
        });
        store
            .kv_update(self.namespace, &self.key, edit, Durability::Durable)
            .await?;
        Ok(())
    }

    /// Who holds the lease at `now`, if anyone.
    pub async fn holder(&self, store: &dyn Store, now: Timestamp) -> StoreResult<Option<Holder>> {
        Ok(
            parse(store.kv_get(self.namespace, &self.key).await?.as_deref())
                .filter(|h| h.until > now),
        )
    }
}

/// The Telegram poller's lease (`telegram_bot::Election`): namespace and key.
pub const TELEGRAM_POLLER: (&str, &str) = ("telegram", "poller");

/// The leases `owner` holds at `now`, named `namespace/key` (`telegram/poller`,
/// `channel_probe/whatsapp`), for `/readyz` and `/metrics`. The claims on notifications are
/// counted apart ([`super::HeldClaims`]).
pub async fn held_by(
    store: &dyn Store,
    owner: &InstanceId,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let mine =
        |raw: Option<&[u8]>| parse(raw).is_some_and(|h| h.owner == owner.as_str() && h.until > now);
    let mut out = Vec::new();
    let (ns, key) = TELEGRAM_POLLER;
    if mine(store.kv_get(ns, key).await?.as_deref()) {
        out.push(format!("{ns}/{key}"));
    }
    let probes = crate::store::namespaces::CHANNEL_PROBE;
    for (key, raw) in store.kv_scan(probes, "").await? {
        if mine(Some(raw.as_slice())) {
            out.push(format!("{probes}/{key}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;
    use std::sync::Arc;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    const NS: &str = "test_lease";

    #[tokio::test]
    async fn one_holder_at_a_time_until_it_lets_go_or_its_time_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let ttl = Duration::from_secs(10);
        let a = Lease::new(NS, "k", InstanceId::named("a"), ttl);
        let b = Lease::new(NS, "k", InstanceId::named("b"), ttl);
        assert!(a.acquire(store.as_ref(), at(0)).await.unwrap());
        assert!(!b.acquire(store.as_ref(), at(1)).await.unwrap());
        assert!(a.acquire(store.as_ref(), at(5)).await.unwrap(), "renewed");
        assert!(
            !b.acquire(store.as_ref(), at(14)).await.unwrap(),
            "the renewal counts from 5"
        );
        assert_eq!(
            b.holder(store.as_ref(), at(14))
                .await
                .unwrap()
                .map(|h| h.owner),
            Some("a".into())
        );
        // a stops renewing (it died): b takes over once a's time is up.
        assert!(b.acquire(store.as_ref(), at(15)).await.unwrap());
        assert!(
            !a.acquire(store.as_ref(), at(16)).await.unwrap(),
            "a lost it"
        );
        // b's release by a changes nothing; b's own frees it at once.
        a.release(store.as_ref()).await.unwrap();
        assert!(!a.acquire(store.as_ref(), at(17)).await.unwrap());
        b.release(store.as_ref()).await.unwrap();
        assert_eq!(b.holder(store.as_ref(), at(17)).await.unwrap(), None);
        assert!(a.acquire(store.as_ref(), at(17)).await.unwrap());
    }

    /// Many contenders at the same instant (tasks with nothing in common but the store, as
    /// instances are): exactly one wins.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contenders_at_once_elect_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let lease = Lease::new(
                        NS,
                        "k",
                        InstanceId::named(&format!("i{i}")),
                        Duration::from_secs(10),
                    );
                    barrier.wait().await;
                    lease.acquire(store.as_ref(), at(0)).await.unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            won += t.await.unwrap() as usize;
        }
        assert_eq!(won, 1);
    }
}
