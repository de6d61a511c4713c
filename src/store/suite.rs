//! The contract of [`Store`], as tests every backend runs: each test is a generic function
//! over `S: Store`, and [`store_suite!`] instantiates all of them for one backend. The
//! embedded store runs them below (`sled::*`); another backend adds one line:
//!
//! ```ignore
//! store_suite!(postgres, open_postgres());
//! ```
//!
//! where `open_postgres()` is a future giving `(Arc<S>, guard)`: a fresh, empty store and
//! whatever must live as long as it (a temporary folder, a throw-away database).
//!
//! Tests of one backend's internals (sled's key codec, journal replay, crash prefixes, the
//! saver thread, reopening a data folder) stay beside that backend.
//!
//! [`portable_suite!`] does the same for [`Portable`] (export and import, `lifeboat store
//! copy`): a populated store is copied into an empty one of the same backend, and everything
//! is compared through the [`Store`] trait.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use lifeboat_channel::{Category, ChannelKind};

use super::portable::{Imported, Portable, Record, RecordKind};
use super::{
    AcceptOutcome, Edited, IdempotencyKey, ListQuery, NewNotification, NotificationEdit, Store,
};
use super::{Durability, KvEdit};
use crate::model::{Attempt, Contact, ContactPatch, Notification, Outcome, Status, Timestamp};

/// Instantiates every test of the suite for one backend, as `#[tokio::test]`s in a module
/// named `$backend`. `$open` is an expression giving a future of `(Arc<S>, guard)`, evaluated
/// once per test.
macro_rules! store_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            store_suite!(@tests $open;
                an_erasure_during_a_send_is_not_undone_by_the_sends_save,
                a_saved_record_is_never_shown_as_still_claimed,
                an_accept_repeating_the_contacts_addresses_leaves_the_contact_as_it_was,
                the_address_index_follows_address_changes_and_erasure,
                every_contact_holding_an_address_is_found_and_kept_apart_on_erasure,
                an_erasure_deletes_the_whatsapp_marketing_hold_on_the_contacts_number,
                insert_if_absent_says_whether_it_inserted,
                signals_edit_only_unclaimed_notifications_and_keep_one_queue_entry,
                entries_queued_before_where_claims_scan_from_are_still_claimed,
                a_claim_takes_from_each_lane_at_most_its_limit_earliest_first,
                a_claim_is_never_handed_out_twice,
                a_renewed_lease_keeps_the_claim,
                kv_records_round_trip_and_scans_stay_in_their_namespace_and_prefix,
                a_kv_page_starts_after_its_key_and_stays_in_its_prefix,
                many_relaxed_puts_at_once_write_each_record_once,
                two_claimers_at_once_never_get_the_same_notification,
                one_idempotency_key_from_many_tasks_at_once_creates_one_notification,
                an_erasure_racing_saves_leaves_nothing_of_the_contact,
                insert_if_absent_from_many_tasks_at_once_inserts_once,
                kv_updates_from_many_tasks_at_once_lose_no_increment,
                kv_update_creates_edits_and_deletes_a_record,
                an_idempotency_key_answers_within_its_window_only,
                many_contact_reads_at_once_each_get_their_own_answer,
                accept_known_stores_nothing_for_a_missing_contact_even_among_many_at_once,
            );
        }
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $open.await;
                $crate::store::suite::$name(store).await;
            }
        )*
    };
}

/// A fresh embedded store in a temporary folder (dropped after the store).
async fn open_sled() -> (Arc<super::SledStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = super::SledStore::open(&dir.path().join("db"), 8).unwrap();
    (Arc::new(store), dir)
}

store_suite!(sled, super::open_sled());

/// A fresh PostgreSQL store on a throw-away database (dropped after the store).
async fn open_postgres() -> (Arc<super::PgStore>, super::postgres::testdb::TestDb) {
    let db = super::postgres::testdb::TestDb::create().await;
    let store = super::PgStore::open(&db.options(super::DEFAULT_LEASE))
        .await
        .unwrap();
    (Arc::new(store), db)
}

store_suite!(postgres, super::open_postgres());

/// Instantiates the [`Portable`] tests for one backend, in a module named `$backend`. `$open`
/// is evaluated twice per test: a source and a target store.
macro_rules! portable_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            portable_suite!(@tests $open;
                a_populated_store_is_copied_whole_and_a_second_copy_writes_nothing,
                an_import_leaves_what_the_target_already_holds,
            );
        }
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (source, _source_guard) = $open.await;
                let (target, _target_guard) = $open.await;
                $crate::store::suite::$name(source, target).await;
            }
        )*
    };
}

portable_suite!(sled_portable, super::open_sled());
portable_suite!(postgres_portable, super::open_postgres());

const ANA_NUMBER: &str = "+48600100200";

fn patch_whatsapp(number: &str) -> ContactPatch {
    ContactPatch {
        whatsapp: Some(number.parse().expect("an E.164 number")),
        ..ContactPatch::default()
    }
}

/// Adds the contact "ana" (WhatsApp [`ANA_NUMBER`]), made at `at`.
async fn add_ana<S: Store>(store: &S, at: Timestamp) {
    store
        .upsert_contact("ana", &patch_whatsapp(ANA_NUMBER), at)
        .await
        .unwrap();
}

/// A queued transactional notification to "ana" on WhatsApp, due `now`, expiring in an hour
/// (the store tests' fixture; tests change the members they care about).
pub(super) fn sample_notification(id: &str, now: Timestamp) -> Notification {
    Notification {
        id: id.into(),
        contact_id: "ana".into(),
        category: Category::Transactional,
        text: "hello".into(),
        subject: None,
        html: None,
        whatsapp_template: None,
        channels: vec![ChannelKind::Whatsapp],
        status: Status::Queued,
        channel: None,
        attempts: vec![],
        created_at: now,
        updated_at: now,
        expires_at: now + chrono::Duration::hours(1),
        fallback_after_secs: None,
        idempotency_key: None,
        cursor: Default::default(),
        next_attempt_at: Some(now),
    }
}

fn plain(n: Notification) -> NewNotification {
    NewNotification {
        notification: n,
        contact_patch: None,
        idempotency: None,
    }
}

/// `n` accepted with the idempotency key `key` (fingerprint "f1").
fn keyed(mut n: Notification, key: &str) -> NewNotification {
    n.idempotency_key = Some(key.into());
    NewNotification {
        notification: n,
        contact_patch: None,
        idempotency: Some(IdempotencyKey {
            key: key.into(),
            fingerprint: "f1".into(),
        }),
    }
}

/// Accepts sample notifications with these ids (no key, no contact patch).
async fn accept_all<S: Store>(store: &S, ids: &[&str], now: Timestamp) {
    for id in ids {
        let outcome = store
            .accept(plain(sample_notification(id, now)), now)
            .await
            .unwrap();
        assert_eq!(outcome, AcceptOutcome::Created, "{id}");
    }
}

fn ids(list: &[Notification]) -> Vec<String> {
    list.iter().map(|n| n.id.clone()).collect()
}

fn contact_ids(list: Vec<Contact>) -> Vec<String> {
    list.into_iter().map(|c| c.id).collect()
}

/// A notification being sent while its contact is erased: the worker's save comes after
/// the erasure and carries the text and the contact id the erasure removed. They must not
/// come back.
pub(super) async fn an_erasure_during_a_send_is_not_undone_by_the_sends_save<S: Store>(
    store: Arc<S>,
) {
    let now = Utc::now();
    add_ana(&*store, now).await;
    accept_all(&*store, &["n1", "n2"], now).await;
    let claimed = store.claim_due(now, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(store.erase_contact("ana", now).await.unwrap());
    // n1 went out; n2 got a transient answer and would be retried.
    let mut sent = claimed[0].clone();
    sent.status = Status::Sent;
    sent.next_attempt_at = None;
    sent.attempts.push(Attempt {
        provider_message_id: Some("wamid.1".into()),
        ..Attempt::new(ChannelKind::Whatsapp, now, Outcome::Sent)
    });
    let mut retry = claimed[1].clone();
    retry.next_attempt_at = Some(now + chrono::Duration::seconds(30));
    store.save_progress(&sent).await.unwrap();
    store.save_progress(&retry).await.unwrap();

    let n1 = store.get_notification("n1").await.unwrap().unwrap();
    assert_eq!((n1.text.as_str(), n1.contact_id.as_str()), ("", ""));
    assert_eq!(n1.status, Status::Sent, "it did go out");
    assert_eq!(
        store
            .find_by_message_id(ChannelKind::Whatsapp, "wamid.1")
            .await
            .unwrap(),
        None
    );
    let n2 = store.get_notification("n2").await.unwrap().unwrap();
    assert_eq!((n2.text.as_str(), n2.contact_id.as_str()), ("", ""));
    assert_eq!(
        n2.status,
        Status::Cancelled,
        "not retried for an erased contact"
    );
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    let later = now + chrono::Duration::minutes(5);
    assert!(store.claim_due(later, 10).await.unwrap().is_empty());
}

/// The API shows a claimed notification as `sending`. Once its save is in, it must show
/// what was saved: a reader never sees the new attempts still marked `sending`.
pub(super) async fn a_saved_record_is_never_shown_as_still_claimed<S: Store>(store: Arc<S>) {
    let now = Utc::now();
    add_ana(&*store, now).await;
    let ids: Vec<String> = (0..2000).map(|i| format!("n{i:05}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    accept_all(&*store, &id_refs, now).await;
    let claimed = store.claim_due(now, ids.len()).await.unwrap();
    assert_eq!(claimed.len(), ids.len());
    // The reader watches the notification being saved right now.
    let saving = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (store, saving, ids) = (store.clone(), saving.clone(), ids.clone());
        tokio::spawn(async move {
            let mut seen = 0u64;
            loop {
                let Some(id) = ids.get(saving.load(Ordering::Relaxed)) else {
                    return seen;
                };
                let n = store.get_notification(id).await.unwrap().unwrap();
                if !n.attempts.is_empty() {
                    let shown = n.status;
                    assert_eq!(shown, Status::Queued, "{id} saved, shown {shown:?}");
                    seen += 1;
                }
            }
        })
    };
    for (i, mut n) in claimed.into_iter().enumerate() {
        saving.store(i, Ordering::Relaxed);
        n.attempts
            .push(Attempt::new(ChannelKind::Whatsapp, now, Outcome::Sent));
        n.next_attempt_at = Some(now + chrono::Duration::seconds(30));
        store.save_progress(&n).await.unwrap();
    }
    saving.store(usize::MAX, Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0, "the reader saw saved records");
}

pub(super) async fn an_accept_repeating_the_contacts_addresses_leaves_the_contact_as_it_was<
    S: Store,
>(
    store: Arc<S>,
) {
    let t0 = Utc::now() - chrono::Duration::hours(1);
    add_ana(&*store, t0).await;
    let accept = |id: &str, number: &str, at: Timestamp| NewNotification {
        contact_patch: Some(patch_whatsapp(number)),
        ..plain(sample_notification(id, at))
    };
    let t1 = t0 + chrono::Duration::minutes(10);
    store
        .accept(accept("n1", ANA_NUMBER, t1), t1)
        .await
        .unwrap();
    let same = store.get_contact("ana").await.unwrap().unwrap();
    assert_eq!(same.updated_at, t0, "nothing changed, nothing written");
    assert_eq!(same.whatsapp.as_deref(), Some(ANA_NUMBER));

    let t2 = t1 + chrono::Duration::minutes(10);
    store
        .accept(accept("n2", "+48600100999", t2), t2)
        .await
        .unwrap();
    let moved = store.get_contact("ana").await.unwrap().unwrap();
    assert_eq!(moved.updated_at, t2);
    assert_eq!(moved.whatsapp.as_deref(), Some("+48600100999"));
    let found = store
        .find_contact_by_address(ChannelKind::Whatsapp, "+48600100999")
        .await
        .unwrap();
    assert_eq!(found.map(|c| c.id).as_deref(), Some("ana"));
}

/// Many callers reading contacts at once (the accept path's existence check, the workers'
/// reads before a send; a backend may answer them as one group): each gets its own contact,
/// and a missing one is missing, never another caller's answer.
pub(super) async fn many_contact_reads_at_once_each_get_their_own_answer<S: Store>(store: Arc<S>) {
    let now = Utc::now();
    for i in 0..40 {
        store
            .upsert_contact(
                &format!("c{i}"),
                &patch_whatsapp(&format!("+4860010{i:04}")),
                now,
            )
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..400)
        .map(|k| {
            let store = store.clone();
            tokio::spawn(async move {
                // Ids c0..c59: c40 and above do not exist.
                let i = (k * 7) % 60;
                let id = format!("c{i}");
                if k % 2 == 0 {
                    let exists = store.contact_exists(&id).await.unwrap();
                    assert_eq!(exists, i < 40, "{id}");
                } else {
                    let got = store.get_contact(&id).await.unwrap();
                    match got {
                        Some(c) => {
                            assert!(i < 40, "{id} does not exist but was read");
                            assert_eq!(c.id, id);
                            assert_eq!(
                                c.whatsapp.as_deref(),
                                Some(format!("+4860010{i:04}").as_str())
                            );
                        }
                        None => assert!(i >= 40, "{id} exists but was not read"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

pub(super) async fn the_address_index_follows_address_changes_and_erasure<S: Store>(store: Arc<S>) {
    let now = Utc::now();
    add_ana(&*store, now).await;
    let find = |number: &'static str| {
        let store = store.clone();
        async move {
            store
                .find_contact_by_address(ChannelKind::Whatsapp, number)
                .await
                .unwrap()
                .map(|c| c.id)
        }
    };
    assert_eq!(find(ANA_NUMBER).await.as_deref(), Some("ana"));

    store
        .update_contact(
            "ana",
            Box::new(|c| c.whatsapp = Some("+48600100201".into())),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(find(ANA_NUMBER).await, None);
    assert_eq!(find("+48600100201").await.as_deref(), Some("ana"));

    assert!(store.erase_contact("ana", now).await.unwrap());
    assert_eq!(find("+48600100201").await, None);
    assert!(store
        .update_contact("ana", Box::new(|_| {}))
        .await
        .unwrap()
        .is_none());
}

pub(super) async fn every_contact_holding_an_address_is_found_and_kept_apart_on_erasure<
    S: Store,
>(
    store: Arc<S>,
) {
    let now = Utc::now();
    add_ana(&*store, now).await;
    store
        .upsert_contact("ana-work", &patch_whatsapp(ANA_NUMBER), now)
        .await
        .unwrap();
    let holders = || async {
        contact_ids(
            store
                .find_contacts_by_address(ChannelKind::Whatsapp, ANA_NUMBER)
                .await
                .unwrap(),
        )
    };
    assert_eq!(holders().await, ["ana", "ana-work"]);

    // One leaving the number, or being erased, leaves the other holding it.
    let set_number = |number: &'static str| {
        let store = store.clone();
        async move {
            store
                .update_contact("ana", Box::new(move |c| c.whatsapp = Some(number.into())))
                .await
                .unwrap()
                .unwrap();
        }
    };
    set_number("+48600100201").await;
    assert_eq!(holders().await, ["ana-work"]);
    set_number(ANA_NUMBER).await;
    assert!(store.erase_contact("ana", now).await.unwrap());
    assert_eq!(holders().await, ["ana-work"]);
}

/// A 131049 marketing hold is kept under a digest of the number (no phone number in
/// the store's keys), and erasing the contact deletes the hold on its number (also one an
/// earlier version kept under the number itself); another person's hold stays.
pub(super) async fn an_erasure_deletes_the_whatsapp_marketing_hold_on_the_contacts_number<
    S: Store,
>(
    store: Arc<S>,
) {
    use crate::store::namespaces::{marketing_hold_key, WHATSAPP_MARKETING_HOLDS};
    const BOB_NUMBER: &str = "+48600300400";
    let now = Utc::now();
    add_ana(&*store, now).await;
    store
        .upsert_contact("bob", &patch_whatsapp(BOB_NUMBER), now)
        .await
        .unwrap();
    let hold = serde_json::json!({"until": now + chrono::Duration::hours(24), "code": "131049"})
        .to_string();
    for key in [
        marketing_hold_key(ANA_NUMBER),
        marketing_hold_key(BOB_NUMBER),
        // An earlier version's record, under the number itself.
        ANA_NUMBER.to_string(),
    ] {
        store
            .kv_put(WHATSAPP_MARKETING_HOLDS, &key, hold.as_bytes())
            .await
            .unwrap();
    }
    assert!(!marketing_hold_key(ANA_NUMBER).contains("48600"));

    assert!(store.erase_contact("ana", now).await.unwrap());
    let left: Vec<String> = store
        .kv_scan(WHATSAPP_MARKETING_HOLDS, "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        left,
        [marketing_hold_key(BOB_NUMBER)],
        "only bob's hold is left"
    );
}

pub(super) async fn insert_if_absent_says_whether_it_inserted<S: Store>(store: Arc<S>) {
    assert!(store.kv_insert_new("seen", "line/1", b"a").await.unwrap());
    assert!(!store.kv_insert_new("seen", "line/1", b"b").await.unwrap());
    assert_eq!(
        store.kv_get("seen", "line/1").await.unwrap().as_deref(),
        Some(&b"a"[..])
    );
}

pub(super) async fn signals_edit_only_unclaimed_notifications_and_keep_one_queue_entry<S: Store>(
    store: Arc<S>,
) {
    let now = Utc::now();
    accept_all(&*store, &["n1"], now).await;
    let mut n = store.claim_due(now, 10).await.unwrap().remove(0);
    let edit = || -> NotificationEdit { Box::new(|n: &mut Notification| n.text = "x".into()) };
    assert_eq!(
        store.edit_notification("n1", edit()).await.unwrap(),
        Edited::Claimed
    );
    // Sent on WhatsApp with a receipt check pending: on the queue, findable by its wamid.
    n.status = Status::Sent;
    n.channel = Some(ChannelKind::Whatsapp);
    n.attempts.push(Attempt {
        provider_message_id: Some("wamid.A".into()),
        ..Attempt::new(ChannelKind::Whatsapp, now, Outcome::Sent)
    });
    n.next_attempt_at = Some(now + chrono::Duration::seconds(60));
    store.save_progress(&n).await.unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    assert_eq!(
        store
            .find_by_message_id(ChannelKind::Whatsapp, "wamid.A")
            .await
            .unwrap()
            .as_deref(),
        Some("n1")
    );
    // A late failure requeues it now: the check's entry is replaced, not doubled.
    let requeue: NotificationEdit = Box::new(move |n: &mut Notification| {
        n.status = Status::Queued;
        n.next_attempt_at = Some(now);
    });
    assert!(matches!(
        store.edit_notification("n1", requeue).await.unwrap(),
        Edited::Done(_)
    ));
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    let mut again = store.claim_due(now, 10).await.unwrap();
    assert_eq!(ids(&again), ["n1"]);
    // Once done, nothing is left on the queue for it: not the receipt check's old entry.
    let mut done = again.remove(0);
    done.status = Status::Failed;
    done.next_attempt_at = None;
    store.save_progress(&done).await.unwrap();
    let later = now + chrono::Duration::minutes(5);
    assert!(store.claim_due(later, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    assert_eq!(
        store.edit_notification("nope", edit()).await.unwrap(),
        Edited::Missing
    );
}

pub(super) async fn entries_queued_before_where_claims_scan_from_are_still_claimed<S: Store>(
    store: Arc<S>,
) {
    let now = Utc::now();
    let accept = |id: &'static str, due: Timestamp| {
        let mut n = sample_notification(id, now);
        n.next_attempt_at = Some(due);
        let store = store.clone();
        async move { store.accept(plain(n), now).await.unwrap() }
    };
    accept("n1", now).await;
    accept("n2", now).await;
    let claimed = store.claim_due(now, 10).await.unwrap();
    assert_eq!(ids(&claimed), ["n1", "n2"]);
    // A store may scan from after n2 now. Each of these queues an entry before that point.
    // An accept due earlier (scheduled in the past):
    accept("n3", now - chrono::Duration::seconds(5)).await;
    assert_eq!(ids(&store.claim_due(now, 10).await.unwrap()), ["n3"]);
    // A save that puts a claimed one back, due earlier than the others:
    let mut retry = claimed[0].clone();
    retry.next_attempt_at = Some(now - chrono::Duration::seconds(10));
    store.save_progress(&retry).await.unwrap();
    assert_eq!(
        store.next_due().await.unwrap(),
        retry
            .next_attempt_at
            .map(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap())
    );
    assert_eq!(ids(&store.claim_due(now, 10).await.unwrap()), ["n1"]);
    // A signal's edit that makes a waiting one due again (n2, saved as sent with a receipt
    // check a minute away, brought forward):
    let mut sent = claimed[1].clone();
    sent.status = Status::Sent;
    sent.next_attempt_at = Some(now + chrono::Duration::seconds(60));
    store.save_progress(&sent).await.unwrap();
    assert!(store.claim_due(now, 10).await.unwrap().is_empty());
    let edit: NotificationEdit = Box::new(move |n: &mut Notification| {
        n.status = Status::Queued;
        n.next_attempt_at = Some(now - chrono::Duration::seconds(20));
    });
    store.edit_notification("n2", edit).await.unwrap();
    assert_eq!(ids(&store.claim_due(now, 10).await.unwrap()), ["n2"]);
    assert!(store.claim_due(now, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);
}

/// The queue's lanes: each notification waits in the lane of the channel its plan tries next;
/// a claim takes from a lane at most that lane's limit (a paced channel's backlog stays where
/// it is, the other lanes are not held up behind it), the earliest due first across lanes, at
/// most the total; a save that moves a notification on to another channel moves it to that
/// channel's lane.
pub(super) async fn a_claim_takes_from_each_lane_at_most_its_limit_earliest_first<S: Store>(
    store: Arc<S>,
) {
    use super::{ClaimLimits, Lane};
    let now = Utc::now();
    let at = |s: i64| now - chrono::Duration::seconds(100 - s);
    let accept = |id: String, channels: Vec<ChannelKind>, due: Timestamp| {
        let mut n = sample_notification(&id, now);
        n.channels = channels;
        n.next_attempt_at = Some(due);
        let store = store.clone();
        async move { store.accept(plain(n), now).await.unwrap() }
    };
    let tg = ChannelKind::Telegram;
    // A Telegram backlog due first, then email, then a plan that starts on WhatsApp.
    for i in 0..20 {
        accept(format!("t{i:02}"), vec![tg, ChannelKind::Email], at(i)).await;
    }
    for i in 0..3 {
        accept(format!("e{i}"), vec![ChannelKind::Email], at(30 + i)).await;
    }
    accept("w0".into(), vec![ChannelKind::Whatsapp, tg], at(40)).await;
    let limits = |telegram: usize, total: usize| ClaimLimits {
        total,
        lanes: [(Lane::Channel(tg), telegram)].into_iter().collect(),
    };
    // Two from the Telegram lane; the other lanes are not held up behind its backlog.
    let first = store.claim_lanes(now, &limits(2, 100)).await.unwrap();
    assert_eq!(ids(&first), ["t00", "t01", "e0", "e1", "e2", "w0"]);
    // Nothing more from Telegram's lane while its limit is 0; the earliest first overall.
    assert!(store
        .claim_lanes(now, &limits(0, 100))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&store.claim_lanes(now, &limits(5, 3)).await.unwrap()),
        ["t02", "t03", "t04"]
    );
    // w0 fell over to Telegram and waits there now: it is claimed with Telegram's lane.
    let mut w0 = first.iter().find(|n| n.id == "w0").unwrap().clone();
    w0.cursor.index = 1;
    w0.next_attempt_at = Some(at(1));
    store.save_progress(&w0).await.unwrap();
    assert_eq!(Lane::of(&w0), Lane::Channel(tg));
    assert!(store
        .claim_lanes(
            now,
            &ClaimLimits {
                total: 100,
                lanes: [(Lane::Channel(tg), 0)].into_iter().collect()
            }
        )
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&store.claim_lanes(now, &limits(2, 100)).await.unwrap()),
        ["w0", "t05"]
    );
    // A plain claim takes from every lane.
    assert_eq!(store.claim_due(now, 100).await.unwrap().len(), 14);
    assert_eq!(store.next_due().await.unwrap(), None);
}

/// A claimed notification is skipped by the next claim and by the next due time, is shown
/// as `sending`, and its save as done takes it off the queue.
pub(super) async fn a_claim_is_never_handed_out_twice<S: Store>(store: Arc<S>) {
    let now = Utc::now();
    accept_all(&*store, &["n1", "n2"], now).await;
    let first = store.claim_due(now, 1).await.unwrap();
    assert_eq!(ids(&first), ["n1"]);
    let second = store.claim_due(now, 10).await.unwrap();
    assert_eq!(ids(&second), ["n2"]);
    assert!(store.claim_due(now, 10).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);
    assert_eq!(
        store.get_notification("n1").await.unwrap().unwrap().status,
        Status::Sending
    );
    let mut sent = second[0].clone();
    sent.status = Status::Sent;
    sent.next_attempt_at = None;
    store.save_progress(&sent).await.unwrap();
    assert_eq!(
        store.get_notification("n2").await.unwrap().unwrap().status,
        Status::Sent
    );
    // Within n1's lease nobody gets it again; once the lease has ended without a save or a
    // renewal, it is claimable again (a crashed or cut-off worker), as it was.
    let lease = chrono::Duration::from_std(store.lease()).unwrap();
    let within = now + lease - chrono::Duration::seconds(1);
    assert!(store.claim_due(within, 10).await.unwrap().is_empty());
    let after = now + lease + chrono::Duration::seconds(1);
    assert_eq!(ids(&store.claim_due(after, 10).await.unwrap()), ["n1"]);
}

pub(super) async fn a_renewed_lease_keeps_the_claim<S: Store>(store: Arc<S>) {
    let now = Utc::now();
    accept_all(&*store, &["n1"], now).await;
    let claimed = store.claim_due(now, 10).await.unwrap();
    assert_eq!(ids(&claimed), ["n1"]);
    let lease = chrono::Duration::from_std(store.lease()).unwrap();
    let half = now + lease / 2;
    assert_eq!(store.renew_claims(&["n1".into()], half).await.unwrap(), 1);
    // Past the first lease, but within the renewed one: still held.
    assert!(store
        .claim_due(now + lease + chrono::Duration::seconds(1), 10)
        .await
        .unwrap()
        .is_empty());
    // Nothing else is renewed by naming it.
    assert_eq!(store.renew_claims(&["n9".into()], half).await.unwrap(), 0);
}

pub(super) async fn kv_records_round_trip_and_scans_stay_in_their_namespace_and_prefix<S: Store>(
    store: Arc<S>,
) {
    store.kv_put("optin", "tok1", b"ana").await.unwrap();
    store.kv_put("optin", "tok2", b"bob").await.unwrap();
    store.kv_delete("optin", "tok2").await.unwrap();
    assert_eq!(
        store.kv_get("optin", "tok1").await.unwrap().as_deref(),
        Some(&b"ana"[..])
    );
    assert_eq!(store.kv_get("optin", "tok2").await.unwrap(), None);
    assert_eq!(store.kv_get("other", "tok1").await.unwrap(), None);

    // A scan stays inside its namespace and prefix, in key order.
    store.kv_put_relaxed("optin", "tok3", b"cy").await.unwrap();
    store.kv_put_relaxed("optin", "zz", b"-").await.unwrap();
    store.kv_put_relaxed("optins", "tok9", b"-").await.unwrap();
    let found = store.kv_scan("optin", "tok").await.unwrap();
    assert_eq!(
        found,
        vec![
            ("tok1".to_string(), b"ana".to_vec()),
            ("tok3".to_string(), b"cy".to_vec())
        ]
    );
    store.kv_delete_relaxed("optin", "tok1").await.unwrap();
    assert_eq!(store.kv_scan("optin", "").await.unwrap().len(), 2);
}

/// `kv_put_many_relaxed` writes every record it is given (overwriting, like `kv_put`), in its
/// namespace only; a key given twice keeps its last value.
pub(super) async fn many_relaxed_puts_at_once_write_each_record_once<S: Store>(store: Arc<S>) {
    store.kv_put("due", "a/1", b"old").await.unwrap();
    store.kv_put_many_relaxed("due", &[]).await.unwrap();
    let records: Vec<(String, Vec<u8>)> =
        [("a/1", "new"), ("a/2", ""), ("b/1", "x"), ("a/2", "last")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
    store.kv_put_many_relaxed("due", &records).await.unwrap();
    assert_eq!(
        store.kv_scan("due", "").await.unwrap(),
        vec![
            ("a/1".to_string(), b"new".to_vec()),
            ("a/2".to_string(), b"last".to_vec()),
            ("b/1".to_string(), b"x".to_vec()),
        ]
    );
    assert!(store.kv_scan("duex", "").await.unwrap().is_empty());
}

/// `kv_scan_page` reads in key order from just after `after`, at most `limit` records, never
/// outside its namespace and prefix: paging through it gives what one `kv_scan` gives.
pub(super) async fn a_kv_page_starts_after_its_key_and_stays_in_its_prefix<S: Store>(
    store: Arc<S>,
) {
    for key in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1", "a"] {
        store
            .kv_put_relaxed("due", key, key.as_bytes())
            .await
            .unwrap();
    }
    store.kv_put_relaxed("duex", "a/9", b"-").await.unwrap();
    let keys = |page: Vec<(String, Vec<u8>)>| -> Vec<String> {
        page.into_iter()
            .map(|(k, v)| {
                assert_eq!(k.as_bytes(), &v[..]);
                k
            })
            .collect()
    };
    let page = |prefix: &'static str, after: &'static str, limit: usize| {
        let store = store.clone();
        async move {
            keys(
                store
                    .kv_scan_page("due", prefix, after, limit)
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(page("a/", "", 2).await, ["a/1", "a/2"]);
    assert_eq!(page("a/", "a/2", 2).await, ["a/3", "a/4"]);
    assert_eq!(page("a/", "a/4", 2).await, ["a/5"]);
    assert!(page("a/", "a/5", 2).await.is_empty());
    // `after` before the prefix starts at the prefix; the whole namespace pages in key order.
    assert_eq!(page("b/", "a/3", 5).await, ["b/1"]);
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let got = keys(store.kv_scan_page("due", "", &after, 3).await.unwrap());
        let Some(last) = got.last().cloned() else {
            break;
        };
        all.extend(got);
        after = last;
    }
    assert_eq!(all, keys(store.kv_scan("due", "").await.unwrap()));
    assert_eq!(all.len(), 7);
}

/// Workers claiming side by side share the queue out: every due notification is claimed
/// exactly once.
pub(super) async fn two_claimers_at_once_never_get_the_same_notification<S: Store>(store: Arc<S>) {
    let now = Utc::now();
    let all: Vec<String> = (0..600).map(|i| format!("n{i:05}")).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    accept_all(&*store, &refs, now).await;
    let claimer = |store: Arc<S>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.claim_due(now, 7).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|n| n.id));
                tokio::task::yield_now().await;
            }
        })
    };
    let (a, b) = (claimer(store.clone()), claimer(store.clone()));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let mut seen = BTreeSet::new();
    for id in a.iter().chain(&b) {
        assert!(seen.insert(id.clone()), "{id} was claimed twice");
    }
    assert_eq!(seen.len(), all.len(), "every notification was claimed");
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}

/// `accept_known` (the API's accept) as many callers at the same moment use it, so that a
/// grouping store answers them in one group: each gets its own answer. Without a patch, a
/// missing contact stores nothing (no notification, no queue entry, no idempotency key);
/// with a patch the contact is made; plain `accept` checks nothing.
pub(super) async fn accept_known_stores_nothing_for_a_missing_contact_even_among_many_at_once<
    S: Store,
>(
    store: Arc<S>,
) {
    let now = Utc::now();
    add_ana(&*store, now).await;
    let to = |id: &str, contact: &str| {
        let mut n = sample_notification(id, now);
        n.contact_id = contact.into();
        n
    };
    let mut created = 0u64;
    for round in 0..10 {
        use AcceptOutcome::{Created, UnknownContact};
        // (name, contact, idempotency key, patched, through accept_known, the answer expected);
        // the last one alone would be a group of unknown ones only (every row left out).
        let table = [
            ("known", "ana", None, false, true, Created),
            ("ghost", "ghost", None, false, true, UnknownContact),
            (
                "ghostkeyed",
                "ghost",
                Some("k1"),
                false,
                true,
                UnknownContact,
            ),
            ("knownkeyed", "ana", Some("k2"), false, true, Created),
            ("patched", "new", None, true, true, Created),
            ("unchecked", "ghost", None, false, false, Created),
            ("ghost2", "ghost2", None, false, true, UnknownContact),
        ];
        let cases: Vec<(String, NewNotification, bool, AcceptOutcome)> = table
            .into_iter()
            .map(|(name, contact, key, patched, known, want)| {
                let id = format!("r{round}{name}");
                let contact = match patched {
                    true => format!("{contact}{round}"),
                    false => contact.to_string(),
                };
                let n = to(&id, &contact);
                let mut new = match key {
                    Some(key) => keyed(n, &format!("r{round}{key}")),
                    None => plain(n),
                };
                if patched {
                    new.contact_patch = Some(patch_whatsapp("+14155550199"));
                }
                (id, new, known, want)
            })
            .collect();

        let barrier = Arc::new(tokio::sync::Barrier::new(cases.len()));
        let callers: Vec<_> = cases
            .into_iter()
            .map(|(id, new, known, want)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let got = match known {
                        true => store.accept_known(new, now).await.unwrap(),
                        false => store.accept(new, now).await.unwrap(),
                    };
                    (id, got, want)
                })
            })
            .collect();
        for caller in callers {
            let (id, got, want) = caller.await.unwrap();
            assert_eq!(got, want, "{id}");
            let stored = store.get_notification(&id).await.unwrap();
            assert_eq!(stored.is_some(), want == AcceptOutcome::Created, "{id}");
            created += u64::from(want == AcceptOutcome::Created);
        }
        assert_eq!(store.queue_depth().await.unwrap(), created, "round {round}");
        assert!(store.contact_exists(&format!("new{round}")).await.unwrap());
        assert!(!store.contact_exists("ghost").await.unwrap());

        // The unknown contact's key was not taken: it creates once the contact is right.
        let retry = keyed(to(&format!("r{round}retry"), "ana"), &format!("r{round}k1"));
        assert_eq!(
            store.accept_known(retry, now).await.unwrap(),
            AcceptOutcome::Created
        );
        created += 1;
    }
}

/// The same idempotency key (and body) sent by several callers at the same moment: one
/// notification is created, and every other caller is answered with its id.
pub(super) async fn one_idempotency_key_from_many_tasks_at_once_creates_one_notification<
    S: Store,
>(
    store: Arc<S>,
) {
    let now = Utc::now();
    const CALLERS: usize = 8;
    for round in 0..20 {
        let key = format!("key-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
        let callers: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let new = keyed(
                    sample_notification(&format!("r{round}c{caller}"), now),
                    &key,
                );
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.accept(new, now).await.unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for caller in callers {
            outcomes.push(caller.await.unwrap());
        }
        let created: Vec<usize> = (0..CALLERS)
            .filter(|&c| outcomes[c] == AcceptOutcome::Created)
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {outcomes:?}");
        let winner = format!("r{round}c{}", created[0]);
        for (caller, outcome) in outcomes.iter().enumerate() {
            let id = format!("r{round}c{caller}");
            if id != winner {
                assert_eq!(
                    outcome,
                    &AcceptOutcome::Duplicate { id: winner.clone() },
                    "round {round}"
                );
                assert_eq!(store.get_notification(&id).await.unwrap(), None, "{id}");
            }
        }
    }
    assert_eq!(
        store.queue_depth().await.unwrap(),
        20,
        "one notification per key"
    );
}

/// A contact erased while workers save its notifications: whichever lands first, nothing of
/// the contact is left (no text, no contact id, no address, nothing queued for it).
pub(super) async fn an_erasure_racing_saves_leaves_nothing_of_the_contact<S: Store>(store: Arc<S>) {
    for round in 0..10 {
        let now = Utc::now();
        let contact = format!("ana-{round}");
        let number = format!("+4860010{round:04}");
        store
            .upsert_contact(&contact, &patch_whatsapp(&number), now)
            .await
            .unwrap();
        let all: Vec<String> = (0..20).map(|i| format!("r{round}n{i:03}")).collect();
        for id in &all {
            let mut n = sample_notification(id, now);
            n.contact_id = contact.clone();
            store.accept(plain(n), now).await.unwrap();
        }
        let claimed = store.claim_due(now, all.len()).await.unwrap();
        assert_eq!(claimed.len(), all.len());
        let saver = {
            let store = store.clone();
            tokio::spawn(async move {
                for (i, mut n) in claimed.into_iter().enumerate() {
                    n.attempts.push(Attempt {
                        provider_message_id: Some(format!("wamid.{}", n.id)),
                        ..Attempt::new(ChannelKind::Whatsapp, now, Outcome::Sent)
                    });
                    if i % 2 == 0 {
                        n.status = Status::Sent;
                        n.next_attempt_at = None;
                    } else {
                        n.next_attempt_at = Some(now + chrono::Duration::seconds(30));
                    }
                    store.save_progress(&n).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let eraser = {
            let (store, contact) = (store.clone(), contact.clone());
            tokio::spawn(async move { store.erase_contact(&contact, now).await.unwrap() })
        };
        saver.await.unwrap();
        assert!(eraser.await.unwrap());

        assert_eq!(store.get_contact(&contact).await.unwrap(), None);
        assert!(store
            .find_contacts_by_address(ChannelKind::Whatsapp, &number)
            .await
            .unwrap()
            .is_empty());
        let (listed, _) = store
            .list_notifications(&ListQuery {
                contact_id: Some(contact.clone()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(listed.is_empty(), "round {round}: {:?}", ids(&listed));
        for id in &all {
            let n = store.get_notification(id).await.unwrap().unwrap();
            assert_eq!(
                (n.text.as_str(), n.contact_id.as_str()),
                ("", ""),
                "round {round}: {id}"
            );
            assert_ne!(n.status, Status::Queued, "round {round}: {id} still queued");
            let wamid = format!("wamid.{id}");
            assert_eq!(
                store
                    .find_by_message_id(ChannelKind::Whatsapp, &wamid)
                    .await
                    .unwrap(),
                None,
                "round {round}: {id}"
            );
        }
        let later = now + chrono::Duration::minutes(5);
        assert!(store.claim_due(later, 100).await.unwrap().is_empty());
    }
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}

/// Insert-if-absent from several tasks at once on one key: exactly one inserts, and its
/// value is the one stored.
pub(super) async fn insert_if_absent_from_many_tasks_at_once_inserts_once<S: Store>(store: Arc<S>) {
    const TASKS: usize = 8;
    for round in 0..50 {
        let key = format!("line/{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let value = format!("t{task}");
                    store
                        .kv_insert_new("seen", &key, value.as_bytes())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (task, handle) in tasks.into_iter().enumerate() {
            if handle.await.unwrap() {
                winners.push(task);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?} inserted");
        let stored = store.kv_get("seen", &key).await.unwrap();
        assert_eq!(stored, Some(format!("t{}", winners[0]).into_bytes()));
    }
}

/// An edit counting one more in a record holding a decimal number (nothing: 0).
fn increment() -> KvEdit {
    Box::new(|old: Option<&[u8]>| {
        let n: u64 = old.map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
        Some((n + 1).to_string().into_bytes())
    })
}

/// Read-modify-writes of one record from several tasks at once: each sees the others' writes,
/// so no increment is lost (what two gateway instances on one store need from caps and risk
/// figures, which no in-process lock can give).
pub(super) async fn kv_updates_from_many_tasks_at_once_lose_no_increment<S: Store>(store: Arc<S>) {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for i in 0..EACH {
                    // Every other one durable, so both kinds of write race.
                    let durability = if (task + i) % 2 == 0 {
                        Durability::Relaxed
                    } else {
                        Durability::Durable
                    };
                    store
                        .kv_update("counters", "sends", increment(), durability)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for handle in tasks {
        handle.await.unwrap();
    }
    let stored = store.kv_get("counters", "sends").await.unwrap();
    assert_eq!(stored, Some((TASKS * EACH).to_string().into_bytes()));
}

/// `kv_update` creates a missing record, edits it, answers what it holds after, and deletes it
/// when the edit says `None`.
pub(super) async fn kv_update_creates_edits_and_deletes_a_record<S: Store>(store: Arc<S>) {
    let after = |r: Option<Vec<u8>>| r.map(|b| String::from_utf8(b).unwrap());
    let update = |edit: KvEdit| store.kv_update("counters", "a", edit, Durability::Durable);
    assert_eq!(
        after(update(increment()).await.unwrap()).as_deref(),
        Some("1")
    );
    assert_eq!(
        after(update(increment()).await.unwrap()).as_deref(),
        Some("2")
    );
    assert_eq!(update(Box::new(|_| None)).await.unwrap(), None);
    assert_eq!(store.kv_get("counters", "a").await.unwrap(), None);
    assert_eq!(
        store.kv_get("counters", "b").await.unwrap(),
        None,
        "other keys untouched"
    );
}

/// The same key within 24 h: the first notification's id (`Duplicate` for the same body,
/// `Conflict` for another); after the window the key makes a new notification.
pub(super) async fn an_idempotency_key_answers_within_its_window_only<S: Store>(store: Arc<S>) {
    let t0 = Utc::now();
    let first = keyed(sample_notification("n1", t0), "key-w");
    assert_eq!(
        store.accept(first, t0).await.unwrap(),
        AcceptOutcome::Created
    );
    let within = t0 + chrono::Duration::seconds(super::IDEMPOTENCY_WINDOW_SECS - 60);
    let same = keyed(sample_notification("n2", within), "key-w");
    assert_eq!(
        store.accept(same, within).await.unwrap(),
        AcceptOutcome::Duplicate { id: "n1".into() }
    );
    let mut other = keyed(sample_notification("n3", within), "key-w");
    other.idempotency.as_mut().unwrap().fingerprint = "f2".into();
    assert_eq!(
        store.accept(other, within).await.unwrap(),
        AcceptOutcome::Conflict { id: "n1".into() }
    );
    assert_eq!(store.get_notification("n2").await.unwrap(), None);
    let after = t0 + chrono::Duration::seconds(super::IDEMPOTENCY_WINDOW_SECS + 60);
    let anew = keyed(sample_notification("n4", after), "key-w");
    assert_eq!(
        store.accept(anew, after).await.unwrap(),
        AcceptOutcome::Created
    );
    assert!(store.get_notification("n4").await.unwrap().is_some());
}

// The Portable suite.

/// Now, to the millisecond (what every backend keeps of a time).
fn now_ms() -> Timestamp {
    let now = Utc::now();
    chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap()
}

fn consent(
    status: crate::model::ConsentStatus,
    source: &str,
    at: Timestamp,
) -> crate::model::Consent {
    crate::model::Consent {
        status,
        scopes: vec![Category::Transactional, Category::Marketing],
        source: source.into(),
        evidence: Some(format!("{source} evidence")),
        at,
    }
}

/// The notifications [`populate`] leaves, by what they are.
struct Populated {
    queued: String,
    sent: String,
    failed: String,
}

/// A store as a gateway leaves it: "ana" with addresses and a consent history, "bob" erased
/// (a tombstone), one notification queued (due in an hour, accepted with the idempotency
/// key "key-1"), one sent (with a provider message id), one failed after a retry, a channel
/// state and kv records.
async fn populate<S: Store>(store: &S, t0: Timestamp) -> Populated {
    use crate::model::ConsentStatus::{Granted, Revoked};
    let s = chrono::Duration::seconds;
    let ana = ContactPatch {
        whatsapp: Some(ANA_NUMBER.parse().unwrap()),
        email: Some("ana@example.com".parse().unwrap()),
        ..ContactPatch::default()
    };
    store.upsert_contact("ana", &ana, t0).await.unwrap();
    for (i, status) in [Granted, Revoked, Granted].into_iter().enumerate() {
        let at = t0 + s(i as i64 + 1);
        let change = consent(status, "web_form", at);
        store
            .set_consent("ana", ChannelKind::Whatsapp, change)
            .await
            .unwrap()
            .expect("ana exists");
    }
    store
        .set_consent(
            "ana",
            ChannelKind::Email,
            consent(Granted, "api", t0 + s(4)),
        )
        .await
        .unwrap();
    store
        .upsert_contact("bob", &patch_whatsapp("+48600100999"), t0)
        .await
        .unwrap();
    store
        .set_consent("bob", ChannelKind::Whatsapp, consent(Granted, "api", t0))
        .await
        .unwrap();
    assert!(store.erase_contact("bob", t0 + s(5)).await.unwrap());

    let id = || uuid::Uuid::now_v7().to_string();
    let (sent, failed, queued) = (id(), id(), id());
    for n in [&sent, &failed] {
        let outcome = store
            .accept(plain(sample_notification(n, t0)), t0)
            .await
            .unwrap();
        assert_eq!(outcome, AcceptOutcome::Created);
    }
    let mut later = sample_notification(&queued, t0);
    later.next_attempt_at = Some(t0 + chrono::Duration::hours(1));
    later.expires_at = t0 + chrono::Duration::hours(2);
    assert_eq!(
        store.accept(keyed(later, "key-1"), t0).await.unwrap(),
        AcceptOutcome::Created
    );
    let mut claimed = store.claim_due(t0, 10).await.unwrap();
    claimed.sort_by_key(|n| n.id != sent);
    assert_eq!(ids(&claimed), [sent.clone(), failed.clone()]);
    let mut done = claimed.remove(0);
    done.status = Status::Sent;
    done.channel = Some(ChannelKind::Whatsapp);
    done.next_attempt_at = None;
    done.attempts.push(Attempt {
        provider_message_id: Some("wamid.copy-1".into()),
        ..Attempt::new(ChannelKind::Whatsapp, t0 + s(6), Outcome::Sent)
    });
    store.save_progress(&done).await.unwrap();
    let mut gave_up = claimed.remove(0);
    gave_up.status = Status::Failed;
    gave_up.next_attempt_at = None;
    gave_up.attempts.push(Attempt::new(
        ChannelKind::Whatsapp,
        t0 + s(6),
        Outcome::Retry,
    ));
    gave_up.attempts.push(Attempt {
        detail: Some("number does not exist".into()),
        ..Attempt::new(
            ChannelKind::Whatsapp,
            t0 + s(7),
            Outcome::RecipientUnreachable,
        )
    });
    store.save_progress(&gave_up).await.unwrap();

    let restricted = crate::model::ChannelStatus {
        state: crate::model::ChannelState::Restricted,
        reason: Some("quality rating low".into()),
        since: t0,
        until: Some(t0 + chrono::Duration::hours(6)),
        last_error: None,
        next_cooldown_secs: Some(43_200),
    };
    store
        .save_channel_state(ChannelKind::Whatsapp, &restricted)
        .await
        .unwrap();
    store
        .save_channel_state(ChannelKind::Email, &crate::model::ChannelStatus::active(t0))
        .await
        .unwrap();
    store
        .kv_put("optin", "tok-1", b"{\"opaque\":1}")
        .await
        .unwrap();
    store
        .kv_put("optin", "tok-2", b"\x00\xffbinary")
        .await
        .unwrap();
    store.kv_put("telegram", "offset", b"42").await.unwrap();
    Populated {
        queued,
        sent,
        failed,
    }
}

/// Copies every kind of record from `source` into `target`, two records a page (so that
/// pages follow one another), and says what the target did per kind.
async fn copy_all<S: Portable, T: Portable>(source: &S, target: &T) -> Vec<(RecordKind, Imported)> {
    let mut out = Vec::new();
    for kind in RecordKind::ALL {
        let mut total = Imported::default();
        let mut after = None;
        loop {
            let page = source.export(kind, after, 2).await.unwrap();
            assert!(page.records.iter().all(|r| r.kind() == kind), "{kind:?}");
            let done = target.import(page.records).await.unwrap();
            total.written += done.written;
            total.skipped += done.skipped;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        out.push((kind, total));
    }
    out
}

/// Every record of `kind`, one page after another.
async fn export_all<S: Portable>(store: &S, kind: RecordKind) -> Vec<Record> {
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page = store.export(kind, after, 3).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return records,
        }
    }
}

pub(super) async fn a_populated_store_is_copied_whole_and_a_second_copy_writes_nothing<
    S: Portable,
>(
    source: Arc<S>,
    target: Arc<S>,
) {
    let t0 = now_ms();
    let made = populate(&*source, t0).await;
    for kind in RecordKind::ALL {
        assert_eq!(target.count(kind).await.unwrap(), 0, "{kind:?}");
    }
    let first = copy_all(&*source, &*target).await;
    for (kind, done) in &first {
        let held = source.count(*kind).await.unwrap();
        assert!(held > 0, "the fixture has {kind:?}");
        assert_eq!(done.written, held, "{kind:?} written");
        assert_eq!(done.skipped, 0, "{kind:?} skipped");
        assert_eq!(target.count(*kind).await.unwrap(), held, "{kind:?} held");
        assert_eq!(
            export_all(&*target, *kind).await,
            export_all(&*source, *kind).await,
            "{kind:?} exported"
        );
    }

    // Contacts with their whole consent history, the erased one still gone.
    assert_eq!(
        target.get_contact("ana").await.unwrap(),
        source.get_contact("ana").await.unwrap()
    );
    assert_eq!(target.get_contact("bob").await.unwrap(), None);
    for channel in [ChannelKind::Whatsapp, ChannelKind::Email] {
        let history = target.consent_history("ana", channel).await.unwrap();
        assert_eq!(
            history,
            source.consent_history("ana", channel).await.unwrap()
        );
    }
    assert_eq!(
        target
            .consent_history("ana", ChannelKind::Whatsapp)
            .await
            .unwrap()
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        [
            crate::model::ConsentStatus::Granted,
            crate::model::ConsentStatus::Revoked,
            crate::model::ConsentStatus::Granted
        ]
    );
    assert!(target
        .consent_history("bob", ChannelKind::Whatsapp)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        contact_ids(
            target
                .find_contacts_by_address(ChannelKind::Whatsapp, ANA_NUMBER)
                .await
                .unwrap()
        ),
        ["ana"]
    );

    // Notifications with their attempts, indexes and queue entries.
    for id in [&made.queued, &made.sent, &made.failed] {
        let copied = target.get_notification(id).await.unwrap().expect("copied");
        assert_eq!(
            Some(&copied),
            source.get_notification(id).await.unwrap().as_ref()
        );
    }
    let listed = |store: Arc<S>| async move {
        let query = ListQuery {
            contact_id: Some("ana".into()),
            limit: 10,
            ..ListQuery::default()
        };
        ids(&store.list_notifications(&query).await.unwrap().0)
    };
    assert_eq!(listed(target.clone()).await, listed(source.clone()).await);
    assert_eq!(listed(target.clone()).await.len(), 3);
    assert_eq!(
        target
            .find_by_message_id(ChannelKind::Whatsapp, "wamid.copy-1")
            .await
            .unwrap(),
        Some(made.sent.clone())
    );
    assert_eq!(target.queue_depth().await.unwrap(), 1);
    assert_eq!(
        target.next_due().await.unwrap(),
        Some(t0 + chrono::Duration::hours(1))
    );
    assert!(target.claim_due(t0, 10).await.unwrap().is_empty());
    let due = target
        .claim_due(t0 + chrono::Duration::hours(1), 10)
        .await
        .unwrap();
    assert_eq!(ids(&due), [made.queued.as_str()]);
    // The idempotency key came along: the same request again is the same notification.
    let again = keyed(
        sample_notification(&uuid::Uuid::now_v7().to_string(), t0),
        "key-1",
    );
    assert_eq!(
        target
            .accept(again, t0 + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        AcceptOutcome::Duplicate {
            id: made.queued.clone()
        }
    );

    // Channel states and kv records.
    assert_eq!(
        target.channel_states().await.unwrap(),
        source.channel_states().await.unwrap()
    );
    for namespace in ["optin", "telegram"] {
        assert_eq!(
            target.kv_scan(namespace, "").await.unwrap(),
            source.kv_scan(namespace, "").await.unwrap(),
            "{namespace}"
        );
    }
    assert_eq!(
        target.kv_get("optin", "tok-2").await.unwrap().as_deref(),
        Some(&b"\x00\xffbinary"[..])
    );

    // Copying again changes nothing.
    let before: Vec<Vec<Record>> = {
        let mut all = Vec::new();
        for kind in RecordKind::ALL {
            all.push(export_all(&*target, kind).await);
        }
        all
    };
    let second = copy_all(&*source, &*target).await;
    for ((kind, done), (_, first)) in second.iter().zip(&first) {
        assert_eq!(done.written, 0, "{kind:?} written again");
        assert_eq!(done.skipped, first.written, "{kind:?} skipped");
    }
    for (kind, records) in RecordKind::ALL.into_iter().zip(before) {
        assert_eq!(export_all(&*target, kind).await, records, "{kind:?}");
    }
    assert_eq!(
        target.queue_depth().await.unwrap(),
        0,
        "the claim above holds it"
    );
}

/// A merge: what the target holds under the same id (a contact, a kv record) stays as it is,
/// and the rest comes in.
pub(super) async fn an_import_leaves_what_the_target_already_holds<S: Portable>(
    source: Arc<S>,
    target: Arc<S>,
) {
    let t0 = now_ms();
    let made = populate(&*source, t0).await;
    target
        .upsert_contact("ana", &patch_whatsapp("+48600100777"), t0)
        .await
        .unwrap();
    target.kv_put("telegram", "offset", b"99").await.unwrap();
    let ana_before = target.get_contact("ana").await.unwrap();

    let done = copy_all(&*source, &*target).await;
    let of = |kind: RecordKind| done.iter().find(|(k, _)| *k == kind).unwrap().1;
    assert_eq!(of(RecordKind::Contacts).skipped, 1);
    assert_eq!(of(RecordKind::Kv).skipped, 1);
    assert_eq!(of(RecordKind::Notifications).written, 3);

    assert_eq!(target.get_contact("ana").await.unwrap(), ana_before);
    assert!(target
        .consent_history("ana", ChannelKind::Whatsapp)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        contact_ids(
            target
                .find_contacts_by_address(ChannelKind::Whatsapp, ANA_NUMBER)
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        target
            .kv_get("telegram", "offset")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"99"[..])
    );
    assert_eq!(
        target.kv_get("optin", "tok-1").await.unwrap().as_deref(),
        Some(&b"{\"opaque\":1}"[..])
    );
    assert!(target.get_notification(&made.sent).await.unwrap().is_some());
}
