//! `[events]` (the app's event endpoints, Standard Webhooks) and `[alerts]` (the admins who get
//! an alert when a channel changes state): parsed here with the rest of the config; the
//! `events` module delivers them (docs/events.md).

use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// Every event type, as the API and the endpoints' `types` filters name them.
pub const EVENT_TYPES: &[&str] = &[
    "notification.sent",
    "notification.delivered",
    "notification.read",
    "notification.failed",
    "notification.expired",
    "notification.failed_over",
    "channel.state_changed",
    "consent.changed",
];

/// `[events]`: where events go, and how hard Lifeboat tries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// `[[events.endpoints]]`: each gets every event its `types` match.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// A delivery not answered with a 2xx within this counts as failed (the spec: 10 s).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The wait after a first failed delivery; it doubles per failure up to `retry_max`.
    #[serde(default = "default_retry_first", deserialize_with = "duration")]
    pub retry_first: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_max: Duration,
    /// How long an event is retried before it is kept as `failed` (the spec: 24 h).
    #[serde(default = "default_give_up_after", deserialize_with = "duration")]
    pub give_up_after: Duration,
    /// Deliveries in flight at once per endpoint.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

/// One `[[events.endpoints]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub url: String,
    /// `whsec_` + base64 key (Standard Webhooks); write `${VAR}` to keep it out of the file.
    pub secret: SecretString,
    /// `notification.*`, `channel.state_changed`, `*`; default: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// The endpoint's name in metrics and `GET /v1/events` (default: the URL's host and port).
    #[serde(default)]
    pub name: Option<String>,
}

impl EndpointConfig {
    /// The signing key: the bytes `secret` encodes after `whsec_`.
    pub fn key(&self) -> Result<Vec<u8>, String> {
        let text = self.secret.expose_secret();
        let Some(b64) = text.strip_prefix("whsec_") else {
            return Err(
                "must start with `whsec_` followed by a base64 key (Standard Webhooks)".into(),
            );
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "the part after `whsec_` is not valid base64".to_string())?;
        if !(16..=64).contains(&key.len()) {
            return Err(
                "the key after `whsec_` must be 16 to 64 bytes (24 to 88 base64 characters)".into(),
            );
        }
        Ok(key)
    }

    /// Whether this endpoint wants events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|p| type_matches(p, event_type))
    }

    /// The name shown in metrics and the API: `name`, or the URL's `host:port`.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .unwrap_or_else(|| "endpoint".into())
    }
}

/// Whether a `types` pattern (`notification.sent`, `notification.*`, `*`) matches a type.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// `[alerts]`: contacts (ordinary contacts, with their addresses and consents) who get a
/// transactional notification when a channel changes state or the risk monitor pauses
/// marketing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub contacts: Vec<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_first() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_concurrency() -> usize {
    8
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            endpoints: Vec::new(),
            timeout: default_timeout(),
            retry_first: default_retry_first(),
            retry_max: default_retry_max(),
            give_up_after: default_give_up_after(),
            concurrency: default_concurrency(),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    super::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl EventsConfig {
    /// Checks every value; the error starts with the key at fault (`events.endpoints[0].url`).
    pub fn validate(&self) -> Result<(), String> {
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = format!("events.endpoints[{i}]");
            match url::Url::parse(&e.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => {
                    return Err(format!(
                        "{key}.url: `{}` is not an absolute http(s) URL",
                        e.url
                    ))
                }
            }
            e.key().map_err(|m| format!("{key}.secret: {m}"))?;
            for (j, t) in e.types.iter().enumerate() {
                let known = t == "*"
                    || EVENT_TYPES.contains(&t.as_str())
                    || t.strip_suffix(".*").is_some_and(|prefix| {
                        EVENT_TYPES
                            .iter()
                            .any(|k| k.split('.').next() == Some(prefix))
                    });
                if !known {
                    return Err(format!(
                        "{key}.types[{j}]: unknown event type `{t}` (known: {}, or `notification.*`, `channel.*`, `consent.*`, `*`)",
                        EVENT_TYPES.join(", ")
                    ));
                }
            }
            if self.endpoints[..i].iter().any(|o| o.url == e.url) {
                return Err(format!("{key}.url: `{}` is listed twice", e.url));
            }
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err("events.timeout: must be between 1ms and 60s".into());
        }
        if self.retry_first.is_zero() || self.retry_max < self.retry_first {
            return Err(
                "events.retry_first: must be more than 0s and at most events.retry_max".into(),
            );
        }
        if self.give_up_after.is_zero() {
            return Err("events.give_up_after: must be more than 0s".into());
        }
        if !(1..=256).contains(&self.concurrency) {
            return Err("events.concurrency: must be between 1 and 256".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_types() {
        assert!(type_matches("*", "consent.changed"));
        assert!(type_matches("notification.*", "notification.failed_over"));
        assert!(!type_matches("notification.*", "channel.state_changed"));
        assert!(type_matches(
            "channel.state_changed",
            "channel.state_changed"
        ));
        assert!(!type_matches("notification.sent", "notification.sent_x"));
    }

    #[test]
    fn a_secret_must_be_whsec_base64() {
        let endpoint = |secret: &str| EndpointConfig {
            url: "http://127.0.0.1:1/hook".into(),
            secret: SecretString::from(secret.to_string()),
            types: vec![],
            name: None,
        };
        assert!(endpoint("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .key()
            .is_ok());
        assert!(endpoint("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").key().is_err());
        assert!(endpoint("whsec_not base64!").key().is_err());
        let e = endpoint("whsec_bm90IGJhc2U2NCE"); // too short, and unpadded
        let err = e.key().unwrap_err();
        assert!(
            !err.contains("bm90"),
            "the error never repeats the secret: {err}"
        );
    }
}
