//! The [`Store`] trait for [`SledStore`]: each operation, using the parts of this module
//! (claims, the saver, the accept journal, erasure).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use lifeboat_channel::ChannelKind;

use super::keys::{
    address_prefix, consent_history_prefix, decode, encode, key, kv_key, message_index_keys,
    message_key, queue_key, queue_key_of, QUEUE_DEPTH_KEY,
};
use super::saver::save_writes;
use super::{blocking, io, SledStore};
use crate::model::{ChannelStatus, Consent, Contact, ContactPatch, Notification, Timestamp};
use crate::store::{
    AcceptOutcome, ClaimLimits, ContactEdit, Durability, Edited, KvEdit, Lane, ListQuery,
    NewNotification, NotificationEdit, Store, StoreResult,
};

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
            super::write_contact(&mut batch, old.as_ref(), &contact);
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
        if !blocking(|| self.erase(id, now))? {
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
            let mut hkey = consent_history_prefix(contact_id, channel);
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
        let prefix = consent_history_prefix(contact_id, channel);
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

    async fn claim_lanes(
        &self,
        now: Timestamp,
        limits: &ClaimLimits,
    ) -> StoreResult<Vec<Notification>> {
        self.claim(now, limits)
    }

    async fn renew_claims(&self, ids: &[String], now: Timestamp) -> StoreResult<usize> {
        Ok(self.renew(ids, now))
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
            if before != after || Lane::of(&old) != Lane::of(&n) {
                if let Some(due) = before {
                    batch.remove(queue_key_of(&old, due));
                    // An entry written before lanes existed.
                    batch.remove(queue_key(Lane::Other, due, id));
                }
                if let Some(due) = after {
                    let qk = queue_key_of(&n, due);
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
        self.first_unclaimed_due()
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
            super::write_contact(&mut batch, Some(&old), &contact);
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

    async fn kv_update_announced(
        &self,
        namespace: &str,
        k: &str,
        edit: KvEdit,
    ) -> StoreResult<Option<Vec<u8>>> {
        // One process: nobody else to tell; this handle's own caches see the count move.
        let after = self
            .kv_update(namespace, k, edit, Durability::Durable)
            .await;
        self.records_changed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        after
    }

    fn records_changed(&self) -> u64 {
        self.records_changed
            .load(std::sync::atomic::Ordering::SeqCst)
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

    async fn kv_scan_page(
        &self,
        namespace: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let within = kv_key(namespace, prefix);
        let skip = kv_key(namespace, "").len();
        let start = kv_key(namespace, if after > prefix { after } else { prefix });
        blocking(|| {
            self.tree
                .range(start..)
                .map(|item| item.map_err(io))
                .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&within)))
                .filter(|item| {
                    item.as_ref()
                        .map_or(true, |(k, _)| &k[skip..] > after.as_bytes())
                })
                .take(limit)
                .map(|item| {
                    let (k, v) = item?;
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

impl SledStore {
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
}
