//! [`Portable`] for the PostgreSQL store (`lifeboat store copy`): records listed a page at a
//! time in key order, and taken in with `INSERT ... ON CONFLICT DO NOTHING`, each with its
//! indexes, so that a copy run twice changes nothing the second time.

use std::collections::BTreeMap;

use async_trait::async_trait;
use lifeboat_channel::ChannelKind;
use tokio_postgres::types::Json;

use super::{body, ms, PgStore, Result};
use crate::model::{ChannelStatus, Consent, Contact, Notification, Timestamp};
use crate::store::portable::{Imported, Page, Portable, Record, RecordKind};
use crate::store::StoreResult;

/// The cursor of a kv page: namespace and key.
fn kv_cursor(namespace: &str, key: &str) -> String {
    serde_json::to_string(&(namespace, key)).expect("two strings")
}

impl PgStore {
    async fn export_now(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page> {
        let client = self.client().await?;
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let after_id = after.clone().unwrap_or_default();
        let mut records = Vec::new();
        let mut last: Option<String> = None;
        // Rows read (a channel this version does not know is read but not listed).
        let mut seen = 0i64;
        match kind {
            RecordKind::Contacts => {
                let st = client
                    .prepare_cached(
                        "SELECT id, body FROM contacts WHERE id > $1 ORDER BY id LIMIT $2",
                    )
                    .await?;
                let rows = client.query(&st, &[&after_id, &limit]).await?;
                let mut contacts = Vec::with_capacity(rows.len());
                for row in &rows {
                    let id: String = row.try_get(0)?;
                    let c: Contact = body(row, 1, &id)?;
                    contacts.push(c);
                }
                let ids: Vec<&str> = contacts.iter().map(|c| c.id.as_str()).collect();
                let st = client
                    .prepare_cached(
                        "SELECT contact_id, channel, body FROM consent_history WHERE contact_id = ANY($1) \
                         ORDER BY contact_id, channel, seq",
                    )
                    .await?;
                let mut histories: BTreeMap<String, BTreeMap<ChannelKind, Vec<Consent>>> =
                    BTreeMap::new();
                for row in client.query(&st, &[&ids]).await? {
                    let id: String = row.try_get(0)?;
                    let channel: String = row.try_get(1)?;
                    let consent: Consent = body(&row, 2, &id)?;
                    if let Ok(kind) = channel.parse::<ChannelKind>() {
                        histories
                            .entry(id)
                            .or_default()
                            .entry(kind)
                            .or_default()
                            .push(consent);
                    }
                }
                for contact in contacts {
                    seen += 1;
                    last = Some(contact.id.clone());
                    let history = histories.remove(&contact.id).unwrap_or_default();
                    records.push(Record::Contact { contact, history });
                }
            }
            RecordKind::Tombstones => {
                let st = client
                    .prepare_cached(
                        "SELECT key, body FROM tombstones WHERE key > $1 ORDER BY key LIMIT $2",
                    )
                    .await?;
                for row in client.query(&st, &[&after_id, &limit]).await? {
                    let key: String = row.try_get(0)?;
                    let value: serde_json::Value = body(&row, 1, &key)?;
                    seen += 1;
                    last = Some(key.clone());
                    records.push(Record::Tombstone { key, value });
                }
            }
            RecordKind::Notifications => {
                let st = client
                    .prepare_cached(
                        "SELECT n.id, n.body, q.available_at FROM notifications n LEFT JOIN queue q ON q.id = n.id \
                         WHERE n.id > $1 ORDER BY n.id LIMIT $2",
                    )
                    .await?;
                for row in client.query(&st, &[&after_id, &limit]).await? {
                    let id: String = row.try_get(0)?;
                    let notification: Notification = body(&row, 1, &id)?;
                    let queued_at: Option<Timestamp> = row.try_get(2)?;
                    seen += 1;
                    last = Some(id);
                    records.push(Record::Notification {
                        notification,
                        queued_at,
                    });
                }
            }
            RecordKind::IdempotencyKeys => {
                let st = client
                    .prepare_cached(
                        "SELECT key, notification_id, fingerprint, created_at FROM idempotency \
                         WHERE key > $1 ORDER BY key LIMIT $2",
                    )
                    .await?;
                for row in client.query(&st, &[&after_id, &limit]).await? {
                    let key: String = row.try_get(0)?;
                    seen += 1;
                    last = Some(key.clone());
                    records.push(Record::IdempotencyKey {
                        key,
                        notification_id: row.try_get(1)?,
                        fingerprint: row.try_get(2)?,
                        at: row.try_get(3)?,
                    });
                }
            }
            RecordKind::ChannelStates => {
                let st = client
                    .prepare_cached(
                        "SELECT channel, body FROM channel_states WHERE channel > $1 ORDER BY channel LIMIT $2",
                    )
                    .await?;
                for row in client.query(&st, &[&after_id, &limit]).await? {
                    let name: String = row.try_get(0)?;
                    seen += 1;
                    last = Some(name.clone());
                    if let Ok(channel) = name.parse::<ChannelKind>() {
                        let status: ChannelStatus = body(&row, 1, &name)?;
                        records.push(Record::ChannelState { channel, status });
                    }
                }
            }
            RecordKind::Kv => {
                let (ns, key): (String, String) = after
                    .as_deref()
                    .and_then(|c| serde_json::from_str(c).ok())
                    .unwrap_or_default();
                let st = client
                    .prepare_cached(
                        "SELECT namespace, key, value FROM kv WHERE (namespace, key) > ($1, $2) \
                         ORDER BY namespace, key LIMIT $3",
                    )
                    .await?;
                for row in client.query(&st, &[&ns, &key, &limit]).await? {
                    let namespace: String = row.try_get(0)?;
                    let key: String = row.try_get(1)?;
                    seen += 1;
                    last = Some(kv_cursor(&namespace, &key));
                    records.push(Record::Kv {
                        namespace,
                        key,
                        value: row.try_get(2)?,
                    });
                }
            }
        }
        let full = seen >= limit;
        Ok(Page {
            records,
            next: if full { last } else { None },
        })
    }

    async fn import_now(&self, records: &[Record]) -> Result<Imported> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut done = Imported::default();
        for record in records {
            let written = match record {
                Record::Contact { contact, history } => {
                    let st = tx
                        .prepare_cached(
                            "INSERT INTO contacts (id, body, updated_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                        )
                        .await?;
                    let new = tx
                        .execute(&st, &[&contact.id, &Json(contact), &contact.updated_at])
                        .await?
                        == 1;
                    if new {
                        let st = tx
                            .prepare_cached(
                                "INSERT INTO contact_addresses (channel, address, contact_id) VALUES ($1, $2, $3) \
                                 ON CONFLICT DO NOTHING",
                            )
                            .await?;
                        for kind in ChannelKind::ALL {
                            if let Some(address) = contact.address(kind) {
                                tx.execute(&st, &[&kind.as_str(), &address, &contact.id])
                                    .await?;
                            }
                        }
                        let st = tx
                            .prepare_cached(
                                "INSERT INTO consent_history (contact_id, channel, body) VALUES ($1, $2, $3)",
                            )
                            .await?;
                        for (kind, changes) in history {
                            for consent in changes {
                                tx.execute(&st, &[&contact.id, &kind.as_str(), &Json(consent)])
                                    .await?;
                            }
                        }
                    }
                    new
                }
                Record::Tombstone { key, value } => {
                    let st = tx
                        .prepare_cached(
                            "INSERT INTO tombstones (key, body) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                        )
                        .await?;
                    tx.execute(&st, &[key, &Json(value)]).await? == 1
                }
                Record::Notification {
                    notification: n,
                    queued_at,
                } => {
                    let st = tx
                        .prepare_cached(
                            "INSERT INTO notifications (id, contact_id, status, updated_at, erased, body) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                        )
                        .await?;
                    // An erased one (its contact id gone, its text emptied) stays erased.
                    let erased = n.contact_id.is_empty();
                    let new = tx
                        .execute(
                            &st,
                            &[
                                &n.id,
                                &n.contact_id,
                                &n.status.as_str(),
                                &n.updated_at,
                                &erased,
                                &Json(n),
                            ],
                        )
                        .await?
                        == 1;
                    if new {
                        if let Some(at) = queued_at {
                            let st = tx
                                .prepare_cached(
                                    "INSERT INTO queue (id, available_at, lane) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                                )
                                .await?;
                            tx.execute(
                                &st,
                                &[&n.id, &ms(*at), &crate::store::Lane::of(n).as_str()],
                            )
                            .await?;
                        }
                        if !erased {
                            super::save::index_message_ids(&tx, std::slice::from_ref(n)).await?;
                        }
                    }
                    new
                }
                Record::IdempotencyKey {
                    key,
                    notification_id,
                    fingerprint,
                    at,
                } => {
                    let st = tx
                        .prepare_cached(
                            "INSERT INTO idempotency (key, notification_id, fingerprint, created_at) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                        )
                        .await?;
                    tx.execute(&st, &[key, notification_id, fingerprint, at])
                        .await?
                        == 1
                }
                Record::ChannelState { channel, status } => {
                    let st = tx
                        .prepare_cached(
                            "INSERT INTO channel_states (channel, body) VALUES ($1, $2) ON CONFLICT (channel) DO NOTHING",
                        )
                        .await?;
                    tx.execute(&st, &[&channel.as_str(), &Json(status)]).await? == 1
                }
                Record::Kv {
                    namespace,
                    key,
                    value,
                } => {
                    let st = tx
                        .prepare_cached(
                            "INSERT INTO kv (namespace, key, value, updated_at) VALUES ($1, $2, $3, now()) \
                             ON CONFLICT (namespace, key) DO NOTHING",
                        )
                        .await?;
                    tx.execute(&st, &[namespace, key, value]).await? == 1
                }
            };
            if written {
                done.written += 1;
            } else {
                done.skipped += 1;
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn count_now(&self, kind: RecordKind) -> Result<u64> {
        let table = match kind {
            RecordKind::Contacts => "contacts",
            RecordKind::Tombstones => "tombstones",
            RecordKind::Notifications => "notifications",
            RecordKind::IdempotencyKeys => "idempotency",
            RecordKind::ChannelStates => "channel_states",
            RecordKind::Kv => "kv",
        };
        let client = self.client().await?;
        let st = client
            .prepare_cached(&format!("SELECT count(*) FROM {table}"))
            .await?;
        let n: i64 = client.query_one(&st, &[]).await?.try_get(0)?;
        Ok(n.max(0) as u64)
    }
}

#[async_trait]
impl Portable for PgStore {
    async fn export(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page> {
        self.call("listing records", self.export_now(kind, after, limit))
            .await
    }

    async fn import(&self, records: Vec<Record>) -> StoreResult<Imported> {
        let imported = self
            .call("taking records in", self.import_now(&records))
            .await?;
        self.queue_changed();
        Ok(imported)
    }

    async fn count(&self, kind: RecordKind) -> StoreResult<u64> {
        self.call("counting records", self.count_now(kind)).await
    }
}
