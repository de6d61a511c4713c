//! The store alone: the store's own share of an accept and of a delivery, with no HTTP,
//! no JSON request, no channel and no provider, on all the machine's cores: the sled store, or
//! with `--store` the PostgreSQL store on a database of its own (the same calls through the
//! `Store` trait; PostgreSQL's server shares the machine).
//!
//! Why: the gateway's figures are bounded by what its store can do. Measured here, in this
//! process, with nothing else running: the rate and the CPU per notification of
//! - **accept**: `Store::accept` from `clients` concurrent tasks (the journal's group commit,
//!   the group's sled writes, one `fdatasync` per group), exactly as the API calls it;
//! - **delivery**: what the dispatcher asks of the store per notification: a claim (a queue
//!   scan and a record read, 256 at a time), the contact read, and the save after a `sent`
//!   attempt (queue entry removed, record rewritten, the provider's message id indexed); the
//!   next claim waits for all 256 saves, so the figure includes that lull.
//!
//! Subtracting these from the gateway's CPU per notification gives what the rest (HTTP,
//! routing, guardrails, the channel's HTTP call) costs.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use lifeboat_channel::{Category, ChannelKind};
use serde_json::{json, Value};

use super::pg::BenchDb;
use super::probe::{cpu_time_of, cpu_us_per_request};
use crate::model::{Attempt, ContactPatch, Notification, Outcome, Status};
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::{NewNotification, SledStore, Store};

const CONTACT: &str = "bench";
/// Notifications claimed and saved at a time in the delivery measurement.
const IN_FLIGHT: usize = 256;

pub(super) fn notification(now: chrono::DateTime<Utc>) -> Notification {
    Notification {
        id: uuid::Uuid::now_v7().to_string(),
        contact_id: CONTACT.into(),
        category: Category::Transactional,
        text: "store 0000000".into(),
        subject: None,
        html: None,
        whatsapp_template: None,
        channels: ChannelKind::ALL.to_vec(),
        status: Status::Queued,
        channel: None,
        attempts: vec![],
        created_at: now,
        updated_at: now,
        expires_at: now + chrono::Duration::hours(24),
        fallback_after_secs: None,
        idempotency_key: None,
        cursor: Default::default(),
        next_attempt_at: Some(now),
    }
}

/// Runs both measurements on a fresh sled store in `dir`; `count` notifications each.
pub async fn measure_sled(dir: &Path, clients: usize, count: u64) -> Result<Value, String> {
    let store = Arc::new(
        SledStore::open(
            &dir.join("lifeboat.sled"),
            crate::config::StoreConfig::default().cache_mb,
        )
        .map_err(|e| e.to_string())?,
    );
    measure(store, clients, count).await
}

/// Runs both measurements on a PostgreSQL store on the (empty) database `db`, with the
/// default pool.
pub async fn measure_postgres(db: &BenchDb, clients: usize, count: u64) -> Result<Value, String> {
    let options = PgOptions {
        url: db.url().clone(),
        pool: crate::config::StoreConfig::default().pool,
        lease: crate::config::StoreConfig::default().lease,
    };
    let store = Arc::new(PgStore::open(&options).await.map_err(|e| e.to_string())?);
    measure(store, clients, count).await
}

/// Runs both measurements on `store`, empty; `count` notifications each.
pub async fn measure(store: Arc<dyn Store>, clients: usize, count: u64) -> Result<Value, String> {
    let patch = ContactPatch {
        whatsapp: Some("+15550001111".parse().unwrap()),
        ..ContactPatch::default()
    };
    store
        .upsert_contact(CONTACT, &patch, Utc::now())
        .await
        .map_err(|e| e.to_string())?;

    // Accept.
    let next = Arc::new(AtomicU64::new(0));
    let watch = Stopwatch::start();
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let now = Utc::now();
                    let new = NewNotification {
                        notification: notification(now),
                        contact_patch: None,
                        idempotency: None,
                    };
                    store.accept(new, now).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    join(tasks).await?;
    let accept = watch.figures(count);

    // Delivery: claim, read the contact, save as sent; the saves of a claim run concurrently,
    // as the dispatcher's workers do (up to `server.concurrency`, 256 by default, in flight).
    let watch = Stopwatch::start();
    let mut delivered = 0u64;
    loop {
        let claimed = store
            .claim_due(Utc::now(), IN_FLIGHT)
            .await
            .map_err(|e| e.to_string())?;
        if claimed.is_empty() {
            break;
        }
        delivered += claimed.len() as u64;
        let saves: Vec<_> = claimed
            .into_iter()
            .map(|mut n| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .get_contact(&n.contact_id)
                        .await
                        .map_err(|e| e.to_string())?;
                    let now = Utc::now();
                    n.attempts.push(Attempt {
                        channel: ChannelKind::Whatsapp,
                        at: now,
                        outcome: Outcome::Sent,
                        reason: None,
                        provider_code: None,
                        provider_message_id: Some(format!("wamid.{}", n.id)),
                        detail: None,
                        template: None,
                        pricing: None,
                    });
                    n.status = Status::Sent;
                    n.channel = Some(ChannelKind::Whatsapp);
                    n.next_attempt_at = None;
                    n.updated_at = now;
                    store.save_progress(&n).await.map_err(|e| e.to_string())
                })
            })
            .collect();
        join(saves).await?;
    }
    let mut delivery = watch.figures(delivered);
    delivery["notifications"] = json!(delivered);
    Ok(json!({"accept": accept, "delivery": delivery}))
}

/// Wall time and this process's CPU time since it started.
struct Stopwatch {
    cpu: std::time::Duration,
    at: Instant,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch {
            cpu: cpu_time_of("self"),
            at: Instant::now(),
        }
    }

    /// `{per_sec, cpu_us}` for `done` operations since the start.
    fn figures(&self, done: u64) -> Value {
        let secs = self.at.elapsed().as_secs_f64();
        let cpu = cpu_time_of("self").saturating_sub(self.cpu);
        json!({
            "per_sec": (done as f64 / secs.max(1e-9)).round(),
            "cpu_us": cpu_us_per_request(cpu, done),
        })
    }
}

/// Waits for every task; the first failure is the answer.
async fn join(tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>) -> Result<(), String> {
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
