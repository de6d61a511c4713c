//! Erasure of a contact (GDPR): what it removes, what it leaves (an anonymous tombstone, the
//! bare records of its notifications), and how a save racing it is emptied ([`Erasing`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use lifeboat_channel::ChannelKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::{
    address_key, decode, encode, key, kv_key, message_index_keys, queue_key, queue_key_of,
};
use super::saver::Write;
use super::{io, SledStore};
use crate::model::{Contact, Notification, Status, Timestamp};
use crate::store::StoreResult;

/// Notifications whose contact was erased while they were claimed (being sent). The erasure
/// empties their record at once, but the worker's save comes later and carries the content
/// and contact id the erasure removed; the saver empties such a save instead of applying it
/// as it is. The saver holds the lock while it applies a group, and an erasure from reading
/// the contact's notifications to applying its writes, so a save is either applied before the
/// erasure reads the record (whose index entries and queue entry it then removes) or sees the
/// id here.
pub(super) type Erasing = Arc<Mutex<std::collections::HashSet<String>>>;

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
pub(super) fn erased_save(writes: Vec<Write>) -> StoreResult<Vec<Write>> {
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

#[derive(Serialize, Deserialize)]
pub(super) struct Tombstone {
    pub(super) erased_at: Timestamp,
    pub(super) consent_changes: usize,
}

impl SledStore {
    /// [`crate::store::Store::erase_contact`] but for the flush: removes the contact, its
    /// addresses, its consent history and what other modules keep about it, empties its
    /// notifications (off the queue, without their message-id index), leaves a tombstone.
    /// Says whether there was anything to erase.
    pub(super) fn erase(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
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
                // Its entry, in its lane (or where versions before lanes wrote it).
                let mut entries = Vec::new();
                if let Some(due) = n.queue_due() {
                    entries.push(queue_key_of(&n, due));
                    entries.push(queue_key(crate::store::Lane::Other, due, &n.id));
                    entries.dedup();
                }
                for qk in entries {
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
        let whatsapp = old.as_ref().and_then(|c| c.address(ChannelKind::Whatsapp));
        let mentions = self.erase_mentions(id, whatsapp, &mut batch)?;
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
    }

    /// Adds to an erasure's `batch` what other modules keep about contact `id`: its marketing
    /// cap record, opt-in tokens and the WhatsApp marketing hold (131049) on its number
    /// `whatsapp` are removed, and its entries in the WhatsApp tier ledger are renamed to an
    /// anonymous id (the person still counts toward the 24 h tier: they were reached).
    /// Returns how many records it changed.
    fn erase_mentions(
        &self,
        id: &str,
        whatsapp: Option<&str>,
        batch: &mut sled::Batch,
    ) -> StoreResult<usize> {
        let mut changed = 0;
        if let Some(number) = whatsapp {
            // Under the number's digest, and under the number itself (earlier versions).
            let holds = crate::store::namespaces::WHATSAPP_MARKETING_HOLDS;
            for k in [
                crate::store::namespaces::marketing_hold_key(number),
                number.to_string(),
            ] {
                let k = kv_key(holds, &k);
                if self.tree.contains_key(&k).map_err(io)? {
                    batch.remove(k);
                    changed += 1;
                }
            }
        }
        let caps = kv_key(crate::store::namespaces::POLICY_MARKETING_SENDS, id);
        if self.tree.contains_key(&caps).map_err(io)? {
            batch.remove(caps);
            changed += 1;
        }
        let optin = kv_key(crate::store::namespaces::OPTIN, "");
        for item in self.tree.scan_prefix(&optin) {
            let (k, v) = item.map_err(io)?;
            let token: Option<crate::model::OptinToken> = serde_json::from_slice(&v).ok();
            if token.is_some_and(|t| t.contact_id == id) {
                batch.remove(k);
                changed += 1;
            }
        }
        let tier = kv_key(crate::store::namespaces::POLICY_TIER, "whatsapp/");
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
                    batch.insert(kv_key(crate::store::namespaces::POLICY_TIER, &renamed), v);
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
