//! `lifeboat bench --retention <age>`: a steady load on the store with a short retention, and
//! its size on disk over time, to show that it levels off instead of growing with every
//! notification ever sent.
//!
//! The sled store alone, in this process (as [`super::store`]): `rate` notifications a second
//! are accepted (each with an idempotency key), claimed and saved as sent on WhatsApp (a
//! message-id index entry each), for `duration`; the purge thread ([`crate::store::Purger`])
//! runs every second with finished notifications and idempotency keys kept for `retention`
//! (the bench only: the gateway refuses keys kept less than 24 h). Every tenth of the run it
//! samples the records stored and the bytes on disk (sled's files and the journal's apart).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lifeboat_channel::ChannelKind;
use serde_json::{json, Value};

use super::probe::bytes_on_disk;
use crate::clock::SystemClock;
use crate::model::{Attempt, Outcome, Status};
use crate::store::{IdempotencyKey, NewNotification, Purger, RetentionConfig, SledStore, Store};

/// Notifications a second, spread over this many tasks.
const CLIENTS: usize = 16;

pub async fn measure(
    dir: &Path,
    rate: u64,
    retention: Duration,
    duration: Duration,
) -> Result<Value, String> {
    let store = Arc::new(
        SledStore::open(
            &dir.join("lifeboat.sled"),
            crate::config::StoreConfig::default().cache_mb,
        )
        .map_err(|e| e.to_string())?,
    );
    let cfg = RetentionConfig {
        notifications: retention,
        idempotency: retention,
        every: Duration::from_secs(1),
        ..RetentionConfig::default()
    };
    let purger = Purger::start(store.clone(), cfg, Arc::new(SystemClock::default()))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let sample_every = duration / 10;
    let mut next_sample = Duration::ZERO;
    let mut samples = Vec::new();
    let mut sent = 0u64;
    let mut second = 0u64;
    while started.elapsed() < duration {
        if started.elapsed() >= next_sample {
            let notifications = store.records_under(b"n/");
            // sled's files, and the accept journal's (two preallocated 64 MiB segments once
            // it has rotated: a fixed cost).
            let db = bytes_on_disk(&dir.join("lifeboat.sled"));
            let journal = bytes_on_disk(&dir.join("lifeboat.journal"));
            let mb = |b: u64| (b as f64 / 1e5).round() / 10.0;
            eprintln!(
                "bench: retention {:>5.1}s  sent {sent:>8}  stored {notifications:>7}  store {:>7.1} MB  journal {:>6.1} MB",
                started.elapsed().as_secs_f64(),
                mb(db),
                mb(journal)
            );
            samples.push(json!({
                "at_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                "sent": sent,
                "stored_notifications": notifications,
                "store_mb": mb(db),
                "journal_mb": mb(journal),
            }));
            next_sample += sample_every;
        }
        // One second's worth, then wait for the next second.
        let tasks: Vec<_> = (0..CLIENTS as u64)
            .map(|c| {
                let store = store.clone();
                let count = rate / CLIENTS as u64 + u64::from(c < rate % CLIENTS as u64);
                tokio::spawn(async move {
                    for i in 0..count {
                        let now = Utc::now();
                        let n = super::store::notification(now);
                        let new = NewNotification {
                            notification: n,
                            contact_patch: None,
                            idempotency: Some(IdempotencyKey {
                                key: format!("bench-{second}-{c}-{i}"),
                                fingerprint: "f".into(),
                            }),
                        };
                        store.accept(new, now).await.map_err(|e| e.to_string())?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        loop {
            let claimed = store
                .claim_due(Utc::now(), 256)
                .await
                .map_err(|e| e.to_string())?;
            if claimed.is_empty() {
                break;
            }
            for mut n in claimed {
                let now = Utc::now();
                n.attempts.push(Attempt {
                    provider_message_id: Some(format!("wamid.{}", n.id)),
                    ..Attempt::new(ChannelKind::Whatsapp, now, Outcome::Sent)
                });
                n.status = Status::Sent;
                n.channel = Some(ChannelKind::Whatsapp);
                n.next_attempt_at = None;
                n.updated_at = now;
                store.save_progress(&n).await.map_err(|e| e.to_string())?;
                sent += 1;
            }
        }
        second += 1;
        let target = Duration::from_secs(second);
        if let Some(wait) = target.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    drop(purger);
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(json!({
        "rate_per_sec": rate,
        "retention_s": retention.as_secs_f64(),
        "samples": samples,
    }))
}

/// The samples as lines.
pub fn table(f: &Value) -> String {
    let mut out = format!(
        "retention {} notifications/s, finished ones kept {} s (the store alone, purge every 1 s)\n",
        f["rate_per_sec"], f["retention_s"]
    );
    for s in f["samples"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:>6.1} s  sent {:>8}  stored {:>7}  store {:>7.1} MB  journal {:>6.1} MB\n",
            s["at_s"].as_f64().unwrap_or(0.0),
            s["sent"].as_u64().unwrap_or(0),
            s["stored_notifications"].as_u64().unwrap_or(0),
            s["store_mb"].as_f64().unwrap_or(0.0),
            s["journal_mb"].as_f64().unwrap_or(0.0)
        ));
    }
    out
}
