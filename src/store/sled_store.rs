//! The embedded store: one sled tree, records as JSON under prefixed keys.
//!
//! Keys (one tree, so that a `Batch` makes related writes atomic where a batch is used):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c/` | contact id | contact |
//! | `h/` | contact id, 0, channel, 0, sequence (u64 BE) | one consent change |
//! | `n/` | notification id (UUIDv7, so time-ordered) | notification |
//! | `x/` | contact id, 0, notification id | (index: a contact's notifications) |
//! | `q/` | due time (ms, u64 BE), notification id | (the queue, earliest first) |
//! | `f/` | notification id | queue key it was claimed from (written by versions before claims were kept in memory; released at open) |
//! | `k/` | idempotency key | notification id, body fingerprint, time |
//! | `s/` | channel name | channel state |
//! | `e/` | sha256 of an erased contact id | tombstone |
//! | `A/` | channel name, 0, address, 0, contact id | (index: every contact holding an address, to apply an inbound message or an opt-out to all of them) |
//! | `v/` | namespace, 0, key | small records of other modules (opt-in tokens, bot offsets, ...) |
//! | `m/` | channel name, 0, provider message id | notification id (to apply a delivery receipt) |
//!
//! Versions before the `A/` index kept `a/` (channel name, 0, address → one contact id: the
//! last to claim the address). [`SledStore::open`] rebuilds `A/` from the contacts once, then
//! removes `a/` and marks the store (`meta/address_index = 2`); nothing reads `a/` any more.
//! What is kept how long, and the purge that deletes the rest: [`super::retention`].
//!
//! Claims are kept in memory, not written: a claimed notification keeps its queue entry,
//! which the claim's `save_progress` replaces, so a crash leaves it on the queue as it was
//! (sent again: at-least-once) and a claim costs no write. Scans of the queue skip claimed
//! entries, and start after the run of claimed ones at its head ([`ScanFrom`]). (Writing
//! claims as `f/` records cost two of the eight writes a delivered notification took; see
//! BENCHMARKS.md.) The saves that end a claim go through one thread that applies every save
//! waiting ([`Saver`]), as accepts do.
//!
//! Accepts have a single writer: the journal's committer thread ([`AcceptStage`]) checks
//! idempotency keys and applies a whole group of accepts, so no lock guards the key check.
//! The two hot paths (accepts and saves) write single keys in a crash-safe order instead of
//! using sled batches, which cost sled two buffer writes each; rarer writes use batches.
//! Read-modify-write on one contact is serialised by a striped in-process lock
//! (sled opens in one process only), held for in-memory work only, never across a flush.
//! Durability of accepts comes from the journal; other durable writes (contacts, consents,
//! channel states) share sled flushes through [`GroupCommit`]; non-critical progress
//! (attempts) rides sled's own periodic flush, which at worst repeats a send after a crash
//! (at-least-once).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lifeboat_channel::ChannelKind;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::group_commit::GroupCommit;
use super::journal::{self, Journal, JournalError, Stage};
use super::retention::{Kind, Rule};
use super::threads::Joined;
use super::{
    AcceptOutcome, ContactEdit, Edited, ListQuery, NewNotification, NotificationEdit, Store,
    StoreError, StoreResult, IDEMPOTENCY_WINDOW_SECS,
};
use super::{Durability, KvEdit};
use crate::model::{
    ChannelStatus, Consent, Contact, ContactPatch, Notification, Status, Timestamp,
};

const STRIPES: usize = 64;
pub use crate::config::DEFAULT_LEASE;

pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    commit: GroupCommit,
    /// Set once the store has opened and replayed what the last run left in the journal.
    journal: std::sync::OnceLock<Journal<AcceptStage>>,
    /// Serialise read-modify-write per contact (one stripe at a time, never two).
    contact_stripes: Arc<Vec<Mutex<()>>>,
    /// Claimed notifications. Locked while claiming and while editing an unclaimed
    /// notification.
    claimed: Mutex<HashMap<String, Claim>>,
    /// Queue entries, kept up to date by every write; signed because the count of what was
    /// queued at open arrives later than the changes made meanwhile (see `open`).
    queue_depth: Arc<AtomicI64>,
    /// Applies the dispatcher's saves, one thread for all.
    saver: Saver,
    /// Notifications erased while claimed, whose save the saver empties.
    erasing: Erasing,
    /// Where queue scans start (see [`ScanFrom`]).
    scan_from: Arc<ScanFrom>,
    /// How long a claim lasts without renewal.
    lease: std::time::Duration,
}

/// Where scans of the queue start: every queue entry before this key is claimed. Claimed
/// notifications keep their entries until their save, so without it every claim would walk
/// past all of them again (up to `server.concurrency` and more). A claim moves it past what it
/// finds claimed at the head of the queue; every write that queues an entry before it moves it
/// back (after the entry is in sled, under the same lock as the claim's scan, so no entry is
/// ever behind it unclaimed).
struct ScanFrom(Mutex<Vec<u8>>);

impl ScanFrom {
    fn new() -> ScanFrom {
        ScanFrom(Mutex::new(b"q/".to_vec()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A queue entry `k` was written: scans must see it.
    fn queued(&self, k: &[u8]) {
        let mut from = self.lock();
        if k < from.as_slice() {
            *from = k.to_vec();
        }
    }
}

/// A claimed notification (kept in memory, by id).
struct Claim {
    /// The queue entry it was claimed from.
    queue_key: Vec<u8>,
    /// Its save has started: the record may already be the saved one, so the API shows the
    /// record as it is, not as `sending`.
    saving: bool,
    /// When the lease ends unless renewed: then the notification is claimable again.
    until: Timestamp,
}

impl Claim {
    /// Whether the lease has ended by `now` (a claim whose save started never ends: the
    /// save releases it).
    fn ended(&self, now: Timestamp) -> bool {
        !self.saving && self.until <= now
    }
}

/// One write of a save: a key and its new value, or `None` to remove it.
type Write = (Vec<u8>, Option<Vec<u8>>);
/// A save: the notification's id, its writes, and where to answer whether the notification
/// was saved as erased (see [`Erasing`]).
type SaveRequest = (String, Vec<Write>, oneshot::Sender<StoreResult<bool>>);

/// Notifications whose contact was erased while they were claimed (being sent). The erasure
/// empties their record at once, but the worker's save comes later and carries the content
/// and contact id the erasure removed; the saver empties such a save instead of applying it
/// as it is. The saver holds the lock while it applies a group, and an erasure from reading
/// the contact's notifications to applying its writes, so a save is either applied before the
/// erasure reads the record (whose index entries and queue entry it then removes) or sees the
/// id here.
type Erasing = Arc<Mutex<std::collections::HashSet<String>>>;

/// What an erasure leaves of a notification: the bare record, so that ids handed out stay
/// resolvable, without its content or its contact, and never tried again.
fn erase_content(n: &mut Notification, now: Timestamp) {
    if !n.status.is_final() {
        n.status = Status::Cancelled;
    }
    n.next_attempt_at = None;
    n.text = String::new();
    n.subject = None;
    n.html = None;
    n.whatsapp_template = None;
    n.contact_id = String::new();
    n.updated_at = now;
}

/// A save of a notification erased while it was claimed: its record without content, no
/// message-id index and no new queue entry; removals (the entry it was claimed from) stay.
fn erased_save(writes: Vec<Write>) -> StoreResult<Vec<Write>> {
    writes
        .into_iter()
        .filter_map(|(k, v)| match v {
            None => Some(Ok((k, None))),
            Some(v) if k.starts_with(b"n/") => Some(decode::<Notification>(&k, &v).map(|mut n| {
                let at = n.updated_at;
                erase_content(&mut n, at);
                (k, Some(encode(&n)))
            })),
            Some(_) => None,
        })
        .collect()
}

/// The dispatcher's saves (one after every turn of a notification) go to one thread that
/// applies every save waiting, one write after another. Why one thread: sled's writes cost
/// less from one thread than from many contending for the same leaves. Why not a
/// `sled::Batch`: sled seals and writes out its I/O buffer twice per batch (see
/// [`AcceptStage`]). The order of a save's writes makes any prefix of them safe after a crash
/// (sled recovers a prefix): the record first, then its message-id index and its new queue
/// entry, and the entry it was claimed from last, so a crash leaves the notification queued
/// (sent again, or finished by its next turn if its record says it is done), never unqueued.
/// A claim is held until its save is applied, so the dispatcher never sees a save half done.
/// Dropping it stops the thread once it has applied every save it holds, and waits for it.
struct Saver {
    requests: std::sync::mpsc::Sender<SaveRequest>,
    /// After `requests`: the channel closes before the join.
    _thread: Joined,
}

impl Saver {
    /// Most saves taken in one group (one hold of the `Erasing` lock).
    const MAX_GROUP: usize = 1024;

    fn start(tree: sled::Tree, erasing: Erasing) -> StoreResult<Saver> {
        let (tx, rx) = std::sync::mpsc::channel::<SaveRequest>();
        let thread = Joined::spawn("lifeboat-saver", move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                while group.len() < Self::MAX_GROUP {
                    match rx.try_recv() {
                        Ok(more) => group.push(more),
                        Err(_) => break,
                    }
                }
                let mut failed: Option<sled::Error> = None;
                let mut erasing = erasing.lock().unwrap_or_else(|e| e.into_inner());
                for (id, writes, ack) in group {
                    // After a failed write sled is unusable: every later save fails too.
                    let answer = match &failed {
                        Some(e) => Err(StoreError::Io(e.clone())),
                        None => {
                            let erased = erasing.remove(&id);
                            let writes = if erased {
                                erased_save(writes)
                            } else {
                                Ok(writes)
                            };
                            writes.and_then(|writes| {
                                writes
                                    .into_iter()
                                    .try_for_each(|(k, v)| match v {
                                        Some(v) => tree.insert(k, v).map(drop),
                                        None => tree.remove(k).map(drop),
                                    })
                                    .map_err(|e| {
                                        failed = Some(e.clone());
                                        StoreError::Io(e)
                                    })
                                    .map(|()| erased)
                            })
                        }
                    };
                    let _ = ack.send(answer);
                }
                drop(erasing);
            }
        })
        .map_err(|source| StoreError::Start {
            what: "the store's saver",
            source,
        })?;
        Ok(Saver {
            requests: tx,
            _thread: thread,
        })
    }

    /// Applies `writes`, the save of notification `id`, in order. Says whether the notification
    /// was saved as erased instead (see [`Erasing`]).
    async fn apply(&self, id: &str, writes: Vec<Write>) -> StoreResult<bool> {
        let (ack, done) = oneshot::channel();
        let stopped = || StoreError::Stopped {
            what: "the store's saver",
        };
        self.requests
            .send((id.to_string(), writes, ack))
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct IdemRecord {
    id: String,
    fingerprint: String,
    pub(super) at: Timestamp,
}

/// What the accept journal holds for one accepted notification.
#[derive(Serialize, Deserialize)]
struct JournalRecord {
    new: NewNotification,
    at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct Tombstone {
    erased_at: Timestamp,
    consent_changes: usize,
}

/// Runs `scan`, a walk over sled whose length no caller bounds (every notification for a
/// status filter, everything a contact left behind for an erasure), without stalling the other
/// tasks of the async runtime: on a multi-threaded runtime (the gateway's) the worker hands
/// its other tasks to the rest while the scan runs (`block_in_place`); on a current-thread
/// runtime (unit tests) it runs inline. Not `spawn_blocking`: that needs `'static` work, so an
/// `Arc` of the store's state cloned into every call, for the same effect.
///
/// Reads of one record, `claim_due` (at most `limit` entries past the claimed head of the
/// queue, see [`ScanFrom`]), `consent_history` and `find_contacts_by_address` (one contact's
/// changes, the few contacts sharing one address) are short and stay inline.
fn blocking<T>(scan: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(scan)
        }
        _ => scan(),
    }
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e)
}

impl From<JournalError> for StoreError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Write(source) => StoreError::File {
                what: "writing the accept journal",
                source,
            },
            JournalError::Stopped => StoreError::Stopped {
                what: "the accept journal",
            },
        }
    }
}

pub(super) fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// Puts a contact into `batch`, keeping the address index (`A/`) in step with its
/// addresses. The caller holds the contact's stripe.
fn write_contact(batch: &mut sled::Batch, old: Option<&Contact>, new: &Contact) {
    for kind in ChannelKind::ALL {
        let before = old.and_then(|c| c.address(kind));
        let after = new.address(kind);
        if before == after {
            continue;
        }
        if let Some(addr) = before {
            batch.remove(address_key(kind, addr, &new.id));
        }
        if let Some(addr) = after {
            batch.insert(address_key(kind, addr, &new.id), &[][..]);
        }
    }
    batch.insert(key("c/", &[new.id.as_bytes()]), encode(new));
}

fn lock_stripe<'a>(stripes: &'a [Mutex<()>], name: &str) -> std::sync::MutexGuard<'a, ()> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let i = (h.finish() as usize) % stripes.len();
    stripes[i].lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a clean stop leaves the queue's size (removed at open).
const QUEUE_DEPTH_KEY: &[u8] = b"meta/queue_depth";

/// Marks a store whose address index is `A/` (many contacts per address).
const ADDRESS_INDEX_KEY: &[u8] = b"meta/address_index";

/// The keys of every contact holding `address` on `kind` start with this.
fn address_prefix(kind: ChannelKind, address: &str) -> Vec<u8> {
    let mut k = key("A/", &[kind.as_str().as_bytes(), address.as_bytes()]);
    k.push(0);
    k
}

fn address_key(kind: ChannelKind, address: &str, contact_id: &str) -> Vec<u8> {
    let mut k = address_prefix(kind, address);
    k.extend_from_slice(contact_id.as_bytes());
    k
}

fn kv_key(namespace: &str, k: &str) -> Vec<u8> {
    key("v/", &[namespace.as_bytes(), k.as_bytes()])
}

fn message_key(kind: ChannelKind, message_id: &str) -> Vec<u8> {
    key("m/", &[kind.as_str().as_bytes(), message_id.as_bytes()])
}

/// The keys indexing the provider message ids of `n`'s attempts (each maps to `n`'s id;
/// re-inserting known ones is harmless).
fn message_index_keys(n: &Notification) -> impl Iterator<Item = Vec<u8>> + '_ {
    n.attempts.iter().filter_map(|a| {
        a.provider_message_id
            .as_deref()
            .map(|mid| message_key(a.channel, mid))
    })
}

/// The writes that save `n` after a turn, claimed from the queue entry `claimed_at`, and its
/// new queue entry if it goes back on the queue. In this order, so that any prefix of them
/// (what sled recovers after a crash) leaves `n` on the queue unless its record says it is
/// done: the record, its message-id index, its new queue entry, and only then the removal of
/// the entry it was claimed from.
fn save_writes(n: &Notification, claimed_at: Option<Vec<u8>>) -> (Vec<Write>, Option<Vec<u8>>) {
    let mut writes: Vec<Write> = Vec::with_capacity(4);
    writes.push((key("n/", &[n.id.as_bytes()]), Some(encode(n))));
    writes.extend(message_index_keys(n).map(|k| (k, Some(n.id.as_bytes().to_vec()))));
    let requeued_at = n.queue_due().map(|due| queue_key(due, &n.id));
    if let Some(qk) = &requeued_at {
        writes.push((qk.clone(), Some(Vec::new())));
    }
    if let Some(qk) = claimed_at.filter(|qk| requeued_at.as_ref() != Some(qk)) {
        writes.push((qk, None));
    }
    (writes, requeued_at)
}

fn queue_key(due: Timestamp, id: &str) -> Vec<u8> {
    let ms = due.timestamp_millis().max(0) as u64;
    let mut k = b"q/".to_vec();
    k.extend_from_slice(&ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn decode<T: DeserializeOwned>(k: &[u8], v: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        source: Box::new(e),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

impl SledStore {
    /// Opens (or creates) the store at `path`. Claims left by a previous process are put back
    /// on the queue, due now.
    pub fn open(path: &Path, cache_mb: u64) -> StoreResult<SledStore> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                    path: path.display().to_string(),
                    source: e.into(),
                })?;
            }
        }
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_mb * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| {
                let path = path.display().to_string();
                match &e {
                    sled::Error::Io(io_err)
                        if io_err.kind() == std::io::ErrorKind::WouldBlock
                            || io_err.to_string().contains("lock") =>
                    {
                        StoreError::Locked { path, source: e }
                    }
                    _ => StoreError::Open {
                        path,
                        source: e.into(),
                    },
                }
            })?;
        let tree = db.open_tree("lifeboat").map_err(io)?;
        let erasing = Erasing::default();
        let saver = Saver::start(tree.clone(), erasing.clone())?;
        let scan_from = Arc::new(ScanFrom::new());
        let store = SledStore {
            commit: GroupCommit::start(db.clone())?,
            journal: std::sync::OnceLock::new(),
            db,
            tree,
            contact_stripes: Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()),
            claimed: Mutex::new(HashMap::new()),
            queue_depth: Arc::new(AtomicI64::new(0)),
            saver,
            erasing,
            scan_from,
            lease: DEFAULT_LEASE,
        };
        store.migrate_address_index()?;
        store.replay_journal(&path.with_extension("journal"))?;
        // A clean stop leaves the queue's size behind; after a crash it is counted (slower).
        let depth = match store.tree.remove(QUEUE_DEPTH_KEY).map_err(io)? {
            Some(saved) if saved.len() == 8 => {
                i64::from_be_bytes(saved.as_ref().try_into().expect("8 bytes"))
            }
            _ => store.tree.scan_prefix(b"q/").count() as i64,
        };
        store.queue_depth.store(depth, Ordering::Relaxed);
        store.release_stale_claims()?;
        Ok(store)
    }

    /// Sets how long a claim lasts without renewal (`[store] lease`).
    pub fn with_lease(mut self, lease: std::time::Duration) -> SledStore {
        self.lease = lease;
        self
    }

    /// Builds the `A/` address index (every contact holding an address) from the contacts and
    /// removes the old one-contact-per-address `a/` index, once per store. Safe to repeat if
    /// interrupted: the marker is written last.
    fn migrate_address_index(&self) -> StoreResult<()> {
        if self.tree.contains_key(ADDRESS_INDEX_KEY).map_err(io)? {
            return Ok(());
        }
        let (mut contacts, mut entries) = (0usize, 0usize);
        let mut batch = sled::Batch::default();
        for item in self.tree.scan_prefix(b"c/") {
            let (k, v) = item.map_err(io)?;
            let contact: Contact = decode(&k, &v)?;
            contacts += 1;
            for kind in ChannelKind::ALL {
                if let Some(addr) = contact.address(kind) {
                    batch.insert(address_key(kind, addr, &contact.id), &[][..]);
                    entries += 1;
                }
            }
        }
        for item in self.tree.scan_prefix(b"a/") {
            let (k, _) = item.map_err(io)?;
            batch.remove(k);
        }
        batch.insert(ADDRESS_INDEX_KEY, &b"2"[..]);
        self.tree.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        if contacts > 0 {
            tracing::info!(
                contacts,
                entries,
                "rebuilt the address index (every contact holding an address)"
            );
        }
        Ok(())
    }

    /// Re-applies accepted notifications that the journal holds but sled lost in a crash,
    /// flushes sled, and starts a fresh journal.
    fn replay_journal(&self, dir: &Path) -> StoreResult<()> {
        let open_err = |e: std::io::Error| StoreError::Open {
            path: dir.display().to_string(),
            source: e.into(),
        };
        let (mut replayed, mut completed) = (0usize, 0usize);
        for bytes in journal::recover(dir).map_err(open_err)? {
            let record: JournalRecord = decode(b"journal", &bytes)?;
            let nkey = key("n/", &[record.new.notification.id.as_bytes()]);
            match self.get::<Notification>(&nkey)? {
                Some(stored) => {
                    if self.complete_accepted(&record, &stored)? {
                        completed += 1;
                    }
                }
                None => {
                    if self.write_accepted(&record.new, record.at)?.is_none() {
                        replayed += 1;
                    }
                }
            }
        }
        if replayed + completed > 0 {
            tracing::info!(
                replayed,
                completed,
                "re-applied accepted notifications from the journal"
            );
        }
        self.db.flush().map_err(io)?;
        let stage = AcceptStage {
            tree: self.tree.clone(),
            contact_stripes: self.contact_stripes.clone(),
            scan_from: self.scan_from.clone(),
        };
        let journal = Journal::start(dir, self.db.clone(), stage).map_err(open_err)?;
        let _ = self.journal.set(journal);
        Ok(())
    }

    fn release_stale_claims(&self) -> StoreResult<()> {
        let now = Utc::now();
        let mut batch = sled::Batch::default();
        let mut released = 0usize;
        for item in self.tree.scan_prefix(b"f/") {
            let (k, _) = item.map_err(io)?;
            let id = String::from_utf8_lossy(&k[2..]).into_owned();
            batch.remove(k);
            let nkey = key("n/", &[id.as_bytes()]);
            if let Some(v) = self.tree.get(&nkey).map_err(io)? {
                let mut n: Notification = decode(&nkey, &v)?;
                n.next_attempt_at = Some(now);
                batch.insert(nkey, encode(&n));
                batch.insert(queue_key(now, &id), &[][..]);
                released += 1;
            }
        }
        if released > 0 {
            tracing::info!(
                released,
                "re-queued notifications that were in flight at the last stop"
            );
        }
        self.tree.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        self.queue_depth
            .fetch_add(released as i64, Ordering::Relaxed);
        Ok(())
    }

    /// A notification as the API shows it: a claimed one is `sending` until its save starts.
    /// The claim is looked at after the record is read, and marked `saving` before the saved
    /// record is written, so a record already saved is never shown as still being sent.
    fn notification_as_seen(&self, id: &str) -> StoreResult<Option<Notification>> {
        let Some(mut n) = self.get::<Notification>(&key("n/", &[id.as_bytes()]))? else {
            return Ok(None);
        };
        let sending = self.claims().get(id).is_some_and(|c| !c.saving);
        if n.status == Status::Queued && sending {
            n.status = Status::Sending;
        }
        Ok(Some(n))
    }

    /// [`Store::list_notifications`], run by [`blocking`].
    fn list_notifications_now(
        &self,
        query: &ListQuery,
    ) -> StoreResult<(Vec<Notification>, Option<String>)> {
        let limit = query.limit.max(1);
        let mut out = Vec::with_capacity(limit);
        let mut more = false;
        let matches = |n: &Notification| query.status.is_none_or(|s| n.status == s);

        let ids: Box<dyn Iterator<Item = StoreResult<String>>> = match &query.contact_id {
            Some(contact) => {
                let mut prefix = key("x/", &[contact.as_bytes()]);
                prefix.push(0);
                let plen = prefix.len();
                let mut end = prefix.clone();
                match &query.cursor {
                    Some(c) => end.extend_from_slice(c.as_bytes()),
                    None => end.push(0xff),
                }
                Box::new(self.tree.range(prefix..end).rev().map(move |item| {
                    let (k, _) = item.map_err(io)?;
                    Ok(String::from_utf8_lossy(&k[plen..]).into_owned())
                }))
            }
            None => {
                let start = b"n/".to_vec();
                let end = match &query.cursor {
                    Some(c) => key("n/", &[c.as_bytes()]),
                    None => b"n0".to_vec(),
                };
                Box::new(self.tree.range(start..end).rev().map(|item| {
                    let (k, _) = item.map_err(io)?;
                    Ok(String::from_utf8_lossy(&k[2..]).into_owned())
                }))
            }
        };
        for id in ids {
            let id = id?;
            let Some(n) = self.notification_as_seen(&id)? else {
                continue;
            };
            if !matches(&n) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(n);
        }
        let next = if more {
            out.last().map(|n| n.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_contact(&self, batch: &mut sled::Batch, old: Option<&Contact>, new: &Contact) {
        write_contact(batch, old, new)
    }

    fn stripe(&self, contact_id: &str) -> std::sync::MutexGuard<'_, ()> {
        lock_stripe(&self.contact_stripes, contact_id)
    }

    async fn durable(&self) -> StoreResult<()> {
        self.commit.durable().await
    }

    fn get<T: DeserializeOwned>(&self, k: &[u8]) -> StoreResult<Option<T>> {
        match self.tree.get(k).map_err(io)? {
            Some(v) => decode(k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn consent_history_prefix(contact_id: &str, channel: ChannelKind) -> Vec<u8> {
        let mut k = key("h/", &[contact_id.as_bytes(), channel.as_str().as_bytes()]);
        k.push(0);
        k
    }

    /// An accept is applied as single writes, record first and queue entry last (see
    /// [`AcceptStage`]), and sled recovers a prefix of its writes: after a crash the record can
    /// be there without the writes that followed it. For a notification still as accepted
    /// (queued, never tried), puts back what is missing: its contact index entry, its
    /// idempotency key and its queue entry. Says whether something was missing.
    fn complete_accepted(
        &self,
        record: &JournalRecord,
        stored: &Notification,
    ) -> StoreResult<bool> {
        if stored.status != Status::Queued || !stored.attempts.is_empty() {
            return Ok(false);
        }
        let id = stored.id.as_bytes();
        let mut missing = Vec::new();
        let xkey = key("x/", &[stored.contact_id.as_bytes(), id]);
        if !self.tree.contains_key(&xkey).map_err(io)? {
            missing.push((xkey, Vec::new()));
        }
        if let Some(idem) = &record.new.idempotency {
            let kkey = key("k/", &[idem.key.as_bytes()]);
            if !self.tree.contains_key(&kkey).map_err(io)? {
                let value = encode(&IdemRecord {
                    id: stored.id.clone(),
                    fingerprint: idem.fingerprint.clone(),
                    at: record.at,
                });
                missing.push((kkey, value));
            }
        }
        let qkey = queue_key(stored.next_attempt_at.unwrap_or(record.at), &stored.id);
        if !self.tree.contains_key(&qkey).map_err(io)? {
            missing.push((qkey, Vec::new()));
        }
        if missing.is_empty() {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in missing {
            batch.insert(k, v);
        }
        self.tree.apply_batch(batch).map_err(io)?;
        Ok(true)
    }

    /// Applies one accepted notification at once (replaying the journal).
    fn write_accepted(
        &self,
        new: &NewNotification,
        now: Timestamp,
    ) -> StoreResult<Option<AcceptOutcome>> {
        let mut writes = Vec::new();
        let mut keys = HashMap::new();
        let earlier = stage_accepted(
            &self.tree,
            &self.contact_stripes,
            new,
            now,
            &mut writes,
            &mut keys,
        )?;
        if earlier.is_none() {
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                batch.insert(k, v);
            }
            self.tree.apply_batch(batch).map_err(io)?;
        }
        Ok(earlier)
    }
}

/// The accept path's single writer, run by the journal's committer thread: a group of accepts
/// is checked (idempotency keys, in the store and within the group) and applied to sled, then
/// journaled. One writer means no lock around the idempotency check.
///
/// The writes go to sled one by one, not as a `sled::Batch`: each accept's record first, then
/// its contact index entry, its queue entry, and its idempotency key last. Why: sled seals and
/// writes out its I/O buffer twice for every batch (to mark the batch's bounds in its log),
/// waking its I/O threads each time, which cost more than the writes themselves
/// (BENCHMARKS.md). Readers never see a queue entry without its record (the dispatcher drops
/// such orphans anyway), nor a key without its queued notification. After a crash sled recovers a prefix of its
/// writes, and the journal's replay puts back whatever followed a recovered record
/// ([`SledStore::complete_accepted`]).
pub(super) struct AcceptStage {
    tree: sled::Tree,
    contact_stripes: Arc<Vec<Mutex<()>>>,
    scan_from: Arc<ScanFrom>,
}

impl Stage for AcceptStage {
    type Item = (NewNotification, Timestamp);
    type Answer = AcceptOutcome;
    type Error = StoreError;

    fn stage(
        &mut self,
        items: Vec<(NewNotification, Timestamp)>,
    ) -> Vec<journal::Staged<AcceptOutcome, StoreError>> {
        let mut writes = Vec::with_capacity(items.len() * 4);
        let mut keys = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        let mut first_queued: Option<Vec<u8>> = None;
        for (new, at) in items {
            match stage_accepted(
                &self.tree,
                &self.contact_stripes,
                &new,
                at,
                &mut writes,
                &mut keys,
            ) {
                Ok(None) => {
                    let n = &new.notification;
                    let qk = queue_key(n.next_attempt_at.unwrap_or(at), &n.id);
                    if first_queued.as_ref().is_none_or(|first| qk < *first) {
                        first_queued = Some(qk);
                    }
                    out.push((
                        Some(encode(&JournalRecord { new, at })),
                        Ok(AcceptOutcome::Created),
                    ))
                }
                Ok(Some(earlier)) => out.push((None, Ok(earlier))),
                Err(e) => out.push((None, Err(e))),
            }
        }
        match writes
            .into_iter()
            .try_for_each(|(k, v)| self.tree.insert(k, v).map(drop))
        {
            Ok(()) => {
                if let Some(first) = first_queued {
                    self.scan_from.queued(&first);
                }
            }
            Err(e) => {
                // sled failed (the disk): the whole group is answered with the error and not
                // journaled. Unlike a batch, the writes before the failure stay in sled; if
                // they reach its disk, those notifications are sent although their clients
                // got an error (a retry with the same idempotency key gets the id of one whose
                // writes all got in: the key is written last).
                for (record, answer) in &mut out {
                    if record.take().is_some() {
                        *answer = Err(StoreError::Io(e.clone()));
                    }
                }
            }
        }
        out
    }
}

/// Stages one accept into `writes`: checks its idempotency key (against the store and against
/// `keys`, the keys staged earlier in the same group), writes its contact patch (at once, under
/// the contact's stripe, if it changes the contact), and adds, in the order they must be
/// applied (see [`AcceptStage`]), the notification, its index entry, its queue entry and its
/// idempotency key. Returns the earlier outcome when the key was seen before.
fn stage_accepted(
    tree: &sled::Tree,
    contact_stripes: &[Mutex<()>],
    new: &NewNotification,
    now: Timestamp,
    writes: &mut Vec<(Vec<u8>, Vec<u8>)>,
    keys: &mut HashMap<String, (String, String)>,
) -> StoreResult<Option<AcceptOutcome>> {
    let n = &new.notification;
    let get = |k: &[u8]| -> StoreResult<Option<sled::IVec>> { tree.get(k).map_err(io) };
    let mut idem_record = None;
    if let Some(idem) = &new.idempotency {
        let kkey = key("k/", &[idem.key.as_bytes()]);
        let earlier = match keys.get(&idem.key) {
            Some((id, fingerprint)) => Some((id.clone(), fingerprint.clone())),
            None => match get(&kkey)? {
                Some(v) => {
                    let prev: IdemRecord = decode(&kkey, &v)?;
                    let age = now.signed_duration_since(prev.at).num_seconds();
                    (age < IDEMPOTENCY_WINDOW_SECS).then_some((prev.id, prev.fingerprint))
                }
                None => None,
            },
        };
        if let Some((id, fingerprint)) = earlier {
            return Ok(Some(if fingerprint == idem.fingerprint {
                AcceptOutcome::Duplicate { id }
            } else {
                AcceptOutcome::Conflict { id }
            }));
        }
        keys.insert(idem.key.clone(), (n.id.clone(), idem.fingerprint.clone()));
        idem_record = Some((
            kkey,
            encode(&IdemRecord {
                id: n.id.clone(),
                fingerprint: idem.fingerprint.clone(),
                at: now,
            }),
        ));
    }
    if let Some(patch) = new.contact_patch.as_ref().filter(|p| !p.is_empty()) {
        let _guard = lock_stripe(contact_stripes, &n.contact_id);
        let ckey = key("c/", &[n.contact_id.as_bytes()]);
        let old: Option<Contact> = match get(&ckey)? {
            Some(v) => Some(decode(&ckey, &v)?),
            None => None,
        };
        let mut contact = old
            .clone()
            .unwrap_or_else(|| Contact::new(&n.contact_id, now));
        contact.apply(patch, now);
        // Apps often send the same `to` with every notification: then there is nothing to
        // write (a sled batch costs sled two buffer writes).
        let unchanged = old.as_ref().is_some_and(|old| {
            *old == Contact {
                updated_at: old.updated_at,
                ..contact.clone()
            }
        });
        if !unchanged {
            let mut contact_batch = sled::Batch::default();
            write_contact(&mut contact_batch, old.as_ref(), &contact);
            tree.apply_batch(contact_batch).map_err(io)?;
        }
    }
    let due = n.next_attempt_at.unwrap_or(now);
    writes.push((key("n/", &[n.id.as_bytes()]), encode(n)));
    writes.push((
        key("x/", &[n.contact_id.as_bytes(), n.id.as_bytes()]),
        Vec::new(),
    ));
    writes.push((queue_key(due, &n.id), Vec::new()));
    // The key last: a key found in the store always has a queued notification behind it.
    writes.extend(idem_record);
    Ok(None)
}

/// Retention (see [`super::retention`]): the purge's deletions, and what an erasure does to
/// the records other modules keep about a contact.
impl SledStore {
    /// Examines up to `limit` records of `rule` from key `from` and deletes those expired at
    /// `now`. Returns how many it deleted and where the next batch starts (`None`: done).
    pub(super) fn purge_batch(
        &self,
        rule: &Rule,
        from: &[u8],
        now: Timestamp,
        limit: usize,
    ) -> StoreResult<(usize, Option<Vec<u8>>)> {
        let cutoff = chrono::Duration::from_std(rule.keep)
            .ok()
            .and_then(|keep| now.checked_sub_signed(keep));
        // Kept longer than time goes back: nothing is old enough.
        let Some(cutoff) = cutoff else {
            return Ok((0, None));
        };
        let mut batch = Vec::with_capacity(limit);
        for item in self.tree.range(from.to_vec()..) {
            let (k, v) = item.map_err(io)?;
            if !k.starts_with(&rule.prefix) {
                break;
            }
            batch.push((k, v));
            if batch.len() == limit {
                break;
            }
        }
        let next = (batch.len() == limit).then(|| {
            let mut next = batch[limit - 1].0.to_vec();
            next.push(0);
            next
        });
        let mut deleted = 0;
        for (k, v) in batch {
            let gone = match &rule.kind {
                Kind::Notifications => {
                    let id = &k[rule.prefix.len()..];
                    // Ids are UUIDv7, in the order they were made: one made after the cutoff
                    // cannot have finished before it, nor can any after it.
                    if created_at(id).is_some_and(|made| made > cutoff) {
                        return Ok((deleted, None));
                    }
                    self.purge_notification(&k, &v, cutoff)?
                }
                Kind::Records(age_from) => {
                    match age_from(&k[rule.prefix.len()..], &v) {
                        // Only if unchanged since it was read: a record written again meanwhile
                        // (a counter, a key used anew) stays.
                        Some(at) if at <= cutoff => self
                            .tree
                            .compare_and_swap(&k, Some(&v), None as Option<&[u8]>)
                            .map_err(io)?
                            .is_ok(),
                        _ => false,
                    }
                }
            };
            deleted += usize::from(gone);
        }
        Ok((deleted, next))
    }

    /// Deletes a notification finished at or before `cutoff` (read as `value`), with its
    /// index entries. Under its contact's stripe (an erasure rewrites it under that stripe)
    /// and the claims' lock (edits and claims take it), and read again under them. Index
    /// entries go first and the record last, so a crash in between leaves the record, which
    /// the next pass deletes; never an index entry without its record.
    fn purge_notification(
        &self,
        nkey: &[u8],
        value: &[u8],
        cutoff: Timestamp,
    ) -> StoreResult<bool> {
        let expired = |n: &Notification| {
            n.status.is_final() && n.queue_due().is_none() && n.updated_at <= cutoff
        };
        // A record this version cannot read is kept (and the pass goes on).
        let Ok(n) = decode::<Notification>(nkey, value) else {
            return Ok(false);
        };
        if !expired(&n) {
            return Ok(false);
        }
        let _stripe = self.stripe(&n.contact_id);
        let claims = self.claims();
        if claims.contains_key(&n.id) {
            return Ok(false);
        }
        match self.get::<Notification>(nkey)? {
            Some(now) if expired(&now) && now.contact_id == n.contact_id => {}
            _ => return Ok(false),
        }
        let id = n.id.as_bytes();
        if !n.contact_id.is_empty() {
            self.tree
                .remove(key("x/", &[n.contact_id.as_bytes(), id]))
                .map_err(io)?;
        }
        for mkey in message_index_keys(&n) {
            // Only if it still points here.
            self.tree
                .compare_and_swap(&mkey, Some(id), None as Option<&[u8]>)
                .map_err(io)?
                .ok();
        }
        self.tree.remove(nkey).map_err(io)?;
        drop(claims);
        Ok(true)
    }

    /// How many records have keys starting with `prefix` (`lifeboat bench --retention`).
    pub fn records_under(&self, prefix: &[u8]) -> usize {
        self.tree.scan_prefix(prefix).count()
    }

    /// Adds to an erasure's `batch` what other modules keep about contact `id`: its marketing
    /// cap record and opt-in tokens are removed, and its entries in the WhatsApp tier ledger
    /// are renamed to an anonymous id (the person still counts toward the 24 h tier: they
    /// were reached). Returns how many records it changed.
    fn erase_mentions(&self, id: &str, batch: &mut sled::Batch) -> StoreResult<usize> {
        let mut changed = 0;
        let caps = kv_key(super::namespaces::POLICY_MARKETING_SENDS, id);
        if self.tree.contains_key(&caps).map_err(io)? {
            batch.remove(caps);
            changed += 1;
        }
        let optin = kv_key(super::namespaces::OPTIN, "");
        for item in self.tree.scan_prefix(&optin) {
            let (k, v) = item.map_err(io)?;
            let token: Option<crate::model::OptinToken> = serde_json::from_slice(&v).ok();
            if token.is_some_and(|t| t.contact_id == id) {
                batch.remove(k);
                changed += 1;
            }
        }
        let tier = kv_key(super::namespaces::POLICY_TIER, "whatsapp/");
        for item in self.tree.scan_prefix(&tier) {
            let (k, v) = item.map_err(io)?;
            let rest = String::from_utf8_lossy(&k[tier.len()..]).into_owned();
            let anonymous = || -> StoreResult<String> {
                Ok(format!("erased.{}", self.db.generate_id().map_err(io)?))
            };
            match rest.split_once('/') {
                // `whatsapp/<hour>/<contact>`.
                Some((hour, contact)) if contact == id => {
                    let renamed = format!("whatsapp/{hour}/{}", anonymous()?);
                    batch.remove(k);
                    batch.insert(kv_key(super::namespaces::POLICY_TIER, &renamed), v);
                    changed += 1;
                }
                Some(_) => {}
                // `whatsapp/<hour>` of earlier versions: a JSON list of contact ids.
                None => {
                    let Ok(mut ids) = serde_json::from_slice::<Vec<String>>(&v) else {
                        continue;
                    };
                    if let Some(at) = ids.iter().position(|c| c == id) {
                        ids[at] = anonymous()?;
                        batch.insert(k, encode(&ids));
                        changed += 1;
                    }
                }
            }
        }
        Ok(changed)
    }
}

/// When a notification id (a UUIDv7) was made; `None` for other ids.
fn created_at(id: &[u8]) -> Option<Timestamp> {
    let id = uuid::Uuid::try_parse_ascii(id).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(secs as i64, nanos)
}

#[async_trait]
impl Store for SledStore {
    async fn upsert_contact(
        &self,
        id: &str,
        patch: &ContactPatch,
        now: Timestamp,
    ) -> StoreResult<Contact> {
        let contact = {
            let _guard = self.stripe(id);
            let ckey = key("c/", &[id.as_bytes()]);
            let old = self.get::<Contact>(&ckey)?;
            let mut contact = old.clone().unwrap_or_else(|| Contact::new(id, now));
            contact.apply(patch, now);
            let mut batch = sled::Batch::default();
            self.write_contact(&mut batch, old.as_ref(), &contact);
            self.tree.apply_batch(batch).map_err(io)?;
            contact
        };
        self.durable().await?;
        Ok(contact)
    }

    async fn get_contact(&self, id: &str) -> StoreResult<Option<Contact>> {
        self.get(&key("c/", &[id.as_bytes()]))
    }

    async fn contact_exists(&self, id: &str) -> StoreResult<bool> {
        self.tree
            .contains_key(key("c/", &[id.as_bytes()]))
            .map_err(io)
    }

    async fn erase_contact(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        // Scans the contact's notifications, consent history and mentions.
        let erased = blocking(|| -> StoreResult<bool> {
            let _guard = self.stripe(id);
            let ckey = key("c/", &[id.as_bytes()]);
            let old = self.get::<Contact>(&ckey)?;
            let existed = old.is_some();
            let mut batch = sled::Batch::default();
            batch.remove(ckey);
            if let Some(old) = &old {
                for kind in ChannelKind::ALL {
                    if let Some(addr) = old.address(kind) {
                        batch.remove(address_key(kind, addr, id));
                    }
                }
            }

            let mut hprefix = key("h/", &[id.as_bytes()]);
            hprefix.push(0);
            let mut changes = 0;
            for item in self.tree.scan_prefix(&hprefix) {
                let (k, _) = item.map_err(io)?;
                batch.remove(k);
                changes += 1;
            }

            // From here to the batch being applied no save is applied (the saver waits for
            // `erasing`) and nothing is claimed: each record read below is the one the batch
            // replaces, so a save racing the erasure is either read here (its message-id
            // index and queue entry removed with it) or emptied by the saver afterwards.
            let mut erasing = self.erasing.lock().unwrap_or_else(|e| e.into_inner());
            let claims = self.claims();
            let mut xprefix = key("x/", &[id.as_bytes()]);
            xprefix.push(0);
            let mut dequeued = 0i64;
            let mut claimed_ids = Vec::new();
            for item in self.tree.scan_prefix(&xprefix) {
                let (k, _) = item.map_err(io)?;
                let nid = &k[xprefix.len()..];
                let nkey = key("n/", &[nid]);
                if let Some(mut n) = self.get::<Notification>(&nkey)? {
                    // A claimed one's save, if still to come, is emptied by the saver as this
                    // does (see `Erasing`).
                    let claim = claims.get(&n.id);
                    if claim.is_some() {
                        claimed_ids.push(n.id.clone());
                    }
                    if let Some(due) = n.queue_due() {
                        let qk = queue_key(due, &n.id);
                        if self.tree.get(&qk).map_err(io)?.is_some() {
                            // The entry a claim was taken from is not counted in the depth;
                            // one a save already applied wrote is (or is about to be).
                            if claim.is_none_or(|c| c.queue_key != qk) {
                                dequeued += 1;
                            }
                            batch.remove(qk);
                        }
                    }
                    for k in message_index_keys(&n) {
                        batch.remove(k);
                    }
                    erase_content(&mut n, now);
                    batch.insert(nkey, encode(&n));
                }
                batch.remove(k);
            }
            let mentions = self.erase_mentions(id, &mut batch)?;
            if !existed && changes == 0 && mentions == 0 {
                return Ok(false);
            }
            let digest = hex::encode(Sha256::digest(id.as_bytes()));
            batch.insert(
                key("e/", &[digest.as_bytes()]),
                encode(&Tombstone {
                    erased_at: now,
                    consent_changes: changes,
                }),
            );
            erasing.extend(claimed_ids);
            self.tree.apply_batch(batch).map_err(io)?;
            drop((claims, erasing));
            self.queue_depth.fetch_sub(dequeued, Ordering::Relaxed);
            Ok(true)
        })?;
        if !erased {
            return Ok(false);
        }
        self.durable().await?;
        Ok(true)
    }

    async fn set_consent(
        &self,
        contact_id: &str,
        channel: ChannelKind,
        consent: Consent,
    ) -> StoreResult<Option<Consent>> {
        {
            let _guard = self.stripe(contact_id);
            let ckey = key("c/", &[contact_id.as_bytes()]);
            let Some(mut contact) = self.get::<Contact>(&ckey)? else {
                return Ok(None);
            };
            contact.consents.insert(channel, consent.clone());
            contact.updated_at = consent.at;
            let mut hkey = Self::consent_history_prefix(contact_id, channel);
            hkey.extend_from_slice(&self.db.generate_id().map_err(io)?.to_be_bytes());
            let mut batch = sled::Batch::default();
            batch.insert(ckey, encode(&contact));
            batch.insert(hkey, encode(&consent));
            self.tree.apply_batch(batch).map_err(io)?;
        }
        self.durable().await?;
        Ok(Some(consent))
    }

    async fn consent_history(
        &self,
        contact_id: &str,
        channel: ChannelKind,
    ) -> StoreResult<Vec<Consent>> {
        let prefix = Self::consent_history_prefix(contact_id, channel);
        self.tree
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item.map_err(io)?;
                decode(&k, &v)
            })
            .collect()
    }

    async fn accept(&self, new: NewNotification, now: Timestamp) -> StoreResult<AcceptOutcome> {
        let journal = self
            .journal
            .get()
            .expect("the journal starts when the store opens");
        let outcome = journal.append((new, now)).await?;
        if outcome == AcceptOutcome::Created {
            self.queue_depth.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    async fn get_notification(&self, id: &str) -> StoreResult<Option<Notification>> {
        self.notification_as_seen(id)
    }

    async fn list_notifications(
        &self,
        query: &ListQuery,
    ) -> StoreResult<(Vec<Notification>, Option<String>)> {
        // A status filter may walk every notification.
        blocking(|| self.list_notifications_now(query))
    }

    async fn claim_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<Notification>> {
        let end = queue_key(now + chrono::Duration::milliseconds(1), "");
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        let mut from = self.scan_from.lock();
        let mut claims = self.claims();
        // Leases that ended without their save: the notification is claimable again from its
        // queue entry (which a claim keeps), so scans must start at it again.
        let ended: Vec<String> = claims
            .iter()
            .filter(|(_, c)| c.ended(now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            if let Some(claim) = claims.remove(&id) {
                tracing::warn!(notification = %id, "a claim's lease ended without its save; the notification is claimable again");
                if claim.queue_key < *from {
                    *from = claim.queue_key;
                }
                self.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut claimed = Vec::new();
        let mut orphans = sled::Batch::default();
        let mut orphaned = false;
        let start = from.clone();
        // Every entry this scan passes ends up claimed (or dropped), so the start follows it.
        // (A test clock may go back: then there is nothing before `end` to scan.)
        let entries = if start < end {
            Some(self.tree.range(start..end))
        } else {
            None
        };
        for item in entries.into_iter().flatten() {
            if claimed.len() >= limit {
                break;
            }
            let (qk, _) = item.map_err(io)?;
            let id = String::from_utf8_lossy(&qk[10..]).into_owned();
            if let std::collections::hash_map::Entry::Vacant(slot) = claims.entry(id) {
                match self.get::<Notification>(&key("n/", &[slot.key().as_bytes()]))? {
                    Some(n) => {
                        slot.insert(Claim {
                            queue_key: qk.to_vec(),
                            saving: false,
                            until,
                        });
                        claimed.push(n);
                    }
                    // A queue entry without its record cannot be sent; drop it.
                    None => {
                        orphans.remove(qk.clone());
                        orphaned = true;
                    }
                }
            }
            // Just after `qk`: the smallest key greater than it.
            *from = qk.to_vec();
            from.push(0);
        }
        if orphaned {
            // A batch takes sled's exclusive lock: only when there is something to drop.
            self.tree.apply_batch(orphans).map_err(io)?;
        }
        self.queue_depth
            .fetch_sub(claimed.len() as i64, Ordering::Relaxed);
        Ok(claimed)
    }

    async fn renew_claims(&self, ids: &[String], now: Timestamp) -> StoreResult<usize> {
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        let mut claims = self.claims();
        let mut held = 0;
        for id in ids {
            if let Some(claim) = claims.get_mut(id) {
                claim.until = claim.until.max(until);
                held += 1;
            }
        }
        Ok(held)
    }

    fn lease(&self) -> std::time::Duration {
        self.lease
    }

    async fn save_progress(&self, n: &Notification) -> StoreResult<()> {
        let claimed_at = self.claims().get_mut(&n.id).map(|claim| {
            claim.saving = true;
            claim.queue_key.clone()
        });
        // Marked `saving` before the record is written: from here on the API shows the record
        // as stored, not as `sending` (a failed save leaves it claimed until the next start).
        let (writes, requeued_at) = save_writes(n, claimed_at);
        // The claim goes only once the save is in sled: until then, signals leave it alone
        // and claims skip its queue entries.
        let erased = self.saver.apply(&n.id, writes).await?;
        self.claims().remove(&n.id);
        if let Some(qk) = requeued_at.filter(|_| !erased) {
            self.scan_from.queued(&qk);
            self.queue_depth.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn edit_notification(&self, id: &str, edit: NotificationEdit) -> StoreResult<Edited> {
        let (edited, queued_at) = {
            let claims = self.claims();
            if claims.contains_key(id) {
                return Ok(Edited::Claimed);
            }
            let nkey = key("n/", &[id.as_bytes()]);
            let Some(old) = self.get::<Notification>(&nkey)? else {
                return Ok(Edited::Missing);
            };
            let mut n = old.clone();
            edit(&mut n);
            n.id = old.id.clone();
            if n == old {
                return Ok(Edited::Done(Box::new(n)));
            }
            let mut batch = sled::Batch::default();
            batch.insert(nkey, encode(&n));
            for k in message_index_keys(&n) {
                batch.insert(k, n.id.as_bytes());
            }
            let (before, after) = (old.queue_due(), n.queue_due());
            let mut queued_at = None;
            if before != after {
                if let Some(due) = before {
                    batch.remove(queue_key(due, id));
                }
                if let Some(due) = after {
                    let qk = queue_key(due, id);
                    batch.insert(qk.clone(), &[][..]);
                    queued_at = Some(qk);
                }
            }
            self.tree.apply_batch(batch).map_err(io)?;
            if before.is_some() && after.is_none() {
                self.queue_depth.fetch_sub(1, Ordering::Relaxed);
            } else if before.is_none() && after.is_some() {
                self.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
            (n, queued_at)
        };
        // After the claims lock is let go: claims take the scan start's lock first.
        if let Some(qk) = &queued_at {
            self.scan_from.queued(qk);
        }
        self.durable().await?;
        Ok(Edited::Done(Box::new(edited)))
    }

    async fn find_by_message_id(
        &self,
        channel: ChannelKind,
        message_id: &str,
    ) -> StoreResult<Option<String>> {
        Ok(self
            .tree
            .get(message_key(channel, message_id))
            .map_err(io)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        let from = self.scan_from.lock();
        let claims = self.claims();
        for item in self.tree.range(from.clone()..b"q0".to_vec()) {
            let (k, _) = item.map_err(io)?;
            if claims.contains_key(String::from_utf8_lossy(&k[10..]).as_ref()) {
                continue;
            }
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&k[2..10]);
            return Ok(DateTime::from_timestamp_millis(
                u64::from_be_bytes(ms) as i64
            ));
        }
        Ok(None)
    }

    async fn queue_depth(&self) -> StoreResult<u64> {
        Ok(self.queue_depth.load(Ordering::Relaxed).max(0) as u64)
    }

    async fn channel_states(&self) -> StoreResult<BTreeMap<ChannelKind, ChannelStatus>> {
        let mut out = BTreeMap::new();
        for item in self.tree.scan_prefix(b"s/") {
            let (k, v) = item.map_err(io)?;
            let name = String::from_utf8_lossy(&k[2..]).into_owned();
            if let Ok(kind) = name.parse::<ChannelKind>() {
                out.insert(kind, decode(&k, &v)?);
            }
        }
        Ok(out)
    }

    async fn save_channel_state(
        &self,
        kind: ChannelKind,
        status: &ChannelStatus,
    ) -> StoreResult<()> {
        self.tree
            .insert(key("s/", &[kind.as_str().as_bytes()]), encode(status))
            .map_err(io)?;
        self.durable().await
    }

    async fn update_contact(&self, id: &str, edit: ContactEdit) -> StoreResult<Option<Contact>> {
        let contact = {
            let _guard = self.stripe(id);
            let ckey = key("c/", &[id.as_bytes()]);
            let Some(old) = self.get::<Contact>(&ckey)? else {
                return Ok(None);
            };
            let mut contact = old.clone();
            edit(&mut contact);
            contact.id = id.to_string();
            let mut batch = sled::Batch::default();
            self.write_contact(&mut batch, Some(&old), &contact);
            self.tree.apply_batch(batch).map_err(io)?;
            contact
        };
        self.durable().await?;
        Ok(Some(contact))
    }

    async fn find_contacts_by_address(
        &self,
        channel: ChannelKind,
        address: &str,
    ) -> StoreResult<Vec<Contact>> {
        let prefix = address_prefix(channel, address);
        let mut contacts = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, _) = item.map_err(io)?;
            let id = &k[prefix.len()..];
            if let Some(c) = self.get::<Contact>(&key("c/", &[id]))? {
                if c.address(channel) == Some(address) {
                    contacts.push(c);
                }
            }
        }
        Ok(contacts)
    }

    async fn kv_get(&self, namespace: &str, k: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(kv_key(namespace, k))
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    async fn kv_put(&self, namespace: &str, k: &str, value: &[u8]) -> StoreResult<()> {
        self.tree.insert(kv_key(namespace, k), value).map_err(io)?;
        self.durable().await
    }

    async fn kv_insert_new(&self, namespace: &str, k: &str, value: &[u8]) -> StoreResult<bool> {
        let inserted = self
            .tree
            .compare_and_swap(kv_key(namespace, k), None as Option<&[u8]>, Some(value))
            .map_err(io)?
            .is_ok();
        if inserted {
            self.durable().await?;
        }
        Ok(inserted)
    }

    async fn kv_put_relaxed(&self, namespace: &str, k: &str, value: &[u8]) -> StoreResult<()> {
        self.tree.insert(kv_key(namespace, k), value).map_err(io)?;
        Ok(())
    }

    async fn kv_update(
        &self,
        namespace: &str,
        k: &str,
        edit: KvEdit,
        durability: Durability,
    ) -> StoreResult<Option<Vec<u8>>> {
        // sled's compare-and-swap loop: `edit` runs again if the record changed meanwhile.
        let after = self
            .tree
            .update_and_fetch(kv_key(namespace, k), edit)
            .map_err(io)?
            .map(|v| v.to_vec());
        if durability == Durability::Durable {
            self.durable().await?;
        }
        Ok(after)
    }

    async fn kv_delete(&self, namespace: &str, k: &str) -> StoreResult<()> {
        self.tree.remove(kv_key(namespace, k)).map_err(io)?;
        self.durable().await
    }

    async fn kv_delete_relaxed(&self, namespace: &str, k: &str) -> StoreResult<()> {
        self.tree.remove(kv_key(namespace, k)).map_err(io)?;
        Ok(())
    }

    async fn kv_scan(&self, namespace: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let start = kv_key(namespace, prefix);
        let skip = kv_key(namespace, "").len();
        // A namespace may hold many records (provider events seen, opt-in tokens).
        blocking(|| {
            self.tree
                .scan_prefix(&start)
                .map(|item| {
                    let (k, v) = item.map_err(io)?;
                    Ok((String::from_utf8_lossy(&k[skip..]).into_owned(), v.to_vec()))
                })
                .collect()
        })
    }

    async fn flush(&self) -> StoreResult<()> {
        // Called at shutdown: leave the queue's size for the next start, so a restart on a
        // long queue doesn't count it. `open` removes it again, so a crash never leaves a
        // stale one behind. Claims still held keep their queue entries: they count too.
        let depth = self.queue_depth.load(Ordering::Relaxed).max(0) + self.claims().len() as i64;
        self.tree
            .insert(QUEUE_DEPTH_KEY, &depth.to_be_bytes())
            .map_err(io)?;
        self.db.flush_async().await.map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh store in `dir` holding the contact "ana" (WhatsApp +48600100200), made at `at`.
    async fn store_with_ana(dir: &Path, at: Timestamp) -> SledStore {
        let store = SledStore::open(&dir.join("db"), 8).unwrap();
        store
            .upsert_contact("ana", &patch_whatsapp("+48600100200"), at)
            .await
            .unwrap();
        store
    }

    fn patch_whatsapp(number: &str) -> ContactPatch {
        ContactPatch {
            whatsapp: Some(number.parse().expect("an E.164 number")),
            ..ContactPatch::default()
        }
    }

    #[tokio::test]
    async fn a_store_with_the_one_contact_address_index_is_migrated_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let now = Utc::now();
        {
            // What an earlier version left: two contacts on one number, `a/` naming the last.
            let store = store_with_ana(dir.path(), now).await;
            store
                .upsert_contact("ana-work", &patch_whatsapp("+48600100200"), now)
                .await
                .unwrap();
            let mut batch = sled::Batch::default();
            for item in store.tree.scan_prefix(b"A/") {
                batch.remove(item.unwrap().0);
            }
            batch.remove(ADDRESS_INDEX_KEY);
            batch.insert(key("a/", &[b"whatsapp", b"+48600100200"]), &b"ana-work"[..]);
            store.tree.apply_batch(batch).unwrap();
            store.flush().await.unwrap();
        }
        let store = reopen(&path).await;
        let found: Vec<String> = store
            .find_contacts_by_address(ChannelKind::Whatsapp, "+48600100200")
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(found, ["ana", "ana-work"]);
        assert_eq!(store.tree.scan_prefix(b"a/").count(), 0);
        assert!(store.tree.contains_key(ADDRESS_INDEX_KEY).unwrap());
    }

    fn sample_notification(id: &str, now: Timestamp) -> Notification {
        Notification {
            idempotency_key: Some("key-1".into()),
            ..super::super::suite::sample_notification(id, now)
        }
    }

    /// Accepts sample notifications with these ids (no key, no contact patch).
    async fn accept_all(store: &SledStore, ids: &[&str], now: Timestamp) {
        for id in ids {
            let new = NewNotification {
                notification: sample_notification(id, now),
                contact_patch: None,
                idempotency: None,
            };
            store.accept(new, now).await.unwrap();
        }
    }

    /// `n` accepted with the idempotency key `key` (fingerprint "f1").
    fn keyed(n: Notification, key: &str) -> NewNotification {
        NewNotification {
            notification: n,
            contact_patch: None,
            idempotency: Some(super::super::IdempotencyKey {
                key: key.into(),
                fingerprint: "f1".into(),
            }),
        }
    }

    /// A new accept with `key` and the same body is answered with `id`, the first one's.
    async fn assert_key_answers(store: &SledStore, key: &str, id: &str, now: Timestamp) {
        let again = keyed(sample_notification("again", now), key);
        assert_eq!(
            store.accept(again, now).await.unwrap(),
            AcceptOutcome::Duplicate { id: id.into() }
        );
    }

    #[tokio::test]
    async fn notifications_only_in_the_journal_are_reapplied_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let now = Utc::now();
        // The journal as a crashed run leaves it: accepted (on disk) but lost by sled.
        {
            let scratch = sled::Config::new().temporary(true).open().unwrap();
            let journal =
                Journal::start(&path.with_extension("journal"), scratch, journal::Raw).unwrap();
            let record = JournalRecord {
                new: NewNotification {
                    contact_patch: Some(patch_whatsapp("+48600100200")),
                    ..keyed(sample_notification("n1", now), "key-1")
                },
                at: now,
            };
            journal.append(encode(&record)).await.unwrap();
        }
        let store = SledStore::open(&path, 8).unwrap();
        let n = store
            .get_notification("n1")
            .await
            .unwrap()
            .expect("replayed");
        assert_eq!(n.status, Status::Queued);
        assert_eq!(store.queue_depth().await.unwrap(), 1);
        let due = store.claim_due(now, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        let contact = store
            .get_contact("ana")
            .await
            .unwrap()
            .expect("contact from the patch");
        assert_eq!(contact.whatsapp.as_deref(), Some("+48600100200"));
        assert_key_answers(&store, "key-1", "n1", now).await;
    }

    /// Claims live in memory: a crash leaves a claimed notification on the queue (sent again,
    /// at least once), while one saved as done stays off it. (That a claim is never handed
    /// out twice is in the store suite.)
    #[tokio::test]
    async fn a_crash_leaves_a_claimed_notification_on_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let now = Utc::now();
        {
            let store = SledStore::open(&path, 8).unwrap();
            accept_all(&store, &["n1", "n2"], now).await;
            let first = store.claim_due(now, 1).await.unwrap();
            assert_eq!(first[0].id, "n1");
            let mut sent = store.claim_due(now, 10).await.unwrap().remove(0);
            sent.status = Status::Sent;
            sent.next_attempt_at = None;
            store.save_progress(&sent).await.unwrap();
            assert_eq!(store.tree.scan_prefix(b"q/").count(), 1);
            store.db.flush().unwrap();
            // A crash now: n1 was claimed, never saved.
        }
        let store = reopen(&path).await;
        let again = store.claim_due(Utc::now(), 10).await.unwrap();
        assert_eq!(
            again.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["n1"]
        );
        assert_eq!(
            store.get_notification("n2").await.unwrap().unwrap().status,
            Status::Sent
        );
    }

    /// Accepts are applied as single writes, record first; a crash can leave sled with the
    /// record but not what followed it. The journal's replay must put those back, or the
    /// notification would never be sent (no queue entry), be missed by an erasure (no index
    /// entry), or be accepted twice (no idempotency key).
    #[tokio::test]
    async fn a_record_recovered_without_its_queue_entry_is_completed_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let now = Utc::now();
        let journal_record = |id: &str, key: &str| JournalRecord {
            new: keyed(sample_notification(id, now), key),
            at: now,
        };
        {
            // What sled recovered: three records and nothing after them. n1 is as accepted;
            // n2 was tried and waits for a retry (its own save queues it); n3 was erased.
            let db = sled::Config::new().path(&path).open().unwrap();
            let tree = db.open_tree("lifeboat").unwrap();
            tree.insert(key("n/", &[b"n1"]), encode(&sample_notification("n1", now)))
                .unwrap();
            let mut tried = sample_notification("n2", now);
            tried.attempts.push(crate::model::Attempt::new(
                ChannelKind::Whatsapp,
                now,
                crate::model::Outcome::Retry,
            ));
            tried.next_attempt_at = Some(now + chrono::Duration::hours(1));
            tree.insert(key("n/", &[b"n2"]), encode(&tried)).unwrap();
            let mut erased = sample_notification("n3", now);
            erased.status = Status::Cancelled;
            erased.contact_id = String::new();
            erased.text = String::new();
            tree.insert(key("n/", &[b"n3"]), encode(&erased)).unwrap();
            db.flush().unwrap();
            let scratch = sled::Config::new().temporary(true).open().unwrap();
            let journal =
                Journal::start(&path.with_extension("journal"), scratch, journal::Raw).unwrap();
            for (id, key) in [("n1", "key-1"), ("n2", "key-2"), ("n3", "key-3")] {
                journal
                    .append(encode(&journal_record(id, key)))
                    .await
                    .unwrap();
            }
        }
        let store = SledStore::open(&path, 8).unwrap();
        assert_eq!(
            store.queue_depth().await.unwrap(),
            1,
            "only n1 is put back on the queue"
        );
        let due = store.claim_due(now, 10).await.unwrap();
        assert_eq!(
            due.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["n1"]
        );
        let (listed, _) = store
            .list_notifications(&ListQuery {
                contact_id: Some("ana".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["n1"],
            "n1 is back in its contact's index; the erased n3 is not"
        );
        assert_key_answers(&store, "key-1", "n1", now).await;
        let erased = store.get_notification("n3").await.unwrap().unwrap();
        assert_eq!(erased.status, Status::Cancelled);
        assert_eq!(erased.contact_id, "");
    }

    /// Saves are applied as single writes, and sled recovers a prefix of them after a crash:
    /// whatever prefix survives, the notification must still be on the queue unless its
    /// record says it is done (else it would never be sent).
    #[test]
    fn every_prefix_of_a_save_leaves_the_notification_queued_or_done() {
        let now = Utc::now();
        let accepted = sample_notification("n1", now);
        let claimed_at = queue_key(now, "n1");
        let mut retry = accepted.clone();
        retry.next_attempt_at = Some(now + chrono::Duration::seconds(30));
        let mut sent = accepted.clone();
        sent.status = Status::Sent;
        sent.next_attempt_at = None;
        let mut same_entry = accepted.clone();
        same_entry.attempts.clear();
        for saved in [retry, sent, same_entry] {
            let (writes, _) = save_writes(&saved, Some(claimed_at.clone()));
            for cut in 0..=writes.len() {
                let mut tree: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
                tree.insert(key("n/", &[b"n1"]), encode(&accepted));
                tree.insert(claimed_at.clone(), Vec::new());
                for (k, v) in writes[..cut].iter().cloned() {
                    match v {
                        Some(v) => tree.insert(k, v),
                        None => tree.remove(&k),
                    };
                }
                let record: Notification = decode(b"n/n1", &tree[&key("n/", &[b"n1"])]).unwrap();
                let queued = tree
                    .keys()
                    .any(|k| k.starts_with(b"q/") && k.ends_with(b"n1"));
                assert!(
                    queued || record.queue_due().is_none(),
                    "after {cut} of {} writes saving {:?}, n1 is neither queued nor done",
                    writes.len(),
                    saved.status
                );
            }
        }
    }

    /// The store's threads (journal committer and checkpoint, saver, group committer) end
    /// with it: once it is dropped, nothing holds the data folder and it opens again at once.
    #[tokio::test]
    async fn a_dropped_store_has_stopped_its_threads_and_opens_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let now = Utc::now();
        for round in 0..20 {
            let store = match SledStore::open(&path, 8) {
                Ok(store) => store,
                Err(e) => panic!("round {round}: {e}"),
            };
            let id = format!("n{round}");
            accept_all(&store, &[id.as_str()], now).await;
            store.flush().await.unwrap();
            drop(store);
        }
        let store = SledStore::open(&path, 8).unwrap();
        assert_eq!(store.queue_depth().await.unwrap(), 20);
    }

    async fn reopen(path: &Path) -> SledStore {
        loop {
            match SledStore::open(path, 8) {
                Ok(store) => return store,
                Err(StoreError::Locked { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn the_queue_depth_is_kept_across_a_clean_stop_and_counted_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let now = Utc::now();
        {
            let store = SledStore::open(&path, 8).unwrap();
            for id in ["n1", "n2", "n3"] {
                let mut n = sample_notification(id, now);
                n.idempotency_key = None;
                let new = NewNotification {
                    notification: n,
                    contact_patch: None,
                    idempotency: None,
                };
                assert_eq!(
                    store.accept(new, now).await.unwrap(),
                    AcceptOutcome::Created
                );
            }
            assert_eq!(store.claim_due(now, 1).await.unwrap().len(), 1);
            assert_eq!(store.queue_depth().await.unwrap(), 2);
            store.flush().await.unwrap();
        }
        // Clean stop: the saved size, plus the claim left in flight, now back on the queue.
        let store = reopen(&path).await;
        assert_eq!(store.queue_depth().await.unwrap(), 3);
        let mut n = sample_notification("n4", now);
        n.idempotency_key = None;
        let new = NewNotification {
            notification: n,
            contact_patch: None,
            idempotency: None,
        };
        store.accept(new, now).await.unwrap();
        drop(store);
        // No flush (a crash): the saved size was removed at open, so the queue is counted.
        let store = reopen(&path).await;
        assert_eq!(store.queue_depth().await.unwrap(), 4);
    }

    #[tokio::test]
    /// Durable kv writes survive reopening (round trips and scans are in the store suite).
    async fn kv_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
            store.kv_put("optin", "tok1", b"ana").await.unwrap();
            store.kv_put("optin", "tok2", b"bob").await.unwrap();
            store.kv_delete("optin", "tok2").await.unwrap();
        }
        let store = reopen(&dir.path().join("db")).await;
        assert_eq!(
            store.kv_get("optin", "tok1").await.unwrap().as_deref(),
            Some(&b"ana"[..])
        );
        assert_eq!(store.kv_get("optin", "tok2").await.unwrap(), None);
        assert_eq!(store.kv_get("other", "tok1").await.unwrap(), None);
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod retention_tests;
