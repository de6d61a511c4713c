//! Prometheus metrics, served at `GET /metrics`: how many notifications come in, what every
//! channel answers, how often the plan falls over, the channels' states, the queue, provider
//! latency and the webhook traffic — what an operator alerts on before customers notice.
//!
//! Built on `prometheus-client`, which has no process-global recorder: each gateway owns one
//! [`Metrics`] (its own registry), held by `AppState`, the workers' `WorkerContext`,
//! `ChannelStates` and the Telegram bot, so several gateways in one process (the tests, the
//! sandbox) never share counters. Every call site is one line; the label values are fixed sets
//! chosen here (provider strings that are not known map to `other`), so the number of series
//! stays bounded whatever a provider sends.
//!
//! The exposition is the OpenMetrics text format (`application/openmetrics-text`, which
//! Prometheus scrapes natively; it is the classic text format plus `# EOF` and `_total` naming).
//!
//! | metric | labels | updated |
//! | --- | --- | --- |
//! | `lifeboat_notifications_accepted_total` | `category` | a 202 from `POST /v1/notifications` (not an idempotent repeat) |
//! | `lifeboat_attempts_total` | `channel`, `outcome`, and `reason` for `outcome="skipped"` only | every attempt the worker records |
//! | `lifeboat_failovers_total` | `from`, `to` | see [`Metrics::failover`] |
//! | `lifeboat_channel_results_total` | `channel`, `result` (`sent`, `failed`) | once per notification and channel: see [`Metrics::channel_result`] |
//! | `lifeboat_channel_state` | `channel`, `state` | read at scrape time (1 for the current state) |
//! | `lifeboat_channel_state_changes_total` | `channel`, `to` | every state change (`ChannelStates::change`) |
//! | `lifeboat_queue_depth` | — | read at scrape time from the store |
//! | `lifeboat_send_duration_seconds` | `channel` | each provider call (histogram, 1 ms – 10 s) |
//! | `lifeboat_webhook_events_total` | `provider`, `type` | each webhook event, at its dispatch point |
//! | `lifeboat_events_recorded_total` | `type` | each event recorded for the app's endpoints (docs/events.md) |
//! | `lifeboat_event_deliveries_total` | `endpoint`, `result` (`delivered`, `failed`, `gave_up`) | each delivery attempt to an app endpoint |
//! | `lifeboat_whatsapp_template_changes_total` | `to` (`approved`, `paused`, `disabled`) | a WhatsApp template's state changed (a send answer or a template webhook) |
//! | `lifeboat_priced_messages_total` | `channel`, `category`, `billable` | a message's first status webhook with `pricing` |
//! | `lifeboat_claims_held` | — | read at scrape time: notifications this instance holds a claim (a lease) on |
//! | `lifeboat_lease_held` | `lease` (`telegram/poller`, `channel_probe/<channel>`) | read at scrape time from the store: 1 if this instance holds it |
//! | `lifeboat_db_pool_size`, `_open`, `_available`, `_waiting` | `backend` (`postgres`) | PostgreSQL only, read at scrape time: the pool's configured size, connections open, open and free, callers waiting |
//! | `lifeboat_db_listener_up` | `backend` | PostgreSQL only: 1 while the announcement listener connection listens |
//! | `lifeboat_db_listener_reconnects_total` | `backend` | PostgreSQL only: times the listener connection was made again after a loss |
//! | `lifeboat_db_announcements_total` | `backend`, `channel` (`states`, `work`), `direction` (`sent`, `heard`) | PostgreSQL only: `NOTIFY`s this instance sent, and other instances' it heard |

use std::future::Future;
use std::time::Instant;

use lifeboat_channel::{Category, ChannelKind};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use teloxide::types::{Update, UpdateKind};

use crate::model::{Attempt, ChannelState, Notification, Outcome, SkipReason};
use crate::store::DatabaseStatus;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Provider call latency buckets, in seconds: 1 ms to 10 s (a send's timeout is in seconds).
const SEND_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const STATES: [ChannelState; 5] = [
    ChannelState::Active,
    ChannelState::Throttled,
    ChannelState::Restricted,
    ChannelState::Banned,
    ChannelState::Disabled,
];

/// Meta's webhook fields counted by name (WhatsApp Business Account subscriptions).
const WHATSAPP_FIELDS: &[&str] = &[
    "account_alerts",
    "account_review_update",
    "account_update",
    "business_capability_update",
    "business_status_update",
    "message_template_components_update",
    "message_template_quality_update",
    "message_template_status_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "template_category_update",
    "user_preferences",
];

/// LINE Messaging API webhook event types.
const LINE_TYPES: &[&str] = &[
    "message",
    "unsend",
    "follow",
    "unfollow",
    "join",
    "leave",
    "memberJoined",
    "memberLeft",
    "postback",
    "videoPlayComplete",
    "beacon",
    "accountLink",
    "things",
    "membership",
    "module",
    "activated",
    "deactivated",
    "botSuspended",
    "botResumed",
];

/// Labels as (name, value) pairs: every value is one of a fixed set.
type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct SendBuckets;

impl MetricConstructor<Histogram> for SendBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(SEND_BUCKETS)
    }
}

fn category_labels(category: Category) -> Labels {
    vec![("category", category.as_str().to_string())]
}

/// One gateway's metrics and the registry they are exposed from.
pub struct Metrics {
    registry: Registry,
    accepted: Family<Labels, Counter>,
    attempts: Family<Labels, Counter>,
    failovers: Family<Labels, Counter>,
    channel_results: Family<Labels, Counter>,
    channel_state: Family<Labels, Gauge>,
    state_changes: Family<Labels, Counter>,
    queue_depth: Gauge,
    send_duration: Family<Labels, Histogram, SendBuckets>,
    webhook_events: Family<Labels, Counter>,
    events_recorded: Family<Labels, Counter>,
    event_deliveries: Family<Labels, Counter>,
    template_changes: Family<Labels, Counter>,
    priced: Family<Labels, Counter>,
    claims_held: Gauge,
    leases_held: Family<Labels, Gauge>,
    /// The database figures: families (label `backend`), so that a store without a database
    /// (the embedded one) shows none.
    db_pool_size: Family<Labels, Gauge>,
    db_pool_open: Family<Labels, Gauge>,
    db_pool_available: Family<Labels, Gauge>,
    db_pool_waiting: Family<Labels, Gauge>,
    db_listener_up: Family<Labels, Gauge>,
    db_listener_reconnects: Family<Labels, Counter>,
    db_announcements: Family<Labels, Counter>,
}

/// What the fleet figures of [`Metrics::render`] are read from at scrape time.
#[derive(Debug, Clone, Default)]
pub struct FleetFigures {
    /// Notifications this instance holds a claim on.
    pub claims: usize,
    /// Every lease that exists in this gateway (`telegram/poller`, `channel_probe/<channel>`),
    /// and whether this instance holds it.
    pub leases: Vec<(String, bool)>,
    /// The database's figures (`None`: the embedded store).
    pub database: Option<DatabaseStatus>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (all zero).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lifeboat");
        let m = Metrics {
            registry: Registry::default(),
            accepted: Family::default(),
            attempts: Family::default(),
            failovers: Family::default(),
            channel_results: Family::default(),
            channel_state: Family::default(),
            state_changes: Family::default(),
            queue_depth: Gauge::default(),
            send_duration: Family::new_with_constructor(SendBuckets),
            webhook_events: Family::default(),
            events_recorded: Family::default(),
            event_deliveries: Family::default(),
            template_changes: Family::default(),
            priced: Family::default(),
            claims_held: Gauge::default(),
            leases_held: Family::default(),
            db_pool_size: Family::default(),
            db_pool_open: Family::default(),
            db_pool_available: Family::default(),
            db_pool_waiting: Family::default(),
            db_listener_up: Family::default(),
            db_listener_reconnects: Family::default(),
            db_announcements: Family::default(),
        };
        registry.register(
            "notifications_accepted",
            "Notifications accepted (202) by POST /v1/notifications, by category",
            m.accepted.clone(),
        );
        registry.register(
            "attempts",
            "Attempts recorded by the workers, by channel and outcome (the answer's class, \
             `skipped` with its reason, `throttled`, `no_receipt`): every answer counts, so a \
             notification retried or throttled N times on a channel counts N",
            m.attempts.clone(),
        );
        registry.register(
            "failovers",
            "Notifications that moved on from a channel (tried or skipped) to the next one and \
             were tried there, counted at the first send on the new channel",
            m.failovers.clone(),
        );
        registry.register(
            "channel_results",
            "Notifications per channel, once each: sent there, or tried there and left unsent \
             (failed or fell over after its retries and waits); the admin table's 1 h counts",
            m.channel_results.clone(),
        );
        registry.register(
            "channel_state",
            "1 for each channel's current state, 0 for the others",
            m.channel_state.clone(),
        );
        registry.register(
            "channel_state_changes",
            "Channel state changes, by the state changed to",
            m.state_changes.clone(),
        );
        registry.register(
            "queue_depth",
            "Notifications waiting on the queue (not counting those being sent)",
            m.queue_depth.clone(),
        );
        registry.register_with_unit(
            "send_duration",
            "Provider call latency, by channel",
            Unit::Seconds,
            m.send_duration.clone(),
        );
        registry.register(
            "webhook_events",
            "Provider webhook events and Telegram updates received, by provider and type",
            m.webhook_events.clone(),
        );
        registry.register(
            "events_recorded",
            "Events recorded for the app's endpoints ([[events.endpoints]]), by type",
            m.events_recorded.clone(),
        );
        registry.register(
            "event_deliveries",
            "Attempts to deliver an event to an app endpoint, by endpoint and result \
             (`delivered`: a 2xx; `failed`: retried later; `gave_up`: kept as failed)",
            m.event_deliveries.clone(),
        );
        registry.register(
            "whatsapp_template_changes",
            "WhatsApp template state changes (from send answers 132015/132016/132001 and \
             template webhooks), by the state changed to",
            m.template_changes.clone(),
        );
        registry.register(
            "priced_messages",
            "Messages the provider priced (WhatsApp status `pricing`), once per message, by \
             channel, pricing category and whether it was billable",
            m.priced.clone(),
        );
        registry.register(
            "claims_held",
            "Notifications this instance holds a claim (a lease in the store) on right now",
            m.claims_held.clone(),
        );
        registry.register(
            "lease_held",
            "1 for each lease this instance holds (the Telegram poller, a restricted channel's \
             probe), 0 for the others",
            m.leases_held.clone(),
        );
        registry.register(
            "db_pool_size",
            "The database pool's configured size ([store] pool)",
            m.db_pool_size.clone(),
        );
        registry.register(
            "db_pool_open",
            "Database connections the pool has open",
            m.db_pool_open.clone(),
        );
        registry.register(
            "db_pool_available",
            "Open database connections free right now",
            m.db_pool_available.clone(),
        );
        registry.register(
            "db_pool_waiting",
            "Callers waiting for a database connection right now",
            m.db_pool_waiting.clone(),
        );
        registry.register(
            "db_listener_up",
            "1 while the connection listening for the other instances' announcements is up",
            m.db_listener_up.clone(),
        );
        registry.register(
            "db_listener_reconnects",
            "Times the announcement listener connection was made again after it was lost",
            m.db_listener_reconnects.clone(),
        );
        registry.register(
            "db_announcements",
            "LISTEN/NOTIFY announcements between instances: sent by this one, and heard from \
             the others, by channel (states, work)",
            m.db_announcements.clone(),
        );
        // Both categories from the start, so `rate()` sees the first acceptance.
        for category in [Category::Transactional, Category::Marketing] {
            let _ = m.accepted.get_or_create(&category_labels(category));
        }
        Metrics { registry, ..m }
    }

    /// A WhatsApp template changed state (`approved`, `paused`, `disabled`).
    pub fn template_changed(&self, to: &'static str) {
        self.template_changes
            .get_or_create(&vec![("to", to.to_string())])
            .inc();
    }

    /// A message the provider priced: `category` is one of a fixed set (others are `other`).
    pub fn priced(&self, channel: ChannelKind, category: &str, billable: bool) {
        let category = match category {
            "marketing"
            | "utility"
            | "authentication"
            | "authentication_international"
            | "service"
            | "referral_conversion"
            | "marketing_lite" => category.to_string(),
            _ => "other".to_string(),
        };
        self.priced
            .get_or_create(&vec![
                ("channel", channel.as_str().to_string()),
                ("category", category),
                ("billable", billable.to_string()),
            ])
            .inc();
    }

    /// A notification was accepted (a new one, not an idempotent repeat).
    pub fn accepted(&self, category: Category) {
        self.accepted
            .get_or_create(&category_labels(category))
            .inc();
    }

    /// An event of `event_type` was recorded (one of the fixed event types).
    pub fn event_recorded(&self, event_type: &'static str) {
        self.events_recorded
            .get_or_create(&vec![("type", event_type.to_string())])
            .inc();
    }

    /// One delivery attempt to the endpoint named `endpoint` (a name from the config).
    pub fn event_delivery(&self, endpoint: &str, result: &'static str) {
        self.event_deliveries
            .get_or_create(&vec![
                ("endpoint", endpoint.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// Counts the attempts recorded after the first `from` (those of one worker turn).
    pub fn attempts_since(&self, attempts: &[Attempt], from: usize) {
        for a in attempts.get(from..).unwrap_or_default() {
            let mut labels: Labels = vec![
                ("channel", a.channel.as_str().to_string()),
                ("outcome", a.outcome.as_str().to_string()),
            ];
            if a.outcome == Outcome::Skipped {
                let reason = a.reason.map(SkipReason::as_str).unwrap_or_default();
                labels.push(("reason", reason.to_string()));
            }
            self.attempts.get_or_create(&labels).inc();
        }
    }

    /// Called just before `n` is sent on `to`. A failover is counted when `to` is not the
    /// plan's first channel and nothing was recorded on `to` yet: the first send on a channel
    /// the plan moved on to. `from` is the plan's channel just before `to`, whether it was
    /// tried (an answer that moved on, a missing receipt) or skipped (not configured, no
    /// address or consent, out of rotation). Retries on `to` do not count again; a
    /// notification that moves on and is only skipped there is not a failover.
    pub fn failover(&self, n: &Notification, to: ChannelKind) {
        let index = n.cursor.index;
        if index == 0 || n.attempts.iter().any(|a| a.channel == to) {
            return;
        }
        let Some(from) = n.channels.get(index - 1) else {
            return;
        };
        self.failovers
            .get_or_create(&vec![
                ("from", from.as_str().to_string()),
                ("to", to.as_str().to_string()),
            ])
            .inc();
    }

    /// One notification's result on a channel it was tried on: `sent` there, or `failed`
    /// (it moved on, or ended, without being sent there). Counted once per notification and
    /// channel, whatever the number of retries and throttled waits before.
    pub fn channel_result(&self, kind: ChannelKind, sent: bool) {
        let result = if sent { "sent" } else { "failed" };
        self.channel_results
            .get_or_create(&vec![
                ("channel", kind.as_str().to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// Runs a provider call and records how long it took.
    pub async fn timed_send<T>(&self, kind: ChannelKind, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.send_duration
            .get_or_create(&vec![("channel", kind.as_str().to_string())])
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// A channel's state changed to `to`.
    pub fn state_change(&self, kind: ChannelKind, to: ChannelState) {
        self.state_changes
            .get_or_create(&vec![
                ("channel", kind.as_str().to_string()),
                ("to", to.as_str().to_string()),
            ])
            .inc();
    }

    /// One webhook event of `provider`; `kind` is the provider's own name for it, kept if it
    /// is one of the known names, else counted as `other`.
    pub fn webhook_event(&self, provider: ChannelKind, kind: &str) {
        let known: &[&'static str] = match provider {
            ChannelKind::Line => LINE_TYPES,
            ChannelKind::Whatsapp => WHATSAPP_FIELDS,
            _ => &[],
        };
        let kind = known.iter().find(|k| **k == kind).copied();
        self.count_event(provider, kind.unwrap_or("other"));
    }

    /// One WhatsApp webhook body: each inbound message (`message`), each status of ours
    /// (`status_sent`, `status_delivered`, `status_read`, `status_failed`, `status_other`), and
    /// each change of another field (by its name, see [`Metrics::webhook_event`]).
    pub fn whatsapp_webhook(
        &self,
        messages: usize,
        statuses: &[serde_json::Value],
        fields: &[(String, serde_json::Value)],
    ) {
        for _ in 0..messages {
            self.count_event(ChannelKind::Whatsapp, "message");
        }
        for status in statuses {
            let kind = match status.get("status").and_then(|s| s.as_str()) {
                Some("sent") => "status_sent",
                Some("delivered") => "status_delivered",
                Some("read") => "status_read",
                Some("failed") => "status_failed",
                _ => "status_other",
            };
            self.count_event(ChannelKind::Whatsapp, kind);
        }
        for (field, _) in fields {
            self.webhook_event(ChannelKind::Whatsapp, field);
        }
    }

    /// One Telegram update (polling or webhook), by its kind in the Bot API's naming.
    pub fn telegram_update(&self, update: &Update) {
        let kind = match &update.kind {
            UpdateKind::Message(_) => "message",
            UpdateKind::EditedMessage(_) => "edited_message",
            UpdateKind::ChannelPost(_) => "channel_post",
            UpdateKind::EditedChannelPost(_) => "edited_channel_post",
            UpdateKind::CallbackQuery(_) => "callback_query",
            UpdateKind::InlineQuery(_) => "inline_query",
            UpdateKind::MyChatMember(_) => "my_chat_member",
            UpdateKind::ChatMember(_) => "chat_member",
            UpdateKind::ChatJoinRequest(_) => "chat_join_request",
            UpdateKind::Error(_) => "unparsed",
            _ => "other",
        };
        self.count_event(ChannelKind::Telegram, kind);
    }

    fn count_event(&self, provider: ChannelKind, kind: &'static str) {
        self.webhook_events
            .get_or_create(&vec![
                ("provider", provider.as_str().to_string()),
                ("type", kind.to_string()),
            ])
            .inc();
    }

    /// The exposition: sets the channel states (a snapshot the caller took, one entry per
    /// channel) and the queue depth, then encodes everything ([`CONTENT_TYPE`]).
    pub fn render(
        &self,
        channel_states: &[(ChannelKind, ChannelState)],
        queue_depth: u64,
        fleet: &FleetFigures,
    ) -> String {
        self.set_fleet(fleet);
        for &(kind, current) in channel_states {
            for state in STATES {
                self.channel_state
                    .get_or_create(&vec![
                        ("channel", kind.as_str().to_string()),
                        ("state", state.as_str().to_string()),
                    ])
                    .set(i64::from(state == current));
            }
        }
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    fn set_fleet(&self, fleet: &FleetFigures) {
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.claims_held.set(gauge(fleet.claims));
        for (lease, held) in &fleet.leases {
            self.leases_held
                .get_or_create(&vec![("lease", lease.clone())])
                .set(i64::from(*held));
        }
        let Some(db) = &fleet.database else {
            return;
        };
        // One label, so that the series read `lifeboat_db_pool_size{backend="postgres"}`.
        let none: Labels = vec![("backend", "postgres".to_string())];
        self.db_pool_size
            .get_or_create(&none)
            .set(gauge(db.pool_max));
        self.db_pool_open
            .get_or_create(&none)
            .set(gauge(db.pool_open));
        self.db_pool_available
            .get_or_create(&none)
            .set(gauge(db.pool_available));
        self.db_pool_waiting
            .get_or_create(&none)
            .set(gauge(db.pool_waiting));
        self.db_listener_up
            .get_or_create(&none)
            .set(i64::from(db.listening));
        // The store counts; the counters catch up with it.
        let catch_up = |c: &Counter, total: u64| {
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        };
        catch_up(
            &self.db_listener_reconnects.get_or_create(&none),
            db.listener_reconnects,
        );
        for (channel, direction, total) in [
            ("states", "sent", db.states_sent),
            ("work", "sent", db.work_sent),
            ("states", "heard", db.states_heard),
            ("work", "heard", db.work_heard),
        ] {
            catch_up(
                &self.db_announcements.get_or_create(&vec![
                    ("backend", "postgres".to_string()),
                    ("channel", channel.to_string()),
                    ("direction", direction.to_string()),
                ]),
                total,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_the_lifeboat_prefix() {
        let m = Metrics::new();
        m.accepted(Category::Marketing);
        m.webhook_event(ChannelKind::Line, "follow");
        m.webhook_event(ChannelKind::Line, "somethingNew");
        m.webhook_event(ChannelKind::Whatsapp, "made_up_field");
        m.state_change(ChannelKind::Whatsapp, ChannelState::Banned);
        let mut text = String::new();
        encode(&mut text, &m.registry).unwrap();
        for line in [
            "lifeboat_notifications_accepted_total{category=\"marketing\"} 1",
            "lifeboat_webhook_events_total{provider=\"line\",type=\"follow\"} 1",
            "lifeboat_webhook_events_total{provider=\"line\",type=\"other\"} 1",
            "lifeboat_webhook_events_total{provider=\"whatsapp\",type=\"other\"} 1",
            "lifeboat_channel_state_changes_total{channel=\"whatsapp\",to=\"banned\"} 1",
            "lifeboat_queue_depth 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn send_latency_lands_in_the_buckets() {
        let m = Metrics::new();
        let answer = m.timed_send(ChannelKind::Email, async { 7 }).await;
        assert_eq!(answer, 7);
        let mut text = String::new();
        encode(&mut text, &m.registry).unwrap();
        assert!(
            text.lines()
                .any(|l| l
                    == "lifeboat_send_duration_seconds_bucket{le=\"0.001\",channel=\"email\"} 1"),
            "{text}"
        );
        assert!(text
            .lines()
            .any(|l| l == "lifeboat_send_duration_seconds_count{channel=\"email\"} 1"));
    }

    #[test]
    fn skipped_attempts_carry_their_reason_and_others_do_not() {
        let m = Metrics::new();
        let now = chrono::Utc::now();
        let attempts = vec![
            Attempt::skipped(ChannelKind::Line, now, SkipReason::NoAddress),
            Attempt::new(ChannelKind::Email, now, Outcome::Sent),
        ];
        m.attempts_since(&attempts, 0);
        m.attempts_since(&attempts, 5);
        let mut text = String::new();
        encode(&mut text, &m.registry).unwrap();
        assert!(text.lines().any(|l| l
            == "lifeboat_attempts_total{channel=\"line\",outcome=\"skipped\",reason=\"no_address\"} 1"), "{text}");
        assert!(text
            .lines()
            .any(|l| l == "lifeboat_attempts_total{channel=\"email\",outcome=\"sent\"} 1"));
    }
}
