//! Group commit: many writers, one fsync.
//!
//! A 202 may only be sent once the notification is on disk, but one fsync per request in
//! sequence caps the accept rate at the disk's fsync rate. Instead, each writer does its
//! (in-memory) write, then asks the committer for a flush and waits. The committer takes every
//! request waiting at that moment, runs one `flush_async`, and answers them all: a write made
//! before its request was queued is covered by the flush that starts after the request is taken.
//! Under load, batches grow by themselves; when idle, a lone request is flushed at once.

use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle for requesting durable flushes; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Waiter>,
}

impl GroupCommit {
    /// Starts the committer task for `db`.
    pub fn start(db: sled::Db) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            let mut batch: Vec<Waiter> = Vec::with_capacity(1024);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let result = db
                    .flush_async()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                for waiter in batch.drain(..) {
                    let _ = waiter.send(result.clone());
                }
            }
        });
        GroupCommit { requests: tx }
    }

    /// Waits until every write made before this call is durable.
    pub async fn durable(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| "the store's committer has stopped".to_string())?;
        rx.await
            .map_err(|_| "the store's committer has stopped".to_string())?
    }
}
