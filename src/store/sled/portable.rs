//! [`Portable`] for the embedded store: records listed a page at a time in key order, kind by
//! kind, and taken in if absent with the indexes that go with them (`A/` for a contact's
//! addresses, `x/`, `q/` and `m/` for a notification), for `lifeboat store copy`.
//!
//! A page's position (`Page::next`) is the key of its last record without the kind's prefix:
//! the next page starts just after it. An import applies one page as one sled batch, then
//! flushes: written whole or not at all, and durable before it returns. It checks what the
//! store holds without a lock against other writers: it is meant for a store no gateway has
//! open (sled's own lock makes sure of that for a data folder).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use lifeboat_channel::ChannelKind;

use super::accept::IdemRecord;
use super::claims::FirstQueued;
use super::keys::{consent_history_prefix, decode, encode, key, message_index_keys, queue_key_of};
use super::{io, write_contact, SledStore};
use crate::model::{ChannelStatus, Consent, Contact, Notification};
use crate::store::portable::{Imported, Page, Portable, Record, RecordKind};
use crate::store::{StoreError, StoreResult};

/// The key prefix of each kind of record.
fn prefix(kind: RecordKind) -> &'static [u8] {
    match kind {
        RecordKind::Contacts => b"c/",
        RecordKind::Tombstones => b"e/",
        RecordKind::Notifications => b"n/",
        RecordKind::IdempotencyKeys => b"k/",
        RecordKind::ChannelStates => b"s/",
        RecordKind::Kv => b"v/",
    }
}

/// The part of `k` after `kind`'s prefix, as text (every key part the store writes is text).
fn suffix(kind: RecordKind, k: &[u8]) -> StoreResult<String> {
    String::from_utf8(k[prefix(kind).len()..].to_vec()).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        source: Box::new(e),
    })
}

impl SledStore {
    /// Turns the record stored under `k` (of `kind`) into its portable shape.
    fn portable_record(&self, kind: RecordKind, k: &[u8], v: &[u8]) -> StoreResult<Record> {
        Ok(match kind {
            RecordKind::Contacts => {
                let contact: Contact = decode(k, v)?;
                let mut history = BTreeMap::new();
                for channel in ChannelKind::ALL {
                    let changes = self
                        .tree
                        .scan_prefix(consent_history_prefix(&contact.id, channel))
                        .map(|item| {
                            let (hk, hv) = item.map_err(io)?;
                            decode::<Consent>(&hk, &hv)
                        })
                        .collect::<StoreResult<Vec<_>>>()?;
                    if !changes.is_empty() {
                        history.insert(channel, changes);
                    }
                }
                Record::Contact { contact, history }
            }
            RecordKind::Tombstones => Record::Tombstone {
                key: suffix(kind, k)?,
                value: decode(k, v)?,
            },
            RecordKind::Notifications => {
                let notification: Notification = decode(k, v)?;
                let queued_at = match notification.queue_due() {
                    Some(due) => self
                        .tree
                        .contains_key(queue_key_of(&notification, due))
                        .map_err(io)?
                        .then_some(due),
                    None => None,
                };
                Record::Notification {
                    notification,
                    queued_at,
                }
            }
            RecordKind::IdempotencyKeys => {
                let idem: IdemRecord = decode(k, v)?;
                Record::IdempotencyKey {
                    key: suffix(kind, k)?,
                    notification_id: idem.id,
                    fingerprint: idem.fingerprint,
                    at: idem.at,
                }
            }
            RecordKind::ChannelStates => {
                let name = suffix(kind, k)?;
                let channel = name
                    .parse::<ChannelKind>()
                    .map_err(|e| StoreError::Corrupt {
                        key: String::from_utf8_lossy(k).into_owned(),
                        source: e.to_string().into(),
                    })?;
                Record::ChannelState {
                    channel,
                    status: decode::<ChannelStatus>(k, v)?,
                }
            }
            RecordKind::Kv => {
                let rest = suffix(kind, k)?;
                let Some((namespace, key)) = rest.split_once('\0') else {
                    return Err(StoreError::Corrupt {
                        key: String::from_utf8_lossy(k).into_owned(),
                        source: "a kv key without its namespace".into(),
                    });
                };
                Record::Kv {
                    namespace: namespace.to_string(),
                    key: key.to_string(),
                    value: v.to_vec(),
                }
            }
        })
    }

    /// [`Portable::export`], run by [`super::blocking`].
    fn export_now(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page> {
        let limit = limit.max(1);
        let prefix = prefix(kind);
        let start = match &after {
            Some(last) => {
                let mut k = prefix.to_vec();
                k.extend_from_slice(last.as_bytes());
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let mut records = Vec::with_capacity(limit);
        let mut last = None;
        for item in self.tree.range(start..) {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(prefix) {
                break;
            }
            if records.len() == limit {
                return Ok(Page {
                    records,
                    next: last,
                });
            }
            records.push(self.portable_record(kind, &k, &v)?);
            last = Some(suffix(kind, &k)?);
        }
        Ok(Page {
            records,
            next: None,
        })
    }

    /// [`Portable::import`] up to the flush: returns what it did, how many queue entries it
    /// wrote and the earliest of them.
    fn import_now(&self, records: Vec<Record>) -> StoreResult<(Imported, i64, FirstQueued)> {
        let mut batch = sled::Batch::default();
        let mut done = Imported::default();
        // Keys this page writes: a record twice in one page is written once.
        let mut taken: HashSet<Vec<u8>> = HashSet::new();
        let mut queued = 0i64;
        let mut first_queued = FirstQueued::default();
        for record in records {
            let (main, value) = match &record {
                Record::Contact { contact, .. } => {
                    (key("c/", &[contact.id.as_bytes()]), encode(contact))
                }
                Record::Tombstone { key: k, value } => (key("e/", &[k.as_bytes()]), encode(value)),
                Record::Notification { notification, .. } => (
                    key("n/", &[notification.id.as_bytes()]),
                    encode(notification),
                ),
                Record::IdempotencyKey {
                    key: k,
                    notification_id,
                    fingerprint,
                    at,
                } => (
                    key("k/", &[k.as_bytes()]),
                    encode(&IdemRecord {
                        id: notification_id.clone(),
                        fingerprint: fingerprint.clone(),
                        at: *at,
                    }),
                ),
                Record::ChannelState { channel, status } => {
                    (key("s/", &[channel.as_str().as_bytes()]), encode(status))
                }
                Record::Kv {
                    namespace,
                    key: k,
                    value,
                } => (
                    key("v/", &[namespace.as_bytes(), k.as_bytes()]),
                    value.clone(),
                ),
            };
            if taken.contains(&main) || self.tree.contains_key(&main).map_err(io)? {
                done.skipped += 1;
                continue;
            }
            taken.insert(main.clone());
            match &record {
                Record::Contact { contact, history } => {
                    // The contact with its address index (`A/`).
                    write_contact(&mut batch, None, contact);
                    for (channel, changes) in history {
                        for change in changes {
                            let mut hkey = consent_history_prefix(&contact.id, *channel);
                            // Increasing: the history keeps its order.
                            hkey.extend_from_slice(
                                &self.db.generate_id().map_err(io)?.to_be_bytes(),
                            );
                            batch.insert(hkey, encode(change));
                        }
                    }
                }
                Record::Notification {
                    notification: n,
                    queued_at,
                } => {
                    batch.insert(main, value);
                    if !n.contact_id.is_empty() {
                        batch.insert(
                            key("x/", &[n.contact_id.as_bytes(), n.id.as_bytes()]),
                            &[][..],
                        );
                    }
                    for mkey in message_index_keys(n) {
                        batch.insert(mkey, n.id.as_bytes());
                    }
                    if let Some(due) = queued_at {
                        let qk = queue_key_of(n, *due);
                        first_queued.note(&qk);
                        batch.insert(qk, &[][..]);
                        queued += 1;
                    }
                }
                _ => batch.insert(main, value),
            }
            done.written += 1;
        }
        if done.written > 0 {
            self.tree.apply_batch(batch).map_err(io)?;
        }
        Ok((done, queued, first_queued))
    }
}

#[async_trait]
impl Portable for SledStore {
    async fn export(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page> {
        super::blocking(|| self.export_now(kind, after, limit))
    }

    async fn import(&self, records: Vec<Record>) -> StoreResult<Imported> {
        let (done, queued, first_queued) = super::blocking(|| self.import_now(records))?;
        if done.written > 0 {
            self.scan_from.queued_first(&first_queued);
            self.queue_depth.fetch_add(queued, Ordering::Relaxed);
            self.durable().await?;
        }
        Ok(done)
    }

    async fn count(&self, kind: RecordKind) -> StoreResult<u64> {
        let prefix = prefix(kind);
        super::blocking(|| {
            let mut n = 0u64;
            for item in self.tree.scan_prefix(prefix).keys() {
                item.map_err(io)?;
                n += 1;
            }
            Ok(n)
        })
    }
}
