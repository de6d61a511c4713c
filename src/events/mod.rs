//! Events to the app (Standard Webhooks) and alerts to the admins (docs/events.md).
//!
//! **The outbox.** Every event is one kv record in namespace [`namespaces::EVENTS`], keyed by
//! its id, a UUIDv7 (time ordered: `GET /v1/events?after=` pages by it), holding the event and
//! one [`Delivery`] per endpoint its type is meant for. A delivery that is due has an entry in
//! [`namespaces::EVENT_DUE`], keyed `{endpoint}/{due ms, 13 digits}/{event id}`, which the
//! endpoint's worker scans in due order. The record is written first (durably), its due
//! entries after it (relaxed): the dispatcher writes a turn's records before the turn's save
//! and their due entries after it ([`Events::stage`], [`Events::release`]); a state change,
//! a consent change and a WhatsApp receipt likewise around their own save, with the change
//! named in the record ([`Events::stage_change`], [`Change`]) and the record deleted if the
//! save fails ([`Events::discard`]). A pending delivery whose due entry a crash lost is made
//! due again by the sweep ([`sweep`]: at start and every 10 minutes), the event of a change
//! only once the store shows the change saved. A write that fails is logged and never fails
//! the send or the request that caused it.
//!
//! **Delivery** ([`deliver`]): one worker task per endpoint, at most `events.concurrency`
//! deliveries in flight each, a 10 s timeout, a backoff per event (`retry_first` doubling up to
//! `retry_max`, for `give_up_after`, then `failed`) and per endpoint (after a failure the
//! endpoint rests before the next delivery, so a dead endpoint costs one attempt per rest, not
//! one per event). A delivery is claimed with an atomic `kv_update` that writes a lease (owner,
//! token, until) into the record: two workers (two instances on one store) never deliver one
//! event at the same time, and the lease of a crashed worker simply expires.
//!
//! **Alerts** ([`alerts`]): ordinary transactional notifications accepted through the store's
//! accept path, one per alert contact and change, with an idempotency key derived from the
//! change.

pub mod alerts;
pub(crate) mod deliver;
pub mod sign;
mod sweep;

use std::sync::Arc;
use std::time::Duration;

use lifeboat_channel::ChannelKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{Config, EndpointConfig, EventsConfig};
use crate::metrics::Metrics;
use crate::model::{
    ChannelState, Consent, Notification, NotificationView, Outcome, Status, Timestamp,
};
use crate::store::{namespaces, Store, StoreResult};

pub use deliver::Workers;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "notification.sent")]
    NotificationSent,
    #[serde(rename = "notification.delivered")]
    NotificationDelivered,
    #[serde(rename = "notification.read")]
    NotificationRead,
    #[serde(rename = "notification.failed")]
    NotificationFailed,
    #[serde(rename = "notification.expired")]
    NotificationExpired,
    #[serde(rename = "notification.failed_over")]
    NotificationFailedOver,
    #[serde(rename = "channel.state_changed")]
    ChannelStateChanged,
    #[serde(rename = "consent.changed")]
    ConsentChanged,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::NotificationSent,
        EventType::NotificationDelivered,
        EventType::NotificationRead,
        EventType::NotificationFailed,
        EventType::NotificationExpired,
        EventType::NotificationFailedOver,
        EventType::ChannelStateChanged,
        EventType::ConsentChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::NotificationSent => "notification.sent",
            EventType::NotificationDelivered => "notification.delivered",
            EventType::NotificationRead => "notification.read",
            EventType::NotificationFailed => "notification.failed",
            EventType::NotificationExpired => "notification.expired",
            EventType::NotificationFailedOver => "notification.failed_over",
            EventType::ChannelStateChanged => "channel.state_changed",
            EventType::ConsentChanged => "consent.changed",
        }
    }
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown event type `{s}`"))
    }
}

/// An event, as `GET /v1/events` lists it and (without the id) as an endpoint receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// The `webhook-id`: a UUIDv7, the same on every retry.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: Timestamp,
    pub data: Value,
}

impl Event {
    /// The body POSTed to an endpoint: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": self.event_type,
            "timestamp": self.timestamp,
            "data": self.data,
        }))
        .expect("an event serializes")
    }
}

/// Where one event stands with one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: due at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retried for `give_up_after` without a 2xx; kept (and re-sent by the admin's retry).
    Failed,
}

/// A worker's hold on a delivery while it is in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    /// The gateway process holding it.
    pub owner: String,
    /// This claim (a retried claim by the same owner is another token).
    pub token: String,
    pub until: Timestamp,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// The endpoint's stable id (from its URL): keys its due entries.
    pub endpoint: String,
    /// Its name (`name`, or the URL's host and port).
    pub name: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// The stored record of one event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    #[serde(flatten)]
    pub event: Event,
    pub deliveries: Vec<Delivery>,
    /// When the last delivery ended (delivered or failed): the retention counts from here.
    /// `None` while one is pending (never purged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<Timestamp>,
    /// The change this event reports, when the event was staged before that change's own
    /// save ([`Events::stage_change`]): the sweep makes such a record due only once the store
    /// shows the change saved, and drops it once [`sweep::DISCARD_AFTER`] has passed without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

/// A change saved apart from its event: what the store holds once it is saved
/// ([`Events::saved`]). Staged with the event before the save, so that the sweep can tell a
/// change saved by a process that died before it made the event due (deliver it) from one
/// whose save failed or never came (drop it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A channel's state moved at `at`: saved once its stored status moved at `at` or later
    /// (`since`; a later move can only follow a saved one, or stand for it).
    State { channel: ChannelKind, at: Timestamp },
    /// A contact's consent on `channel`: saved once the consent history holds a record whose
    /// SHA-256 (of its JSON) is `digest` (the history is appended with the consent, atomically;
    /// the digest keeps the evidence out of the event's record).
    Consent {
        contact_id: String,
        channel: ChannelKind,
        digest: String,
    },
    /// A WhatsApp receipt: saved once the attempt that carried message `message_id` shows
    /// `status` (`delivered` or `read`) or `read`.
    Receipt {
        notification_id: String,
        channel: ChannelKind,
        message_id: String,
        status: Status,
    },
}

/// The digest a [`Change::Consent`] holds.
fn consent_digest(consent: &Consent) -> String {
    hex::encode(Sha256::digest(
        serde_json::to_vec(consent).expect("a consent serializes"),
    ))
}

impl Record {
    fn parse(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event record serializes")
    }

    /// Sets `settled_at` once no delivery is pending (clears it when one is again).
    fn settle(&mut self, now: Timestamp) {
        if self
            .deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Pending)
        {
            self.settled_at = None;
        } else if self.settled_at.is_none() {
            self.settled_at = Some(now);
        }
    }
}

/// When a record's retention age starts (`None`: keep it), for the store's purge rule.
pub fn settled_at(value: &[u8]) -> Option<Timestamp> {
    #[derive(Deserialize)]
    struct Settled {
        settled_at: Option<Timestamp>,
    }
    serde_json::from_slice::<Settled>(value).ok()?.settled_at
}

/// The key of a due entry.
fn due_key(endpoint: &str, due: Timestamp, event_id: &str) -> String {
    format!(
        "{endpoint}/{:013}/{event_id}",
        due.timestamp_millis().max(0)
    )
}

/// A configured endpoint, with its signing key.
pub struct Endpoint {
    pub id: String,
    pub name: String,
    pub url: String,
    config: EndpointConfig,
    key: Vec<u8>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    fn new(config: &EndpointConfig) -> Endpoint {
        let digest = Sha256::digest(config.url.as_bytes());
        Endpoint {
            id: format!("ep{}", hex::encode(&digest[..6])),
            name: config.label(),
            url: config.url.clone(),
            // Checked when the config was loaded.
            key: config.key().unwrap_or_default(),
            config: config.clone(),
        }
    }

    fn wants(&self, t: EventType) -> bool {
        self.config.wants(t.as_str())
    }
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: EventType,
    pub at: Timestamp,
    pub data: Value,
}

/// Events whose records are written and whose due entries are not ([`Events::stage`]).
#[derive(Debug, Default)]
#[must_use = "staged events are delivered once released (or by the next sweep)"]
pub struct Staged {
    /// The events' ids.
    pub ids: Vec<String>,
    due: Vec<String>,
}

/// A page of `GET /v1/events`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events after this id (the last id of the previous page).
    pub after: Option<String>,
    pub event_type: Option<EventType>,
    pub limit: usize,
}

/// The gateway's events: records them, lists them, re-sends them, and runs the delivery
/// workers ([`Events::start`]); and its alerts ([`Events::alerts`]).
pub struct Events {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: EventsConfig,
    endpoints: Vec<Arc<Endpoint>>,
    /// Wakes each endpoint's worker (same order as `endpoints`) when an event is recorded.
    wake: Vec<Arc<Notify>>,
    /// This process, in the leases it writes.
    owner: String,
    lease: Duration,
    alerts: alerts::Alerts,
}

impl Events {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Events {
        let endpoints: Vec<Arc<Endpoint>> = config
            .events
            .endpoints
            .iter()
            .map(|e| Arc::new(Endpoint::new(e)))
            .collect();
        Events {
            wake: endpoints.iter().map(|_| Arc::new(Notify::new())).collect(),
            endpoints,
            alerts: alerts::Alerts::new(config, store.clone(), clock.clone()),
            store,
            clock,
            metrics,
            config: config.events.clone(),
            owner: uuid::Uuid::new_v4().to_string(),
            lease: config.store.lease,
        }
    }

    /// Whether any endpoint is configured: without one nothing is recorded.
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    pub fn alerts(&self) -> &alerts::Alerts {
        &self.alerts
    }

    /// Records `events` durably and wakes the workers. A failure is logged, never returned:
    /// an event must not fail what caused it.
    pub async fn record(&self, events: Vec<NewEvent>) {
        let staged = self.stage(events).await;
        self.release(staged).await;
    }

    /// Writes the records of `events` durably, without their due entries: no worker delivers
    /// them until [`Events::release`]. The dispatcher stages a turn's events before the turn's
    /// save and releases them after it, so a crash between the save and the events cannot
    /// lose them (the sweep makes a staged event due, see [`sweep`]) and an app never hears of
    /// a change before `GET` shows it. A failure is logged, never returned.
    pub async fn stage(&self, events: Vec<NewEvent>) -> Staged {
        if events.is_empty() || !self.enabled() {
            return Staged::default();
        }
        match self.try_stage(events, None).await {
            Ok(staged) => staged,
            Err(e) => {
                tracing::error!(error = %crate::store::error_chain(&e), "recording events failed; they will not be delivered");
                Staged::default()
            }
        }
    }

    /// Makes staged events due and wakes the workers. The due entries are relaxed writes: one
    /// a crash loses is written again by the sweep at the next start.
    pub async fn release(&self, staged: Staged) {
        if staged.due.is_empty() {
            return;
        }
        // One write for all of them (one statement on PostgreSQL): each endpoint configured
        // must not cost the caller (a notification worker) another round trip.
        let due: Vec<(String, Vec<u8>)> = staged
            .due
            .into_iter()
            .map(|key| (key, Vec::new()))
            .collect();
        if let Err(e) = self
            .store
            .kv_put_many_relaxed(namespaces::EVENT_DUE, &due)
            .await
        {
            tracing::error!(error = %crate::store::error_chain(&e), "making events due failed; the next sweep will");
        }
        for w in &self.wake {
            w.notify_one();
        }
    }

    /// Stages `events` ([`Events::stage`]) as the events of `change`, which is saved next:
    /// after the save [`Events::release`] makes them due, after a failed save (or one that
    /// turned out to change nothing) [`Events::discard`] deletes them. If the process dies in
    /// between, the sweep decides by what the store holds ([`Events::saved`]): a change that
    /// was saved gets its events delivered, one that was not gets them deleted.
    pub async fn stage_change(&self, events: Vec<NewEvent>, change: Change) -> Staged {
        if events.is_empty() || !self.enabled() {
            return Staged::default();
        }
        match self.try_stage(events, Some(change)).await {
            Ok(staged) => staged,
            Err(e) => {
                tracing::error!(error = %crate::store::error_chain(&e), "recording events failed; they will not be delivered");
                Staged::default()
            }
        }
    }

    /// Deletes staged events whose change was not saved: they never happened. A failure is
    /// logged; the sweep deletes them later (their change is not in the store).
    pub async fn discard(&self, staged: Staged) {
        for id in &staged.ids {
            if let Err(e) = self.store.kv_delete(namespaces::EVENTS, id).await {
                tracing::warn!(event = %id, error = %crate::store::error_chain(&e), "deleting the event of a change that was not saved failed; the sweep will");
            }
        }
    }

    /// Whether the store shows `change` saved (see [`Change`]).
    pub async fn saved(&self, change: &Change) -> StoreResult<bool> {
        Ok(match change {
            Change::State { channel, at } => self
                .store
                .channel_states()
                .await?
                .get(channel)
                .is_some_and(|s| s.since >= *at),
            Change::Consent {
                contact_id,
                channel,
                digest,
            } => self
                .store
                .consent_history(contact_id, *channel)
                .await?
                .iter()
                .any(|c| consent_digest(c) == *digest),
            Change::Receipt {
                notification_id,
                channel,
                message_id,
                status,
            } => {
                let shows = |o: Outcome| match status {
                    Status::Read => o == Outcome::Read,
                    _ => matches!(o, Outcome::Delivered | Outcome::Read),
                };
                self.store
                    .get_notification(notification_id)
                    .await?
                    .is_some_and(|n| {
                        n.attempts.iter().any(|a| {
                            a.channel == *channel
                                && a.provider_message_id.as_deref() == Some(message_id.as_str())
                                && shows(a.outcome)
                        })
                    })
            }
        })
    }

    /// Records `events` ([`Events::stage`], then [`Events::release`]) and returns their ids.
    pub async fn try_record(&self, events: Vec<NewEvent>) -> StoreResult<Vec<String>> {
        let staged = self.try_stage(events, None).await?;
        let ids = staged.ids.clone();
        self.release(staged).await;
        Ok(ids)
    }

    /// Writes the records (every write relaxed but the last, which is durable and so makes
    /// every earlier one durable: sled flushes everything, PostgreSQL's WAL is durable up to
    /// a synchronous commit) and says which due entries they need.
    async fn try_stage(
        &self,
        events: Vec<NewEvent>,
        change: Option<Change>,
    ) -> StoreResult<Staged> {
        let mut staged = Staged::default();
        let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
        let mut types = Vec::with_capacity(events.len());
        for new in events {
            let id = uuid::Uuid::now_v7().to_string();
            let now = self.clock.now();
            let deliveries: Vec<Delivery> = self
                .endpoints
                .iter()
                .filter(|e| e.wants(new.event_type))
                .map(|e| Delivery {
                    endpoint: e.id.clone(),
                    name: e.name.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    next_attempt_at: Some(now),
                    last_status: None,
                    last_error: None,
                    delivered_at: None,
                    lease: None,
                })
                .collect();
            let mut record = Record {
                event: Event {
                    id: id.clone(),
                    event_type: new.event_type,
                    timestamp: new.at,
                    data: new.data,
                },
                deliveries,
                settled_at: None,
                change: change.clone(),
            };
            record.settle(now);
            writes.push((id.clone(), record.encode()));
            staged.due.extend(
                record
                    .deliveries
                    .iter()
                    .map(|d| due_key(&d.endpoint, now, &id)),
            );
            types.push((id.clone(), new.event_type));
            staged.ids.push(id);
        }
        let last = writes.len().saturating_sub(1);
        for (i, (key, value)) in writes.into_iter().enumerate() {
            if i == last {
                self.store.kv_put(namespaces::EVENTS, &key, &value).await?;
            } else {
                self.store
                    .kv_put_relaxed(namespaces::EVENTS, &key, &value)
                    .await?;
            }
        }
        for (id, event_type) in types {
            self.metrics.event_recorded(event_type.as_str());
            tracing::debug!(event = %id, r#type = event_type.as_str(), "event recorded");
        }
        Ok(staged)
    }

    /// One event's record.
    pub async fn get(&self, id: &str) -> StoreResult<Option<Record>> {
        Ok(self
            .store
            .kv_get(namespaces::EVENTS, id)
            .await?
            .and_then(|b| Record::parse(&b)))
    }

    /// A page of events, oldest first, and the `after` of the next page (if there may be one).
    /// Reads the namespace from `after` on in key ranges ([`Store::kv_scan_page`]) until the
    /// page is full: a page costs its own records (and, with a type filter, the others'
    /// records between them), not the whole namespace.
    pub async fn list(&self, query: &EventQuery) -> StoreResult<(Vec<Record>, Option<String>)> {
        let limit = query.limit.max(1);
        let read = limit.clamp(64, 1000);
        let mut page = Vec::new();
        let mut after = query.after.clone().unwrap_or_default();
        'pages: loop {
            let batch = self
                .store
                .kv_scan_page(namespaces::EVENTS, "", &after, read)
                .await?;
            let full = batch.len() == read;
            for (key, value) in batch {
                after = key;
                let Some(record) = Record::parse(&value) else {
                    continue;
                };
                if query
                    .event_type
                    .is_some_and(|t| t != record.event.event_type)
                {
                    continue;
                }
                page.push(record);
                if page.len() == limit {
                    break 'pages;
                }
            }
            if !full {
                break;
            }
        }
        let next = (page.len() == limit).then(|| page[limit - 1].event.id.clone());
        Ok((page, next))
    }

    /// The admin's retry: every endpoint that wants this event's type (as configured now)
    /// gets it again, now, whatever happened before. `None` if there is no such event.
    pub async fn retry(&self, id: &str) -> StoreResult<Option<Record>> {
        let Some(current) = self.get(id).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let wanted: Vec<Arc<Endpoint>> = self
            .endpoints
            .iter()
            .filter(|e| e.wants(current.event.event_type))
            .cloned()
            .collect();
        let due: Vec<String> = wanted.iter().map(|e| due_key(&e.id, now, id)).collect();
        let edit = Box::new(move |old: Option<&[u8]>| {
            let old = old?;
            // A record this version cannot read is left as it is (`None` would delete it).
            let Some(mut record) = Record::parse(old) else {
                return Some(old.to_vec());
            };
            for e in &wanted {
                match record.deliveries.iter_mut().find(|d| d.endpoint == e.id) {
                    Some(d) => {
                        d.state = DeliveryState::Pending;
                        d.next_attempt_at = Some(now);
                        d.lease = None;
                    }
                    None => record.deliveries.push(Delivery {
                        endpoint: e.id.clone(),
                        name: e.name.clone(),
                        state: DeliveryState::Pending,
                        attempts: 0,
                        next_attempt_at: Some(now),
                        last_status: None,
                        last_error: None,
                        delivered_at: None,
                        lease: None,
                    }),
                }
            }
            record.settle(now);
            Some(record.encode())
        });
        let after = self
            .store
            .kv_update(
                namespaces::EVENTS,
                id,
                edit,
                crate::store::Durability::Durable,
            )
            .await?;
        // The due entries only once the record says the deliveries are pending now: a worker
        // that finds a due entry the record does not match drops it as stale.
        for key in &due {
            self.store.kv_put(namespaces::EVENT_DUE, key, b"").await?;
        }
        for w in &self.wake {
            w.notify_one();
        }
        tracing::info!(event = %id, "event queued for delivery again by admin");
        Ok(after.and_then(|b| Record::parse(&b)))
    }

    // ---- what happened, as events ----

    /// The events of one worker turn on `n`, staged: `status` was its status before the turn
    /// and its first `recorded` attempts were there before it. Called before the turn's save;
    /// [`Events::release`] after it.
    pub async fn notification_turn(
        &self,
        status: Status,
        recorded: usize,
        n: &Notification,
    ) -> Staged {
        if !self.enabled() {
            return Staged::default();
        }
        self.stage(turn_events(status, recorded, n, self.clock.now()))
            .await
    }

    /// A receipt moved `n` to `delivered` or `read`: its event, recorded after the save. Only
    /// for a receipt [`Events::stage_receipt`] did not foresee (the notification changed
    /// between its read and the edit).
    pub async fn receipt(&self, n: &Notification) {
        let Some(t) = receipt_type(n.status) else {
            return;
        };
        self.record(vec![notification_event(t, n, self.clock.now())])
            .await;
    }

    /// The event of a receipt that moves `n` (as it will be saved: the receipt applied) to
    /// `delivered` or `read` on the attempt that carried `message_id` on `channel`, staged
    /// before the edit that saves it.
    pub async fn stage_receipt(
        &self,
        n: &Notification,
        channel: ChannelKind,
        message_id: &str,
    ) -> Staged {
        let Some(t) = receipt_type(n.status) else {
            return Staged::default();
        };
        if !self.enabled() {
            return Staged::default();
        }
        self.stage_change(
            vec![notification_event(t, n, self.clock.now())],
            Change::Receipt {
                notification_id: n.id.clone(),
                channel,
                message_id: message_id.to_string(),
                status: n.status,
            },
        )
        .await
    }

    /// The `channel.state_changed` event of a change (as its history records it), staged
    /// before the state's save.
    #[allow(clippy::too_many_arguments)]
    pub async fn stage_state_changed(
        &self,
        channel: ChannelKind,
        from: ChannelState,
        to: ChannelState,
        reason: Option<&str>,
        until: Option<Timestamp>,
        at: Timestamp,
    ) -> Staged {
        self.stage_change(
            vec![NewEvent {
                event_type: EventType::ChannelStateChanged,
                at,
                data: json!({
                    "channel": channel,
                    "from": from,
                    "to": to,
                    "reason": reason,
                    "until": until,
                }),
            }],
            Change::State { channel, at },
        )
        .await
    }

    /// Saves a contact's consent on a channel ([`Store::set_consent`] on `store`) with its
    /// `consent.changed` event: staged before the save, due after it, deleted if the save
    /// failed or found no contact. Returns what the save returns.
    pub async fn set_consent(
        &self,
        store: &dyn Store,
        contact_id: &str,
        channel: ChannelKind,
        consent: Consent,
    ) -> StoreResult<Option<Consent>> {
        let staged = if self.enabled() {
            self.stage_change(
                vec![consent_event(contact_id, channel, &consent)],
                Change::Consent {
                    contact_id: contact_id.to_string(),
                    channel,
                    digest: consent_digest(&consent),
                },
            )
            .await
        } else {
            Staged::default()
        };
        match store.set_consent(contact_id, channel, consent).await {
            Ok(Some(saved)) => {
                self.release(staged).await;
                Ok(Some(saved))
            }
            Ok(None) => {
                self.discard(staged).await;
                Ok(None)
            }
            Err(e) => {
                self.discard(staged).await;
                Err(e)
            }
        }
    }

    /// Starts one delivery worker per endpoint.
    pub fn start(self: &Arc<Self>) -> Workers {
        deliver::start(self.clone())
    }
}

/// `data` of a `notification.*` event: the notification as `GET` shows it.
fn notification_event(t: EventType, n: &Notification, at: Timestamp) -> NewEvent {
    NewEvent {
        event_type: t,
        at,
        data: serde_json::to_value(NotificationView::from(n)).expect("a notification serializes"),
    }
}

/// The event type of a receipt that moved a notification to `status`.
fn receipt_type(status: Status) -> Option<EventType> {
    match status {
        Status::Delivered => Some(EventType::NotificationDelivered),
        Status::Read => Some(EventType::NotificationRead),
        _ => None,
    }
}

/// The `consent.changed` event of `consent`.
fn consent_event(contact_id: &str, channel: ChannelKind, consent: &Consent) -> NewEvent {
    NewEvent {
        event_type: EventType::ConsentChanged,
        at: consent.at,
        data: json!({
            "contact_id": contact_id,
            "channel": channel,
            "status": consent.status,
            "scopes": consent.scopes,
            "source": consent.source,
        }),
    }
}

/// Saves a consent with its event ([`Events::set_consent`]), or without one when there are no
/// events (a caller that has none, as the Telegram bot's tests).
pub async fn set_consent(
    events: Option<&Events>,
    store: &dyn Store,
    contact_id: &str,
    channel: ChannelKind,
    consent: Consent,
) -> StoreResult<Option<Consent>> {
    match events {
        Some(events) => {
            events
                .set_consent(store, contact_id, channel, consent)
                .await
        }
        None => store.set_consent(contact_id, channel, consent).await,
    }
}

/// Whether an attempt's outcome means the provider was called.
fn called(outcome: Outcome) -> bool {
    !matches!(
        outcome,
        Outcome::Skipped | Outcome::Deferred | Outcome::NoReceipt | Outcome::InternalError
    )
}

/// The events a worker turn caused: `notification.failed_over` for each first send on a
/// channel the plan moved on to (as `lifeboat_failovers_total` counts it: `from` is the plan's
/// channel before it, `reason` what was last recorded there), then `notification.sent` if the
/// turn sent it, or `notification.failed` / `notification.expired` if the turn ended it so.
pub fn turn_events(
    before: Status,
    recorded: usize,
    n: &Notification,
    now: Timestamp,
) -> Vec<NewEvent> {
    let mut out = Vec::new();
    let new = n.attempts.get(recorded..).unwrap_or_default();
    for (i, a) in new.iter().enumerate() {
        let at = recorded + i;
        if !called(a.outcome) || n.attempts[..at].iter().any(|p| p.channel == a.channel) {
            continue;
        }
        let Some(index) = n.channels.iter().position(|c| *c == a.channel) else {
            continue;
        };
        let Some(from) = index.checked_sub(1).and_then(|j| n.channels.get(j)) else {
            continue;
        };
        let last = n.attempts[..at].iter().rev().find(|p| p.channel == *from);
        let reason = last.map(|p| match p.reason {
            Some(r) => r.as_str().to_string(),
            None => p.outcome.as_str().to_string(),
        });
        out.push(NewEvent {
            event_type: EventType::NotificationFailedOver,
            at: a.at,
            data: json!({
                "notification_id": n.id,
                "contact_id": n.contact_id,
                "from": from,
                "to": a.channel,
                "reason": reason,
                "detail": last.and_then(|p| p.detail.clone()),
            }),
        });
    }
    let sent_now = new.iter().any(|a| a.outcome == Outcome::Sent);
    let t = match n.status {
        Status::Sent if sent_now => Some(EventType::NotificationSent),
        Status::Failed if before != Status::Failed => Some(EventType::NotificationFailed),
        Status::Expired if before != Status::Expired => Some(EventType::NotificationExpired),
        _ => None,
    };
    if let Some(t) = t {
        out.push(notification_event(t, n, now));
    }
    out
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
