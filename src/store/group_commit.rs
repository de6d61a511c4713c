//! Group commit: many writers, one fsync.
//!
//! A 202 may only be sent once the notification is on disk, but one fsync per request in
//! sequence caps the accept rate at the disk's fsync rate. Instead, each writer does its
//! (in-memory) write, then asks the committer for a flush and waits. The committer takes every
//! request waiting at that moment, runs one `flush_async`, and answers them all: a write made
//! before its request was queued is covered by the flush that starts after the request is taken.
//! Under load, batches grow by themselves; when idle, a lone request is flushed at once.

//! The committer is a thread of its own, stopped and waited for when the handle is dropped.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::threads::Joined;
use super::{StoreError, StoreResult};

type Waiter = oneshot::Sender<Result<(), sled::Error>>;

/// Handle for requesting durable flushes. Dropping it stops the committer once it has
/// answered every request it holds, and waits for it (the sender drops first).
pub struct GroupCommit {
    requests: mpsc::Sender<Waiter>,
    _committer: Joined,
}

impl GroupCommit {
    /// Starts the committer thread for `db`.
    pub fn start(db: sled::Db) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let committer = Joined::spawn("lifeboat-commit", move || {
            let mut batch: Vec<Waiter> = Vec::with_capacity(1024);
            while let Ok(first) = rx.recv() {
                batch.push(first);
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let result = db.flush().map(drop);
                for waiter in batch.drain(..) {
                    let _ = waiter.send(result.clone());
                }
            }
        })
        .map_err(|source| StoreError::Start {
            what: "the store's committer",
            source,
        })?;
        Ok(GroupCommit {
            requests: tx,
            _committer: committer,
        })
    }

    /// Waits until every write made before this call is durable.
    pub async fn durable(&self) -> StoreResult<()> {
        let stopped = || StoreError::Stopped {
            what: "the store's committer",
        };
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| stopped())?;
        Ok(rx.await.map_err(|_| stopped())??)
    }
}
