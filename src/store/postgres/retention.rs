//! Retention on PostgreSQL: the same `[store.retention]` rules as the embedded store
//! (`super::super::retention::rules`), as batched `DELETE`s by a tokio task that the opened
//! store owns. Several instances purging at once is harmless (each batch skips rows another
//! holds, and a record is deleted only if unchanged since it was read).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::model::Timestamp;
use crate::store::retention::{rules, Kind, Purged, Rule, BATCH};
use crate::store::{RetentionConfig, StoreResult};

use super::{PgStore, Result};

/// The pause between two batches.
const PAUSE: Duration = Duration::from_millis(10);

impl PgStore {
    /// One whole purge pass at `now` (in batches); what it deleted, per rule.
    pub async fn purge_pass(&self, cfg: &RetentionConfig, now: Timestamp) -> StoreResult<Purged> {
        let mut purged = Vec::new();
        for rule in rules(cfg) {
            let count = self
                .call_within(
                    super::PURGE_TIMEOUT,
                    "purging old records",
                    self.purge_rule(&rule, now),
                )
                .await?;
            purged.push((rule.what, count));
        }
        Ok(purged)
    }

    async fn purge_rule(&self, rule: &Rule, now: Timestamp) -> Result<usize> {
        let Some(cutoff) = chrono::Duration::from_std(rule.keep)
            .ok()
            .and_then(|keep| now.checked_sub_signed(keep))
        else {
            return Ok(0);
        };
        let limit = BATCH as i64;
        let mut total = 0usize;
        match &rule.kind {
            Kind::Notifications => loop {
                let client = self.client().await?;
                let st = client
                    .prepare_cached(
                        "WITH gone AS ( \
                           DELETE FROM notifications WHERE id IN ( \
                             SELECT id FROM notifications n \
                             WHERE n.status NOT IN ('queued', 'sending') AND n.updated_at <= $1 \
                             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.id = n.id) \
                             ORDER BY n.updated_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                           RETURNING id), \
                         idx AS (DELETE FROM message_ids WHERE notification_id IN (SELECT id FROM gone)) \
                         SELECT count(*) FROM gone",
                    )
                    .await?;
                let n: i64 = client
                    .query_one(&st, &[&cutoff, &limit])
                    .await?
                    .try_get(0)?;
                total += n as usize;
                if n < limit {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            },
            Kind::Records(_) if rule.prefix == b"k/" => loop {
                let client = self.client().await?;
                let st = client
                    .prepare_cached(
                        "DELETE FROM idempotency WHERE key IN ( \
                           SELECT key FROM idempotency WHERE created_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    )
                    .await?;
                let n = client.execute(&st, &[&cutoff, &limit]).await?;
                total += n as usize;
                if (n as i64) < limit {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            },
            Kind::Records(age_from) => {
                // A `v/NAMESPACE\0` prefix: the records of one kv namespace.
                let Some(namespace) = rule
                    .prefix
                    .strip_prefix(b"v/")
                    .and_then(|rest| rest.strip_suffix(&[0]))
                    .and_then(|ns| std::str::from_utf8(ns).ok())
                else {
                    return Ok(0);
                };
                let mut after = String::new();
                loop {
                    let client = self.client().await?;
                    let st = client
                        .prepare_cached(
                            "SELECT key, value FROM kv WHERE namespace = $1 AND key > $2 ORDER BY key LIMIT $3",
                        )
                        .await?;
                    let rows = client.query(&st, &[&namespace, &after, &limit]).await?;
                    let (mut keys, mut values) = (Vec::new(), Vec::new());
                    for row in &rows {
                        let key: String = row.try_get(0)?;
                        let value: Vec<u8> = row.try_get(1)?;
                        if age_from(key.as_bytes(), &value).is_some_and(|at| at <= cutoff) {
                            keys.push(key);
                            values.push(value);
                        }
                    }
                    if !keys.is_empty() {
                        // Only if unchanged since it was read (a counter written again stays).
                        let st = client
                            .prepare_cached(
                                "DELETE FROM kv k USING unnest($2::text[], $3::bytea[]) AS d(key, value) \
                                 WHERE k.namespace = $1 AND k.key = d.key AND k.value = d.value",
                            )
                            .await?;
                        total += client.execute(&st, &[&namespace, &keys, &values]).await? as usize;
                    }
                    if (rows.len() as i64) < limit {
                        break;
                    }
                    after = rows.last().expect("a full page").try_get(0)?;
                    tokio::time::sleep(PAUSE).await;
                }
            }
        }
        Ok(total)
    }
}

/// The purge task of a PostgreSQL store: a pass every `retention.every`. Dropping it stops
/// the task.
pub struct PgPurger {
    task: tokio::task::JoinHandle<()>,
}

impl PgPurger {
    pub fn start(store: Arc<PgStore>, cfg: RetentionConfig, clock: Arc<dyn Clock>) -> PgPurger {
        let task = tokio::spawn(async move {
            loop {
                match store.purge_pass(&cfg, clock.now()).await {
                    Ok(purged) => {
                        let deleted: usize = purged.iter().map(|(_, n)| n).sum();
                        if deleted > 0 {
                            let what: Vec<String> = purged
                                .iter()
                                .filter(|(_, n)| *n > 0)
                                .map(|(what, n)| format!("{what}={n}"))
                                .collect();
                            tracing::info!(deleted, purged = %what.join(" "), "retention purge pass");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::store::error_chain(&e), "the retention purge failed; trying again at the next pass")
                    }
                }
                tokio::time::sleep(cfg.every).await;
            }
        });
        PgPurger { task }
    }
}

impl Drop for PgPurger {
    fn drop(&mut self) {
        self.task.abort();
    }
}
