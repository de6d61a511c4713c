use std::path::Path;

use lifeboat_channel::{Category, ChannelKind};

use super::deliver::{claim, Claim};
use super::*;
use crate::clock::SystemClock;
use crate::model::{Attempt, Cursor, SkipReason};
use crate::store::SledStore;

const WA: ChannelKind = ChannelKind::Whatsapp;
const TG: ChannelKind = ChannelKind::Telegram;

fn notification(
    attempts: Vec<Attempt>,
    status: Status,
    channel: Option<ChannelKind>,
) -> Notification {
    let now = chrono::Utc::now();
    Notification {
        id: "n1".into(),
        contact_id: "ana".into(),
        category: Category::Transactional,
        text: "hi".into(),
        subject: None,
        html: None,
        whatsapp_template: None,
        channels: vec![WA, TG],
        status,
        channel,
        attempts,
        created_at: now,
        updated_at: now,
        expires_at: now + chrono::Duration::hours(1),
        fallback_after_secs: None,
        idempotency_key: None,
        cursor: Cursor::default(),
        next_attempt_at: None,
    }
}

fn types(events: &[NewEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[test]
fn a_turn_that_falls_over_to_a_sent_channel_says_so_then_sent() {
    let now = chrono::Utc::now();
    let n = notification(
        vec![
            Attempt::new(WA, now, Outcome::ChannelBanned),
            Attempt::new(TG, now, Outcome::Sent),
        ],
        Status::Sent,
        Some(TG),
    );
    let events = turn_events(Status::Queued, 0, &n, now);
    assert_eq!(
        types(&events),
        ["notification.failed_over", "notification.sent"]
    );
    let over = &events[0].data;
    assert_eq!(
        (&over["from"], &over["to"]),
        (&json!("whatsapp"), &json!("telegram"))
    );
    assert_eq!(over["reason"], "channel_banned");
    assert_eq!(events[1].data["channel"], "telegram");
    assert_eq!(events[1].data["id"], "n1");
}

#[test]
fn a_skipped_channel_is_a_failover_with_its_skip_reason() {
    let now = chrono::Utc::now();
    let n = notification(
        vec![
            Attempt::skipped(WA, now, SkipReason::ChannelBanned),
            Attempt::new(TG, now, Outcome::Sent),
        ],
        Status::Sent,
        Some(TG),
    );
    let events = turn_events(Status::Queued, 0, &n, now);
    assert_eq!(events[0].data["reason"], "channel_banned");
}

#[test]
fn retries_and_earlier_turns_make_no_second_failover() {
    let now = chrono::Utc::now();
    let mut n = notification(
        vec![
            Attempt::new(WA, now, Outcome::ChannelBanned),
            Attempt::new(TG, now, Outcome::Retry),
        ],
        Status::Queued,
        None,
    );
    // The first turn: failed over, waiting for a retry on Telegram.
    assert_eq!(
        types(&turn_events(Status::Queued, 0, &n, now)),
        ["notification.failed_over"]
    );
    // The retry's turn: sent, no new failover.
    n.attempts.push(Attempt::new(TG, now, Outcome::Sent));
    n.status = Status::Sent;
    n.channel = Some(TG);
    assert_eq!(
        types(&turn_events(Status::Queued, 2, &n, now)),
        ["notification.sent"]
    );
    // A turn that ends it failed / expired.
    let mut f = notification(
        vec![Attempt::new(WA, now, Outcome::Rejected)],
        Status::Failed,
        None,
    );
    f.channels = vec![WA];
    assert_eq!(
        types(&turn_events(Status::Queued, 0, &f, now)),
        ["notification.failed"]
    );
    f.status = Status::Expired;
    assert_eq!(
        types(&turn_events(Status::Queued, 1, &f, now)),
        ["notification.expired"]
    );
    // A turn that changed nothing says nothing.
    assert!(turn_events(Status::Expired, 1, &f, now).is_empty());
}

fn config(dir: &Path, url: &str) -> crate::config::Config {
    let text = format!(
        "[server]\napi_keys = [\"test-api-key-1\"]\nadmin_token = \"test-admin-token\"\n\
         [store]\npath = {:?}\n\
         [[events.endpoints]]\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         types = [\"notification.*\"]\n",
        dir.join("db").display().to_string()
    );
    crate::config::Config::from_toml(&text, Path::new("test.toml"), &|_| None).expect("config")
}

/// Two gateways on one store (two `Events`, two owners): one claim wins, the other finds the
/// delivery busy; after the lease ends, the other may take it.
#[tokio::test]
async fn one_delivery_is_claimed_by_one_instance_until_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/hook");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.store.path, 8).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let a = Events::new(&config, store.clone(), clock.clone(), Arc::default());
    let b = Events::new(&config, store.clone(), clock.clone(), Arc::default());
    assert!(a.enabled());
    let now = clock.now();
    let ids = a
        .try_record(vec![
            NewEvent {
                event_type: EventType::NotificationSent,
                at: now,
                data: json!({"id": "n1"}),
            },
            NewEvent {
                event_type: EventType::ChannelStateChanged,
                at: now,
                data: json!({}),
            },
        ])
        .await
        .unwrap();
    // Only the notification event is for the endpoint; both are listed.
    let (page, next) = a
        .list(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(next, None);
    assert_eq!(page[0].deliveries.len(), 1);
    assert!(page[1].deliveries.is_empty() && page[1].settled_at.is_some());
    let (only, _) = a
        .list(&EventQuery {
            event_type: Some(EventType::ChannelStateChanged),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only[0].event.id, ids[1]);
    let (after, _) = a
        .list(&EventQuery {
            after: Some(ids[0].clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);

    let due = store.kv_scan(namespaces::EVENT_DUE, "").await.unwrap();
    assert_eq!(due.len(), 1, "one due entry: {due:?}");
    let key = &due[0].0;
    let (ep, rest) = key.split_once('/').unwrap();
    let (ms, id) = rest.split_once('/').unwrap();
    let ms: i64 = ms.parse().unwrap();
    let endpoint = a.endpoints[0].clone();
    assert_eq!(ep, endpoint.id);
    assert!(matches!(
        claim(&a, &endpoint, key, ms, id).await,
        Claim::Mine(..)
    ));
    assert!(matches!(
        claim(&b, &endpoint, key, ms, id).await,
        Claim::Busy
    ));
    assert!(
        matches!(claim(&a, &endpoint, key, ms, id).await, Claim::Busy),
        "not twice by one owner either"
    );
    // The lease ends (as after a crash): the other instance takes it over.
    let expire = Box::new(|old: Option<&[u8]>| {
        let mut r = Record::parse(old?)?;
        r.deliveries[0].lease.as_mut()?.until = chrono::Utc::now() - chrono::Duration::seconds(1);
        Some(r.encode())
    });
    store
        .kv_update(
            namespaces::EVENTS,
            id,
            expire,
            crate::store::Durability::Durable,
        )
        .await
        .unwrap();
    assert!(matches!(
        claim(&b, &endpoint, key, ms, id).await,
        Claim::Mine(..)
    ));
    // A due entry for another time than the record's is left over.
    let stale = format!("{}/{:013}/{id}", endpoint.id, ms - 1000);
    assert!(matches!(
        claim(&a, &endpoint, &stale, ms - 1000, id).await,
        Claim::Stale
    ));

    // The admin's retry makes it pending and due again, with a fresh due entry.
    let retried = a.retry(id).await.unwrap().unwrap();
    assert_eq!(retried.deliveries[0].state, DeliveryState::Pending);
    assert!(retried.deliveries[0].lease.is_none());
    assert!(a
        .retry("0190b1f4-0000-7000-8000-000000000000")
        .await
        .unwrap()
        .is_none());
}

#[test]
fn the_body_is_type_timestamp_and_data() {
    let event = Event {
        id: "e1".into(),
        event_type: EventType::ConsentChanged,
        timestamp: chrono::Utc::now(),
        data: json!({"contact_id": "ana"}),
    };
    let body: Value = serde_json::from_slice(&event.body()).unwrap();
    assert_eq!(body["type"], "consent.changed");
    assert_eq!(body["data"]["contact_id"], "ana");
    assert!(body.get("id").is_none(), "the id travels in webhook-id");
    assert_eq!(
        "consent.changed".parse::<EventType>(),
        Ok(EventType::ConsentChanged)
    );
}

/// Two instances (two alert sources on one store) announce one state change, each at the
/// moment it saw it: one alert notification per alert contact. Another change (another
/// history number) is another alert.
#[tokio::test]
async fn one_state_change_seen_by_two_instances_sends_one_alert() {
    use crate::events::alerts::Alert;
    use crate::store::ListQuery;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\napi_keys = [\"test-api-key-1\"]\nadmin_token = \"test-admin-token\"\n\
         [store]\npath = {:?}\n[alerts]\ncontacts = [\"ops\"]\n",
        dir.path().join("db").display().to_string()
    );
    let config =
        crate::config::Config::from_toml(&text, Path::new("test.toml"), &|_| None).expect("config");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.store.path, 8).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let a = Events::new(&config, store.clone(), clock.clone(), Arc::default());
    let b = Events::new(&config, store.clone(), clock.clone(), Arc::default());
    let now = clock.now();
    store
        .upsert_contact("ops", &crate::model::ContactPatch::default(), now)
        .await
        .unwrap();
    let ban = |seq: u64, at: Timestamp| Alert::StateChanged {
        seq,
        channel: WA,
        from: ChannelState::Active,
        to: ChannelState::Banned,
        reason: Some("131031".into()),
        until: None,
        at,
    };
    a.alerts().send(ban(7, now)).await;
    b.alerts()
        .send(ban(7, now + chrono::Duration::seconds(2)))
        .await;
    let alerts = || async {
        let (list, _) = store
            .list_notifications(&ListQuery {
                contact_id: Some("ops".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        list
    };
    let sent = alerts().await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].text.contains("BANNED"), "{}", sent[0].text);

    b.alerts()
        .send(ban(9, now + chrono::Duration::hours(1)))
        .await;
    assert_eq!(alerts().await.len(), 2, "a later ban is another alert");
}

/// A crash between an event's record and its due entry (the dispatcher's save between them,
/// or a retry's record update before its new due entry) leaves a pending delivery no worker
/// finds: the sweep at start makes it due again and it is delivered.
async fn pending_deliveries_without_a_due_entry_are_delivered_after_a_restart(
    store: Arc<dyn Store>,
) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("{}/hook", server.uri()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let sent = |id: &str| NewEvent {
        event_type: EventType::NotificationSent,
        at: clock.now(),
        data: json!({"id": id}),
    };
    // Before the crash: one turn's event staged (its save done, the release never came); one
    // event whose due entry a crash lost after a retry's record update.
    let before = Events::new(&config, store.clone(), clock.clone(), Arc::default());
    let staged = before.stage(vec![sent("n1")]).await;
    assert_eq!(staged.ids.len(), 1);
    let lost = before.try_record(vec![sent("n2")]).await.unwrap();
    for (key, _) in store.kv_scan(namespaces::EVENT_DUE, "").await.unwrap() {
        store.kv_delete(namespaces::EVENT_DUE, &key).await.unwrap();
    }
    drop(staged);
    drop(before);

    // The next start: its sweep writes the missing due entries, the worker delivers both.
    let after = Arc::new(Events::new(
        &config,
        store.clone(),
        clock.clone(),
        Arc::default(),
    ));
    let workers = after.start();
    let mut delivered = Vec::new();
    for _ in 0..500 {
        delivered = server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.headers.get("webhook-id")?.to_str().ok().map(String::from))
            .collect::<Vec<_>>();
        if delivered.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    delivered.sort();
    let mut want = vec![
        after
            .list(&EventQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .0
            .into_iter()
            .find(|r| r.event.data["id"] == "n1")
            .expect("the staged event is stored")
            .event
            .id,
        lost[0].clone(),
    ];
    want.sort();
    assert_eq!(
        delivered, want,
        "both pending deliveries are delivered once"
    );
    // Both records say so.
    for id in &want {
        let mut state = DeliveryState::Pending;
        for _ in 0..200 {
            state = after.get(id).await.unwrap().unwrap().deliveries[0].state;
            if state == DeliveryState::Delivered {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(state, DeliveryState::Delivered, "{id}");
    }
    workers.stop(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_pending_deliveries_without_a_due_entry_are_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
    pending_deliveries_without_a_due_entry_are_delivered_after_a_restart(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pending_deliveries_without_a_due_entry_are_delivered_after_a_restart() {
    let db = crate::store::postgres::testdb::TestDb::create().await;
    let store = crate::store::PgStore::open(&db.options(crate::store::DEFAULT_LEASE))
        .await
        .unwrap();
    pending_deliveries_without_a_due_entry_are_delivered_after_a_restart(Arc::new(store)).await;
}
