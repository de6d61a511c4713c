//! The delivery workers: one task per endpoint, reading that endpoint's due entries in due
//! order, claiming each delivery with a lease (an atomic `kv_update` of the event's record),
//! POSTing it signed, and recording the answer. At most `events.concurrency` deliveries are in
//! flight per endpoint; after a failure the endpoint rests (`retry_first`, doubling per
//! consecutive failure up to `retry_max`) and then gets one delivery at a time until one
//! succeeds, so a dead endpoint costs one attempt per rest. None of this touches the
//! notification workers: a slow or dead endpoint only delays its own events.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::{due_key, sign, DeliveryState, Endpoint, Events, Lease, Record};
use crate::model::{later, Timestamp};
use crate::store::{namespaces, Durability};

/// The longest a worker sleeps without looking at its due entries.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Due entries claimed per scan at most.
const SCAN_BATCH: usize = 256;

/// The running delivery workers.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Stops claiming, lets deliveries in flight finish for up to `grace`, then drops them
    /// (their leases expire and they are delivered again after the next start).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(grace + Duration::from_millis(100), all)
            .await
            .is_err()
        {
            tracing::warn!("event delivery workers did not stop in time");
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

pub(super) fn start(events: Arc<Events>) -> Workers {
    let (stop, stopped) = watch::channel(false);
    let client = reqwest::Client::builder()
        .timeout(events.config.timeout)
        .connect_timeout(events.config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the events HTTP client builds");
    let mut tasks: Vec<JoinHandle<()>> = events
        .endpoints
        .iter()
        .zip(&events.wake)
        .map(|(ep, wake)| {
            tokio::spawn(endpoint_loop(
                events.clone(),
                ep.clone(),
                wake.clone(),
                client.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    if events.enabled() {
        tasks.push(tokio::spawn(super::sweep::run(events.clone(), stopped)));
    }
    Workers { stop, tasks }
}

/// The endpoint's own backoff: consecutive failures and the rest they impose.
#[derive(Default)]
struct Gate {
    failures: AtomicU32,
    rest_until: Mutex<Option<Timestamp>>,
}

impl Gate {
    fn resting(&self, now: Timestamp) -> Option<Timestamp> {
        let until = *self.rest_until.lock().unwrap_or_else(|p| p.into_inner());
        until.filter(|u| *u > now)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        *self.rest_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn failed(&self, events: &Events, now: Timestamp) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let rest = backoff(events, n);
        *self.rest_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(later(now, rest));
    }
}

/// The wait after the `n`th consecutive failure: `retry_first` doubled `n - 1` times, at
/// most `retry_max`.
fn backoff(events: &Events, n: u32) -> Duration {
    let first = events.config.retry_first;
    let doubled = first.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    doubled.min(events.config.retry_max)
}

async fn endpoint_loop(
    events: Arc<Events>,
    ep: Arc<Endpoint>,
    wake: Arc<Notify>,
    client: reqwest::Client,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(events.config.concurrency));
    let gate = Arc::new(Gate::default());
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let prefix = format!("{}/", ep.id);
    'outer: loop {
        if *stopped.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let now = events.clock.now();
        if let Some(until) = gate.resting(now) {
            let wait = until
                .signed_duration_since(now)
                .to_std()
                .unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        // After a failure, one delivery at a time until one succeeds.
        let probing = gate.failures.load(Ordering::Relaxed) > 0;
        if probing && !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        // The earliest due entries only: those in flight here (at most `concurrency`) or
        // leased by other instances are skipped, the rest claimed up to `SCAN_BATCH`.
        let read = SCAN_BATCH + 4 * events.config.concurrency;
        let due = match events
            .store
            .kv_scan_page(namespaces::EVENT_DUE, &prefix, "", read)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(endpoint = %ep.name, error = %e, "reading due events failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
        };
        let now_ms = now.timestamp_millis();
        let mut next_due: Option<i64> = None;
        let mut claimed = 0;
        for (key, _) in due {
            let Some((ms, event_id)) = parse_due(&key[prefix.len()..]) else {
                continue;
            };
            if ms > now_ms {
                next_due = Some(ms);
                break;
            }
            if in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(event_id)
            {
                continue;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'outer },
                _ = stopped.changed() => break 'outer,
            };
            if gate.resting(events.clock.now()).is_some() {
                break;
            }
            match claim(&events, &ep, &key, ms, event_id).await {
                Claim::Mine(record, token) => {
                    in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(event_id.to_string());
                    let job = Job {
                        events: events.clone(),
                        ep: ep.clone(),
                        client: client.clone(),
                        gate: gate.clone(),
                        in_flight: in_flight.clone(),
                        key: key.clone(),
                    };
                    tasks.spawn(async move {
                        job.run(*record, token).await;
                        drop(permit);
                    });
                    claimed += 1;
                    if probing || claimed >= SCAN_BATCH {
                        break;
                    }
                }
                Claim::Stale => {
                    let _ = events
                        .store
                        .kv_delete_relaxed(namespaces::EVENT_DUE, &key)
                        .await;
                }
                Claim::Busy => {}
                Claim::Failed(e) => {
                    tracing::error!(endpoint = %ep.name, event = event_id, error = %e, "claiming an event failed; retrying");
                    break;
                }
            }
        }
        if claimed > 0 {
            continue;
        }
        let sleep = next_due
            .map(|ms| Duration::from_millis((ms - now_ms).max(1) as u64))
            .unwrap_or(IDLE_POLL)
            .min(IDLE_POLL);
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stopped.changed() => {}
        }
    }
    // Deliveries in flight get a moment; then they are dropped (their leases expire).
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        tasks.shutdown().await;
    }
}

/// `{due ms}/{event id}` → both.
fn parse_due(rest: &str) -> Option<(i64, &str)> {
    let (ms, id) = rest.split_once('/')?;
    Some((ms.parse().ok()?, id))
}

pub(super) enum Claim {
    /// Claimed: the record as it is now, and this claim's lease token.
    Mine(Box<Record>, String),
    /// The entry is left over (the delivery ended, or is due at another time): delete it.
    Stale,
    /// Another worker holds it, or it is not due yet.
    Busy,
    Failed(crate::store::StoreError),
}

/// Takes the lease on `ep`'s delivery of `event_id` if it is pending, due, and not leased.
pub(super) async fn claim(
    events: &Events,
    ep: &Endpoint,
    key: &str,
    key_ms: i64,
    event_id: &str,
) -> Claim {
    let now = events.clock.now();
    let token = uuid::Uuid::new_v4().to_string();
    let lease = Lease {
        owner: events.owner.clone(),
        token: token.clone(),
        until: later(now, events.lease),
    };
    let endpoint = ep.id.clone();
    let edit = Box::new(move |old: Option<&[u8]>| {
        let old = old?;
        let Some(mut record) = Record::parse(old) else {
            return Some(old.to_vec());
        };
        let Some(d) = record
            .deliveries
            .iter_mut()
            .find(|d| d.endpoint == endpoint)
        else {
            return Some(old.to_vec());
        };
        let free = d.lease.as_ref().is_none_or(|l| l.until <= now);
        let due = d.next_attempt_at.is_some_and(|at| at <= now);
        if d.state != DeliveryState::Pending || !free || !due {
            return Some(old.to_vec());
        }
        d.lease = Some(lease.clone());
        Some(record.encode())
    });
    // Relaxed: a lease lost in a crash only means the delivery is made again (at least once).
    let after = match events
        .store
        .kv_update(namespaces::EVENTS, event_id, edit, Durability::Relaxed)
        .await
    {
        Ok(after) => after,
        Err(e) => return Claim::Failed(e),
    };
    let Some(record) = after.as_deref().and_then(Record::parse) else {
        // No record (or one this version cannot read): nothing to deliver.
        return Claim::Stale;
    };
    let Some(d) = record.deliveries.iter().find(|d| d.endpoint == ep.id) else {
        return Claim::Stale;
    };
    if d.lease.as_ref().is_some_and(|l| l.token == token) {
        return Claim::Mine(Box::new(record), token);
    }
    let at_ms = d.next_attempt_at.map(|t| t.timestamp_millis().max(0));
    if d.state != DeliveryState::Pending || at_ms != Some(key_ms) {
        let _ = key;
        return Claim::Stale;
    }
    Claim::Busy
}

/// What one POST got.
enum Answer {
    Delivered(u16),
    Failed { status: Option<u16>, error: String },
}

/// One claimed delivery.
struct Job {
    events: Arc<Events>,
    ep: Arc<Endpoint>,
    client: reqwest::Client,
    gate: Arc<Gate>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Job {
    async fn run(self, record: Record, token: String) {
        let id = record.event.id.clone();
        let answer = self.post(&record).await;
        let now = self.events.clock.now();
        let attempts = record
            .deliveries
            .iter()
            .find(|d| d.endpoint == self.ep.id)
            .map_or(0, |d| d.attempts)
            + 1;
        let (next_at, gave_up) = match &answer {
            Answer::Delivered(_) => (None, false),
            Answer::Failed { .. } => {
                let next = later(now, backoff(&self.events, attempts));
                let deadline = later(record.event.timestamp, self.events.config.give_up_after);
                if next > deadline {
                    (None, true)
                } else {
                    (Some(next), false)
                }
            }
        };
        let store = &self.events.store;
        let endpoint = self.ep.id.clone();
        let (status, error, delivered) = match &answer {
            Answer::Delivered(s) => (Some(*s), None, true),
            Answer::Failed { status, error } => (*status, Some(error.clone()), false),
        };
        let edit = Box::new(move |old: Option<&[u8]>| {
            let old = old?;
            let Some(mut record) = Record::parse(old) else {
                return Some(old.to_vec());
            };
            let Some(d) = record
                .deliveries
                .iter_mut()
                .find(|d| d.endpoint == endpoint)
            else {
                return Some(old.to_vec());
            };
            if d.lease.as_ref().is_none_or(|l| l.token != token) {
                // The lease ended and another worker took it over: its result counts.
                return Some(old.to_vec());
            }
            d.lease = None;
            d.attempts = attempts;
            d.last_status = status;
            d.last_error = error.clone();
            if delivered {
                d.state = DeliveryState::Delivered;
                d.delivered_at = Some(now);
                d.next_attempt_at = None;
            } else if let Some(next) = next_at {
                d.next_attempt_at = Some(next);
            } else {
                d.state = DeliveryState::Failed;
                d.next_attempt_at = None;
            }
            record.settle(now);
            Some(record.encode())
        });
        if let Err(e) = store
            .kv_update(namespaces::EVENTS, &id, edit, Durability::Durable)
            .await
        {
            tracing::error!(event = %id, error = %e, "saving an event's delivery failed; it will be delivered again");
        } else if let Some(next) = next_at.filter(|_| !delivered) {
            // The next due entry only after the record says when: a worker that finds a due
            // entry the record does not match drops it as stale, so the other order could lose
            // the retry. Durable: a crash after this keeps the retry scheduled.
            if let Err(e) = store
                .kv_put(namespaces::EVENT_DUE, &due_key(&self.ep.id, next, &id), b"")
                .await
            {
                tracing::error!(event = %id, error = %e, "scheduling an event's next delivery failed");
            }
            let _ = store
                .kv_delete_relaxed(namespaces::EVENT_DUE, &self.key)
                .await;
        } else if let Err(e) = store
            .kv_delete_relaxed(namespaces::EVENT_DUE, &self.key)
            .await
        {
            tracing::warn!(event = %id, error = %e, "deleting a delivered event's due entry failed");
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let metrics = &self.events.metrics;
        match answer {
            Answer::Delivered(status) => {
                self.gate.succeeded();
                metrics.event_delivery(&self.ep.name, "delivered");
                tracing::debug!(endpoint = %self.ep.name, event = %id, status, attempts, "event delivered");
            }
            Answer::Failed { status, error } => {
                self.gate.failed(&self.events, now);
                if gave_up {
                    metrics.event_delivery(&self.ep.name, "gave_up");
                    tracing::warn!(endpoint = %self.ep.name, event = %id, status, attempts, error = %error, "event delivery failed for events.give_up_after; kept as failed");
                } else {
                    metrics.event_delivery(&self.ep.name, "failed");
                    tracing::warn!(endpoint = %self.ep.name, event = %id, status, attempts, error = %error, next = ?next_at, "event delivery failed; retrying later");
                }
            }
        }
    }

    async fn post(&self, record: &Record) -> Answer {
        let body = record.event.body();
        let timestamp = self.events.clock.now().timestamp();
        let signature = sign::signature(&self.ep.key, &record.event.id, timestamp, &body);
        let sent = self
            .client
            .post(&self.ep.url)
            .header("content-type", "application/json")
            .header("webhook-id", &record.event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Answer::Delivered(resp.status().as_u16()),
            Ok(resp) => Answer::Failed {
                status: Some(resp.status().as_u16()),
                error: format!("answered HTTP {}", resp.status().as_u16()),
            },
            Err(e) if e.is_timeout() => Answer::Failed {
                status: None,
                error: format!(
                    "no answer within {}",
                    humantime::format_duration(self.events.config.timeout)
                ),
            },
            // Without the URL: it may carry a token.
            Err(e) => Answer::Failed {
                status: None,
                error: format!(
                    "request failed: {}",
                    crate::store::error_chain(&e.without_url())
                ),
            },
        }
    }
}
