//! A crash between a worker turn's save and its events must not lose the events: the turn's
//! event records are written before the save (and made due after it, or by the events' sweep
//! at the next start). The crash is a store whose `save_progress` never happens.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lifeboat_channel::ChannelKind;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::tests::{accept, ana_on, notification, working};
use super::worker::{process, WorkerContext};
use crate::config::Config;
use crate::model::{ChannelStatus, Consent, Contact, ContactPatch, Notification, Timestamp};
use crate::states::ChannelStates;
use crate::store::{
    namespaces, AcceptOutcome, ContactEdit, Durability, Edited, KvEdit, ListQuery, NewNotification,
    NotificationEdit, SledStore, Store, StoreError, StoreResult,
};

/// The store of a process that dies when it saves a turn: every call goes to `inner`, but
/// `save_progress` never happens.
struct DiesAtSave {
    inner: Arc<dyn Store>,
}

#[async_trait]
impl Store for DiesAtSave {
    async fn upsert_contact(
        &self,
        id: &str,
        patch: &ContactPatch,
        now: Timestamp,
    ) -> StoreResult<Contact> {
        self.inner.upsert_contact(id, patch, now).await
    }
    async fn get_contact(&self, id: &str) -> StoreResult<Option<Contact>> {
        self.inner.get_contact(id).await
    }
    async fn contact_exists(&self, id: &str) -> StoreResult<bool> {
        self.inner.contact_exists(id).await
    }
    async fn erase_contact(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        self.inner.erase_contact(id, now).await
    }
    async fn set_consent(
        &self,
        contact_id: &str,
        channel: ChannelKind,
        consent: Consent,
    ) -> StoreResult<Option<Consent>> {
        self.inner.set_consent(contact_id, channel, consent).await
    }
    async fn consent_history(
        &self,
        contact_id: &str,
        channel: ChannelKind,
    ) -> StoreResult<Vec<Consent>> {
        self.inner.consent_history(contact_id, channel).await
    }
    async fn accept(&self, new: NewNotification, now: Timestamp) -> StoreResult<AcceptOutcome> {
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
        self.inner.claim_lanes(now, limits).await
    }
    async fn renew_claims(&self, ids: &[String], now: Timestamp) -> StoreResult<usize> {
        self.inner.renew_claims(ids, now).await
    }
    fn lease(&self) -> Duration {
        self.inner.lease()
    }
    async fn save_progress(&self, _n: &Notification) -> StoreResult<()> {
        Err(StoreError::Stopped {
            what: "the process died at the save",
        })
    }
    async fn edit_notification(&self, id: &str, edit: NotificationEdit) -> StoreResult<Edited> {
        self.inner.edit_notification(id, edit).await
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
        self.inner.save_channel_state(kind, status).await
    }
    async fn update_contact(&self, id: &str, edit: ContactEdit) -> StoreResult<Option<Contact>> {
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
        self.inner.kv_put(namespace, key, value).await
    }
    async fn kv_insert_new(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<bool> {
        self.inner.kv_insert_new(namespace, key, value).await
    }
    async fn kv_put_relaxed(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.inner.kv_put_relaxed(namespace, key, value).await
    }
    async fn kv_update(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
        durability: Durability,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.inner.kv_update(namespace, key, edit, durability).await
    }
    async fn kv_update_announced(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.inner.kv_update_announced(namespace, key, edit).await
    }
    fn records_changed(&self) -> u64 {
        self.inner.records_changed()
    }
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()> {
        self.inner.kv_delete(namespace, key).await
    }
    async fn kv_delete_relaxed(&self, namespace: &str, key: &str) -> StoreResult<()> {
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
        self.inner.flush().await
    }
}

fn config(dir: &Path, url: &str) -> Config {
    let text = format!(
        "[server]\napi_keys = [\"test-api-key-1\"]\nadmin_token = \"test-admin-token\"\n\
         [store]\npath = {:?}\n\
         [[events.endpoints]]\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         types = [\"notification.*\"]\n",
        dir.join("db").display().to_string()
    );
    Config::from_toml(&text, Path::new("test.toml"), &|_| None).expect("config")
}

/// The provider took the message, then the process died at the turn's save: the turn's
/// `notification.sent` is in the store already, and the next start delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turns_event_survives_a_crash_at_the_turns_save() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("{}/hook", server.uri()));
    let inner: Arc<dyn Store> = Arc::new(SledStore::open(&config.store.path, 8).unwrap());
    let store: Arc<dyn Store> = Arc::new(DiesAtSave {
        inner: inner.clone(),
    });
    let now = Utc::now();
    ana_on(inner.as_ref(), &[ChannelKind::Line], now).await;
    accept(
        inner.as_ref(),
        notification("n1", vec![ChannelKind::Line], now),
        now,
    )
    .await;
    let line = Arc::new(AtomicUsize::new(0));
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock::default());
    let events = Arc::new(crate::events::Events::new(
        &config,
        store.clone(),
        clock.clone(),
        Arc::default(),
    ));
    let ctx = WorkerContext {
        store: store.clone(),
        states: Arc::new(ChannelStates::load(store.clone()).await.expect("states")),
        registry: working(&[(ChannelKind::Line, &line)]),
        routing: config.routing.clone(),
        cooldowns: Default::default(),
        clock: clock.clone(),
        optout: Arc::new(crate::optout::MarketingOptOut::new(&config, store.clone())),
        metrics: Arc::default(),
        policy: Arc::new(crate::policy::Policy::new(
            Default::default(),
            store.clone(),
        )),
        events,
    };
    let claimed = inner.claim_due(now, 1).await.unwrap().remove(0);
    assert!(
        process(&ctx, claimed).await.is_err(),
        "the save did not happen"
    );
    assert_eq!(line.load(std::sync::atomic::Ordering::SeqCst), 1, "sent");
    let stored = inner.kv_scan(namespaces::EVENTS, "").await.unwrap();
    assert_eq!(stored.len(), 1, "the turn's event is stored: {stored:?}");
    drop(ctx);

    // The next start: its sweep makes the event due, and it is delivered.
    let after = Arc::new(crate::events::Events::new(
        &config,
        inner.clone(),
        clock,
        Arc::default(),
    ));
    let workers = after.start();
    let mut bodies = Vec::new();
    for _ in 0..500 {
        bodies = server.received_requests().await.unwrap_or_default();
        if !bodies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.stop(Duration::from_secs(1)).await;
    assert_eq!(bodies.len(), 1, "delivered once");
    let body: serde_json::Value = serde_json::from_slice(&bodies[0].body).unwrap();
    assert_eq!(body["type"], "notification.sent");
    assert_eq!(body["data"]["id"], "n1");
    assert_eq!(body["data"]["channel"], "line");
}
