//! What the grouped writers (accepts, saves) share: taking every request waiting as one group,
//! and running a group's transaction under the call timeout with a few immediate retries when
//! PostgreSQL aborted it for a deadlock or a serialization conflict.

use std::future::Future;

use tokio::sync::{mpsc, Mutex};

use super::{Fail, Result};

/// Transaction retries after a deadlock (groups racing on keys or rows).
const RETRIES: usize = 5;

/// The next group: waits for one request, then takes whatever else is already waiting, up to
/// `max`. `None` once every sender is gone (the store was dropped). Several writer tasks share
/// one receiver; the lock is held only while a group is taken, so one task collects while
/// another commits.
pub(super) async fn next_group<T>(
    rx: &Mutex<mpsc::UnboundedReceiver<T>>,
    max: usize,
) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut group = vec![first];
    while group.len() < max {
        match rx.try_recv() {
            Ok(more) => group.push(more),
            Err(_) => break,
        }
    }
    Some(group)
}

/// Runs `transaction` (built anew for each try) under the call timeout, retrying at once what
/// [`Fail::retry_at_once`] says may succeed on a second try.
pub(super) async fn with_retries<R, F, Fut>(what: &'static str, mut transaction: F) -> Result<R>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R>>,
{
    let mut tries = 0;
    loop {
        let attempt = tokio::time::timeout(super::CALL_TIMEOUT, transaction())
            .await
            .unwrap_or(Err(Fail::Timeout(what)));
        match attempt {
            Err(e) if e.retry_at_once() && tries < RETRIES => tries += 1,
            other => return other,
        }
    }
}
