//! The `[channels.whatsapp]` table: what the channel needs to talk to the Graph API, and the
//! checks that reject a table which could never work before the first send tries it.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The Graph API base the vendor document describes (`v23.0`).
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com/v23.0";

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_string()
}

/// The `[channels.whatsapp]` config table.
///
/// Secrets are [`SecretString`]s and never appear in `Debug`.
/// Unknown keys are errors (a typo must not pass silently). The gateway's own keys in the same
/// table (`cooldown`, `timeout`, ...) are taken out before the table reaches this crate.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappConfig {
    /// Graph API base including the version, e.g. `https://graph.facebook.com/v23.0`.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The business phone number's id (not the phone number itself).
    pub phone_number_id: String,
    /// System-user or user access token with `whatsapp_business_messaging`.
    pub access_token: SecretString,
    /// Verifies webhook signatures (`X-Hub-Signature-256`).
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    /// The webhook subscribe handshake token (`hub.verify_token`).
    #[serde(default)]
    pub verify_token: Option<SecretString>,
    /// The business's own number in E.164, for `wa.me` opt-in links.
    #[serde(default)]
    pub business_number: Option<String>,
}

impl WhatsappConfig {
    /// A config with the default `api_base` and no webhook secrets.
    pub fn new(phone_number_id: impl Into<String>, access_token: impl Into<String>) -> Self {
        WhatsappConfig {
            api_base: default_api_base(),
            phone_number_id: phone_number_id.into(),
            access_token: SecretString::from(access_token.into()),
            app_secret: None,
            verify_token: None,
            business_number: None,
        }
    }

    /// Checks every key; the error names the first bad key and never contains a secret.
    pub fn validate(&self) -> Result<(), WhatsappConfigError> {
        let base = url::Url::parse(self.api_base.trim_end_matches('/'))
            .map_err(|e| WhatsappConfigError::invalid("api_base", format!("not a URL ({e})")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(WhatsappConfigError::invalid(
                "api_base",
                "must be an http or https URL",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(WhatsappConfigError::invalid(
                "api_base",
                "must not have a query or fragment",
            ));
        }
        if self.phone_number_id.is_empty() {
            return Err(WhatsappConfigError::invalid("phone_number_id", "is empty"));
        }
        if !self
            .phone_number_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(WhatsappConfigError::invalid(
                "phone_number_id",
                "may only hold letters, digits, `_` and `-` (it is the number's id, not the number)",
            ));
        }
        check_secret("access_token", Some(&self.access_token), true)?;
        check_secret("app_secret", self.app_secret.as_ref(), false)?;
        check_secret("verify_token", self.verify_token.as_ref(), false)?;
        if let Some(number) = &self.business_number {
            let digits = number.strip_prefix('+').unwrap_or(number);
            if !(6..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(WhatsappConfigError::invalid(
                    "business_number",
                    "must be an E.164 number like +15550001111",
                ));
            }
        }
        Ok(())
    }
}

/// A secret must be non-empty and fit in an HTTP header; the message never quotes it.
fn check_secret(
    key: &'static str,
    secret: Option<&SecretString>,
    required: bool,
) -> Result<(), WhatsappConfigError> {
    let Some(secret) = secret else {
        return Ok(());
    };
    let value = secret.expose_secret();
    if value.trim().is_empty() {
        return if required {
            Err(WhatsappConfigError::invalid(key, "is empty"))
        } else {
            Err(WhatsappConfigError::invalid(
                key,
                "is empty (leave the key out instead)",
            ))
        };
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(WhatsappConfigError::invalid(
            key,
            "contains whitespace or control characters",
        ));
    }
    Ok(())
}

impl fmt::Debug for WhatsappConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<SecretString>| s.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("WhatsappConfig")
            .field("api_base", &self.api_base)
            .field("phone_number_id", &self.phone_number_id)
            .field("access_token", &"[REDACTED]")
            .field("app_secret", &hidden(&self.app_secret))
            .field("verify_token", &hidden(&self.verify_token))
            .field("business_number", &self.business_number)
            .finish()
    }
}

/// A `[channels.whatsapp]` table that can't work. Names the key (the caller names the
/// table, e.g. `[channels.whatsapp]: access_token: is empty`); never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhatsappConfigError {
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

impl WhatsappConfigError {
    fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        WhatsappConfigError::Invalid {
            key,
            reason: reason.into(),
        }
    }

    /// The config key at fault, if one is.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            WhatsappConfigError::Invalid { key, .. } => Some(key),
            WhatsappConfigError::Client(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let typo = serde_json::from_value::<WhatsappConfig>(serde_json::json!({
            "phone_number_id": "106540352242922",
            "access_token": "EAAG-secret-token",
            "app_secert": "x"
        }))
        .expect_err("a typo is an error")
        .to_string();
        assert!(typo.contains("unknown field `app_secert`"), "{typo}");
        let config: WhatsappConfig = serde_json::from_value(serde_json::json!({
            "phone_number_id": "106540352242922",
            "access_token": "EAAG-secret-token"
        }))
        .unwrap();
        assert_eq!(config.api_base, DEFAULT_API_BASE);
        assert!(config.app_secret.is_none());
        config.validate().unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("EAAG-secret-token"), "{debug}");
    }

    #[test]
    fn errors_name_the_key_and_hide_the_secret() {
        let mut config = WhatsappConfig::new("106540352242922", "bad token with spaces");
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), Some("access_token"));
        assert!(!err.to_string().contains("bad token"), "{err}");

        config = WhatsappConfig::new("", "tok");
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("phone_number_id")
        );
        config = WhatsappConfig::new("+1 555", "tok");
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("phone_number_id")
        );

        config = WhatsappConfig::new("123", "tok");
        config.api_base = "graph.facebook.com".into();
        assert_eq!(config.validate().unwrap_err().key(), Some("api_base"));
        config.api_base = "ftp://graph.facebook.com".into();
        assert_eq!(config.validate().unwrap_err().key(), Some("api_base"));

        config = WhatsappConfig::new("123", "tok");
        config.business_number = Some("call me".into());
        assert_eq!(
            config.validate().unwrap_err().key(),
            Some("business_number")
        );
        config.business_number = Some("+15550001111".into());
        config.validate().unwrap();

        config.app_secret = Some(SecretString::from(""));
        assert_eq!(config.validate().unwrap_err().key(), Some("app_secret"));
    }
}
