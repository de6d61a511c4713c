//! The key codec: how each record's key is built from its parts (the table in the module
//! documentation of [`super`]), and records' values as JSON.

use chrono::DateTime;
use lifeboat_channel::ChannelKind;
use serde::{de::DeserializeOwned, Serialize};

use crate::model::{Notification, Timestamp};
use crate::store::Lane;
use crate::store::{StoreError, StoreResult};

/// `prefix` then `parts`, separated by a 0 byte.
pub(in crate::store) fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// Where a clean stop leaves the queue's size (removed at open).
pub(super) const QUEUE_DEPTH_KEY: &[u8] = b"meta/queue_depth";

/// Marks a store whose address index is `A/` (many contacts per address).
pub(super) const ADDRESS_INDEX_KEY: &[u8] = b"meta/address_index";

/// The keys of every contact holding `address` on `kind` start with this.
pub(super) fn address_prefix(kind: ChannelKind, address: &str) -> Vec<u8> {
    let mut k = key("A/", &[kind.as_str().as_bytes(), address.as_bytes()]);
    k.push(0);
    k
}

pub(super) fn address_key(kind: ChannelKind, address: &str, contact_id: &str) -> Vec<u8> {
    let mut k = address_prefix(kind, address);
    k.extend_from_slice(contact_id.as_bytes());
    k
}

pub(super) fn kv_key(namespace: &str, k: &str) -> Vec<u8> {
    key("v/", &[namespace.as_bytes(), k.as_bytes()])
}

pub(super) fn message_key(kind: ChannelKind, message_id: &str) -> Vec<u8> {
    key("m/", &[kind.as_str().as_bytes(), message_id.as_bytes()])
}

/// The keys indexing the provider message ids of `n`'s attempts (each maps to `n`'s id;
/// re-inserting known ones is harmless).
pub(super) fn message_index_keys(n: &Notification) -> impl Iterator<Item = Vec<u8>> + '_ {
    n.attempts.iter().filter_map(|a| {
        a.provider_message_id
            .as_deref()
            .map(|mid| message_key(a.channel, mid))
    })
}

/// The key prefix of a lane of the queue: `q/` for [`Lane::Other`] (the one queue of versions
/// before lanes, whose entries stay valid there), `q<letter>/` for a channel's lane.
pub(super) fn queue_prefix(lane: Lane) -> &'static [u8] {
    match lane {
        Lane::Other => b"q/",
        Lane::Channel(ChannelKind::Whatsapp) => b"qw/",
        Lane::Channel(ChannelKind::Telegram) => b"qt/",
        Lane::Channel(ChannelKind::Line) => b"ql/",
        Lane::Channel(ChannelKind::Email) => b"qe/",
    }
}

/// Just past every key of `lane`'s range of the queue.
pub(super) fn queue_end(lane: Lane) -> Vec<u8> {
    let mut end = queue_prefix(lane).to_vec();
    *end.last_mut().expect("a prefix") = b'0';
    end
}

/// The lane whose range holds queue entry `qk`.
pub(super) fn queue_entry_lane(qk: &[u8]) -> Lane {
    Lane::ALL
        .into_iter()
        .find(|&lane| qk.starts_with(queue_prefix(lane)))
        .unwrap_or(Lane::Other)
}

/// The queue entry of notification `id`, due at `due`, in `lane`.
pub(super) fn queue_key(lane: Lane, due: Timestamp, id: &str) -> Vec<u8> {
    let ms = due.timestamp_millis().max(0) as u64;
    let mut k = queue_prefix(lane).to_vec();
    k.extend_from_slice(&ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The queue entry `n` has while it is queued at `due` (in the lane of its next channel).
pub(super) fn queue_key_of(n: &Notification, due: Timestamp) -> Vec<u8> {
    queue_key(Lane::of(n), due, &n.id)
}

pub(super) fn decode<T: DeserializeOwned>(k: &[u8], v: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        source: Box::new(e),
    })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

/// The keys of a contact's consent changes on `channel` start with this (a sequence number
/// follows, so they are in the order they were made).
pub(super) fn consent_history_prefix(contact_id: &str, channel: ChannelKind) -> Vec<u8> {
    let mut k = key("h/", &[contact_id.as_bytes(), channel.as_str().as_bytes()]);
    k.push(0);
    k
}

/// Bytes of a queue key before its due time: `q/`, or `q<letter>/` in a channel's lane.
fn queue_due_at(qk: &[u8]) -> usize {
    if qk.get(1) == Some(&b'/') {
        2
    } else {
        3
    }
}

/// The notification id of queue entry `qk`.
pub(super) fn queue_entry_id(qk: &[u8]) -> String {
    String::from_utf8_lossy(&qk[queue_due_at(qk) + 8..]).into_owned()
}

/// When queue entry `qk` is due.
pub(super) fn queue_entry_due(qk: &[u8]) -> Option<Timestamp> {
    let at = queue_due_at(qk);
    let ms: [u8; 8] = qk.get(at..at + 8)?.try_into().ok()?;
    DateTime::from_timestamp_millis(u64::from_be_bytes(ms) as i64)
}
