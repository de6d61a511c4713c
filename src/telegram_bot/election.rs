//! Which instance long-polls `getUpdates`: Telegram allows one poller per bot token (a second
//! one ends the first's poll with 409 "terminated by other getUpdates request"), so in a fleet
//! the instances elect one through a lease record in the store (`telegram`/`poller`:
//! owner + until, [`crate::fleet::lease`]). The holder renews it every [`Timing::renew`]; the
//! others try every [`Timing::retry`] and take it once the holder's time is up, so a dead
//! holder is replaced within `ttl + retry` (8 s + 1 s by default, under the 10 s the fleet
//! spec allows). A holder that cannot renew for a whole `ttl` (the store is unreachable) stops
//! polling, since another may have taken over.
//!
//! Only this type knows how the election is made: a PostgreSQL backend may hold an advisory
//! lock on a dedicated connection instead, behind the same three calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::fleet::lease::Lease;
use crate::fleet::InstanceId;
use crate::store::{Store, StoreResult};

const NAMESPACE: &str = crate::fleet::lease::TELEGRAM_POLLER.0;
const KEY: &str = crate::fleet::lease::TELEGRAM_POLLER.1;

/// How long the lease lasts, how often the holder renews it and how often the others try.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ttl: Duration::from_secs(8),
            renew: Duration::from_secs(2),
            retry: Duration::from_secs(1),
        }
    }
}

/// This instance's part in the poller election.
pub struct Election {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    lease: Lease,
    timing: Timing,
}

/// Held while this instance is the poller: `lost` turns true when it no longer is. Dropping it
/// stops the renewals (the lease then runs out unless [`Election::resign`] gives it back).
pub struct Term {
    pub lost: watch::Receiver<bool>,
    renewals: tokio::task::JoinHandle<()>,
}

impl Drop for Term {
    fn drop(&mut self) {
        self.renewals.abort();
    }
}

impl Election {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        instance: InstanceId,
        timing: Timing,
    ) -> Election {
        Election {
            lease: Lease::new(NAMESPACE, KEY, instance, timing.ttl),
            store,
            clock,
            timing,
        }
    }

    pub fn instance(&self) -> &InstanceId {
        self.lease.owner()
    }

    /// Waits until this instance holds the lease (`None` if `stop` turned true first); store
    /// errors are retried.
    pub async fn lead(&self, stop: &mut watch::Receiver<bool>) -> Option<Term> {
        let mut waited = false;
        loop {
            match self
                .lease
                .acquire(self.store.as_ref(), self.clock.now())
                .await
            {
                Ok(true) => break,
                Ok(false) if !waited => {
                    waited = true;
                    tracing::info!(instance = %self.instance(), "telegram: another instance polls for updates; standing by");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "telegram: cannot ask the store who polls; retrying")
                }
            }
            if super::polling::pause(self.timing.retry, stop).await {
                return None;
            }
        }
        let (lost_tx, lost) = watch::channel(false);
        let (store, clock, lease, timing) = (
            self.store.clone(),
            self.clock.clone(),
            self.lease.clone(),
            self.timing,
        );
        let renewals = tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(timing.renew).await;
                match lease.acquire(store.as_ref(), clock.now()).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => break,
                    Err(e) if renewed.elapsed() < timing.ttl => {
                        tracing::warn!(error = %e, "telegram: renewing the poller lease failed; retrying")
                    }
                    Err(_) => break,
                }
            }
            let _ = lost_tx.send(true);
        });
        Some(Term { lost, renewals })
    }

    /// Gives the lease up (a clean stop), so another instance takes over at once.
    pub async fn resign(&self) -> StoreResult<()> {
        self.lease.release(self.store.as_ref()).await
    }
}
