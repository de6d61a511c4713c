//! Retention and erasure, checked against the sled tree itself.

use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, Utc};
use lifeboat_channel::{Category, ChannelKind};

use super::SledStore;
use crate::model::{Attempt, Consent, ConsentStatus, Outcome};
use crate::model::{ContactPatch, Notification, Status, Timestamp};
use crate::store::journal;
use crate::store::{AcceptOutcome, ListQuery, NewNotification, Store, StoreError};
use crate::store::{IdempotencyKey, Purged, RetentionConfig};

const CONTACT: &str = "contact-7c1f";
const NUMBER: &str = "+48600100200";

async fn store_with_contact(dir: &Path, at: Timestamp) -> Arc<SledStore> {
    let store = SledStore::open(&dir.join("db"), 8).unwrap();
    let patch = ContactPatch {
        whatsapp: Some(NUMBER.parse().unwrap()),
        ..ContactPatch::default()
    };
    store.upsert_contact(CONTACT, &patch, at).await.unwrap();
    Arc::new(store)
}

fn notification(at: Timestamp) -> Notification {
    Notification {
        contact_id: CONTACT.into(),
        category: Category::Marketing,
        expires_at: at + Duration::days(400),
        ..crate::store::suite::sample_notification(&uuid::Uuid::now_v7().to_string(), at)
    }
}

async fn accept(
    store: &SledStore,
    n: Notification,
    key: Option<&str>,
    at: Timestamp,
) -> AcceptOutcome {
    let new = NewNotification {
        notification: n,
        contact_patch: None,
        idempotency: key.map(|k| IdempotencyKey {
            key: k.into(),
            fingerprint: "f1".into(),
        }),
    };
    store.accept(new, at).await.unwrap()
}

/// Accepts a notification at `at`, claims it and saves it as sent on WhatsApp (wamid
/// `wamid.<id>`) at `at`. Returns its id.
async fn sent_at(store: &SledStore, at: Timestamp) -> String {
    let n = notification(at);
    let id = n.id.clone();
    assert_eq!(accept(store, n, None, at).await, AcceptOutcome::Created);
    let mut n = store.claim_due(at, 1).await.unwrap().remove(0);
    assert_eq!(n.id, id);
    n.attempts.push(Attempt {
        provider_message_id: Some(format!("wamid.{id}")),
        ..Attempt::new(ChannelKind::Whatsapp, at, Outcome::Sent)
    });
    n.status = Status::Sent;
    n.channel = Some(ChannelKind::Whatsapp);
    n.next_attempt_at = None;
    n.updated_at = at;
    store.save_progress(&n).await.unwrap();
    id
}

fn purge(store: &SledStore, now: Timestamp) -> Purged {
    store
        .purge_pass(&RetentionConfig::default(), now, || true)
        .unwrap()
        .expect("not stopped")
}

fn count(purged: &Purged, what: &str) -> usize {
    purged
        .iter()
        .find(|(w, _)| *w == what)
        .map(|(_, n)| *n)
        .unwrap()
}

/// Keys of the tree that mention `needle` in their key or value.
fn mentions(store: &SledStore, needle: &[u8]) -> Vec<String> {
    store
        .tree
        .iter()
        .map(|item| item.unwrap())
        .filter(|(k, v)| {
            k.windows(needle.len()).any(|w| w == needle)
                || v.windows(needle.len()).any(|w| w == needle)
        })
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect()
}

async fn listed(store: &SledStore) -> Vec<String> {
    let (list, _) = store
        .list_notifications(&ListQuery {
            contact_id: Some(CONTACT.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    list.into_iter().map(|n| n.id).collect()
}

#[tokio::test]
async fn a_finished_notification_past_retention_is_purged_with_its_index_entries() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let store = store_with_contact(dir.path(), t0).await;
    let old = sent_at(&store, t0).await;
    let newer = sent_at(&store, t0 + Duration::days(5)).await;
    assert_eq!(listed(&store).await, [newer.clone(), old.clone()]);

    // 29 days on: nothing is old enough.
    assert_eq!(
        count(&purge(&store, t0 + Duration::days(29)), "notifications"),
        0
    );
    assert!(store.get_notification(&old).await.unwrap().is_some());

    // 31 days on: the first one goes, with its contact index and message-id index entries.
    let purged = purge(&store, t0 + Duration::days(31));
    assert_eq!(count(&purged, "notifications"), 1);
    assert_eq!(store.get_notification(&old).await.unwrap(), None);
    assert_eq!(listed(&store).await, std::slice::from_ref(&newer));
    assert_eq!(
        store
            .find_by_message_id(ChannelKind::Whatsapp, &format!("wamid.{old}"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(mentions(&store, old.as_bytes()), Vec::<String>::new());
    // The other one is whole.
    assert_eq!(
        store
            .find_by_message_id(ChannelKind::Whatsapp, &format!("wamid.{newer}"))
            .await
            .unwrap(),
        Some(newer.clone())
    );
    // A second pass has nothing more to do.
    assert_eq!(
        count(&purge(&store, t0 + Duration::days(31)), "notifications"),
        0
    );
}

#[tokio::test]
async fn a_queued_notification_is_never_purged_whatever_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let store = store_with_contact(dir.path(), t0).await;
    // Scheduled a year ahead, and one waiting for a retry, both last changed at t0.
    let mut scheduled = notification(t0);
    scheduled.next_attempt_at = Some(t0 + Duration::days(365));
    let scheduled_id = scheduled.id.clone();
    accept(&store, scheduled, None, t0).await;
    let waiting = notification(t0);
    let waiting_id = waiting.id.clone();
    accept(&store, waiting, None, t0).await;

    let purged = purge(&store, t0 + Duration::days(3650));
    assert_eq!(count(&purged, "notifications"), 0);
    for id in [&scheduled_id, &waiting_id] {
        let n = store.get_notification(id).await.unwrap().unwrap();
        assert_eq!(n.status, Status::Queued);
    }
    assert_eq!(store.queue_depth().await.unwrap(), 2);
    let due = store.claim_due(t0 + Duration::days(366), 10).await.unwrap();
    assert_eq!(due.len(), 2);
}

#[tokio::test]
async fn an_idempotency_key_past_its_window_is_purged_and_the_key_then_creates_a_new_notification()
{
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let store = store_with_contact(dir.path(), t0).await;
    let first = notification(t0);
    let first_id = first.id.clone();
    assert_eq!(
        accept(&store, first, Some("order-1"), t0).await,
        AcceptOutcome::Created
    );

    // Within the window the key is kept and answers with the first notification.
    let at = t0 + Duration::hours(23);
    assert_eq!(count(&purge(&store, at), "idempotency_keys"), 0);
    assert_eq!(
        accept(&store, notification(at), Some("order-1"), at).await,
        AcceptOutcome::Duplicate {
            id: first_id.clone()
        }
    );

    let at = t0 + Duration::hours(25);
    assert_eq!(count(&purge(&store, at), "idempotency_keys"), 1);
    assert_eq!(mentions(&store, b"order-1"), Vec::<String>::new());
    let second = notification(at);
    let second_id = second.id.clone();
    assert_eq!(
        accept(&store, second, Some("order-1"), at).await,
        AcceptOutcome::Created
    );
    assert!(store.get_notification(&second_id).await.unwrap().is_some());
    assert_eq!(
        accept(&store, notification(at), Some("order-1"), at).await,
        AcceptOutcome::Duplicate { id: second_id }
    );
}

#[tokio::test]
async fn guardrail_counters_and_webhook_records_are_purged_once_old() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let store = store_with_contact(dir.path(), t0).await;
    let dyn_store: Arc<dyn Store> = store.clone();
    crate::policy::caps::record_sent(dyn_store.as_ref(), CONTACT, t0, Some("n-1"))
        .await
        .unwrap();
    crate::policy::tier::TierLedger::new(dyn_store.clone())
        .record(CONTACT, t0)
        .await
        .unwrap();
    crate::webhooks::store_event(
        dyn_store.as_ref(),
        ChannelKind::Whatsapp,
        "mystery",
        &serde_json::json!({"from": NUMBER}),
        t0,
    )
    .await
    .unwrap();
    crate::webhooks::mark_applied(dyn_store.as_ref(), ChannelKind::Whatsapp, "evt-1", t0)
        .await
        .unwrap();

    let purged = purge(&store, t0 + Duration::hours(23));
    assert!(purged.iter().all(|(_, n)| *n == 0), "{purged:?}");

    let purged = purge(&store, t0 + Duration::hours(26));
    assert_eq!(count(&purged, "marketing_caps"), 1);
    assert_eq!(
        count(&purged, "tier_ledger"),
        2,
        "the person's record and the hour's count"
    );
    assert_eq!(count(&purged, "webhook_events"), 0);
    assert!(
        !mentions(&store, b"whatsapp/first_send").is_empty(),
        "first_send stays"
    );

    let purged = purge(&store, t0 + Duration::days(8));
    assert_eq!(count(&purged, "webhook_events"), 1);
    assert_eq!(count(&purged, "webhook_seen"), 1);
    // Only the contact itself still holds the number.
    assert_eq!(
        mentions(&store, NUMBER.as_bytes()),
        [
            format!("A/whatsapp\0{NUMBER}\0{CONTACT}"),
            format!("c/{CONTACT}")
        ]
    );
}

#[tokio::test]
async fn whatsapp_holds_restrictions_and_unused_templates_are_purged_when_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
    crate::store::retention::tests::whatsapp_records_go_when_they_end(&store, |now| {
        std::future::ready(purge(&store, now))
    })
    .await;
}

#[tokio::test]
async fn an_erasure_leaves_no_record_naming_the_contact() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let store = store_with_contact(dir.path(), t0).await;
    let dyn_store: Arc<dyn Store> = store.clone();
    store
        .set_consent(
            CONTACT,
            ChannelKind::Whatsapp,
            Consent {
                status: ConsentStatus::Granted,
                scopes: vec![Category::Marketing],
                at: t0,
                source: "test".into(),
                evidence: None,
            },
        )
        .await
        .unwrap();
    sent_at(&store, t0).await;
    accept(
        &store,
        notification(t0 + Duration::hours(1)),
        Some("k-1"),
        t0,
    )
    .await;
    crate::policy::caps::record(dyn_store.as_ref(), CONTACT, t0)
        .await
        .unwrap();
    let ledger = crate::policy::tier::TierLedger::new(dyn_store.clone());
    ledger.record(CONTACT, t0).await.unwrap();
    ledger.record("someone-else", t0).await.unwrap();
    crate::optin::create(dyn_store.as_ref(), CONTACT, vec![Category::Marketing], t0)
        .await
        .unwrap();
    assert!(mentions(&store, CONTACT.as_bytes()).len() >= 7);

    assert!(store.erase_contact(CONTACT, t0).await.unwrap());

    assert_eq!(mentions(&store, CONTACT.as_bytes()), Vec::<String>::new());
    assert_eq!(mentions(&store, NUMBER.as_bytes()), Vec::<String>::new());
    assert_eq!(
        mentions(&store, &NUMBER.as_bytes()[1..]),
        Vec::<String>::new()
    );
    // The tier still counts both people reached (a fresh ledger reads the store).
    let fresh = crate::policy::tier::TierLedger::new(dyn_store.clone());
    let seen = fresh.snapshot(CONTACT, t0).await.unwrap();
    assert_eq!((seen.count, seen.counted), (2, false));
}

/// The accept journal's records are replayed into sled at every start. One lingering in an
/// idle gateway's last segment would bring a purged notification back (and send it again).
#[tokio::test]
async fn a_purged_notification_does_not_come_back_from_the_journal_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    let path = dir.path().join("db");
    let id = {
        let store = store_with_contact(dir.path(), t0).await;
        let id = sent_at(&store, t0).await;
        // Idle now: the journal's segment holding the accept is rotated and checkpointed away.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !journal::recover(&path.with_extension("journal"))
            .unwrap()
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle journal still holds the accept after 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            count(&purge(&store, t0 + Duration::days(31)), "notifications"),
            1
        );
        store.flush().await.unwrap();
        id
    };
    let store = loop {
        match SledStore::open(&path, 8) {
            Ok(store) => break store,
            Err(StoreError::Locked { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(store.get_notification(&id).await.unwrap(), None);
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}
