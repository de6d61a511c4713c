//! Alerts to the admins through Lifeboat itself: `[alerts] contacts` are ordinary contacts,
//! and each change worth waking someone for (a channel restricted, banned or disabled, a
//! channel back, the risk monitor pausing marketing) becomes one transactional notification
//! per contact, accepted through the store's accept path like any other and routed by
//! `routing.order` (a WhatsApp ban alert goes out on Telegram: WhatsApp is already banned
//! when it is sent). Its idempotency key is derived from the change (a state change's sequence
//! number in the channel history, never the moment an instance saw it), so a change announced
//! twice (a retried save, two instances seeing one ban) sends one alert.

use std::sync::Arc;
use std::time::Duration;

use lifeboat_channel::{Category, ChannelKind};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::Config;
use crate::model::{ChannelState, Cursor, Notification, Status, Timestamp};
use crate::store::{AcceptOutcome, IdempotencyKey, NewNotification, Store};

/// How long an alert may wait for a channel before it expires.
const ALERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The idempotency scope of alerts: apart from every app's keys (theirs are scoped by api key).
const SCOPE: &str = "lifeboat-alert";

/// Sends the admins' alerts.
pub struct Alerts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    contacts: Vec<String>,
    order: Vec<ChannelKind>,
    public_url: String,
}

/// A change the admins hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum Alert {
    /// A channel's state changed (as its history records it).
    StateChanged {
        /// The change's sequence number in the channel history (the same on every instance
        /// that saw this change: the alert's key).
        seq: u64,
        channel: ChannelKind,
        from: ChannelState,
        to: ChannelState,
        reason: Option<String>,
        until: Option<Timestamp>,
        at: Timestamp,
    },
    /// The risk monitor paused a channel's marketing. `pause` identifies the pause (the
    /// admin's last resume before it, in ms; 0 if never).
    MarketingPaused {
        channel: ChannelKind,
        reason: String,
        pause: i64,
        at: Timestamp,
    },
}

fn when(t: Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl Alert {
    /// Identifies the change: the same change gives the same key.
    pub fn key(&self) -> String {
        match self {
            // Not the time: each instance sees a change at its own moment.
            Alert::StateChanged {
                seq, channel, to, ..
            } => format!("state/{channel}/{}/{seq}", to.as_str()),
            Alert::MarketingPaused { channel, pause, .. } => {
                format!("marketing_paused/{channel}/{pause}")
            }
        }
    }

    /// Whether the admins hear about it: restricted, banned, disabled, and back to active
    /// from one of those (not the seconds-long throttles).
    pub fn worth_sending(&self) -> bool {
        match self {
            Alert::StateChanged { from, to, .. } => match to {
                ChannelState::Restricted | ChannelState::Banned | ChannelState::Disabled => true,
                ChannelState::Active => matches!(
                    from,
                    ChannelState::Restricted | ChannelState::Banned | ChannelState::Disabled
                ),
                ChannelState::Throttled => false,
            },
            Alert::MarketingPaused { .. } => true,
        }
    }

    /// The subject line and the text: what happened, since when, and what to do.
    pub fn text(&self, admin_url: &str) -> (String, String) {
        match self {
            Alert::StateChanged {
                channel,
                to,
                reason,
                until,
                at,
                ..
            } => {
                let why = reason
                    .as_deref()
                    .map(|r| format!(" Reason: {r}."))
                    .unwrap_or_default();
                let subject = format!("Lifeboat: {channel} is {}", to.as_str());
                let text = match to {
                    ChannelState::Banned => format!(
                        "Lifeboat alert: {channel} is BANNED since {}.{why} Notifications go out on \
                         the next channels of their plans meanwhile. What to do: appeal the ban \
                         with the provider; once it is lifted, press Enable for {channel} on the \
                         admin page ({admin_url}).",
                        when(*at)
                    ),
                    ChannelState::Restricted => format!(
                        "Lifeboat alert: {channel} is RESTRICTED since {}{}.{why} Notifications \
                         go out on the next channels meanwhile; Lifeboat probes {channel} with one \
                         message when the rest ends. What to do: check the account's quality with \
                         the provider; appeal if it stays restricted, then press Enable on the \
                         admin page ({admin_url}).",
                        when(*at),
                        until
                            .map(|u| format!(" (until {})", when(u)))
                            .unwrap_or_default()
                    ),
                    ChannelState::Disabled => format!(
                        "Lifeboat alert: {channel} is DISABLED since {}.{why} Notifications go out \
                         on the next channels meanwhile. What to do: fix the cause (credentials, \
                         configuration), then press Enable for {channel} on the admin page \
                         ({admin_url}).",
                        when(*at)
                    ),
                    _ => format!(
                        "Lifeboat: {channel} is back in rotation since {}.{why} Nothing to do.",
                        when(*at)
                    ),
                };
                (subject, text)
            }
            Alert::MarketingPaused {
                channel,
                reason,
                at,
                ..
            } => (
                format!("Lifeboat: {channel} marketing paused"),
                format!(
                    "Lifeboat alert: marketing on {channel} is PAUSED by the risk monitor since {}: \
                     {reason}. Transactional messages go on. What to do: review the recent \
                     campaigns and their audience; then resume marketing on the admin page \
                     ({admin_url}).",
                    when(*at)
                ),
            ),
        }
    }
}

impl Alerts {
    pub fn new(config: &Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Alerts {
        Alerts {
            store,
            clock,
            contacts: config.alerts.contacts.clone(),
            order: config.routing.order.clone(),
            public_url: config.server.public_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.contacts.is_empty()
    }

    /// Accepts one alert notification per alert contact (once per change: the key is derived
    /// from it). Failures are logged: an alert never fails what caused it.
    pub async fn send(&self, alert: Alert) {
        if !self.enabled() || !alert.worth_sending() {
            return;
        }
        let key = alert.key();
        let (subject, text) = alert.text(&format!("{}/admin", self.public_url));
        let now = self.clock.now();
        for contact in &self.contacts {
            match self.store.contact_exists(contact).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(contact = %contact, alert = %key, "alert contact does not exist (create it with PUT /v1/contacts/{{id}}); no alert sent to it");
                    continue;
                }
                Err(e) => {
                    tracing::error!(contact = %contact, alert = %key, error = %e, "cannot send an alert");
                    continue;
                }
            }
            let idempotency = IdempotencyKey {
                key: format!("{SCOPE}\u{1f}{contact}\u{1f}{key}"),
                fingerprint: hex::encode(Sha256::digest(key.as_bytes())),
            };
            let notification = Notification {
                id: uuid::Uuid::now_v7().to_string(),
                contact_id: contact.clone(),
                category: Category::Transactional,
                text: text.clone(),
                subject: Some(subject.clone()),
                html: None,
                whatsapp_template: None,
                channels: self.order.clone(),
                status: Status::Queued,
                channel: None,
                attempts: Vec::new(),
                created_at: now,
                updated_at: now,
                expires_at: crate::model::later(now, ALERT_LIFETIME),
                fallback_after_secs: None,
                idempotency_key: Some(format!("{SCOPE}:{key}")),
                cursor: Cursor::default(),
                next_attempt_at: Some(now),
            };
            let id = notification.id.clone();
            let new = NewNotification {
                notification,
                contact_patch: None,
                idempotency: Some(idempotency),
            };
            match self.store.accept(new, now).await {
                Ok(AcceptOutcome::Created) => {
                    tracing::info!(contact = %contact, alert = %key, notification = %id, "alert accepted")
                }
                Ok(_) => {
                    tracing::debug!(contact = %contact, alert = %key, "alert already sent for this change")
                }
                Err(e) => {
                    tracing::error!(contact = %contact, alert = %key, error = %e, "accepting an alert failed")
                }
            }
        }
    }
}
