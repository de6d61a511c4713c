//! What the grouped writers (accepts, saves) share: taking every request waiting as one group,
//! and running a group's transaction under the call timeout with a few immediate retries when
//! PostgreSQL aborted it for a deadlock or a serialization conflict.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, Notify};
use tokio::time::Instant;

use super::{Fail, Result};

/// Transaction retries after a deadlock (groups racing on keys or rows).
const RETRIES: usize = 5;

/// Requests waiting to be grouped, shared by a few writer tasks, and how many of their
/// transactions are in flight.
pub(super) struct Groups<T> {
    rx: Mutex<mpsc::UnboundedReceiver<T>>,
    shared: Shared,
    /// A group starts at once while fewer than this many transactions are in flight; otherwise
    /// it keeps collecting until one ends (or it is full, or [`LINGER`] passed).
    parallel: usize,
    /// After a group of `n` ended, the next keeps collecting until `n` more came, or this long
    /// after that end (zero: never): see [`Groups::with_regroup`].
    regroup: Duration,
}

/// What the writer tasks and their transactions in flight share.
struct Shared {
    in_flight: AtomicUsize,
    /// Fired when a transaction of these writers ends.
    ended: Notify,
    /// The size of the group whose transaction ended last, and when it ended.
    last: std::sync::Mutex<Option<(usize, Instant)>>,
}

/// The longest a group keeps collecting while the other transactions are in flight.
pub(super) const LINGER: Duration = Duration::from_millis(5);

/// A group's transaction in flight; ends (and lets a collecting group go) when dropped.
pub(super) struct InFlight<'a> {
    shared: &'a Shared,
    size: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        *self.shared.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((self.size, Instant::now()));
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.shared.ended.notify_waiters();
    }
}

impl<T> Groups<T> {
    /// `parallel`: see [`Groups::parallel`] (`usize::MAX`: every group starts at once).
    pub(super) fn new(rx: mpsc::UnboundedReceiver<T>, parallel: usize) -> Groups<T> {
        Groups {
            rx: Mutex::new(rx),
            shared: Shared {
                in_flight: AtomicUsize::new(0),
                ended: Notify::new(),
                last: std::sync::Mutex::new(None),
            },
            parallel,
            regroup: Duration::ZERO,
        }
    }

    /// Groups that keep their size under load: once a group of `n` ended, the next one keeps
    /// collecting until `n` more requests came (on top of those it collected while that group
    /// was in flight), at most `regroup` after that end. Under a
    /// steady load the callers just answered come back within that time and join, so the group
    /// holds a writer's whole load instead of half (one group in flight, one collecting) and
    /// a fleet's instances, each with a share of the load, still make large groups. An idle
    /// writer (its last group ended more than `regroup` ago) still answers at once.
    pub(super) fn with_regroup(mut self, regroup: Duration) -> Groups<T> {
        self.regroup = regroup;
        self
    }

    /// Until when a group that has `came_back` requests since the last group ended waits for
    /// more of that group's callers.
    fn regroup_until(&self, came_back: usize) -> Option<Instant> {
        if self.regroup.is_zero() {
            return None;
        }
        let last = *self.shared.last.lock().unwrap_or_else(|e| e.into_inner());
        match last {
            Some((size, ended)) if came_back < size => Some(ended + self.regroup),
            _ => None,
        }
    }

    /// The next group: waits for one request, then takes whatever else is already waiting, up
    /// to `max`; while `parallel` transactions are in flight already it goes on collecting
    /// until one of them ends, and with a regroup time ([`Groups::with_regroup`]) until it is
    /// as large as the group that ended last. So a busy writer makes fewer, larger
    /// transactions (each costs the server a commit) and an idle one answers at once. `None`
    /// once every sender is gone (the store was dropped). The lock is held only while a group
    /// is taken, so one task collects while others commit.
    pub(super) async fn next(&self, max: usize) -> Option<(Vec<T>, InFlight<'_>)> {
        let mut rx = self.rx.lock().await;
        let first = rx.recv().await?;
        let mut group = vec![first];
        let deadline = Instant::now() + LINGER;
        // Requests already here when the last group ended: this group waits for that many
        // more (its callers) on top.
        let mut waited_in_flight = false;
        let mut before_end: Option<usize> = None;
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
            let ended = self.shared.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let wait_until = if self.shared.in_flight.load(Ordering::SeqCst) >= self.parallel {
                waited_in_flight = true;
                deadline
            } else {
                let before = *before_end.get_or_insert(match waited_in_flight {
                    true => group.len(),
                    false => 0,
                });
                match self.regroup_until(group.len() - before) {
                    Some(until) => until,
                    None => break,
                }
            };
            if Instant::now() >= wait_until {
                break;
            }
            tokio::select! {
                _ = ended => {}
                more = rx.recv() => match more {
                    Some(more) => group.push(more),
                    None => break,
                },
                _ = tokio::time::sleep_until(wait_until) => break,
            }
        }
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let size = group.len();
        Some((
            group,
            InFlight {
                shared: &self.shared,
                size,
            },
        ))
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

    /// With a regroup time: after a group of four ended, the next waits for four (the callers
    /// coming back), at most the regroup time after that end; once that time is past (an
    /// idle writer), a request goes at once. Without one, it goes at once.
    #[tokio::test]
    async fn after_a_group_ends_the_next_waits_for_as_many_within_the_regroup_time() {
        const REGROUP: Duration = Duration::from_millis(200);
        let (tx, rx) = mpsc::unbounded_channel();
        let groups = Groups::new(rx, 1).with_regroup(REGROUP);
        for i in 1..=4 {
            tx.send(i).unwrap();
        }
        let (first, in_flight) = groups.next(100).await.unwrap();
        assert_eq!(first, vec![1, 2, 3, 4]);
        drop(in_flight);

        // The four come back one by one: one group of four, not four groups.
        let collecting = async { groups.next(100).await.map(|(g, _)| g) };
        let feed = async {
            for i in 5..=8 {
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let (second, ()) = tokio::join!(collecting, feed);
        assert_eq!(second.unwrap(), vec![5, 6, 7, 8], "regrouped");

        // Only two of the four come back: they go once the regroup time has passed.
        tx.send(9).unwrap();
        tx.send(10).unwrap();
        let started = std::time::Instant::now();
        let (third, _) = groups.next(100).await.unwrap();
        assert_eq!(third, vec![9, 10]);
        let waited = started.elapsed();
        assert!(waited >= REGROUP / 2 && waited < REGROUP * 5, "{waited:?}");

        // Idle: long past the last end, a request goes at once.
        tokio::time::sleep(REGROUP).await;
        tx.send(11).unwrap();
        let started = std::time::Instant::now();
        let (fourth, _) = groups.next(100).await.unwrap();
        assert_eq!(fourth, vec![11]);
        assert!(started.elapsed() < REGROUP / 2, "{:?}", started.elapsed());

        // Collected while a group was in flight: on its end, it waits for that group's callers
        // too (one here) on top of the two it has.
        tx.send(19).unwrap();
        let (alone, in_flight) = groups.next(100).await.unwrap();
        assert_eq!(alone, vec![19]);
        let collecting = async { groups.next(100).await.map(|(g, _)| g) };
        let feed = async {
            tx.send(20).unwrap();
            tx.send(21).unwrap();
            // Well within LINGER: the in-flight group ends, not the wait.
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(in_flight);
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(22).unwrap(); // the ended group's caller, back
        };
        let (fifth, ()) = tokio::join!(collecting, feed);
        assert_eq!(fifth.unwrap(), vec![20, 21, 22], "waited for the caller");

        // Without a regroup time, the same two go at once.
        let (tx, rx) = mpsc::unbounded_channel();
        let plain = Groups::new(rx, 1);
        for i in 1..=4 {
            tx.send(i).unwrap();
        }
        drop(plain.next(100).await.unwrap());
        tx.send(5).unwrap();
        let started = std::time::Instant::now();
        let (next, _) = plain.next(100).await.unwrap();
        assert_eq!(next, vec![5]);
        assert!(started.elapsed() < REGROUP / 2, "{:?}", started.elapsed());
    }
}
