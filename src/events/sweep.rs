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
//! the live writer about to make them due; the one at start takes every record. The event of
//! a change saved apart from it (a state, a consent, a receipt: `super::Change`) is made due
//! only once the store shows that change saved, and deleted once [`DISCARD_AFTER`] has
//! passed without (its save failed and the process died before deleting it, or the process
//! died before the save). The sweep reads the `events` namespace in pages with a
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
/// How long the event of a change ([`super::Change`]) waits for the store to show the change
/// saved before a sweep deletes it: far longer than any save takes, so that only the event of
/// a save that failed or never came is dropped.
pub(super) const DISCARD_AFTER: chrono::Duration = chrono::Duration::minutes(10);
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

    /// The due entries `record`'s pending deliveries miss, written; for the event of a change
    /// saved apart from it ([`super::Change`]), only once the store shows the change saved, and the
    /// record deleted instead once [`DISCARD_AFTER`] has passed without.
    async fn rebuild(&self, record: &Record) -> StoreResult<usize> {
        let mut rebuilt = 0;
        let mut saved = None;
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
                if let Some(change) = &record.change {
                    if saved.is_none() {
                        saved = Some(self.saved(change).await?);
                    }
                    if saved == Some(false) {
                        self.drop_unsaved(record).await?;
                        return Ok(rebuilt);
                    }
                }
                self.store.kv_put(namespaces::EVENT_DUE, &key, b"").await?;
                tracing::info!(event = %record.event.id, endpoint = %d.name, "events: a pending delivery had no due entry (a crash between two writes); due again");
                rebuilt += 1;
            }
        }
        Ok(rebuilt)
    }
}

impl Events {
    /// The event of a change the store does not show saved: deleted once it is older than
    /// [`DISCARD_AFTER`] (its save failed, or its process died before it), left for the next
    /// sweep before (its save may be under way in a live process).
    async fn drop_unsaved(&self, record: &Record) -> StoreResult<()> {
        let id = &record.event.id;
        let now = self.clock.now();
        if made_at(id).is_some_and(|m| now - m < DISCARD_AFTER) {
            return Ok(());
        }
        self.store.kv_delete(namespaces::EVENTS, id).await?;
        tracing::info!(event = %id, r#type = record.event.event_type.as_str(), "events: dropped the event of a change that was never saved");
        Ok(())
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
