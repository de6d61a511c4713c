//! Every record a store keeps, in a backend-neutral shape, for `lifeboat store copy` (moving a
//! gateway from the embedded store to PostgreSQL, or back). Each backend implements
//! [`Portable`]: it lists its records a page at a time, kind by kind, and takes records in,
//! each one only if the target does not hold it yet, so that a copy run twice changes nothing
//! the second time.

use std::collections::BTreeMap;

use async_trait::async_trait;
use lifeboat_channel::ChannelKind;
use serde::{Deserialize, Serialize};

use super::{Store, StoreResult};
use crate::model::{ChannelStatus, Consent, Contact, Notification, Timestamp};

/// The kinds of record, in the order a copy moves them (contacts before the notifications
/// that name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Contacts,
    Tombstones,
    Notifications,
    IdempotencyKeys,
    ChannelStates,
    /// The small records of other modules (opt-in tokens, the bot's update offset, guardrail
    /// counters, webhook event ids, ...).
    Kv,
}

impl RecordKind {
    pub const ALL: [RecordKind; 6] = [
        RecordKind::Contacts,
        RecordKind::Tombstones,
        RecordKind::Notifications,
        RecordKind::IdempotencyKeys,
        RecordKind::ChannelStates,
        RecordKind::Kv,
    ];
}

/// One record with everything that belongs to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A contact with its whole consent history per channel (oldest first). The address
    /// index is rebuilt from the contact by the target.
    Contact {
        contact: Contact,
        history: BTreeMap<ChannelKind, Vec<Consent>>,
    },
    /// What an erasure left of a contact: the key is the store's hash of the erased id, the
    /// value as the source keeps it (opaque JSON).
    Tombstone {
        key: String,
        value: serde_json::Value,
    },
    /// A notification with its attempts; `queued_at` is its queue entry's due time if it is on
    /// the queue (it stays queued in the target; a claim is not copied: the gateway is
    /// stopped). The provider message-id index is rebuilt from its attempts.
    Notification {
        notification: Notification,
        queued_at: Option<Timestamp>,
    },
    /// An idempotency key (as the store keeps it: already scoped per API key) with the
    /// notification it created, the body's fingerprint and when it was first used.
    IdempotencyKey {
        key: String,
        notification_id: String,
        fingerprint: String,
        at: Timestamp,
    },
    ChannelState {
        channel: ChannelKind,
        status: ChannelStatus,
    },
    Kv {
        namespace: String,
        key: String,
        value: Vec<u8>,
    },
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Contact { .. } => RecordKind::Contacts,
            Record::Tombstone { .. } => RecordKind::Tombstones,
            Record::Notification { .. } => RecordKind::Notifications,
            Record::IdempotencyKey { .. } => RecordKind::IdempotencyKeys,
            Record::ChannelState { .. } => RecordKind::ChannelStates,
            Record::Kv { .. } => RecordKind::Kv,
        }
    }
}

/// A page of records and where the next page starts (`None`: that kind is done).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<Record>,
    pub next: Option<String>,
}

/// What [`Portable::import`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Records written.
    pub written: u64,
    /// Records the target already held (left as they are).
    pub skipped: u64,
}

/// A store whose records can be listed and taken in (both backends).
#[async_trait]
pub trait Portable: Store {
    /// Up to `limit` records of `kind` after the position `after` (from a previous page's
    /// `next`; `None` to start), in a stable order.
    async fn export(
        &self,
        kind: RecordKind,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Page>;
    /// Writes each record the store does not hold yet (a contact, notification, key, ... with
    /// the same id is skipped, whatever it holds), durably, with the indexes that go with it
    /// (address index, queue entry, message ids, contact's notification index).
    async fn import(&self, records: Vec<Record>) -> StoreResult<Imported>;
    /// How many records of `kind` the store holds (for the progress bar and the emptiness
    /// check).
    async fn count(&self, kind: RecordKind) -> StoreResult<u64>;
}
