//! The records Lifeboat keeps: contacts with their consents, notifications with their
//! attempts, and channel states. They are what the store saves and (mostly) what the API shows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lifeboat_channel::{Answer, Category, ChannelKind, Class, WhatsappTemplate};
use serde::{Deserialize, Serialize};

mod ids;
pub use ids::{
    ContactId, EmailAddress, InvalidValue, LineUserId, Locale, NotificationId, TelegramChat,
    TimeZoneName, E164,
};

pub type Timestamp = DateTime<Utc>;

/// `t + d`, or [`far_future`] when that is later or overflows. Every time computed from a
/// duration someone else chose (a request, a provider's `Retry-After`, the config) goes through
/// here: `DateTime + TimeDelta` panics on overflow, and a panic in a worker must never be the
/// way an absurd duration is handled.
pub fn later(t: Timestamp, d: std::time::Duration) -> Timestamp {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .map_or_else(far_future, |at| at.min(far_future()))
}

/// The latest time Lifeboat stores: 9999-12-31T23:59:59Z, the last one RFC 3339 (four-digit
/// years) can write, so every client and the store read it back.
pub fn far_future() -> Timestamp {
    chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .expect("a valid date")
        .and_utc()
}

/// A person the business notifies, with their address on each channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Contact {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// IANA time zone name; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The current consent per channel (history is kept separately, append-only).
    #[serde(default)]
    pub consents: BTreeMap<ChannelKind, Consent>,
    /// When the person last wrote to us on each channel (WhatsApp's 24 h service window).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_inbound: BTreeMap<ChannelKind, Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Contact {
    pub fn new(id: &str, now: Timestamp) -> Self {
        Contact {
            id: id.to_string(),
            whatsapp: None,
            telegram: None,
            email: None,
            line: None,
            timezone: None,
            locale: None,
            consents: BTreeMap::new(),
            last_inbound: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The contact's address on `kind`, if any.
    pub fn address(&self, kind: ChannelKind) -> Option<&str> {
        match kind {
            ChannelKind::Whatsapp => self.whatsapp.as_deref(),
            ChannelKind::Telegram => self.telegram.as_deref(),
            ChannelKind::Email => self.email.as_deref(),
            ChannelKind::Line => self.line.as_deref(),
        }
    }

    /// Whether a message of `category` may go out on `kind` (granted, scope included).
    pub fn consents_to(&self, kind: ChannelKind, category: Category) -> bool {
        self.consents
            .get(&kind)
            .is_some_and(|c| c.status == ConsentStatus::Granted && c.scopes.contains(&category))
    }

    /// Applies the members present in `patch`.
    pub fn apply(&mut self, patch: &ContactPatch, now: Timestamp) {
        fn set<T: AsRef<str>>(field: &mut Option<String>, value: &Option<T>) {
            if let Some(v) = value {
                *field = Some(v.as_ref().to_string());
            }
        }
        set(&mut self.whatsapp, &patch.whatsapp);
        set(&mut self.telegram, &patch.telegram);
        set(&mut self.email, &patch.email);
        set(&mut self.line, &patch.line);
        set(&mut self.timezone, &patch.timezone);
        set(&mut self.locale, &patch.locale);
        self.updated_at = now;
    }
}

/// Members to set on a contact (absent members are left as they are), each one parsed:
/// the request body's members are these types, so a patch is valid by construction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContactPatch {
    pub whatsapp: Option<E164>,
    pub telegram: Option<TelegramChat>,
    pub email: Option<EmailAddress>,
    pub line: Option<LineUserId>,
    pub timezone: Option<TimeZoneName>,
    pub locale: Option<Locale>,
}

impl ContactPatch {
    pub fn is_empty(&self) -> bool {
        *self == ContactPatch::default()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConsentStatus {
    Granted,
    Revoked,
}

/// A stored opt-in token (`optin`; the store's purge reads its expiry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OptinToken {
    pub contact_id: String,
    pub scopes: Vec<Category>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// One consent state (the current one on the contact, or one entry of the history).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Consent {
    pub status: ConsentStatus,
    pub scopes: Vec<Category>,
    /// Where the change came from: `web_form`, `telegram_start`, `telegram_blocked`, `api`, ...
    pub source: String,
    #[serde(default)]
    pub evidence: Option<String>,
    pub at: Timestamp,
}

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Failed,
    Expired,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "queued" => Status::Queued,
            "sending" => Status::Sending,
            "sent" => Status::Sent,
            "delivered" => Status::Delivered,
            "read" => Status::Read,
            "failed" => Status::Failed,
            "expired" => Status::Expired,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Whether the dispatcher is done with it.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Sending)
    }
}

/// What one attempt on a channel came to, as stored and shown (`outcome`, snake_case).
///
/// The answer classes of a send (`sent` … `config_error`, see [`Class`]); `skipped` (the
/// channel was passed over, `reason` says why); `deferred` (a wait shown once, `reason`
/// `quiet_hours`); a receipt moves a `sent` one to `delivered` and `read`; `no_receipt` says
/// `fallback_after` passed without one; `internal_error`: processing the notification hit a
/// bug (a panic, logged); it ended there, `sent` if a send went out in that turn, else
/// `failed`, and is not retried.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    Retry,
    Throttled,
    RecipientUnreachable,
    ChannelRestricted,
    ChannelBanned,
    Rejected,
    ConfigError,
    Skipped,
    Deferred,
    Delivered,
    Read,
    NoReceipt,
    InternalError,
}

impl Outcome {
    /// Every outcome, in the order the API documents them.
    pub const ALL: [Outcome; 14] = [
        Outcome::Sent,
        Outcome::Retry,
        Outcome::Throttled,
        Outcome::RecipientUnreachable,
        Outcome::ChannelRestricted,
        Outcome::ChannelBanned,
        Outcome::Rejected,
        Outcome::ConfigError,
        Outcome::Skipped,
        Outcome::Deferred,
        Outcome::Delivered,
        Outcome::Read,
        Outcome::NoReceipt,
        Outcome::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retry => "retry",
            Outcome::Throttled => "throttled",
            Outcome::RecipientUnreachable => "recipient_unreachable",
            Outcome::ChannelRestricted => "channel_restricted",
            Outcome::ChannelBanned => "channel_banned",
            Outcome::Rejected => "rejected",
            Outcome::ConfigError => "config_error",
            Outcome::Skipped => "skipped",
            Outcome::Deferred => "deferred",
            Outcome::Delivered => "delivered",
            Outcome::Read => "read",
            Outcome::NoReceipt => "no_receipt",
            Outcome::InternalError => "internal_error",
        }
    }
}

impl From<&Class> for Outcome {
    fn from(class: &Class) -> Outcome {
        match class {
            Class::Sent => Outcome::Sent,
            Class::Transient { .. } => Outcome::Retry,
            Class::Throttled { .. } => Outcome::Throttled,
            Class::RecipientUnreachable { .. } => Outcome::RecipientUnreachable,
            Class::Rejected => Outcome::Rejected,
            Class::ChannelRestricted { .. } => Outcome::ChannelRestricted,
            Class::ChannelBanned => Outcome::ChannelBanned,
            Class::ConfigError => Outcome::ConfigError,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a channel was passed over (`reason` of a `skipped` attempt), or, for `quiet_hours`
/// with `deferred`, waited for. Only these were ever written, so stored records read back.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    NoAddress,
    NoConsent,
    NotConfigured,
    ChannelDisabled,
    ChannelRestricted,
    ChannelBanned,
    QuietHours,
    CapReached,
    OutsideWindow,
    /// The WhatsApp template is paused by Meta for low quality (and no alternative is usable).
    TemplatePaused,
    /// The WhatsApp template is disabled by Meta or does not exist (and no alternative is usable).
    TemplateDisabled,
    /// Meta holds marketing to this person for a day (131049); their other messages go on.
    MarketingHeld,
    /// Meta does not deliver marketing templates to US (+1) numbers (`policy.whatsapp.us_marketing`).
    UsMarketing,
    /// The business portfolio's limit of new people per rolling 24 h is reached.
    PortfolioLimit,
}

impl SkipReason {
    /// Every reason, in the order the API documents them.
    pub const ALL: [SkipReason; 14] = [
        SkipReason::NoAddress,
        SkipReason::NoConsent,
        SkipReason::NotConfigured,
        SkipReason::ChannelDisabled,
        SkipReason::ChannelRestricted,
        SkipReason::ChannelBanned,
        SkipReason::QuietHours,
        SkipReason::CapReached,
        SkipReason::OutsideWindow,
        SkipReason::TemplatePaused,
        SkipReason::TemplateDisabled,
        SkipReason::MarketingHeld,
        SkipReason::UsMarketing,
        SkipReason::PortfolioLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoAddress => "no_address",
            SkipReason::NoConsent => "no_consent",
            SkipReason::NotConfigured => "not_configured",
            SkipReason::ChannelDisabled => "channel_disabled",
            SkipReason::ChannelRestricted => "channel_restricted",
            SkipReason::ChannelBanned => "channel_banned",
            SkipReason::QuietHours => "quiet_hours",
            SkipReason::CapReached => "cap_reached",
            SkipReason::OutsideWindow => "outside_window",
            SkipReason::TemplatePaused => "template_paused",
            SkipReason::TemplateDisabled => "template_disabled",
            SkipReason::MarketingHeld => "marketing_held",
            SkipReason::UsMarketing => "us_marketing",
            SkipReason::PortfolioLimit => "portfolio_limit",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a notification's plan: a send, or a channel passed over and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub channel: ChannelKind,
    pub at: Timestamp,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<SkipReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// WhatsApp: the template this send used (`name/language`), when it used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// What the provider said the message costs (WhatsApp status `pricing`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

/// Meta's pricing category of a WhatsApp message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingCategory {
    Marketing,
    MarketingLite,
    Utility,
    Authentication,
    AuthenticationInternational,
    Service,
    ReferralConversion,
    #[serde(other)]
    Other,
}

impl PricingCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            PricingCategory::Marketing => "marketing",
            PricingCategory::MarketingLite => "marketing_lite",
            PricingCategory::Utility => "utility",
            PricingCategory::Authentication => "authentication",
            PricingCategory::AuthenticationInternational => "authentication_international",
            PricingCategory::Service => "service",
            PricingCategory::ReferralConversion => "referral_conversion",
            PricingCategory::Other => "other",
        }
    }
}

/// A status webhook's `pricing`: whether Meta bills the message, and in which category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    pub billable: bool,
    pub category: PricingCategory,
}

impl Attempt {
    /// An attempt with `outcome` and nothing else.
    pub fn new(channel: ChannelKind, at: Timestamp, outcome: Outcome) -> Self {
        Attempt {
            channel,
            at,
            outcome,
            reason: None,
            provider_code: None,
            provider_message_id: None,
            detail: None,
            template: None,
            pricing: None,
        }
    }

    pub fn skipped(channel: ChannelKind, at: Timestamp, reason: SkipReason) -> Self {
        Attempt {
            reason: Some(reason),
            ..Attempt::new(channel, at, Outcome::Skipped)
        }
    }

    /// What a provider's answer to a send (or a later failure report of it) records.
    pub fn answered(channel: ChannelKind, at: Timestamp, answer: &Answer) -> Self {
        Attempt {
            provider_code: answer.code.clone(),
            provider_message_id: answer.message_id.clone(),
            detail: answer.detail.clone(),
            ..Attempt::new(channel, at, Outcome::from(&answer.class))
        }
    }
}

/// Where the dispatcher stands in a notification's plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    /// Index into `Notification::channels` of the channel being tried.
    pub index: usize,
    /// Transient failures so far on that channel.
    pub tries: u32,
    /// When this notification first had to wait on that channel because it was throttled: the
    /// waits on one channel end at `routing.max_wait` after this, then the plan falls over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_since: Option<Timestamp>,
    /// Whether that channel's provider was called for this notification (a send that was
    /// answered): a notification leaving the channel unsent then counts as one failure there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub called: bool,
}

impl Cursor {
    /// The start of channel number `index` of the plan.
    pub fn at(index: usize) -> Cursor {
        Cursor {
            index,
            ..Cursor::default()
        }
    }
}

/// One notification and everything that happened to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    pub id: String,
    pub contact_id: String,
    pub category: Category,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp_template: Option<WhatsappTemplate>,
    /// The candidate channels in order (the request's `channels`, else `routing.order`).
    pub channels: Vec<ChannelKind>,
    pub status: Status,
    /// The channel that carried it.
    pub channel: Option<ChannelKind>,
    pub attempts: Vec<Attempt>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub expires_at: Timestamp,
    /// Seconds to wait for a delivery receipt before trying the next channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_after_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub cursor: Cursor,
    /// When the dispatcher will look at it next: while queued, its next try; while sent on a
    /// channel with receipts and `fallback_after` set, its receipt check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
}

impl Notification {
    /// When it is due on the dispatcher's queue, if it is on it at all: a queued one at its
    /// next try, a sent one whose receipt check (`fallback_after`) is pending at that check.
    /// Every store keeps the queue in step with this.
    pub fn queue_due(&self) -> Option<Timestamp> {
        match self.status {
            Status::Queued | Status::Sent => self.next_attempt_at,
            _ => None,
        }
    }
}

/// The state of a channel in rotation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelState {
    Active,
    Throttled,
    Restricted,
    Banned,
    Disabled,
}

impl ChannelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Active => "active",
            ChannelState::Throttled => "throttled",
            ChannelState::Restricted => "restricted",
            ChannelState::Banned => "banned",
            ChannelState::Disabled => "disabled",
        }
    }
}

/// The last failure a channel reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastError {
    pub at: Timestamp,
    pub outcome: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// A channel's stored state: survives restarts, shown by `GET /v1/admin/channels`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelStatus {
    pub state: ChannelState,
    pub reason: Option<String>,
    pub since: Timestamp,
    pub until: Option<Timestamp>,
    pub last_error: Option<LastError>,
    /// The cooldown the next restriction will last, in seconds (doubles on a failed probe).
    #[serde(default)]
    pub next_cooldown_secs: Option<u64>,
}

impl ChannelStatus {
    pub fn active(now: Timestamp) -> Self {
        ChannelStatus {
            state: ChannelState::Active,
            reason: None,
            since: now,
            until: None,
            last_error: None,
            next_cooldown_secs: None,
        }
    }
}

/// The last messaging-quality signal of a channel (WhatsApp `phone_number_quality_update`):
/// shown on the admin channel row, read by the guardrails (a flag or downgrade pauses
/// marketing there).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelQuality {
    /// `FLAGGED`, `UNFLAGGED`, `DOWNGRADE`, `UPGRADE`, `ONBOARDING`, `THROUGHPUT_UPGRADE`, ...
    pub event: String,
    /// The messaging tier now (`TIER_1K`, ...) and before a tier change.
    #[serde(default)]
    pub current_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_daily_conversations_per_business: Option<String>,
    pub at: Timestamp,
}

impl ChannelQuality {
    /// Whether the provider says quality is low: the number is flagged or its tier was cut.
    pub fn is_flagged(&self) -> bool {
        matches!(self.event.as_str(), "FLAGGED" | "DOWNGRADE")
    }
}

/// What the API shows of a notification (`GET /v1/notifications/{id}`), and the `data` of a
/// `notification.*` event.
#[derive(Serialize)]
pub struct NotificationView<'a> {
    id: &'a str,
    contact_id: &'a str,
    category: Category,
    status: Status,
    channel: Option<ChannelKind>,
    channels: &'a [ChannelKind],
    attempts: &'a [Attempt],
    created_at: Timestamp,
    updated_at: Timestamp,
    expires_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

impl<'a> From<&'a Notification> for NotificationView<'a> {
    fn from(n: &'a Notification) -> Self {
        NotificationView {
            id: &n.id,
            contact_id: &n.contact_id,
            category: n.category,
            status: n.status,
            channel: n.channel,
            channels: &n.channels,
            attempts: &n.attempts,
            created_at: n.created_at,
            updated_at: n.updated_at,
            expires_at: n.expires_at,
            next_attempt_at: n.next_attempt_at.filter(|_| n.status == Status::Queued),
            idempotency_key: n.idempotency_key.as_deref(),
        }
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;

    /// Records written while `outcome` and `reason` were plain strings read back as the
    /// enums, and are written again the same.
    #[test]
    fn stored_attempts_keep_their_strings() {
        let outcomes = [
            "sent",
            "retry",
            "throttled",
            "recipient_unreachable",
            "channel_restricted",
            "channel_banned",
            "rejected",
            "config_error",
            "skipped",
            "deferred",
            "delivered",
            "read",
            "no_receipt",
            "internal_error",
        ];
        let reasons = [
            "no_address",
            "no_consent",
            "not_configured",
            "channel_disabled",
            "channel_restricted",
            "channel_banned",
            "quiet_hours",
            "cap_reached",
            "outside_window",
            "template_paused",
            "template_disabled",
            "marketing_held",
            "us_marketing",
            "portfolio_limit",
        ];
        for (text, outcome) in outcomes.iter().zip(Outcome::ALL) {
            assert_eq!(outcome.as_str(), *text);
            let stored = format!(
                r#"{{"channel":"whatsapp","at":"2026-01-02T03:04:05Z","outcome":"{text}"}}"#
            );
            let a: Attempt = serde_json::from_str(&stored).unwrap();
            assert_eq!(a.outcome, outcome);
            assert_eq!(serde_json::to_string(&a).unwrap(), stored);
        }
        for (text, reason) in reasons.iter().zip(SkipReason::ALL) {
            assert_eq!(reason.as_str(), *text);
            let stored = format!(
                r#"{{"channel":"line","at":"2026-01-02T03:04:05Z","outcome":"skipped","reason":"{text}"}}"#
            );
            let a: Attempt = serde_json::from_str(&stored).unwrap();
            assert_eq!(a.reason, Some(reason));
            assert_eq!(serde_json::to_string(&a).unwrap(), stored);
        }
        assert_eq!(outcomes.len(), Outcome::ALL.len());
        assert_eq!(reasons.len(), SkipReason::ALL.len());
        let stored = r#"{"channel":"whatsapp","at":"2026-01-02T03:04:05Z","outcome":"read","provider_message_id":"wamid.A","template":"order_shipped/en_US","pricing":{"billable":true,"category":"utility"}}"#;
        let a: Attempt = serde_json::from_str(stored).unwrap();
        assert_eq!(
            a.pricing,
            Some(Pricing {
                billable: true,
                category: PricingCategory::Utility
            })
        );
        assert_eq!(serde_json::to_string(&a).unwrap(), stored);
    }

    #[test]
    fn answer_classes_are_recorded_under_their_own_names() {
        let classes = [
            Class::Sent,
            Class::Transient { retry_after: None },
            Class::Rejected,
            Class::ChannelBanned,
            Class::ConfigError,
            Class::RecipientUnreachable { opt_out: None },
            Class::ChannelRestricted { retry_after: None },
            Class::Throttled {
                retry_after: None,
                scope: lifeboat_channel::ThrottleScope::Channel,
            },
        ];
        for class in classes {
            assert_eq!(Outcome::from(&class).as_str(), class.as_str());
        }
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_saturates_instead_of_panicking() {
        let now = Utc::now();
        assert_eq!(
            later(now, Duration::from_secs(60)),
            now + chrono::Duration::seconds(60)
        );
        for huge in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(300_000 * 366 * 86_400),
        ] {
            assert_eq!(later(now, huge), far_future());
        }
        let text = serde_json::to_string(&far_future()).unwrap();
        assert_eq!(text, "\"9999-12-31T23:59:59Z\"");
        assert_eq!(
            serde_json::from_str::<Timestamp>(&text).unwrap(),
            far_future()
        );
    }
}
