//! The dispatcher with a store on disk and channels that panic: a bug in one turn must not
//! strand the notification (claimed, `sending`, forever) nor send it again after a restart.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lifeboat_channel::{Answer, Category, Channel, ChannelKind, Health, OutboundMessage};

use super::worker::WorkerContext;
use super::Dispatcher;
use crate::channels::Registry;
use crate::config::Config;
use crate::model::{Consent, ConsentStatus, ContactPatch, Cursor, Notification, Status, Timestamp};
use crate::states::ChannelStates;
use crate::store::{NewNotification, SledStore, Store, StoreError};

/// Where a fake channel panics.
#[derive(Clone, Copy, PartialEq)]
enum PanicAt {
    Nowhere,
    /// In `send`, before answering (the provider may or may not have taken it).
    Send,
    /// When the worker asks whether it has receipts: after a send it accepted was recorded.
    Receipts,
}

struct Fake {
    kind: ChannelKind,
    panic_at: PanicAt,
    sends: Arc<AtomicUsize>,
}

#[async_trait]
impl Channel for Fake {
    fn kind(&self) -> ChannelKind {
        self.kind
    }

    async fn send(&self, _message: &OutboundMessage) -> Answer {
        self.sends.fetch_add(1, Ordering::SeqCst);
        if self.panic_at == PanicAt::Send {
            panic!("injected panic in {} send", self.kind);
        }
        Answer::sent("m-1")
    }

    async fn health(&self) -> Health {
        Health::Ok("fake".into())
    }

    fn has_receipts(&self) -> bool {
        if self.panic_at == PanicAt::Receipts {
            panic!("injected panic after a {} send", self.kind);
        }
        false
    }
}

struct Fakes {
    telegram: Arc<AtomicUsize>,
    line: Arc<AtomicUsize>,
    email: Arc<AtomicUsize>,
}

impl Fakes {
    fn new() -> Fakes {
        Fakes {
            telegram: Arc::default(),
            line: Arc::default(),
            email: Arc::default(),
        }
    }

    /// Telegram panics after its send is recorded, email inside its send, LINE works.
    fn registry(&self) -> Registry {
        let fake = |kind, panic_at, sends: &Arc<AtomicUsize>| -> Arc<dyn Channel> {
            Arc::new(Fake {
                kind,
                panic_at,
                sends: sends.clone(),
            })
        };
        Registry::from_channels(vec![
            fake(ChannelKind::Telegram, PanicAt::Receipts, &self.telegram),
            fake(ChannelKind::Line, PanicAt::Nowhere, &self.line),
            fake(ChannelKind::Email, PanicAt::Send, &self.email),
        ])
    }
}

async fn open(path: &Path) -> Arc<dyn Store> {
    loop {
        match SledStore::open(path, 8) {
            Ok(store) => return Arc::new(store),
            Err(StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    }
}

async fn context(store: Arc<dyn Store>, registry: Registry) -> Arc<WorkerContext> {
    let config = Config::from_toml(
        "[server]\napi_keys = [\"test-api-key-1\"]\nadmin_token = \"test-admin-token\"\n",
        Path::new("test.toml"),
        &|_| None,
    )
    .expect("config");
    Arc::new(WorkerContext {
        store: store.clone(),
        states: Arc::new(ChannelStates::load(store.clone()).await.expect("states")),
        registry,
        routing: config.routing.clone(),
        cooldowns: Default::default(),
        clock: Arc::new(crate::clock::SystemClock::default()),
        optout: Arc::new(crate::optout::MarketingOptOut::new(&config, store.clone())),
        metrics: Arc::default(),
        policy: Arc::new(crate::policy::Policy::new(
            Default::default(),
            store.clone(),
        )),
        events: Arc::new(crate::events::Events::new(
            &config,
            store,
            Arc::new(crate::clock::SystemClock::default()),
            Arc::default(),
        )),
    })
}

pub(super) fn notification(id: &str, channels: Vec<ChannelKind>, now: Timestamp) -> Notification {
    Notification {
        id: id.into(),
        contact_id: "ana".into(),
        category: Category::Transactional,
        text: "Your code is 481 516".into(),
        subject: Some("Code".into()),
        html: None,
        whatsapp_template: None,
        channels,
        status: Status::Queued,
        channel: None,
        attempts: Vec::new(),
        created_at: now,
        updated_at: now,
        expires_at: now + chrono::Duration::hours(1),
        fallback_after_secs: Some(600),
        idempotency_key: None,
        cursor: Cursor::default(),
        next_attempt_at: Some(now),
    }
}

async fn wait_final(store: &dyn Store, id: &str) -> Notification {
    for _ in 0..1000 {
        let n = store.get_notification(id).await.unwrap().expect("stored");
        if n.status.is_final() {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = store.get_notification(id).await.unwrap();
    panic!("{id} is still not final: {n:?}");
}

fn trail(n: &Notification) -> Vec<String> {
    n.attempts
        .iter()
        .map(|a| format!("{}:{}", a.channel, a.outcome))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_turn_is_saved_with_an_internal_error_and_never_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let fakes = Fakes::new();
    let now = Utc::now();
    {
        let store = open(&path).await;
        let patch = ContactPatch {
            telegram: Some("5551234".parse().unwrap()),
            line: Some("U4af4980629a1b2c3d4e5f60718293a4b".parse().unwrap()),
            email: Some("ana@example.com".parse().unwrap()),
            ..ContactPatch::default()
        };
        store.upsert_contact("ana", &patch, now).await.unwrap();
        for kind in [ChannelKind::Telegram, ChannelKind::Line, ChannelKind::Email] {
            let consent = Consent {
                status: ConsentStatus::Granted,
                scopes: vec![Category::Transactional],
                source: "api".into(),
                evidence: None,
                at: now,
            };
            store.set_consent("ana", kind, consent).await.unwrap();
        }
        for n in [
            notification(
                "after-send",
                vec![ChannelKind::Telegram, ChannelKind::Line],
                now,
            ),
            notification("in-send", vec![ChannelKind::Email, ChannelKind::Line], now),
        ] {
            let new = NewNotification {
                notification: n,
                contact_patch: None,
                idempotency: None,
            };
            store.accept(new, now).await.unwrap();
        }
        let dispatcher =
            Dispatcher::start(context(store.clone(), fakes.registry()).await, 4, false);

        // Telegram took it, then the turn panicked: it stays sent there, and LINE (next in
        // the plan) is not tried. A final status also means the claim is gone: a claimed one
        // reads as `sending`.
        let n = wait_final(store.as_ref(), "after-send").await;
        assert_eq!(n.status, Status::Sent, "{n:?}");
        assert_eq!(n.channel, Some(ChannelKind::Telegram));
        assert_eq!(trail(&n), ["telegram:sent", "telegram:internal_error"]);
        let detail = n.attempts[1].detail.as_deref().unwrap_or_default();
        assert!(detail.contains("internal error"), "{detail}");
        assert!(
            !detail.contains("injected"),
            "panic messages stay in the log: {detail}"
        );

        // The send itself panicked: failed, with the error shown, nothing tried after it.
        let n = wait_final(store.as_ref(), "in-send").await;
        assert_eq!(n.status, Status::Failed, "{n:?}");
        assert_eq!(trail(&n), ["email:internal_error"]);

        // The dispatcher kept going: a new notification goes out.
        let fine = notification("fine", vec![ChannelKind::Line], now);
        let new = NewNotification {
            notification: fine,
            contact_patch: None,
            idempotency: None,
        };
        store.accept(new, now).await.unwrap();
        dispatcher.wake();
        assert_eq!(
            wait_final(store.as_ref(), "fine").await.status,
            Status::Sent
        );
        assert!(dispatcher.is_running());

        assert!(dispatcher.shutdown(Duration::from_secs(5)).await);
        store.flush().await.unwrap();
    }

    // After a restart nothing is due, so nothing can be sent again.
    let store = open(&path).await;
    let due = store
        .claim_due(now + chrono::Duration::days(365), 100)
        .await
        .unwrap();
    assert!(due.is_empty(), "{due:?}");
    let n = store.get_notification("after-send").await.unwrap().unwrap();
    assert_eq!(n.status, Status::Sent);
    assert_eq!(fakes.telegram.load(Ordering::SeqCst), 1);
    assert_eq!(fakes.email.load(Ordering::SeqCst), 1);
    assert_eq!(
        fakes.line.load(Ordering::SeqCst),
        1,
        "only `fine` went on LINE"
    );
}

/// Channels that always take the message, counting sends.
pub(super) fn working(kinds: &[(ChannelKind, &Arc<AtomicUsize>)]) -> Registry {
    Registry::from_channels(
        kinds
            .iter()
            .map(|(kind, sends)| -> Arc<dyn Channel> {
                Arc::new(Fake {
                    kind: *kind,
                    panic_at: PanicAt::Nowhere,
                    sends: (*sends).clone(),
                })
            })
            .collect(),
    )
}

pub(super) async fn ana_on(store: &dyn Store, kinds: &[ChannelKind], now: Timestamp) {
    let patch = ContactPatch {
        line: Some("U4af4980629a1b2c3d4e5f60718293a4b".parse().unwrap()),
        email: Some("ana@example.com".parse().unwrap()),
        ..ContactPatch::default()
    };
    store.upsert_contact("ana", &patch, now).await.unwrap();
    for kind in kinds {
        let consent = Consent {
            status: ConsentStatus::Granted,
            scopes: vec![Category::Transactional],
            source: "api".into(),
            evidence: None,
            at: now,
        };
        store.set_consent("ana", *kind, consent).await.unwrap();
    }
}

pub(super) async fn accept(store: &dyn Store, n: Notification, now: Timestamp) {
    let new = NewNotification {
        notification: n,
        contact_patch: None,
        idempotency: None,
    };
    store.accept(new, now).await.unwrap();
}

/// Two instances (two dispatchers with their own channel states, one store): a ban recorded
/// by one stops the other from starting a send on that channel, though the other's copy of
/// the states is older than the ban (no announcement, no periodic re-read running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_recorded_by_one_instance_stops_the_others_sends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db")).await;
    let (line, email) = (Arc::default(), Arc::default());
    let registry = working(&[(ChannelKind::Line, &line), (ChannelKind::Email, &email)]);
    let now = Utc::now();
    ana_on(
        store.as_ref(),
        &[ChannelKind::Line, ChannelKind::Email],
        now,
    )
    .await;
    let a = context(store.clone(), registry.clone()).await;
    let b = context(store.clone(), registry).await;
    assert_eq!(
        b.states.current(ChannelKind::Line).state,
        crate::model::ChannelState::Active
    );
    // b's copy ages past the bound a send may use, then a records the ban.
    tokio::time::sleep(crate::states::FRESH_AT_SEND).await;
    let ban = Answer::failed(lifeboat_channel::Class::ChannelBanned, "403", "suspended");
    a.states
        .report(
            ChannelKind::Line,
            "u",
            &ban,
            false,
            Duration::from_secs(60),
            Utc::now(),
        )
        .await
        .unwrap();
    accept(
        store.as_ref(),
        notification("n1", vec![ChannelKind::Line, ChannelKind::Email], now),
        now,
    )
    .await;
    let dispatcher = Dispatcher::start(b, 2, false);
    let n = wait_final(store.as_ref(), "n1").await;
    assert!(dispatcher.shutdown(Duration::from_secs(5)).await);
    assert_eq!(trail(&n), ["line:skipped", "email:sent"]);
    assert_eq!(
        line.load(Ordering::SeqCst),
        0,
        "nothing started on the banned channel"
    );
}

/// Two dispatchers on one store: every notification is sent, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_on_one_store_send_each_notification_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db")).await;
    let line = Arc::default();
    let registry = working(&[(ChannelKind::Line, &line)]);
    let now = Utc::now();
    ana_on(store.as_ref(), &[ChannelKind::Line], now).await;
    let a = Dispatcher::start(context(store.clone(), registry.clone()).await, 4, false);
    let b = Dispatcher::start(context(store.clone(), registry).await, 4, false);
    for i in 0..200 {
        accept(
            store.as_ref(),
            notification(&format!("n{i}"), vec![ChannelKind::Line], now),
            now,
        )
        .await;
        if i % 2 == 0 {
            a.wake()
        } else {
            b.wake()
        }
    }
    for i in 0..200 {
        assert_eq!(
            wait_final(store.as_ref(), &format!("n{i}")).await.status,
            Status::Sent
        );
    }
    assert!(a.shutdown(Duration::from_secs(5)).await);
    assert!(b.shutdown(Duration::from_secs(5)).await);
    assert_eq!(
        line.load(Ordering::SeqCst),
        200,
        "200 notifications, 200 sends"
    );
}

/// Issue 19: a backlog waiting on a paced channel is left in the store untouched until its
/// turn (no claim, no decision, no save per waiting notification), the channel is sent at its
/// configured rate, and notifications bound for another channel are not held up behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_backlog_waits_untouched_while_other_channels_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("db")).await;
    let (email, line) = (Arc::default(), Arc::default());
    let registry = working(&[(ChannelKind::Email, &email), (ChannelKind::Line, &line)]);
    let accepted = Utc::now();
    ana_on(
        store.as_ref(),
        &[ChannelKind::Email, ChannelKind::Line],
        accepted,
    )
    .await;
    // Email is paced at 20/s by default; 600 wait for it, then 20 for LINE (2,000/s).
    for i in 0..600 {
        let n = notification(&format!("e{i:03}"), vec![ChannelKind::Email], accepted);
        accept(store.as_ref(), n, accepted).await;
    }
    for i in 0..20 {
        let n = notification(&format!("l{i:02}"), vec![ChannelKind::Line], accepted);
        accept(store.as_ref(), n, accepted).await;
    }
    let started = std::time::Instant::now();
    let dispatcher = Dispatcher::start(context(store.clone(), registry).await, 64, false);
    for i in 0..20 {
        assert_eq!(
            wait_final(store.as_ref(), &format!("l{i:02}")).await.status,
            Status::Sent
        );
    }
    let line_done = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let sent = email.load(Ordering::SeqCst);
    assert!(dispatcher.shutdown(Duration::from_secs(5)).await);
    // Of the email backlog, only what was sent (and at most one pacing window more) was
    // ever taken up: the rest still has its accepted record, untouched.
    let mut touched_unsent = 0;
    for i in 0..600 {
        let n = store
            .get_notification(&format!("e{i:03}"))
            .await
            .unwrap()
            .unwrap();
        if n.status == Status::Queued && n.updated_at != n.created_at {
            touched_unsent += 1;
        }
    }
    eprintln!(
        "LINE done after {line_done:?}; {sent} emails sent in {elapsed:.2}s; {touched_unsent} \
         waiting emails were touched"
    );
    assert!(
        line_done < Duration::from_secs(2),
        "LINE's notifications waited behind email's backlog: {line_done:?}"
    );
    assert!(sent >= 20, "email sends at its rate: {sent}");
    let allowed = 20.0 + 20.0 * elapsed + 1.0;
    assert!(
        (sent as f64) <= allowed,
        "{sent} emails in {elapsed:.2}s, more than the 20/s pacing allows ({allowed:.0})"
    );
    assert!(
        touched_unsent <= 40,
        "{touched_unsent} of the waiting emails were claimed and put back before their turn"
    );
}
