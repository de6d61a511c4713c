//! The events of changes saved apart from them (a channel's state, a consent, a WhatsApp
//! receipt) are staged before the change's save and made due after it: a process that dies
//! right after the save loses none of them, and the event of a save that failed is never
//! delivered (deleted at once, or by the sweep when the process died before it could).
//!
//! "Dies" is a store that lets the save through and fails every write after it (nothing
//! the process does afterwards reaches the store); the next start is a new [`Events`] on the
//! same store, whose sweep decides.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lifeboat_channel::{Category, ChannelKind};
use serde_json::json;

use super::{EventQuery, Events};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::model::{
    Attempt, ChannelStatus, Consent, ConsentStatus, Contact, ContactPatch, Notification, Outcome,
    Status, Timestamp,
};
use crate::states::ChannelStates;
use crate::store::{
    namespaces, AcceptOutcome, ContactEdit, Durability, Edited, KvEdit, ListQuery, NewNotification,
    NotificationEdit, Store, StoreError, StoreResult,
};

crate::store::on_both_stores!(
    a_consent_event_survives_a_crash_right_after_its_save,
    a_consent_event_of_a_failed_save_is_never_delivered,
    a_state_event_survives_a_crash_right_after_its_save,
    a_state_event_of_a_failed_save_is_never_delivered,
    a_receipt_event_survives_a_crash_right_after_its_save,
    a_receipt_event_of_a_failed_save_is_never_delivered,
);

/// Which call is the change's save.
#[derive(Clone, Copy, PartialEq)]
enum Save {
    Consent,
    State,
    Notification,
}

/// What happens at the save.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// The save is done, then the process dies: no later write reaches the store.
    Dies,
    /// The save fails; the process goes on.
    Fails,
    /// The save fails, and the process dies right after.
    FailsAndDies,
}

struct Dying {
    inner: Arc<dyn Store>,
    save: Save,
    then: Then,
    dead: AtomicBool,
}

impl Dying {
    fn new(inner: &Arc<dyn Store>, save: Save, then: Then) -> Arc<Dying> {
        Arc::new(Dying {
            inner: inner.clone(),
            save,
            then,
            dead: AtomicBool::new(false),
        })
    }

    /// Before any write: fails if the process is dead.
    fn alive(&self) -> StoreResult<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(StoreError::Stopped {
                what: "the process died",
            });
        }
        Ok(())
    }

    /// Runs the save `save` (if it is the one this store is about, as `then` says).
    async fn saving<T>(
        &self,
        save: Save,
        run: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.alive()?;
        if save != self.save {
            return run.await;
        }
        match self.then {
            Then::Dies => {
                let result = run.await;
                self.dead.store(true, Ordering::SeqCst);
                result
            }
            Then::Fails | Then::FailsAndDies => {
                if self.then == Then::FailsAndDies {
                    self.dead.store(true, Ordering::SeqCst);
                }
                Err(StoreError::Stopped {
                    what: "the save failed",
                })
            }
        }
    }
}

#[async_trait]
impl Store for Dying {
    async fn upsert_contact(
        &self,
        id: &str,
        patch: &ContactPatch,
        now: Timestamp,
    ) -> StoreResult<Contact> {
        self.alive()?;
        self.inner.upsert_contact(id, patch, now).await
    }
    async fn get_contact(&self, id: &str) -> StoreResult<Option<Contact>> {
        self.inner.get_contact(id).await
    }
    async fn contact_exists(&self, id: &str) -> StoreResult<bool> {
        self.inner.contact_exists(id).await
    }
    async fn erase_contact(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        self.alive()?;
        self.inner.erase_contact(id, now).await
    }
    async fn set_consent(
        &self,
        contact_id: &str,
        channel: ChannelKind,
        consent: Consent,
    ) -> StoreResult<Option<Consent>> {
        self.saving(
            Save::Consent,
            self.inner.set_consent(contact_id, channel, consent),
        )
        .await
    }
    async fn consent_history(
        &self,
        contact_id: &str,
        channel: ChannelKind,
    ) -> StoreResult<Vec<Consent>> {
        self.inner.consent_history(contact_id, channel).await
    }
    async fn accept(&self, new: NewNotification, now: Timestamp) -> StoreResult<AcceptOutcome> {
        self.alive()?;
        self.inner.accept(new, now).await
    }
    async fn get_notification(&self, id: &str) -> StoreResult<Option<Notification>> {
        self.inner.get_notification(id).await
    }
    async fn list_notifications(
        &self,
        query: &ListQuery,
    ) -> StoreResult<(Vec<Notification>, Option<String>)> {
        self.inner.list_notifications(query).await
    }
    async fn claim_lanes(
        &self,
        now: Timestamp,
        limits: &crate::store::ClaimLimits,
    ) -> StoreResult<Vec<Notification>> {
        self.alive()?;
        self.inner.claim_lanes(now, limits).await
    }
    async fn renew_claims(&self, ids: &[String], now: Timestamp) -> StoreResult<usize> {
        self.alive()?;
        self.inner.renew_claims(ids, now).await
    }
    fn lease(&self) -> Duration {
        self.inner.lease()
    }
    async fn save_progress(&self, n: &Notification) -> StoreResult<()> {
        self.alive()?;
        self.inner.save_progress(n).await
    }
    async fn edit_notification(&self, id: &str, edit: NotificationEdit) -> StoreResult<Edited> {
        self.saving(Save::Notification, self.inner.edit_notification(id, edit))
            .await
    }
    async fn find_by_message_id(
        &self,
        channel: ChannelKind,
        message_id: &str,
    ) -> StoreResult<Option<String>> {
        self.inner.find_by_message_id(channel, message_id).await
    }
    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.inner.next_due().await
    }
    async fn queue_depth(&self) -> StoreResult<u64> {
        self.inner.queue_depth().await
    }
    async fn channel_states(&self) -> StoreResult<BTreeMap<ChannelKind, ChannelStatus>> {
        self.inner.channel_states().await
    }
    async fn save_channel_state(
        &self,
        kind: ChannelKind,
        status: &ChannelStatus,
    ) -> StoreResult<()> {
        self.saving(Save::State, self.inner.save_channel_state(kind, status))
            .await
    }
    async fn update_contact(&self, id: &str, edit: ContactEdit) -> StoreResult<Option<Contact>> {
        self.alive()?;
        self.inner.update_contact(id, edit).await
    }
    async fn find_contacts_by_address(
        &self,
        channel: ChannelKind,
        address: &str,
    ) -> StoreResult<Vec<Contact>> {
        self.inner.find_contacts_by_address(channel, address).await
    }
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.kv_get(namespace, key).await
    }
    async fn kv_put(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.alive()?;
        self.inner.kv_put(namespace, key, value).await
    }
    async fn kv_insert_new(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<bool> {
        self.alive()?;
        self.inner.kv_insert_new(namespace, key, value).await
    }
    async fn kv_put_relaxed(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.alive()?;
        self.inner.kv_put_relaxed(namespace, key, value).await
    }
    async fn kv_update(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
        durability: Durability,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.alive()?;
        self.inner.kv_update(namespace, key, edit, durability).await
    }
    async fn kv_update_announced(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.alive()?;
        self.inner.kv_update_announced(namespace, key, edit).await
    }
    fn records_changed(&self) -> u64 {
        self.inner.records_changed()
    }
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()> {
        self.alive()?;
        self.inner.kv_delete(namespace, key).await
    }
    async fn kv_delete_relaxed(&self, namespace: &str, key: &str) -> StoreResult<()> {
        self.alive()?;
        self.inner.kv_delete_relaxed(namespace, key).await
    }
    async fn kv_scan(&self, namespace: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.inner.kv_scan(namespace, prefix).await
    }
    async fn kv_scan_page(
        &self,
        namespace: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.inner
            .kv_scan_page(namespace, prefix, after, limit)
            .await
    }
    async fn flush(&self) -> StoreResult<()> {
        self.alive()?;
        self.inner.flush().await
    }
}

const WA: ChannelKind = ChannelKind::Whatsapp;
const TG: ChannelKind = ChannelKind::Telegram;

fn config() -> Config {
    let text = "[server]\napi_keys = [\"test-api-key-1\"]\nadmin_token = \"test-admin-token\"\n\
         [store]\npath = \"/nonexistent/db\"\n\
         [[events.endpoints]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
    Config::from_toml(text, Path::new("test.toml"), &|_| None).expect("config")
}

/// The gateway's events on `store`, on a clock `ahead` of now.
fn events_on(store: Arc<dyn Store>, ahead: chrono::Duration) -> Arc<Events> {
    let clock = SystemClock::default();
    clock.shift(ahead);
    Arc::new(Events::new(
        &config(),
        store,
        Arc::new(clock),
        Arc::default(),
    ))
}

/// The next start on `inner`: its sweep, then the stored events' types, the due entries and
/// how many the sweep made due.
async fn restart(
    inner: &Arc<dyn Store>,
    ahead: chrono::Duration,
) -> (Vec<&'static str>, usize, usize) {
    let events = events_on(inner.clone(), ahead);
    let rebuilt = events.sweep().await.expect("sweep");
    let (stored, _) = events
        .list(&EventQuery {
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .expect("list");
    let due = inner
        .kv_scan(namespaces::EVENT_DUE, "")
        .await
        .expect("due")
        .len();
    (
        stored.iter().map(|r| r.event.event_type.as_str()).collect(),
        due,
        rebuilt,
    )
}

/// What the events namespace holds now (no sweep).
async fn stored_types(inner: &Arc<dyn Store>) -> Vec<&'static str> {
    let events = events_on(inner.clone(), chrono::Duration::zero());
    let (stored, _) = events
        .list(&EventQuery {
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .expect("list");
    stored.iter().map(|r| r.event.event_type.as_str()).collect()
}

/// Past the time the sweep gives a change's save.
fn later() -> chrono::Duration {
    super::sweep::DISCARD_AFTER + chrono::Duration::minutes(1)
}

/// A failed save: the live process deletes its event at once; one that died before it could
/// leaves it to the sweep, which neither makes it due (its save may be under way) nor, once
/// the save had all the time it could need, keeps it.
async fn assert_failed_save_leaves_no_event(
    inner: &Arc<dyn Store>,
    live_failure: impl std::future::Future<Output = ()>,
    dead_failure: impl std::future::Future<Output = ()>,
) {
    live_failure.await;
    assert_eq!(
        stored_types(inner).await,
        Vec::<&str>::new(),
        "the event of a failed save is deleted"
    );
    dead_failure.await;
    let (types, due, _) = restart(inner, chrono::Duration::zero()).await;
    assert_eq!(types.len(), 1, "kept while its save may be under way");
    assert_eq!(due, 0, "but not made due");
    let (types, due, _) = restart(inner, later()).await;
    assert_eq!(
        (types, due),
        (Vec::<&str>::new(), 0),
        "dropped once the save cannot come any more"
    );
}

fn revoked(now: Timestamp) -> Consent {
    Consent {
        status: ConsentStatus::Revoked,
        scopes: Vec::new(),
        source: "telegram_stop".into(),
        evidence: Some("update 7".into()),
        at: now,
    }
}

async fn ana(inner: &Arc<dyn Store>) {
    inner
        .upsert_contact(
            "ana",
            &ContactPatch {
                whatsapp: Some("+15550001".parse().unwrap()),
                telegram: Some("42".parse().unwrap()),
                ..ContactPatch::default()
            },
            Utc::now(),
        )
        .await
        .expect("ana");
}

async fn a_consent_event_survives_a_crash_right_after_its_save(inner: Arc<dyn Store>) {
    ana(&inner).await;
    let dying = Dying::new(&inner, Save::Consent, Then::Dies);
    let events = events_on(dying.clone(), chrono::Duration::zero());
    let saved = events
        .set_consent(dying.as_ref(), "ana", TG, revoked(Utc::now()))
        .await
        .expect("saved");
    assert!(saved.is_some());
    assert!(dying.dead.load(Ordering::SeqCst), "died after the save");
    drop(events);

    let (types, due, rebuilt) = restart(&inner, chrono::Duration::zero()).await;
    assert_eq!(types, ["consent.changed"]);
    assert_eq!((due, rebuilt), (1, 1), "the sweep made it due");
}

async fn a_consent_event_of_a_failed_save_is_never_delivered(inner: Arc<dyn Store>) {
    ana(&inner).await;
    let fail = |then| {
        let inner = inner.clone();
        async move {
            let dying = Dying::new(&inner, Save::Consent, then);
            let events = events_on(dying.clone(), chrono::Duration::zero());
            let saved = events
                .set_consent(dying.as_ref(), "ana", TG, revoked(Utc::now()))
                .await;
            assert!(saved.is_err(), "the save failed");
        }
    };
    assert_failed_save_leaves_no_event(&inner, fail(Then::Fails), fail(Then::FailsAndDies)).await;
    // No contact: nothing saved, no event.
    let events = events_on(inner.clone(), chrono::Duration::zero());
    assert!(events
        .set_consent(inner.as_ref(), "nobody", TG, revoked(Utc::now()))
        .await
        .unwrap()
        .is_none());
    assert_eq!(stored_types(&inner).await, Vec::<&str>::new());
}

async fn a_state_event_survives_a_crash_right_after_its_save(inner: Arc<dyn Store>) {
    let dying = Dying::new(&inner, Save::State, Then::Dies);
    let events = events_on(dying.clone(), chrono::Duration::zero());
    let states = ChannelStates::load(dying.clone())
        .await
        .expect("states")
        .with_events(events.clone());
    // What follows the save (alerts) fails: the process is dead.
    let _ = states.disable(WA, "ban appeal").await;
    assert!(dying.dead.load(Ordering::SeqCst), "died after the save");
    drop((states, events));
    assert_eq!(
        inner.channel_states().await.unwrap()[&WA].state,
        crate::model::ChannelState::Disabled
    );

    let (types, due, rebuilt) = restart(&inner, chrono::Duration::zero()).await;
    assert_eq!(types, ["channel.state_changed"]);
    assert_eq!((due, rebuilt), (1, 1), "the sweep made it due");
}

async fn a_state_event_of_a_failed_save_is_never_delivered(inner: Arc<dyn Store>) {
    let fail = |then| {
        let inner = inner.clone();
        async move {
            let dying = Dying::new(&inner, Save::State, then);
            let events = events_on(dying.clone(), chrono::Duration::zero());
            let states = ChannelStates::load(dying.clone())
                .await
                .expect("states")
                .with_events(events);
            assert!(states.disable(WA, "x").await.is_err(), "the save failed");
        }
    };
    assert_failed_save_leaves_no_event(&inner, fail(Then::Fails), fail(Then::FailsAndDies)).await;
}

/// `n1`, sent on WhatsApp as message `wamid.A`, saved in `inner`.
async fn sent_on_whatsapp(inner: &Arc<dyn Store>) {
    ana(inner).await;
    let now = Utc::now();
    let accepted = inner
        .accept(
            NewNotification {
                notification: Notification {
                    id: "n1".into(),
                    contact_id: "ana".into(),
                    category: Category::Transactional,
                    text: "hi".into(),
                    subject: None,
                    html: None,
                    whatsapp_template: None,
                    channels: vec![WA, TG],
                    status: Status::Queued,
                    channel: None,
                    attempts: Vec::new(),
                    created_at: now,
                    updated_at: now,
                    expires_at: now + chrono::Duration::hours(1),
                    fallback_after_secs: None,
                    idempotency_key: None,
                    cursor: crate::model::Cursor::default(),
                    next_attempt_at: Some(now),
                },
                contact_patch: None,
                idempotency: None,
            },
            now,
        )
        .await
        .expect("accept");
    assert_eq!(accepted, AcceptOutcome::Created);
    let mut n = inner.claim_due(now, 1).await.unwrap().remove(0);
    n.attempts.push(Attempt {
        provider_message_id: Some("wamid.A".into()),
        ..Attempt::new(WA, now, Outcome::Sent)
    });
    n.status = Status::Sent;
    n.channel = Some(WA);
    n.next_attempt_at = None;
    inner.save_progress(&n).await.expect("saved");
}

/// Meta's `delivered` status for `wamid.A`, through the webhook's handler on `store`.
async fn delivered(store: Arc<dyn Store>, events: Arc<Events>) -> StoreResult<()> {
    let config = Arc::new(config());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let state = crate::web::AppState::new(
        store.clone(),
        Arc::new(ChannelStates::load(store.clone()).await.expect("states")),
        crate::channels::Registry::from_channels(Vec::new()),
        config,
        clock,
        Arc::default(),
        Arc::new(AtomicBool::new(true)),
        Arc::default(),
        Arc::new(crate::policy::Policy::new(Default::default(), store)),
        events,
        Default::default(),
    );
    let status = json!({"id": "wamid.A", "status": "delivered", "timestamp": "1750000000",
                        "recipient_id": "15550001"});
    crate::webhooks::whatsapp_receipts::handle(&state, vec![status], Utc::now()).await
}

async fn a_receipt_event_survives_a_crash_right_after_its_save(inner: Arc<dyn Store>) {
    sent_on_whatsapp(&inner).await;
    let dying = Dying::new(&inner, Save::Notification, Then::Dies);
    let events = events_on(dying.clone(), chrono::Duration::zero());
    let _ = delivered(dying.clone(), events.clone()).await;
    assert!(dying.dead.load(Ordering::SeqCst), "died after the save");
    drop(events);
    assert_eq!(
        inner.get_notification("n1").await.unwrap().unwrap().status,
        Status::Delivered
    );

    let (types, due, rebuilt) = restart(&inner, chrono::Duration::zero()).await;
    assert_eq!(types, ["notification.delivered"]);
    assert_eq!((due, rebuilt), (1, 1), "the sweep made it due");
}

async fn a_receipt_event_of_a_failed_save_is_never_delivered(inner: Arc<dyn Store>) {
    sent_on_whatsapp(&inner).await;
    let fail = |then| {
        let inner = inner.clone();
        async move {
            let dying = Dying::new(&inner, Save::Notification, then);
            let events = events_on(dying.clone(), chrono::Duration::zero());
            assert!(
                delivered(dying.clone(), events).await.is_err(),
                "the save failed"
            );
        }
    };
    assert_failed_save_leaves_no_event(&inner, fail(Then::Fails), fail(Then::FailsAndDies)).await;
    assert_eq!(
        inner.get_notification("n1").await.unwrap().unwrap().status,
        Status::Sent
    );
}
