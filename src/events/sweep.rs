//! The sweep: rebuilds the due entries of pending deliveries that have none.
//!
//! A delivery lives in two records: the event's record says it is pending and when it is due,
//! and a due entry (`event_due`) is what its endpoint's worker finds. They are two writes, the
//! record first (a worker drops a due entry its record does not match, see `deliver`; the
//! dispatcher writes a turn's records before the turn's save and their due entries after it),
//! so a crash between them leaves a delivery the record calls pending that no worker would
//! ever find. At start, and every [`SWEEP_EVERY`] after (another instance on the store may be
//! the one that crashed), each pending delivery to a configured endpoint whose due entry is
//! missing gets it back, durably. The periodic sweeps leave records younger than [`GRACE`] to
//! the live writer about to make them due; the one at start takes every record. The sweep reads the `events` namespace in pages with a
//! short pause between them (retention keeps it to about a week of events); a record whose
//! deliveries all ended costs only its parse.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{due_key, DeliveryState, Events, Record};
use crate::model::Timestamp;
use crate::store::{namespaces, StoreResult};

/// The pause between two sweeps after the one at start.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How old a record must be before a periodic sweep makes it due (its writer, if alive, has
/// long written its due entries by then).
const GRACE: chrono::Duration = chrono::Duration::seconds(60);
/// Records read per page.
const PAGE: usize = 256;
/// The pause between two pages.
const PAUSE: Duration = Duration::from_millis(5);

impl Events {
    /// One sweep over every event: writes back the due entry of each pending delivery (to an
    /// endpoint configured now) that has none. Returns how many it wrote.
    pub async fn sweep(&self) -> StoreResult<usize> {
        self.sweep_made_before(None).await
    }

    /// [`Events::sweep`], only over records made before `before` (all with `None`).
    async fn sweep_made_before(&self, before: Option<Timestamp>) -> StoreResult<usize> {
        let mut rebuilt = 0;
        let mut after = String::new();
        loop {
            let page = self
                .store
                .kv_scan_page(namespaces::EVENTS, "", &after, PAGE)
                .await?;
            let full = page.len() == PAGE;
            for (key, value) in page {
                after = key;
                let Some(record) = Record::parse(&value) else {
                    continue;
                };
                if record.settled_at.is_some() {
                    continue;
                }
                if before.is_some_and(|b| made_at(&record.event.id).is_none_or(|m| m > b)) {
                    continue;
                }
                rebuilt += self.rebuild(&record).await?;
            }
            if !full {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if rebuilt > 0 {
            for w in &self.wake {
                w.notify_one();
            }
        }
        Ok(rebuilt)
    }

    /// The due entries `record`'s pending deliveries miss, written.
    async fn rebuild(&self, record: &Record) -> StoreResult<usize> {
        let mut rebuilt = 0;
        for d in &record.deliveries {
            let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at) else {
                continue;
            };
            if !self.endpoints.iter().any(|e| e.id == d.endpoint) {
                continue;
            }
            let key = due_key(&d.endpoint, at, &record.event.id);
            if self
                .store
                .kv_get(namespaces::EVENT_DUE, &key)
                .await?
                .is_none()
            {
                self.store.kv_put(namespaces::EVENT_DUE, &key, b"").await?;
                tracing::info!(event = %record.event.id, endpoint = %d.name, "events: a pending delivery had no due entry (a crash between two writes); due again");
                rebuilt += 1;
            }
        }
        Ok(rebuilt)
    }
}

/// When an event id (a UUIDv7) was made.
fn made_at(id: &str) -> Option<Timestamp> {
    let (secs, nanos) = uuid::Uuid::try_parse(id).ok()?.get_timestamp()?.to_unix();
    chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// Sweeps at start and every [`SWEEP_EVERY`] until `stopped`.
pub(super) async fn run(events: Arc<Events>, mut stopped: watch::Receiver<bool>) {
    let mut first = true;
    loop {
        let before = (!first).then(|| events.clock.now() - GRACE);
        first = false;
        let sweep = events.sweep_made_before(before);
        let result = tokio::select! {
            r = sweep => r,
            _ = stopped.changed() => return,
        };
        if let Err(e) = result {
            tracing::warn!(error = %crate::store::error_chain(&e), "events: the sweep for pending deliveries failed; trying again at the next");
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stopped.changed() => return,
        }
    }
}
