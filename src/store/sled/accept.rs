//! The accept path: a group of accepts is checked (idempotency keys) and applied by the
//! journal's committer thread, the single writer of accepts ([`AcceptStage`]); at open, the
//! journal's replay puts back what a crash took from sled.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::claims::FirstQueued;
use super::claims::ScanFrom;
use super::keys::{decode, encode, key, queue_key_of};
use super::{io, lock_stripe, write_contact, SledStore};
use crate::model::{Contact, Notification, Status, Timestamp};
use crate::store::journal::{self, Journal, JournalError, Stage};
use crate::store::{
    AcceptOutcome, NewNotification, StoreError, StoreResult, IDEMPOTENCY_WINDOW_SECS,
};

/// An idempotency key's record (`k/`): the notification it created, the body's fingerprint,
/// and when it was first used.
#[derive(Serialize, Deserialize)]
pub(in crate::store) struct IdemRecord {
    pub(super) id: String,
    pub(super) fingerprint: String,
    pub(in crate::store) at: Timestamp,
}

/// What the accept journal holds for one accepted notification.
#[derive(Serialize, Deserialize)]
pub(super) struct JournalRecord {
    pub(super) new: NewNotification,
    pub(super) at: Timestamp,
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

impl SledStore {
    /// Re-applies accepted notifications that the journal holds but sled lost in a crash,
    /// flushes sled, and starts a fresh journal.
    pub(super) fn replay_journal(&self, dir: &Path) -> StoreResult<()> {
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

    /// An accept is applied as single writes, record first and queue entry last (see
    /// [`AcceptStage`]), and sled recovers a prefix of its writes: after a crash the record can
    /// be there without the writes that followed it. For a notification still as accepted
    /// (queued, never tried), puts back what is missing: its contact index entry, its
    /// idempotency key and its queue entry. Says whether something was missing.
    pub(super) fn complete_accepted(
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
        let qkey = queue_key_of(stored, stored.next_attempt_at.unwrap_or(record.at));
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
    pub(super) fn write_accepted(
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
        let mut first_queued = FirstQueued::default();
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
                    first_queued.note(&queue_key_of(n, n.next_attempt_at.unwrap_or(at)));
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
                self.scan_from.queued_first(&first_queued);
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
    writes.push((queue_key_of(n, due), Vec::new()));
    // The key last: a key found in the store always has a queued notification behind it.
    writes.extend(idem_record);
    Ok(None)
}
