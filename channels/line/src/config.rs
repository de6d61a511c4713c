//! The `[channels.line]` table: what the gateway's config file says about LINE, and the checks
//! that turn a typo into an error naming the key instead of a failed send at 3 a.m.

use std::fmt;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// The LINE Messaging API's public base URL.
pub const DEFAULT_API_BASE: &str = "https://api.line.me";

/// Settings of the LINE channel, deserialized from `[channels.line]`.
///
/// Secrets are [`SecretString`]s and never appear in `Debug` output.
/// Unknown keys are errors (a typo must not pass silently). The gateway's own keys in the same
/// table (`cooldown`, `timeout`, ...) are taken out before the table reaches this crate.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Base URL of the Messaging API, without a trailing path (tests point it at a mock server).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The channel access token sent as `Authorization: Bearer <token>`.
    pub channel_access_token: SecretString,
    /// The channel secret, which verifies `X-Line-Signature` on webhooks (not used for sending).
    #[serde(default)]
    pub channel_secret: Option<SecretString>,
    /// The account's basic id (`@acme`), for add-friend opt-in links.
    #[serde(default)]
    pub basic_id: Option<String>,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_string()
}

impl LineConfig {
    /// A config with the default API base and only a channel access token.
    pub fn new(channel_access_token: impl Into<String>) -> Self {
        LineConfig {
            api_base: default_api_base(),
            channel_access_token: SecretString::from(channel_access_token.into()),
            channel_secret: None,
            basic_id: None,
        }
    }

    /// Checks every key and returns the parsed API base. Errors name the key, never a secret.
    pub(crate) fn validate(&self) -> Result<Url, LineConfigError> {
        let api_base = parse_api_base(&self.api_base)?;

        let token = self.channel_access_token.expose_secret();
        if token.trim().is_empty() {
            return Err(LineConfigError::Empty {
                key: "channel_access_token",
            });
        }
        if token.trim() != token || HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(LineConfigError::InvalidCharacters {
                key: "channel_access_token",
            });
        }
        if let Some(secret) = &self.channel_secret {
            if secret.expose_secret().trim().is_empty() {
                return Err(LineConfigError::Empty {
                    key: "channel_secret",
                });
            }
        }
        if let Some(basic_id) = &self.basic_id {
            if !basic_id.starts_with('@')
                || basic_id.len() < 2
                || basic_id.contains(char::is_whitespace)
            {
                return Err(LineConfigError::InvalidBasicId {
                    value: basic_id.clone(),
                });
            }
        }
        Ok(api_base)
    }
}

fn parse_api_base(raw: &str) -> Result<Url, LineConfigError> {
    let invalid = |reason: &str| LineConfigError::InvalidApiBase {
        reason: reason.to_string(),
    };
    let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(invalid(
            "the scheme must be https (or http for a local test server)",
        ));
    }
    if url.host_str().is_none() {
        return Err(invalid("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    Ok(url)
}

impl fmt::Debug for LineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineConfig")
            .field("api_base", &self.api_base)
            .field("channel_access_token", &"[redacted]")
            .field(
                "channel_secret",
                &self.channel_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("basic_id", &self.basic_id)
            .finish()
    }
}

/// Why a [`LineConfig`] can't be used. The message names the offending key; it never prints a
/// secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineConfigError {
    #[error("channels.line.api_base is not a usable URL: {reason}")]
    InvalidApiBase { reason: String },
    #[error("channels.line.{key} is empty")]
    Empty { key: &'static str },
    #[error("channels.line.{key} contains whitespace or characters not allowed in an HTTP header")]
    InvalidCharacters { key: &'static str },
    #[error("channels.line.basic_id `{value}` must look like `@acme`")]
    InvalidBasicId { value: String },
    #[error("channels.line: the HTTP client could not be built: {reason}")]
    Client { reason: String },
}

impl LineConfigError {
    /// The config key the error is about (`api_base`, `channel_access_token`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            LineConfigError::InvalidApiBase { .. } => "api_base",
            LineConfigError::Empty { key } | LineConfigError::InvalidCharacters { key } => key,
            LineConfigError::InvalidBasicId { .. } => "basic_id",
            LineConfigError::Client { .. } => "timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LineConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let typo =
            serde_json::from_str::<LineConfig>(r#"{"channel_access_token":"tok","basicid":"@a"}"#)
                .expect_err("a typo is an error")
                .to_string();
        assert!(typo.contains("unknown field `basicid`"), "{typo}");
        let c = parse(r#"{"channel_access_token":"tok"}"#);
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert!(c.channel_secret.is_none());
        assert!(c.basic_id.is_none());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn missing_token_is_an_error() {
        assert!(serde_json::from_str::<LineConfig>(r#"{"api_base":"https://x"}"#).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let c = parse(
            r#"{"channel_access_token":"TOKEN-SHOULD-NOT-LEAK","channel_secret":"SECRET-SHOULD-NOT-LEAK","basic_id":"@acme"}"#,
        );
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("SHOULD-NOT-LEAK"), "{shown}");
        assert!(shown.contains("@acme"));
    }

    #[test]
    fn errors_name_the_key_without_the_secret() {
        let mut c = LineConfig::new("bad token\nwith newline");
        let err = c.validate().unwrap_err();
        assert_eq!(err.key(), "channel_access_token");
        assert!(!err.to_string().contains("bad token"));

        c = LineConfig::new("   ");
        assert_eq!(c.validate().unwrap_err().key(), "channel_access_token");

        c = LineConfig::new("tok");
        c.api_base = "ftp://api.line.me".into();
        assert_eq!(c.validate().unwrap_err().key(), "api_base");
        c.api_base = "not a url".into();
        assert_eq!(c.validate().unwrap_err().key(), "api_base");

        c = LineConfig::new("tok");
        c.channel_secret = Some(SecretString::from(String::new()));
        assert_eq!(c.validate().unwrap_err().key(), "channel_secret");

        c = LineConfig::new("tok");
        c.basic_id = Some("acme".into());
        assert_eq!(c.validate().unwrap_err().key(), "basic_id");
    }

    #[test]
    fn trailing_slash_is_fine() {
        let mut c = LineConfig::new("tok");
        c.api_base = "http://127.0.0.1:9999/".into();
        assert_eq!(c.validate().unwrap().as_str(), "http://127.0.0.1:9999/");
    }
}
