//! Tests of sled's own mechanics: journal replay, crashes between writes, the address-index
//! migration at open, reopening a data folder. What every backend must do is in the store
//! suite (`crate::store::suite`).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;
use lifeboat_channel::ChannelKind;

use super::accept::JournalRecord;
use super::keys::{decode, encode, key, queue_key, queue_key_of, ADDRESS_INDEX_KEY};
use super::saver::save_writes;
use super::SledStore;
use crate::model::{ContactPatch, Notification, Status, Timestamp};
use crate::store::journal::{self, Journal};
use crate::store::{AcceptOutcome, ListQuery, NewNotification, Store, StoreError};

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
        ..crate::store::suite::sample_notification(id, now)
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
        idempotency: Some(crate::store::IdempotencyKey {
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
        assert_eq!(store.tree.scan_prefix(b"q").count(), 1);
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
    let claimed_at = queue_key_of(&accepted, now);
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
                .any(|k| k.starts_with(b"q") && k.ends_with(b"n1"));
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

/// A data folder of a version before the queue's lanes: its entries are all under `q/`. They
/// are claimed (from the `Other` lane, which no pacing holds back), and a save or an edit
/// moves them to their channel's lane without leaving the old entry behind.
#[tokio::test]
async fn queue_entries_written_before_lanes_are_claimed_and_moved_on() {
    use crate::store::{ClaimLimits, Lane};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let now = Utc::now();
    {
        let store = SledStore::open(&path, 8).unwrap();
        for id in ["old1", "old2"] {
            let n = sample_notification(id, now);
            assert_ne!(Lane::of(&n), Lane::Other);
            store
                .tree
                .insert(key("n/", &[id.as_bytes()]), encode(&n))
                .unwrap();
            store
                .tree
                .insert(queue_key(Lane::Other, now, id), Vec::<u8>::new())
                .unwrap();
        }
        store.db.flush().unwrap();
    }
    let store = reopen(&path).await;
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    let every_channel_held = ClaimLimits {
        total: 10,
        lanes: Lane::ALL
            .into_iter()
            .filter(|lane| *lane != Lane::Other)
            .map(|lane| (lane, 0))
            .collect(),
    };
    let claimed = store.claim_lanes(now, &every_channel_held).await.unwrap();
    assert_eq!(
        claimed.len(),
        2,
        "old entries are not stranded behind a lane's limit"
    );
    let mut retry = claimed[0].clone();
    retry.next_attempt_at = Some(now + chrono::Duration::seconds(30));
    store.save_progress(&retry).await.unwrap();
    let entries: Vec<Vec<u8>> = store
        .tree
        .scan_prefix(b"q")
        .keys()
        .map(|k| k.unwrap().to_vec())
        .filter(|k| k.ends_with(retry.id.as_bytes()))
        .collect();
    assert_eq!(
        entries,
        vec![queue_key_of(&retry, now + chrono::Duration::seconds(30))]
    );
}
