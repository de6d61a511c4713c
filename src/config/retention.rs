//! `[store.retention]`: parsed here, with the rest of the config; the store's purger
//! (`crate::store::Purger`) applies it (docs/retention.md).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// How long an idempotency key holds.
pub const IDEMPOTENCY_WINDOW_SECS: i64 = 24 * 3600;

/// `[store.retention]`: how long records are kept after they stop being needed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished notifications (sent, delivered, read, failed, expired, cancelled), counted from
    /// their last change. Queued ones are never purged.
    #[serde(default = "default_notifications", deserialize_with = "duration")]
    pub notifications: Duration,
    /// Idempotency keys, counted from their first use; at least the 24 h the API promises.
    #[serde(default = "default_idempotency", deserialize_with = "duration")]
    pub idempotency: Duration,
    /// Stored provider webhook events (not understood) and the ids of applied ones.
    #[serde(default = "default_webhook_events", deserialize_with = "duration")]
    pub webhook_events: Duration,
    /// Expired opt-in tokens, counted from their expiry.
    #[serde(default = "default_optin_tokens", deserialize_with = "duration")]
    pub optin_tokens: Duration,
    /// The pause between two purge passes.
    #[serde(default = "default_every", deserialize_with = "duration")]
    pub every: Duration,
}

pub(crate) const DAY: u64 = 24 * 3600;

fn default_notifications() -> Duration {
    Duration::from_secs(30 * DAY)
}
fn default_idempotency() -> Duration {
    Duration::from_secs(DAY)
}
fn default_webhook_events() -> Duration {
    Duration::from_secs(7 * DAY)
}
fn default_optin_tokens() -> Duration {
    Duration::from_secs(30 * DAY)
}
fn default_every() -> Duration {
    Duration::from_secs(600)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    super::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            notifications: default_notifications(),
            idempotency: default_idempotency(),
            webhook_events: default_webhook_events(),
            optin_tokens: default_optin_tokens(),
            every: default_every(),
        }
    }
}

impl RetentionConfig {
    /// Checks the values: a key kept less than the idempotency window would let a retry
    /// create a second notification.
    pub fn validate(&self) -> Result<(), String> {
        if self.idempotency.as_secs() < IDEMPOTENCY_WINDOW_SECS as u64 {
            return Err(format!(
                "store.retention.idempotency must be at least 24h (the idempotency window), not {}",
                humantime::format_duration(self.idempotency)
            ));
        }
        if self.every.is_zero() {
            return Err("store.retention.every must be more than 0s".into());
        }
        Ok(())
    }
}
