//! A quick figure for the PostgreSQL store alone (no HTTP, no providers): accepts from many
//! tasks at once, then claims and saves as the dispatcher makes them. `lifeboat bench --store
//! postgres://...` prints it beside the gateway's figures; the `#[ignore]`d test
//! `store::postgres::tests::bench_accepts_and_deliveries` prints it on a throw-away database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lifeboat_channel::{Category, ChannelKind};

use super::{PgOptions, PgStore};
use crate::model::{Attempt, ContactPatch, Notification, Outcome, Status};
use crate::store::{AcceptOutcome, NewNotification, Store, StoreResult};

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub accepted: usize,
    pub accept_time: Duration,
    pub delivered: usize,
    pub delivery_time: Duration,
}

impl Figures {
    pub fn accepts_per_sec(&self) -> f64 {
        self.accepted as f64 / self.accept_time.as_secs_f64().max(1e-9)
    }
    pub fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.delivery_time.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accepts: {} in {:.2}s = {:.0}/s durable; claims+saves: {} in {:.2}s = {:.0}/s",
            self.accepted,
            self.accept_time.as_secs_f64(),
            self.accepts_per_sec(),
            self.delivered,
            self.delivery_time.as_secs_f64(),
            self.deliveries_per_sec()
        )
    }
}

fn notification(id: String, contact: &str) -> Notification {
    let now = Utc::now();
    Notification {
        id,
        contact_id: contact.to_string(),
        category: Category::Transactional,
        text: "Your order 1234 has shipped and arrives tomorrow between 9:00 and 12:00.".into(),
        subject: None,
        html: None,
        whatsapp_template: None,
        channels: vec![ChannelKind::Whatsapp, ChannelKind::Telegram],
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

/// Accepts `total` notifications from `tasks` tasks at once (each with a contact patch, as
/// the API sends them), then claims them in batches of 64 from `workers` workers and saves
/// each as sent, on the database at `options` (migrated first; best a fresh one).
pub async fn accept_and_deliver(
    options: &PgOptions,
    total: usize,
    tasks: usize,
    workers: usize,
) -> StoreResult<Figures> {
    let store = Arc::new(PgStore::open(options).await?);
    let tasks = tasks.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (store, next) = (store.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let contact = format!("bench-{task}");
            let patch = ContactPatch {
                whatsapp: Some(
                    format!("+4860010{task:04}")
                        .parse()
                        .expect("an E.164 number"),
                ),
                ..ContactPatch::default()
            };
            let mut created = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let id = uuid::Uuid::now_v7().to_string();
                let new = NewNotification {
                    notification: notification(id, &contact),
                    contact_patch: Some(patch.clone()),
                    idempotency: None,
                };
                if store.accept(new, Utc::now()).await? == AcceptOutcome::Created {
                    created += 1;
                }
            }
            StoreResult::Ok(created)
        }));
    }
    let mut accepted = 0;
    for h in handles {
        accepted += h.await.expect("an accept task")?;
    }
    let accept_time = started.elapsed();

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..workers.max(1) {
        let (store, done) = (store.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let batch = store.claim_due(Utc::now(), 64).await?;
                if batch.is_empty() {
                    return StoreResult::Ok(());
                }
                let saves = batch.into_iter().map(|mut n| {
                    let store = store.clone();
                    let done = done.clone();
                    async move {
                        let now = Utc::now();
                        n.status = Status::Sent;
                        n.channel = Some(ChannelKind::Whatsapp);
                        n.next_attempt_at = None;
                        n.updated_at = now;
                        n.attempts.push(Attempt {
                            provider_message_id: Some(format!("wamid.{}", n.id)),
                            ..Attempt::new(ChannelKind::Whatsapp, now, Outcome::Sent)
                        });
                        store.save_progress(&n).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                        StoreResult::Ok(())
                    }
                });
                for r in futures_join_all(saves).await {
                    r?;
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("a delivery worker")?;
    }
    Ok(Figures {
        accepted,
        accept_time,
        delivered: done.load(Ordering::Relaxed),
        delivery_time: started.elapsed(),
    })
}

/// Runs every future at once (each on its own task) and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a save task"));
    }
    out
}
