//! Claims are leases kept in memory, not written: a claimed notification keeps its queue
//! entry, which the claim's save replaces, so a crash leaves it on the queue as it was (sent
//! again: at least once) and a claim costs no write. A lease that ends without its save makes
//! the notification claimable again from that entry. Scans of the queue skip claimed entries
//! and start after the run of claimed ones at its head ([`ScanFrom`]). The API shows a claimed
//! notification as `sending` until its save starts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use chrono::Utc;

use super::keys::{
    decode, encode, key, queue_end, queue_entry_due, queue_entry_id, queue_entry_lane, queue_key,
    queue_key_of, queue_prefix,
};
use super::{io, SledStore};
use crate::model::{Notification, Status, Timestamp};
use crate::store::{ClaimLimits, Lane, StoreResult};

/// Where scans of each lane of the queue start: every queue entry of the lane before this key
/// is claimed. Claimed notifications keep their entries until their save, so without it every
/// claim would walk past all of them again (up to `server.concurrency` and more). A claim moves
/// it past what it finds claimed at the head of the lane; every write that queues an entry
/// before it moves it back (after the entry is in sled, under the same lock as the claim's
/// scan, so no entry is ever behind it unclaimed).
pub(super) struct ScanFrom(Mutex<BTreeMap<Lane, Vec<u8>>>);

impl ScanFrom {
    pub(super) fn new() -> ScanFrom {
        ScanFrom(Mutex::new(
            Lane::ALL
                .into_iter()
                .map(|lane| (lane, queue_prefix(lane).to_vec()))
                .collect(),
        ))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Lane, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A queue entry `k` was written: scans must see it.
    pub(super) fn queued(&self, k: &[u8]) {
        let mut from = self.lock();
        back_to(&mut from, k);
    }
}

/// The first queue entry of each lane among a group of writes (accepts, an import), for
/// [`ScanFrom::queued_first`].
#[derive(Default)]
pub(super) struct FirstQueued(BTreeMap<Lane, Vec<u8>>);

impl FirstQueued {
    pub(super) fn note(&mut self, k: &[u8]) {
        let first = self
            .0
            .entry(queue_entry_lane(k))
            .or_insert_with(|| k.to_vec());
        if k < first.as_slice() {
            *first = k.to_vec();
        }
    }
}

impl ScanFrom {
    /// A group of queue entries was written: scans must see them.
    pub(super) fn queued_first(&self, first: &FirstQueued) {
        let mut from = self.lock();
        for k in first.0.values() {
            back_to(&mut from, k);
        }
    }
}

/// Moves the scan start of `k`'s lane back to `k` if it is past it.
fn back_to(from: &mut BTreeMap<Lane, Vec<u8>>, k: &[u8]) {
    let start = from
        .entry(queue_entry_lane(k))
        .or_insert_with(|| b"q/".to_vec());
    if k < start.as_slice() {
        *start = k.to_vec();
    }
}

/// A queue entry a claim's scan passed, and whether it was unclaimed.
type Seen = (Vec<u8>, bool);

/// A claimed notification (kept in memory, by id).
pub(super) struct Claim {
    /// The queue entry it was claimed from.
    pub(super) queue_key: Vec<u8>,
    /// Its save has started: the record may already be the saved one, so the API shows the
    /// record as it is, not as `sending`.
    pub(super) saving: bool,
    /// When the lease ends unless renewed: then the notification is claimable again.
    pub(super) until: Timestamp,
}

impl Claim {
    /// Whether the lease has ended by `now` (a claim whose save started never ends: the
    /// save releases it).
    fn ended(&self, now: Timestamp) -> bool {
        !self.saving && self.until <= now
    }
}

impl SledStore {
    /// Versions before claims were kept in memory wrote them (`f/`): puts what they left back
    /// on the queue, due now.
    pub(super) fn release_stale_claims(&self) -> StoreResult<()> {
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
                batch.insert(queue_key_of(&n, now), &[][..]);
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
    pub(super) fn notification_as_seen(&self, id: &str) -> StoreResult<Option<Notification>> {
        let Some(mut n) = self.get::<Notification>(&key("n/", &[id.as_bytes()]))? else {
            return Ok(None);
        };
        let sending = self.claims().get(id).is_some_and(|c| !c.saving);
        if n.status == Status::Queued && sending {
            n.status = Status::Sending;
        }
        Ok(Some(n))
    }

    pub(super) fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`crate::store::Store::claim_lanes`]: leases the earliest due notifications, at most
    /// what `limits` allows from each lane, after taking back the leases that ended without
    /// their save.
    pub(super) fn claim(
        &self,
        now: Timestamp,
        limits: &ClaimLimits,
    ) -> StoreResult<Vec<Notification>> {
        let due_by = now + chrono::Duration::milliseconds(1);
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
                back_to(&mut from, &claim.queue_key);
                self.queue_depth.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Each lane's due entries from its scan start, up to as many unclaimed ones as the
        // lane may give (claimed ones are passed over). (A test clock may go back: then there
        // is nothing before the end to scan.)
        let mut seen: Vec<(Lane, Vec<Seen>)> = Vec::new();
        for lane in Lane::ALL {
            let want = limits.of(lane);
            let start = from
                .get(&lane)
                .cloned()
                .unwrap_or_else(|| queue_prefix(lane).to_vec());
            let end = queue_key(lane, due_by, "");
            if want == 0 || start >= end {
                continue;
            }
            let mut entries = Vec::new();
            let mut free = 0;
            for item in self.tree.range(start..end) {
                let (qk, _) = item.map_err(io)?;
                let unclaimed = !claims.contains_key(&queue_entry_id(&qk));
                entries.push((qk.to_vec(), unclaimed));
                if unclaimed {
                    free += 1;
                    if free >= want {
                        break;
                    }
                }
            }
            seen.push((lane, entries));
        }
        // The earliest due of those, across lanes, up to the total.
        let mut candidates: Vec<(Option<Timestamp>, String)> = seen
            .iter()
            .flat_map(|(_, entries)| entries.iter())
            .filter(|(_, unclaimed)| *unclaimed)
            .map(|(qk, _)| (queue_entry_due(qk), queue_entry_id(qk)))
            .collect();
        candidates.sort();
        candidates.truncate(limits.total);
        let picked: HashMap<String, usize> = candidates
            .into_iter()
            .enumerate()
            .map(|(rank, (_, id))| (id, rank))
            .collect();

        let mut claimed = Vec::new();
        let mut orphans = sled::Batch::default();
        let mut orphaned = false;
        for (lane, entries) in seen {
            for (qk, unclaimed) in entries {
                let id = queue_entry_id(&qk);
                if unclaimed && !picked.contains_key(&id) {
                    // Left for a later claim: the lane's scan start stays before it.
                    break;
                }
                if unclaimed {
                    if let std::collections::hash_map::Entry::Vacant(slot) = claims.entry(id) {
                        match self.get::<Notification>(&key("n/", &[slot.key().as_bytes()]))? {
                            Some(n) => {
                                slot.insert(Claim {
                                    queue_key: qk.clone(),
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
                }
                // Every entry passed so far is claimed (or dropped): the scan start follows,
                // just after `qk` (the smallest key greater than it).
                let mut next = qk;
                next.push(0);
                from.insert(lane, next);
            }
        }
        if orphaned {
            // A batch takes sled's exclusive lock: only when there is something to drop.
            self.tree.apply_batch(orphans).map_err(io)?;
        }
        self.queue_depth
            .fetch_sub(claimed.len() as i64, Ordering::Relaxed);
        // Earliest due first, as the claim picked them.
        claimed.sort_by_key(|n: &Notification| picked.get(&n.id).copied());
        Ok(claimed)
    }

    /// [`crate::store::Store::renew_claims`]: extends the leases still held among `ids`.
    pub(super) fn renew(&self, ids: &[String], now: Timestamp) -> usize {
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        let mut claims = self.claims();
        let mut held = 0;
        for id in ids {
            if let Some(claim) = claims.get_mut(id) {
                claim.until = claim.until.max(until);
                held += 1;
            }
        }
        held
    }

    /// [`crate::store::Store::next_due`]: when the earliest unclaimed queue entry is due.
    pub(super) fn first_unclaimed_due(&self) -> StoreResult<Option<Timestamp>> {
        let from = self.scan_from.lock();
        let claims = self.claims();
        let mut first: Option<Timestamp> = None;
        for lane in Lane::ALL {
            let start = from
                .get(&lane)
                .cloned()
                .unwrap_or_else(|| queue_prefix(lane).to_vec());
            for item in self.tree.range(start..queue_end(lane)) {
                let (k, _) = item.map_err(io)?;
                if claims.contains_key(&queue_entry_id(&k)) {
                    continue;
                }
                if let Some(due) = queue_entry_due(&k) {
                    first = Some(first.map_or(due, |f| f.min(due)));
                }
                break;
            }
        }
        Ok(first)
    }
}
