//! The dispatcher: one scheduler task claims due notifications from the store and hands each
//! to a worker task; at most `server.concurrency` sends are in flight at once.
//!
//! The store's claim is what guarantees that no notification is sent by two workers at once
//! (or by two instances on one shared store). A claim is a lease: a small task renews the
//! leases of everything the dispatcher holds (claimed, waiting for a slot, or being sent)
//! about three times per lease, so only a dead or cut-off dispatcher loses them ([`Held`]).
//! The scheduler wakes when a notification is accepted, when a worker puts one back on the
//! queue, or at the latest every 250 ms (retries and throttles that come due).

pub mod backoff;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
pub mod transitions;
pub mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::fleet::HeldClaims;
use worker::WorkerContext;

/// How many notifications one claim takes at most.
const CLAIM_BATCH: usize = 512;
/// How many one claim takes at least (when there are that many due), slots free or not.
const MIN_CLAIM: usize = 64;
/// The longest the scheduler sleeps without looking at the queue.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// After a claim that did not fill its batch, the next one waits at least this long, however
/// often accepts wake the scheduler: while a paced backlog waits, a wake-up per accept would
/// otherwise be a claim per accept that finds nothing it may take.
const MIN_ROUND_GAP: Duration = Duration::from_millis(5);
/// The soonest the scheduler comes back for a paced channel's next slots.
const PACED_WAKE_MIN: Duration = Duration::from_millis(20);

/// What one claim may take from each lane of the queue (issue 19): from the lane of a channel
/// that can send and is paced, only the sends its pacing allows now, so a backlog waiting on
/// pacing stays untouched in the store (no claim, no decision, no save) until its slots come;
/// from every other lane (not paced, or banned, disabled, restricted, not configured: their
/// notifications fall over to the next channel) up to `limit`.
struct Gate {
    limits: crate::store::ClaimLimits,
    /// When each paced lane has its next slot.
    next_slot: Vec<(crate::store::Lane, Duration)>,
}

fn gate(ctx: &WorkerContext, now: crate::model::Timestamp, limit: usize) -> Gate {
    use crate::model::ChannelState;
    use crate::store::{ClaimLimits, Lane};
    let mut limits = ClaimLimits::any(limit);
    let mut next_slot = Vec::new();
    for kind in lifeboat_channel::ChannelKind::ALL {
        if ctx.registry.get(kind).is_none() {
            continue;
        }
        if !matches!(
            ctx.states.current(kind).state,
            ChannelState::Active | ChannelState::Throttled
        ) {
            continue;
        }
        if let Some((ready, next)) = ctx.policy.claimable(kind, now) {
            limits.lanes.insert(Lane::Channel(kind), ready);
            next_slot.push((Lane::Channel(kind), next.to_std().unwrap_or(Duration::ZERO)));
        }
    }
    Gate { limits, next_slot }
}

/// The notifications this dispatcher holds a claim on, from the claim until the worker's turn
/// ends (its save released the claim), for the lease renewal; their number is published in
/// `count` (`/readyz`, `/metrics`).
#[derive(Clone, Default)]
struct Held {
    ids: Arc<Mutex<HashSet<String>>>,
    count: HeldClaims,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, ids: impl Iterator<Item = String>) {
        let mut held = self.lock();
        held.extend(ids);
        self.count.set(held.len());
    }

    fn remove(&self, id: &str) {
        let mut held = self.lock();
        held.remove(id);
        self.count.set(held.len());
    }

    fn snapshot(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

/// Removes a notification from [`Held`] when its worker's turn ends, even by a panic.
struct Release {
    held: Held,
    id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.held.remove(&self.id);
    }
}

/// Renews the leases of what `held` holds every third of a lease, until `stopped`.
async fn renew(ctx: Arc<WorkerContext>, held: Held, mut stopped: watch::Receiver<bool>) {
    let every = (ctx.store.lease() / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let ids = held.snapshot();
        if ids.is_empty() {
            continue;
        }
        match ctx.store.renew_claims(&ids, ctx.clock.now()).await {
            Ok(kept) if kept < ids.len() => tracing::warn!(
                held = ids.len(),
                kept,
                "some claims' leases had ended before their renewal; those notifications may be sent again"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "renewing claims' leases failed; retrying"),
        }
    }
}

/// A running dispatcher.
pub struct Dispatcher {
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    slots: Arc<Semaphore>,
    concurrency: usize,
    claims: HeldClaims,
}

impl Dispatcher {
    /// Starts the scheduler with `concurrency` worker slots. A `held` dispatcher claims
    /// nothing until it stops (everything stays queued: the benchmark's paused channels).
    pub fn start(ctx: Arc<WorkerContext>, concurrency: usize, held: bool) -> Dispatcher {
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(concurrency));
        let claims = HeldClaims::default();
        let task = if held {
            let mut stopped = stopped;
            tokio::spawn(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
        } else {
            let held = Held {
                ids: Arc::default(),
                count: claims.clone(),
            };
            tokio::spawn(renew(ctx.clone(), held.clone(), stopped.clone()));
            tokio::spawn(schedule(ctx, wake.clone(), stopped, slots.clone(), held))
        };
        Dispatcher {
            wake,
            stop,
            task,
            slots,
            concurrency,
            claims,
        }
    }

    /// How many notifications this dispatcher holds a claim on right now.
    pub fn claims(&self) -> HeldClaims {
        self.claims.clone()
    }

    /// Tells the scheduler new work is due (a notification was accepted).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A handle that wakes the scheduler, for the API.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Whether the scheduler is still running (for `/readyz`).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops claiming work and waits up to `grace` for the sends in flight. Sends still running
    /// after that keep their claim, which the store releases on the next start.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let all = self.concurrency as u32;
        tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_ok()
    }
}

async fn schedule(
    ctx: Arc<WorkerContext>,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
    held: Held,
) {
    let mut last_round: std::time::Instant;
    loop {
        if *stopped.borrow() {
            return;
        }
        // Wait for a free slot before claiming. Then claim at least a small batch even if fewer
        // slots are free: one claim per freed slot made the scheduler (a single task) the
        // bottleneck; claimed notifications wait here for their slot, and nobody else can take
        // them meanwhile.
        let free = match slots.clone().acquire_owned().await {
            Ok(permit) => {
                let n = slots.available_permits() + 1;
                drop(permit);
                n
            }
            Err(_) => return,
        };
        let limit = free.clamp(MIN_CLAIM, CLAIM_BATCH);
        let now = ctx.clock.now();
        let gate = gate(&ctx, now, limit);
        last_round = std::time::Instant::now();
        let batch = match ctx.store.claim_lanes(now, &gate.limits).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "claiming due notifications failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let full = batch.len() == limit;
        // A paced lane that gave all it was allowed may hold more: come back at its next slot.
        let paced_wake = gate
            .next_slot
            .iter()
            .filter(|(lane, _)| {
                let allowed = gate.limits.of(*lane);
                batch
                    .iter()
                    .filter(|n| crate::store::Lane::of(n) == *lane)
                    .count()
                    >= allowed
            })
            .map(|(_, next)| (*next).max(PACED_WAKE_MIN))
            .min();
        held.add(batch.iter().map(|n| n.id.clone()));
        for n in batch {
            // At shutdown, claimed notifications not started yet keep their claim; the store
            // puts them back on the queue at the next start.
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let ctx = ctx.clone();
            let wake = wake.clone();
            let release = Release {
                held: held.clone(),
                id: n.id.clone(),
            };
            tokio::spawn(async move {
                let _release = release;
                let id = n.id.clone();
                match worker::process(&ctx, n).await {
                    Ok(n) if n.status == crate::model::Status::Queued => wake.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(notification = %id, error = %e, "saving a notification's progress failed; it is retried after a restart")
                    }
                }
                drop(permit);
            });
        }
        if full {
            continue;
        }
        let due_in = match ctx.store.next_due().await {
            Ok(Some(due)) => due
                .signed_duration_since(ctx.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(IDLE_POLL),
            _ => IDLE_POLL,
        };
        let sleep = match paced_wake {
            // What is due now waits in a paced lane (the others gave all they had): come back
            // at its next slot, or when woken.
            Some(paced) if due_in.is_zero() => paced.min(IDLE_POLL),
            Some(paced) => due_in.min(paced),
            None => due_in,
        };
        if sleep.is_zero() {
            // Due work exists but every slot was taken: wait for a slot or a wake-up.
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = stopped.changed() => {}
        }
        // Woken early (an accept, a worker's put-back): not more than one claim per gap.
        let since = last_round.elapsed();
        if since < MIN_ROUND_GAP {
            tokio::select! {
                _ = tokio::time::sleep(MIN_ROUND_GAP - since) => {}
                _ = stopped.changed() => {}
            }
        }
    }
}
