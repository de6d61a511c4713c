//! The retention purge's deletions in the tree (which records, and when: [`super::super::retention`]).

use chrono::DateTime;

use super::keys::{decode, key, message_index_keys};
use super::{io, SledStore};
use crate::model::{Notification, Timestamp};
use crate::store::retention::{Kind, Rule};
use crate::store::StoreResult;

impl SledStore {
    /// Examines up to `limit` records of `rule` from key `from` and deletes those expired at
    /// `now`. Returns how many it deleted and where the next batch starts (`None`: done).
    pub(in crate::store) fn purge_batch(
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
}

/// When a notification id (a UUIDv7) was made; `None` for other ids.
fn created_at(id: &[u8]) -> Option<Timestamp> {
    let id = uuid::Uuid::try_parse_ascii(id).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(secs as i64, nanos)
}
