//! What only the PostgreSQL store has: migrations, several instances (store handles) on one
//! database, and what a database URL may not leak. The contract every store keeps is in
//! `store::suite` (run here too, as `store::suite::postgres::*`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::testdb::TestDb;
use super::{PgOptions, PgStore, SchemaState, KNOWN_VERSION};
use crate::store::suite::sample_notification;
use crate::store::{error_chain, NewNotification, Store, StoreError};

fn plain(id: &str, now: chrono::DateTime<Utc>) -> NewNotification {
    NewNotification {
        notification: sample_notification(id, now),
        contact_patch: None,
        idempotency: None,
    }
}

async fn admin(db: &TestDb) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_migrating_at_once_both_start_and_the_schema_is_applied_once() {
    let db = TestDb::create().await;
    let options = db.options(Duration::from_secs(30));
    assert_eq!(
        PgStore::schema_state(&options).await.unwrap(),
        SchemaState::Behind { found: 0 }
    );
    let (a, b) = tokio::join!(PgStore::migrate(&options), PgStore::migrate(&options));
    let (a, b) = (a.unwrap(), b.unwrap());
    // One migrated from nothing; the other waited for the lock and found nothing to do.
    let mut froms = [a.from, b.from];
    froms.sort();
    assert_eq!(froms, [0, KNOWN_VERSION]);
    let again = PgStore::migrate(&options).await.unwrap();
    assert_eq!((again.from, again.to), (KNOWN_VERSION, KNOWN_VERSION));
    let rows = admin(&db)
        .await
        .query("SELECT version FROM lifeboat_schema", &[])
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        KNOWN_VERSION as usize,
        "each version recorded once"
    );
    assert_eq!(
        PgStore::schema_state(&options).await.unwrap(),
        SchemaState::Current
    );
    // Two stores opened together (each migrating at start) work side by side.
    let (s1, s2) = tokio::join!(PgStore::open(&options), PgStore::open(&options));
    let (s1, s2) = (s1.unwrap(), s2.unwrap());
    let now = Utc::now();
    s1.accept(plain("n1", now), now).await.unwrap();
    assert!(s2.get_notification("n1").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused() {
    let db = TestDb::create().await;
    let options = db.options(Duration::from_secs(30));
    PgStore::migrate(&options).await.unwrap();
    admin(&db)
        .await
        .execute(
            "INSERT INTO lifeboat_schema (version) VALUES ($1)",
            &[&(KNOWN_VERSION + 1)],
        )
        .await
        .unwrap();
    let Err(e) = PgStore::open(&options).await else {
        panic!("a newer schema was accepted")
    };
    assert!(
        matches!(e, StoreError::SchemaTooNew { found, known } if found == KNOWN_VERSION + 1 && known == KNOWN_VERSION),
        "{e}"
    );
    assert!(
        e.to_string().contains("newer than this Lifeboat knows"),
        "{e}"
    );
    assert_eq!(
        PgStore::schema_state(&options).await.unwrap(),
        SchemaState::Ahead {
            found: KNOWN_VERSION + 1
        }
    );
    assert!(matches!(
        PgStore::connect(&options).await,
        Err(StoreError::SchemaTooNew { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_an_unavailable_error_without_the_password() {
    // Nothing listens on port 1.
    let options = PgOptions::new("postgres://lifeboat:s3cret-pw@127.0.0.1:1/lifeboat");
    let Err(e) = PgStore::open(&options).await else {
        panic!("opened a store on a closed port")
    };
    let whole = error_chain(&e);
    assert!(e.is_unavailable(), "{whole}");
    assert!(!whole.contains("s3cret-pw"), "{whole}");
    assert!(!format!("{e:?}").contains("s3cret-pw"), "{e:?}");
    assert!(
        whole.contains("postgres://lifeboat@127.0.0.1:1/lifeboat"),
        "names the database: {whole}"
    );
    // A URL that cannot be read is not quoted either.
    let options = PgOptions::new("postgres://lifeboat:s3cret-pw@127.0.0.1:notaport/x");
    let Err(e) = PgStore::open(&options).await else {
        panic!("opened a store on a bad URL")
    };
    assert!(!error_chain(&e).contains("s3cret-pw"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ends_lets_another_instance_take_the_notification_over() {
    let db = TestDb::create().await;
    let options = db.options(Duration::from_secs(30));
    let a = PgStore::open(&options).await.unwrap();
    let b = PgStore::open(&options).await.unwrap();
    let now = Utc::now();
    a.accept(plain("n1", now), now).await.unwrap();
    assert_eq!(a.claim_due(now, 10).await.unwrap().len(), 1);
    // Within A's lease B gets nothing, and sees it being sent.
    let within = now + chrono::Duration::seconds(29);
    assert!(b.claim_due(within, 10).await.unwrap().is_empty());
    assert_eq!(
        b.get_notification("n1").await.unwrap().unwrap().status,
        crate::model::Status::Sending
    );
    // A dies (no renewal): once its lease has ended B takes it over.
    let after = now + chrono::Duration::seconds(31);
    let taken = b.claim_due(after, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, "n1");
    // A, back, cannot renew what B holds; B can.
    assert_eq!(a.renew_claims(&["n1".into()], after).await.unwrap(), 0);
    assert_eq!(b.renew_claims(&["n1".into()], after).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_claiming_at_once_never_get_the_same_notification() {
    let db = TestDb::create().await;
    let options = db.options(Duration::from_secs(30));
    let a = Arc::new(PgStore::open(&options).await.unwrap());
    let b = Arc::new(PgStore::open(&options).await.unwrap());
    let now = Utc::now();
    let accepts: Vec<_> = (0..500)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.accept(plain(&format!("n{i:04}"), now), now).await })
        })
        .collect();
    for h in accepts {
        h.await.unwrap().unwrap();
    }
    let claimer = |store: Arc<PgStore>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.claim_due(now, 7).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|n| n.id));
            }
        })
    };
    let (x, y) = (claimer(a.clone()), claimer(b.clone()));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert!(!x.is_empty() && !y.is_empty(), "both instances got work");
    let mut seen = BTreeSet::new();
    for id in x.iter().chain(&y) {
        assert!(seen.insert(id.clone()), "{id} was claimed twice");
    }
    assert_eq!(seen.len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_ends_are_replaced_and_the_store_goes_on() {
    let db = TestDb::create().await;
    let store = PgStore::open(&db.options(Duration::from_secs(30)))
        .await
        .unwrap();
    let now = Utc::now();
    store.accept(plain("n1", now), now).await.unwrap();
    // An administrator (or a failover) ends every connection of the store.
    admin(&db)
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    // A call may fail once per dead pooled connection, as unavailable (503, retried), and
    // then the store works again by itself.
    let mut answered = false;
    for _ in 0..20 {
        match store.get_notification("n1").await {
            Ok(n) => {
                assert!(n.is_some());
                answered = true;
                break;
            }
            Err(e) => assert!(e.is_unavailable(), "{}", error_chain(&e)),
        }
    }
    assert!(answered, "the store came back");
    store.accept(plain("n2", now), now).await.unwrap();
    store.check().await.unwrap();
}

/// `cargo test --release --lib bench_accepts_and_deliveries -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: prints figures"]
async fn bench_accepts_and_deliveries() {
    let db = TestDb::create().await;
    let mut options = db.options(Duration::from_secs(30));
    options.pool = 16;
    let figures = super::bench::accept_and_deliver(&options, 50_000, 64, 8)
        .await
        .unwrap();
    println!("PostgreSQL store: {figures}");
    assert_eq!(figures.accepted, 50_000);
    assert_eq!(figures.delivered, 50_000);
}

/// Everything a store holds goes from one PostgreSQL store to another through `Portable`, and
/// a second copy changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_record_is_copied_and_a_second_copy_changes_nothing() {
    use crate::model::{Attempt, Consent, ConsentStatus, Outcome, Status};
    use crate::store::portable::{Portable, RecordKind};
    use crate::store::IdempotencyKey;
    use lifeboat_channel::{Category, ChannelKind};

    let (from_db, to_db) = (TestDb::create().await, TestDb::create().await);
    let from = PgStore::open(&from_db.options(Duration::from_secs(30)))
        .await
        .unwrap();
    let to = PgStore::open(&to_db.options(Duration::from_secs(30)))
        .await
        .unwrap();
    let now = Utc::now();
    let patch = crate::model::ContactPatch {
        whatsapp: Some("+48600100200".parse().unwrap()),
        ..Default::default()
    };
    from.upsert_contact("ana", &patch, now).await.unwrap();
    let consent = |status| Consent {
        status,
        scopes: vec![Category::Transactional],
        source: "api".into(),
        evidence: None,
        at: now,
    };
    from.set_consent(
        "ana",
        ChannelKind::Whatsapp,
        consent(ConsentStatus::Granted),
    )
    .await
    .unwrap();
    from.set_consent(
        "ana",
        ChannelKind::Whatsapp,
        consent(ConsentStatus::Revoked),
    )
    .await
    .unwrap();
    from.upsert_contact("bob", &Default::default(), now)
        .await
        .unwrap();
    from.erase_contact("bob", now).await.unwrap();
    from.accept(
        NewNotification {
            idempotency: Some(IdempotencyKey {
                key: "k1".into(),
                fingerprint: "f1".into(),
            }),
            ..plain("n1", now)
        },
        now,
    )
    .await
    .unwrap();
    from.accept(plain("n2", now), now).await.unwrap();
    let mut sent = from.claim_due(now, 1).await.unwrap().remove(0);
    sent.status = Status::Sent;
    sent.next_attempt_at = None;
    sent.attempts.push(Attempt {
        provider_message_id: Some("wamid.1".into()),
        ..Attempt::new(ChannelKind::Whatsapp, now, Outcome::Sent)
    });
    from.save_progress(&sent).await.unwrap();
    from.save_channel_state(
        ChannelKind::Telegram,
        &crate::model::ChannelStatus::active(now),
    )
    .await
    .unwrap();
    from.kv_put("optin", "tok1", b"x").await.unwrap();
    from.kv_put("seen", "line/1", b"y").await.unwrap();

    let copy = |page_size: usize| {
        let (from, to) = (&from, &to);
        async move {
            let mut written = 0;
            let mut skipped = 0;
            for kind in RecordKind::ALL {
                let mut after = None;
                loop {
                    let page = from.export(kind, after, page_size).await.unwrap();
                    let done = to.import(page.records).await.unwrap();
                    written += done.written;
                    skipped += done.skipped;
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
            }
            (written, skipped)
        }
    };
    let (written, skipped) = copy(1).await;
    // ana; bob's tombstone; n1, n2; k1; telegram; two kv records.
    assert_eq!((written, skipped), (8, 0));
    for kind in RecordKind::ALL {
        assert_eq!(
            from.count(kind).await.unwrap(),
            to.count(kind).await.unwrap(),
            "{kind:?}"
        );
    }
    assert_eq!(copy(100).await, (0, 8), "a second copy changes nothing");

    assert_eq!(
        to.get_contact("ana").await.unwrap(),
        from.get_contact("ana").await.unwrap()
    );
    assert_eq!(
        to.consent_history("ana", ChannelKind::Whatsapp)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        to.find_contact_by_address(ChannelKind::Whatsapp, "+48600100200")
            .await
            .unwrap()
            .map(|c| c.id)
            .as_deref(),
        Some("ana")
    );
    assert_eq!(
        to.find_by_message_id(ChannelKind::Whatsapp, "wamid.1")
            .await
            .unwrap()
            .as_deref(),
        Some("n1")
    );
    // The queued one stays queued; the key still answers.
    assert_eq!(ids_of(to.claim_due(now, 10).await.unwrap()), ["n2"]);
    let again = to
        .accept(
            NewNotification {
                idempotency: Some(IdempotencyKey {
                    key: "k1".into(),
                    fingerprint: "f1".into(),
                }),
                ..plain("n3", now)
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        crate::store::AcceptOutcome::Duplicate { id: "n1".into() }
    );
    assert_eq!(
        to.kv_get("seen", "line/1").await.unwrap(),
        Some(b"y".to_vec())
    );
}

fn ids_of(list: Vec<crate::model::Notification>) -> Vec<String> {
    list.into_iter().map(|n| n.id).collect()
}

/// The purge deletes finished notifications (with their message ids) and idempotency keys
/// past their age, and leaves queued work and recent records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_what_retention_says_and_keeps_queued_work() {
    use crate::model::{Attempt, Outcome, Status};
    use lifeboat_channel::ChannelKind;

    let db = TestDb::create().await;
    let store = PgStore::open(&db.options(Duration::from_secs(30)))
        .await
        .unwrap();
    let long_ago = Utc::now() - chrono::Duration::days(60);
    let keyed = NewNotification {
        idempotency: Some(crate::store::IdempotencyKey {
            key: "old-key".into(),
            fingerprint: "f".into(),
        }),
        ..plain("n1", long_ago)
    };
    store.accept(keyed, long_ago).await.unwrap();
    store.accept(plain("n2", long_ago), long_ago).await.unwrap();
    let mut done = store.claim_due(long_ago, 1).await.unwrap().remove(0);
    assert_eq!(done.id, "n1");
    done.status = Status::Sent;
    done.next_attempt_at = None;
    done.attempts.push(Attempt {
        provider_message_id: Some("wamid.old".into()),
        ..Attempt::new(ChannelKind::Whatsapp, long_ago, Outcome::Sent)
    });
    store.save_progress(&done).await.unwrap();

    let purged = store
        .purge_pass(&crate::store::RetentionConfig::default(), Utc::now())
        .await
        .unwrap();
    let count = |what: &str| purged.iter().find(|(w, _)| *w == what).unwrap().1;
    assert_eq!(count("notifications"), 1);
    assert_eq!(count("idempotency_keys"), 1);
    assert_eq!(store.get_notification("n1").await.unwrap(), None);
    assert_eq!(
        store
            .find_by_message_id(ChannelKind::Whatsapp, "wamid.old")
            .await
            .unwrap(),
        None
    );
    assert!(
        store.get_notification("n2").await.unwrap().is_some(),
        "queued work stays"
    );
}

/// The WhatsApp 2026 records are purged when they end, as on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_holds_restrictions_and_unused_templates_are_purged_when_they_end() {
    let db = TestDb::create().await;
    let store = PgStore::open(&db.options(Duration::from_secs(30)))
        .await
        .unwrap();
    let cfg = crate::store::RetentionConfig::default();
    crate::store::retention::tests::whatsapp_records_go_when_they_end(&store, |now| {
        let (store, cfg) = (&store, &cfg);
        async move { store.purge_pass(cfg, now).await.unwrap() }
    })
    .await;
}

/// Two store handles on one database with their announcement tasks, both listening.
async fn listening_pair(db: &TestDb) -> (Arc<PgStore>, Arc<PgStore>, Vec<super::AnnounceTasks>) {
    let options = db.options(Duration::from_secs(30));
    let a = Arc::new(PgStore::open(&options).await.unwrap());
    let b = Arc::new(PgStore::open(&options).await.unwrap());
    let tasks = vec![
        super::AnnounceTasks::start(a.clone()),
        super::AnnounceTasks::start(b.clone()),
    ];
    for s in [&a, &b] {
        until_listening(s).await;
        // The wake-ups every (re)connection gives (announcements may have been missed).
        let ann = s.announcements().unwrap();
        for n in [&ann.states, &ann.work] {
            tokio::time::timeout(Duration::from_secs(5), n.notified())
                .await
                .expect("a new listener wakes its instance once");
        }
    }
    (a, b, tasks)
}

async fn until_listening(s: &PgStore) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !s.database_status().unwrap().listening {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener did not connect within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (up to 10 s: the announcement, not the 1 s re-read, is all there is at this level)
/// for `n`, and says how long it took.
async fn heard(n: &tokio::sync::Notify, what: &str) -> Duration {
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), n.notified())
        .await
        .unwrap_or_else(|_| panic!("{what}: no announcement within 10 s"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_stored_by_one_instance_is_announced_to_the_other_not_to_itself() {
    let db = TestDb::create().await;
    let (a, b, _tasks) = listening_pair(&db).await;
    let (ann_a, ann_b) = (a.announcements().unwrap(), b.announcements().unwrap());
    let mut banned = crate::model::ChannelStatus::active(Utc::now());
    banned.state = crate::model::ChannelState::Banned;
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        a.save_channel_state(lifeboat_channel::ChannelKind::Whatsapp, &banned)
            .await
            .unwrap();
        heard(&ann_b.states, "b hears a's state").await;
        took.push(started.elapsed());
    }
    println!("a's state change stored and heard by b within {took:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ann_a.states.notified())
            .await
            .is_err(),
        "an instance does not wake itself with its own announcement"
    );
    let (sa, sb) = (a.database_status().unwrap(), b.database_status().unwrap());
    assert_eq!((sa.states_sent, sb.states_heard), (5, 5), "{sa:?} {sb:?}");
    assert_eq!(sa.states_heard, 0, "{sa:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_are_announced_once_per_window_never_once_per_accept() {
    let db = TestDb::create().await;
    let (a, b, _tasks) = listening_pair(&db).await;
    let ann_b = b.announcements().unwrap();
    let started = std::time::Instant::now();
    let accepts = 400;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..accepts / 8 {
                let now = Utc::now();
                a.accept(plain(&format!("n-{t}-{i}"), now), now)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = heard(&ann_b.work, "b hears a's accepts").await;
    // The window after the last accept has passed: every owed announcement is sent.
    tokio::time::sleep(super::announce::WORK_WINDOW * 3).await;
    let elapsed = started.elapsed();
    let (sa, sb) = (a.database_status().unwrap(), b.database_status().unwrap());
    let windows = (elapsed.as_millis() / super::announce::WORK_WINDOW.as_millis()) as u64 + 1;
    println!(
        "{accepts} accepts in {elapsed:?}: {} announcements sent, {} heard by b ({took:?} after the last)",
        sa.work_sent, sb.work_heard
    );
    assert!(sa.work_sent >= 1 && sb.work_heard >= 1, "{sa:?} {sb:?}");
    assert!(
        sa.work_sent <= windows,
        "at most one announcement per {:?}: {} in {elapsed:?} ({windows} windows)",
        super::announce::WORK_WINDOW,
        sa.work_sent
    );
    assert!(sa.work_sent < accepts as u64 / 4, "{sa:?}");
    assert_eq!(sb.work_sent, 0, "b accepted nothing: {sb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_connection_is_made_again_and_announcements_flow_again() {
    let db = TestDb::create().await;
    let (a, b, _tasks) = listening_pair(&db).await;
    let ann_b = b.announcements().unwrap();
    // Cut every listener connection of this database (both instances').
    let killed = admin(&db)
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
            &[&super::announce::LISTENER_NAME],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "one listener connection per instance");
    // b connects again and wakes its instance (what was announced meanwhile was missed).
    heard(&ann_b.states, "b's wake-up after listening again").await;
    until_listening(&b).await;
    until_listening(&a).await;
    assert!(b.database_status().unwrap().listener_reconnects >= 1);
    let _ = tokio::time::timeout(Duration::from_millis(200), ann_b.states.notified()).await;
    let mut banned = crate::model::ChannelStatus::active(Utc::now());
    banned.state = crate::model::ChannelState::Disabled;
    a.save_channel_state(lifeboat_channel::ChannelKind::Line, &banned)
        .await
        .unwrap();
    heard(&ann_b.states, "b hears a's state after the reconnection").await;
    // The pool never lent a connection to the listener.
    let pooled = a.database_status().unwrap();
    assert!(pooled.pool_open <= pooled.pool_max, "{pooled:?}");
}

/// The whole seam: another instance's disable reaches this instance's live channel states
/// through the announcement alone (the periodic re-read set to an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_disable_is_live_here_through_the_announcement() {
    let db = TestDb::create().await;
    let (a, b, _tasks) = listening_pair(&db).await;
    let kind = lifeboat_channel::ChannelKind::Whatsapp;
    let on_a = crate::states::ChannelStates::load(a.clone() as Arc<dyn Store>)
        .await
        .unwrap();
    let on_b = Arc::new(
        crate::states::ChannelStates::load(b.clone() as Arc<dyn Store>)
            .await
            .unwrap(),
    );
    let watch = on_b.watch(b.announcements().unwrap().states, Duration::from_secs(3600));
    // The watch loop's first read (the wake-up of the new listener) is done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    on_a.disable(kind, "maintenance").await.unwrap();
    let saved = started.elapsed();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on_b.current(kind).state != crate::model::ChannelState::Disabled {
        assert!(
            std::time::Instant::now() < deadline,
            "b never saw a's disable (its re-read is an hour away: only the announcement can tell it)"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "disable stored by a in {saved:?}; live on b {:?} after the store",
        started.elapsed() - saved
    );
    watch.abort();
}

/// An announced record (`kv_update_announced`: the quality signal, the portfolio records) is
/// heard by the other instance, which counts it in `records_changed`; not by the writer; and
/// an edit that leaves the record as it was announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_record_is_heard_by_the_other_instance_when_it_changed() {
    let db = TestDb::create().await;
    let (a, b, _tasks) = listening_pair(&db).await;
    let (ann_a, ann_b) = (a.announcements().unwrap(), b.announcements().unwrap());
    let put =
        |value: &'static [u8]| -> crate::store::KvEdit { Box::new(move |_| Some(value.to_vec())) };
    let (a0, b0) = (a.records_changed(), b.records_changed());
    let started = std::time::Instant::now();
    a.kv_update_announced("whatsapp_portfolio", "limit", put(b"one"))
        .await
        .unwrap();
    let took = heard(&ann_b.states, "b hears a's record").await;
    println!(
        "a's record stored and heard by b {:?} after the store began",
        started.elapsed().max(took)
    );
    assert_eq!(b.records_changed(), b0 + 1, "b counts the change it heard");
    assert_eq!(a.records_changed(), a0 + 1, "a counts its own change");
    assert_eq!(
        b.kv_get("whatsapp_portfolio", "limit")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"one"[..]),
        "what b is told of is committed"
    );
    // The same value again: nothing changed, nothing announced.
    a.kv_update_announced("whatsapp_portfolio", "limit", put(b"one"))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ann_b.states.notified())
            .await
            .is_err(),
        "an edit that changed nothing is not announced"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), ann_a.states.notified())
            .await
            .is_err(),
        "an instance does not wake itself with its own announcement"
    );
    let (sa, sb) = (a.database_status().unwrap(), b.database_status().unwrap());
    assert_eq!((sa.states_sent, sb.states_heard), (1, 1), "{sa:?} {sb:?}");
    assert_eq!(b.records_changed(), b0 + 1);
}

/// Another instance's WhatsApp quality signal (`phone_number_quality_update`) is live here
/// through the announcement alone (the periodic re-read set to an hour), well under the 1 s
/// re-read it had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_quality_signal_is_live_here_through_the_announcement() {
    let db = TestDb::create().await;
    let (a, b, _tasks) = listening_pair(&db).await;
    let kind = lifeboat_channel::ChannelKind::Whatsapp;
    let on_a = crate::states::ChannelStates::load(a.clone() as Arc<dyn Store>)
        .await
        .unwrap();
    let on_b = Arc::new(
        crate::states::ChannelStates::load(b.clone() as Arc<dyn Store>)
            .await
            .unwrap(),
    );
    let watch = on_b.watch(b.announcements().unwrap().states, Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!on_b.quality_flagged(kind));
    let quality = crate::model::ChannelQuality {
        event: "FLAGGED".into(),
        current_limit: Some("TIER_1K".into()),
        old_limit: None,
        max_daily_conversations_per_business: None,
        at: Utc::now(),
    };
    let started = std::time::Instant::now();
    on_a.set_quality(kind, quality.clone()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on_b.quality(kind).as_ref() != Some(&quality) {
        assert!(
            std::time::Instant::now() < deadline,
            "b never saw a's quality signal (its re-read is an hour away: only the announcement can tell it)"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    println!("a's quality signal live on b {took:?} after a began storing it");
    assert!(on_b.quality_flagged(kind));
    assert!(took < Duration::from_millis(500), "{took:?}");
    watch.abort();
}

/// A WhatsApp channel that is never called (the decisions are what is tested).
struct Whatsapp;

#[async_trait::async_trait]
impl lifeboat_channel::Channel for Whatsapp {
    fn kind(&self) -> lifeboat_channel::ChannelKind {
        lifeboat_channel::ChannelKind::Whatsapp
    }
    async fn send(&self, _message: &lifeboat_channel::OutboundMessage) -> lifeboat_channel::Answer {
        lifeboat_channel::Answer::sent("wamid-1")
    }
    async fn health(&self) -> lifeboat_channel::Health {
        lifeboat_channel::Health::Ok("fake".into())
    }
}

/// A restriction Meta sent to one instance (`account_update`) and a limit
/// (`business_capability_update`) stop the other instance's business-initiated WhatsApp sends
/// at once: its portfolio cache (re-read every 1 s otherwise) reads again after the
/// announcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_portfolio_restriction_and_limit_apply_here_at_once() {
    use crate::model::SkipReason;
    use crate::policy::{portfolio, Candidate, Decision, Mode, Policy, PolicyConfig};
    use lifeboat_channel::{Category, ChannelKind};

    let db = TestDb::create().await;
    let (a, b, _tasks) = listening_pair(&db).await;
    let policy_b = Policy::new(PolicyConfig::default(), b.clone() as Arc<dyn Store>);
    let registry = crate::channels::Registry::from_channels(vec![
        Arc::new(Whatsapp) as Arc<dyn lifeboat_channel::Channel>
    ]);
    let states = crate::states::ChannelStates::load(b.clone() as Arc<dyn Store>)
        .await
        .unwrap();
    let now = Utc::now();
    let mut ana = crate::model::Contact::new("ana", now);
    ana.whatsapp = Some("+48600100200".into());
    ana.consents.insert(
        ChannelKind::Whatsapp,
        crate::model::Consent {
            status: crate::model::ConsentStatus::Granted,
            scopes: vec![Category::Transactional],
            source: "test".into(),
            evidence: None,
            at: now,
        },
    );
    let mut n = 0;
    let mut decide = || {
        n += 1;
        let id = format!("n-{n}");
        let (policy_b, registry, states, ana) = (&policy_b, &registry, &states, &ana);
        async move {
            let c = Candidate {
                notification_id: &id,
                category: Category::Transactional,
                has_template: true,
                template: None,
                kind: ChannelKind::Whatsapp,
                contact: Some(ana),
            };
            policy_b
                .decide(registry, states, &c, Utc::now(), Mode::DryRun)
                .await
                .unwrap()
        }
    };
    // B has read the portfolio (nothing restricted): its cache is fresh for a second.
    let first = decide().await;
    assert!(matches!(first, Decision::Go { .. }), "{first:?}");

    // How long until B's decisions say `reason` (the cache's own re-read is 1 s away).
    async fn until<F: std::future::Future<Output = Decision>>(
        mut decide: impl FnMut() -> F,
        reason: SkipReason,
        started: std::time::Instant,
    ) -> Duration {
        loop {
            let d = decide().await;
            if matches!(&d, Decision::Skip { reason: r, .. } if *r == reason) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "b never applied a's portfolio record: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Meta names a limit of 0 new people to A (the limit is checked after the restriction:
    // first).
    let started = std::time::Instant::now();
    portfolio::set_limit(
        a.as_ref(),
        portfolio::PortfolioLimit::Count(0),
        "business_capability_update",
        "0",
        now,
    )
    .await
    .unwrap();
    let limited = until(&mut decide, SkipReason::PortfolioLimit, started).await;
    println!("a's limit applied by b {limited:?} after a began storing it");
    assert!(
        limited < Duration::from_millis(500),
        "b took {limited:?} (its cache's re-read is 1 s)"
    );

    let started = std::time::Instant::now();
    portfolio::set_restriction(
        a.as_ref(),
        portfolio::Restriction::BizInitiated,
        now + chrono::Duration::hours(2),
        now,
    )
    .await
    .unwrap();
    let restricted = until(&mut decide, SkipReason::ChannelRestricted, started).await;
    println!("a's restriction applied by b {restricted:?} after a began storing it");
    assert!(
        restricted < Duration::from_millis(500),
        "b took {restricted:?} (its cache's re-read is 1 s)"
    );
}
