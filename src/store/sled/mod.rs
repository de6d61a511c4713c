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
//! | `q/`, `qw/`, `qt/`, `ql/`, `qe/` | due time (ms, u64 BE), notification id | (the queue, earliest first, one range per lane: `q/` for [`crate::store::Lane::Other`], `q<letter>/` for the lane of WhatsApp, Telegram, LINE, email) |
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
//!
//! Where each job lives:
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the [`SledStore`] type, opening a data folder (with the address-index migration), helpers every part uses |
//! | `keys.rs` | the key codec (the table above) and the JSON value codec |
//! | `claims.rs` | claims as in-memory leases, [`ScanFrom`], the `sending` view, releasing `f/` claims of old versions |
//! | `saver.rs` | the saver thread that applies the dispatcher's saves, and the crash-safe order of a save's writes |
//! | `accept.rs` | accept staging (the journal's committer applies a group), journal replay at open |
//! | `erase.rs` | erasure of a contact, and [`Erasing`] (saves racing an erasure) |
//! | `purge.rs` | the retention purge's deletions (the rules are in [`super::retention`]) |
//! | `portable.rs` | [`super::portable::Portable`]: export and import for `lifeboat store copy` |
//! | `store_impl.rs` | the [`super::Store`] impl, which puts the parts together |

mod accept;
mod claims;
mod erase;
mod keys;
mod portable;
mod purge;
mod saver;
mod store_impl;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use lifeboat_channel::ChannelKind;
use serde::de::DeserializeOwned;

use self::accept::AcceptStage;
use self::claims::{Claim, ScanFrom};
use self::erase::Erasing;
use self::keys::{address_key, decode, encode, ADDRESS_INDEX_KEY, QUEUE_DEPTH_KEY};
use self::saver::Saver;
use super::group_commit::GroupCommit;
use super::journal::Journal;
use super::{Lane, StoreError, StoreResult};
use crate::model::Contact;

pub(super) use self::accept::IdemRecord;
pub(super) use self::keys::key;

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
    /// Announced record changes made through this handle ([`Store::records_changed`]).
    records_changed: std::sync::atomic::AtomicU64,
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

/// Puts a contact into `batch`, keeping the address index (`A/`) in step with its
/// addresses. The caller holds the contact's stripe.
pub(super) fn write_contact(batch: &mut sled::Batch, old: Option<&Contact>, new: &Contact) {
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

pub(super) fn lock_stripe<'a>(
    stripes: &'a [Mutex<()>],
    name: &str,
) -> std::sync::MutexGuard<'a, ()> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let i = (h.finish() as usize) % stripes.len();
    stripes[i].lock().unwrap_or_else(|p| p.into_inner())
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
            records_changed: Default::default(),
        };
        store.migrate_address_index()?;
        store.replay_journal(&path.with_extension("journal"))?;
        // A clean stop leaves the queue's size behind; after a crash it is counted (slower).
        let depth = match store.tree.remove(QUEUE_DEPTH_KEY).map_err(io)? {
            Some(saved) if saved.len() == 8 => {
                i64::from_be_bytes(saved.as_ref().try_into().expect("8 bytes"))
            }
            _ => Lane::ALL
                .iter()
                .map(|&lane| store.tree.scan_prefix(keys::queue_prefix(lane)).count() as i64)
                .sum(),
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

    /// How many records have keys starting with `prefix` (`lifeboat bench --retention`).
    pub fn records_under(&self, prefix: &[u8]) -> usize {
        self.tree.scan_prefix(prefix).count()
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
}

#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
