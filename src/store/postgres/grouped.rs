//! What the grouped writers (accepts, saves) share: taking every request waiting as one group,
//! and running a group's transaction under the call timeout with a few immediate retries when
//! PostgreSQL aborted it for a deadlock or a serialization conflict.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, Notify};

use super::{Fail, Result};

/// Transaction retries after a deadlock (groups racing on keys or rows).
const RETRIES: usize = 5;

/// Requests waiting to be grouped, shared by a few writer tasks, and how many of their
/// transactions are in flight.
pub(super) struct Groups<T> {
    rx: Mutex<mpsc::UnboundedReceiver<T>>,
    in_flight: AtomicUsize,
    /// Fired when a transaction of these writers ends.
    ended: Notify,
    /// A group starts at once while fewer than this many transactions are in flight; otherwise
    /// it keeps collecting until one ends (or it is full, or [`LINGER`] passed).
    parallel: usize,
}

/// The longest a group keeps collecting while the other transactions are in flight.
pub(super) const LINGER: Duration = Duration::from_millis(5);

/// A group's transaction in flight; ends (and lets a collecting group go) when dropped.
pub(super) struct InFlight<'a>(&'a AtomicUsize, &'a Notify);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.notify_waiters();
    }
}

impl<T> Groups<T> {
    /// `parallel`: see [`Groups::parallel`] (`usize::MAX`: every group starts at once).
    pub(super) fn new(rx: mpsc::UnboundedReceiver<T>, parallel: usize) -> Groups<T> {
        Groups {
            rx: Mutex::new(rx),
            in_flight: AtomicUsize::new(0),
            ended: Notify::new(),
            parallel,
        }
    }

    /// The next group: waits for one request, then takes whatever else is already waiting, up
    /// to `max`; while `parallel` transactions are in flight already it goes on collecting
    /// until one of them ends. So a busy writer makes fewer, larger transactions (each costs
    /// the server a commit) and an idle one answers at once. `None` once every sender is gone
    /// (the store was dropped). The lock is held only while a group is taken, so one task
    /// collects while others commit.
    pub(super) async fn next(&self, max: usize) -> Option<(Vec<T>, InFlight<'_>)> {
        let mut rx = self.rx.lock().await;
        let first = rx.recv().await?;
        let mut group = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            while group.len() < max {
                match rx.try_recv() {
                    Ok(more) => group.push(more),
                    Err(_) => break,
                }
            }
            if group.len() >= max {
                break;
            }
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) < self.parallel {
                break;
            }
            tokio::select! {
                _ = ended => {}
                more = rx.recv() => match more {
                    Some(more) => group.push(more),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Some((group, InFlight(&self.in_flight, &self.ended)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing in flight: a request goes at once. One in flight: the next group collects
    /// what arrives until that one ends (one transaction for four requests, not four), or
    /// until [`LINGER`] passed.
    #[tokio::test]
    async fn a_group_collects_while_another_is_in_flight_and_goes_at_once_otherwise() {
        let (tx, rx) = mpsc::unbounded_channel();
        let groups = Groups::new(rx, 1);
        tx.send(1).unwrap();
        let (first, in_flight) = groups.next(100).await.unwrap();
        assert_eq!(first, vec![1], "nothing in flight: at once");

        let collecting = async { groups.next(100).await.map(|(g, _)| g) };
        let feed = async {
            for i in 2..=5 {
                tx.send(i).unwrap();
                tokio::task::yield_now().await;
            }
            drop(in_flight);
        };
        let (second, ()) = tokio::join!(collecting, feed);
        assert_eq!(
            second.unwrap(),
            vec![2, 3, 4, 5],
            "collected while one was in flight"
        );

        // A transaction that does not end holds a group back LINGER at most.
        let (_, _stuck) = {
            tx.send(6).unwrap();
            groups.next(100).await.unwrap()
        };
        tx.send(7).unwrap();
        let started = std::time::Instant::now();
        let (third, _) = groups.next(100).await.unwrap();
        assert_eq!(third, vec![7]);
        let waited = started.elapsed();
        assert!(waited >= LINGER && waited < LINGER * 20, "{waited:?}");
    }
}
