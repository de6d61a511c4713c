//! The contract between Lifeboat's dispatcher and its channels.
//!
//! A channel (WhatsApp, Telegram, email, LINE, or a fifth one) turns one [`OutboundMessage`]
//! into one provider call and turns whatever the provider answers into exactly one [`Answer`]:
//! a [`Class`] plus the raw code, the provider's own words and its message id. The dispatcher
//! decides retries, failover and channel states from the class alone, so it never sees a
//! provider's error codes; everything provider-specific stays inside the channel's crate.
//!
//! `send` never returns an error: a timeout, a refused connection or a body that doesn't parse
//! is itself an answer (usually [`Class::Transient`]).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The four channels Lifeboat knows, by their names in the API and config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Whatsapp,
    Telegram,
    Email,
    Line,
}

impl ChannelKind {
    /// Every channel, in the default fallback order.
    pub const ALL: [ChannelKind; 4] = [
        ChannelKind::Whatsapp,
        ChannelKind::Telegram,
        ChannelKind::Line,
        ChannelKind::Email,
    ];

    /// The name used in the HTTP API, config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Whatsapp => "whatsapp",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Email => "email",
            ChannelKind::Line => "line",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a channel name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel `{0}` (expected whatsapp, telegram, email or line)")]
pub struct UnknownChannel(pub String);

impl std::str::FromStr for ChannelKind {
    type Err = UnknownChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "whatsapp" => Ok(ChannelKind::Whatsapp),
            "telegram" => Ok(ChannelKind::Telegram),
            "email" => Ok(ChannelKind::Email),
            "line" => Ok(ChannelKind::Line),
            other => Err(UnknownChannel(other.to_string())),
        }
    }
}

/// What kind of message this is; marketing is subject to stricter rules (scopes, caps, quiet hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    #[default]
    Transactional,
    Marketing,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::Marketing => "marketing",
        }
    }
}

/// A pre-approved WhatsApp template: name, language code and the body's text parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsappTemplate {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub parameters: Vec<String>,
    /// The template to send instead while this one is paused or disabled (never sent
    /// itself: the dispatcher picks one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative: Option<Box<WhatsappTemplate>>,
}

/// One message for one recipient on one channel, as the dispatcher hands it over.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The notification this send belongs to (for logs and provider-side correlation).
    pub notification_id: String,
    pub category: Category,
    /// The recipient's address on this channel: E.164 number, chat id, email address or LINE user id.
    pub to: String,
    pub text: String,
    /// Email subject; other channels ignore it.
    pub subject: Option<String>,
    /// Email HTML alternative; other channels ignore it.
    pub html: Option<String>,
    /// WhatsApp: when set, the template is sent instead of free-form text.
    pub whatsapp_template: Option<WhatsappTemplate>,
    /// A key that stays the same for every attempt of this notification on this channel, so a
    /// provider with idempotent retries (LINE `X-Line-Retry-Key`) delivers it once. A UUID.
    pub retry_key: String,
    /// Extra headers for email (e.g. `List-Unsubscribe`); other channels ignore them.
    pub headers: Vec<(String, String)>,
}

/// Who a throttle applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// The whole channel must slow down (HTTP 429, throughput limits).
    Channel,
    /// Only sends to this recipient must wait (WhatsApp 131056 pair rate limit).
    Recipient,
}

/// How a recipient told the provider they don't want our messages; the dispatcher revokes consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptOut {
    /// The person blocked us (Telegram "bot was blocked by the user", LINE unfollow): revoke all.
    Blocked,
    /// The person stopped marketing only (WhatsApp 131050): revoke the `marketing` scope.
    StoppedMarketing,
}

/// What a provider's answer says beyond its class, about something narrower than the channel
/// (one template, one person's marketing): the dispatcher records it so the next message
/// that would meet the same refusal goes around it without asking the provider again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The template this message used is paused for low quality (WhatsApp 132015): no message
    /// with it goes out until the pause ends or the provider approves it again.
    TemplatePaused,
    /// The template is disabled or does not exist (WhatsApp 132016, 132001): no message with it
    /// goes out until the provider approves it again.
    TemplateDisabled,
    /// The provider holds marketing to this recipient for about a day (WhatsApp 131049):
    /// their marketing goes another way meanwhile; their other messages are not affected.
    RecipientMarketingHeld,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::TemplatePaused => "template_paused",
            Signal::TemplateDisabled => "template_disabled",
            Signal::RecipientMarketingHeld => "recipient_marketing_held",
        }
    }
}

/// The class of a provider's answer: the only thing the dispatcher acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// The provider accepted the message. Done; the provider's message id is kept.
    Sent,
    /// The provider or the network failed this once (5xx, timeout, reset): retry the same
    /// channel with backoff (waiting at least `retry_after` if given), then fall over.
    Transient { retry_after: Option<Duration> },
    /// The provider asks us to slow down: pause the channel (or just this recipient) until
    /// `retry_after` has passed; wait if that is short, otherwise fall over.
    Throttled {
        retry_after: Option<Duration>,
        scope: ThrottleScope,
    },
    /// This person can't be reached here (blocked us, unknown, deactivated): fall over for this
    /// notification only; the channel stays healthy. `opt_out` says whether consent must go.
    RecipientUnreachable { opt_out: Option<OptOut> },
    /// This message can't go this way (content, template, window): fall over, channel healthy.
    Rejected,
    /// The account is limited for a while (policy block, quota used up, reputation block): the
    /// channel rests for its cooldown (at least `retry_after` when the provider names it), then one notification probes it.
    ChannelRestricted { retry_after: Option<Duration> },
    /// The account is locked or disabled: out of rotation until an admin enables it.
    ChannelBanned,
    /// Credentials or ids are wrong: the channel is disabled until an admin enables it.
    ConfigError,
}

impl Class {
    /// The stable name of the class, as used in attempt outcomes and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Class::Sent => "sent",
            Class::Transient { .. } => "retry",
            Class::Throttled { .. } => "throttled",
            Class::RecipientUnreachable { .. } => "recipient_unreachable",
            Class::Rejected => "rejected",
            Class::ChannelRestricted { .. } => "channel_restricted",
            Class::ChannelBanned => "channel_banned",
            Class::ConfigError => "config_error",
        }
    }
}

/// A provider's answer to one send, classified, with the provider's own words kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub class: Class,
    /// The provider's code as text: a WhatsApp error code, an HTTP status, an SMTP reply
    /// with its enhanced code (`550 5.1.1`), or a short tag like `timeout`.
    pub code: Option<String>,
    /// The provider's words (never a secret).
    pub detail: Option<String>,
    /// The provider's id for the accepted message (`wamid...`, Telegram message id, LINE id,
    /// SMTP `Message-ID`).
    pub message_id: Option<String>,
    /// What the answer says about a template or the recipient's marketing, if anything.
    pub signal: Option<Signal>,
}

impl Answer {
    /// A successful send with the provider's message id.
    pub fn sent(message_id: impl Into<String>) -> Self {
        Answer {
            class: Class::Sent,
            code: None,
            detail: None,
            message_id: Some(message_id.into()),
            signal: None,
        }
    }

    /// A failed send of class `class`, with the provider's code and words.
    pub fn failed(class: Class, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Answer {
            class,
            code: Some(code.into()),
            detail: Some(detail.into()),
            message_id: None,
            signal: None,
        }
    }

    /// The same answer carrying `signal`.
    pub fn with_signal(mut self, signal: Option<Signal>) -> Self {
        self.signal = signal;
        self
    }

    /// A timeout: always transient (the provider may or may not have the message).
    pub fn timeout(after: Duration) -> Self {
        Answer::failed(
            Class::Transient { retry_after: None },
            "timeout",
            format!("no answer within {}s", after.as_secs_f64()),
        )
    }
}

/// The result of a cheap health check (`/readyz`, `lifeboat check-config --probe`).
///
/// A health check cannot see a sending restriction; it tells a working configuration from
/// wrong credentials and from a provider that can't be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Credentials accepted; the string says what was checked (e.g. the bot's username).
    Ok(String),
    /// The provider rejected the credentials or ids.
    ConfigError(String),
    /// The provider couldn't be reached or answered with a server error.
    Unreachable(String),
}

impl Health {
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok(_))
    }
}

/// One way to reach people. Implementations live in their own crates under `channels/`.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Which channel this is.
    fn kind(&self) -> ChannelKind;

    /// Sends one message and classifies the provider's answer. Never panics, never errors:
    /// every failure is an [`Answer`]. Implementations bound the call by their configured timeout.
    async fn send(&self, message: &OutboundMessage) -> Answer;

    /// A cheap check that the credentials work and the provider answers.
    async fn health(&self) -> Health;

    /// Whether this channel reports delivery receipts later (WhatsApp statuses), which
    /// `fallback_after` needs.
    fn has_receipts(&self) -> bool {
        false
    }
}

/// Replaces every occurrence of `secret` in `text` with `***`, for provider errors that echo
/// a URL or header carrying a credential (Telegram puts the bot token in the path).
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    text.replace(secret, "***")
}

/// An error and its sources on one line ("error sending request: connection refused"), for
/// an answer's detail: HTTP clients nest the useful part (refused, timed out) a level or two
/// down. Run the result through [`redact`] if a source may echo a credential.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        for kind in ChannelKind::ALL {
            assert_eq!(kind.as_str().parse::<ChannelKind>().unwrap(), kind);
        }
        assert!("sms".parse::<ChannelKind>().is_err());
    }

    #[test]
    fn redact_hides_the_secret() {
        assert_eq!(
            redact("error for https://x/bot123:ABC/SendMessage", "123:ABC"),
            "error for https://x/bot***/SendMessage"
        );
        assert_eq!(redact("nothing", ""), "nothing");
    }

    #[test]
    fn error_chain_joins_sources_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(error_chain(&e), "error sending request: connection refused");
    }

    #[test]
    fn class_names_are_the_attempt_outcomes() {
        assert_eq!(Class::Transient { retry_after: None }.as_str(), "retry");
        assert_eq!(Class::ChannelBanned.as_str(), "channel_banned");
    }
}
