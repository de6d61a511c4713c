//! The `[channels.telegram]` table: what it may contain and how it is checked.
//!
//! The bot token is the bot's only credential and Telegram puts it in every request path, so it
//! is kept in a [`SecretString`]: `Debug` prints `[REDACTED]`, and no error message here ever
//! quotes it.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// The Bot API server used when `api_url` is not set.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// How the bot receives updates (used by the update loop, not by sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Long polling with `getUpdates` (one poller per token).
    #[default]
    Polling,
    /// Telegram calls `POST /webhooks/telegram`, which checks `secret_token`.
    Webhook,
}

/// The `[channels.telegram]` config table.
///
/// Unknown keys are errors (a typo must not pass silently). The gateway's own keys in the same
/// table (`cooldown`, `timeout`, ...) are taken out before the table reaches this crate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The Bot API server (default `https://api.telegram.org`; a local Bot API server or a
    /// test double otherwise).
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The token from @BotFather, `<bot id>:<secret>`.
    pub bot_token: SecretString,
    /// The bot's username, for `https://t.me/<bot_username>?start=...` opt-in links.
    #[serde(default)]
    pub bot_username: Option<String>,
    /// `polling` (default) or `webhook`.
    #[serde(default)]
    pub mode: Mode,
    /// Webhook mode: the value Telegram sends in `X-Telegram-Bot-Api-Secret-Token`.
    #[serde(default)]
    pub secret_token: Option<SecretString>,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_string()
}

/// A `[channels.telegram]` value that can't work. Names the key; never quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramConfigError {
    #[error("channels.telegram.api_url: {0}")]
    ApiUrl(String),
    #[error("channels.telegram.bot_token: {0}")]
    BotToken(&'static str),
    #[error("channels.telegram.bot_username: {0}")]
    BotUsername(&'static str),
    #[error("channels.telegram.secret_token: {0}")]
    SecretToken(&'static str),
}

impl TelegramConfig {
    /// A config with the default API URL and polling mode.
    pub fn new(bot_token: impl Into<String>) -> Self {
        TelegramConfig {
            api_url: default_api_url(),
            bot_token: SecretString::from(bot_token.into()),
            bot_username: None,
            mode: Mode::Polling,
            secret_token: None,
        }
    }

    /// Checks every key and returns the parsed API URL.
    pub fn validate(&self) -> Result<Url, TelegramConfigError> {
        let url = parse_api_url(&self.api_url)?;
        validate_token(self.bot_token.expose_secret())?;
        if let Some(name) = &self.bot_username {
            let name = name.strip_prefix('@').unwrap_or(name);
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TelegramConfigError::BotUsername(
                    "expected a Telegram username (letters, digits and _)",
                ));
            }
        }
        match (&self.mode, &self.secret_token) {
            (Mode::Webhook, None) => {
                return Err(TelegramConfigError::SecretToken(
                    "required when mode = \"webhook\"",
                ))
            }
            (_, Some(secret)) => {
                let s = secret.expose_secret();
                if s.is_empty()
                    || s.len() > 256
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(TelegramConfigError::SecretToken(
                        "must be 1-256 characters of A-Z, a-z, 0-9, _ and -",
                    ));
                }
            }
            (Mode::Polling, None) => {}
        }
        Ok(url)
    }

    /// `bot_username` without a leading `@`.
    pub fn username(&self) -> Option<&str> {
        self.bot_username
            .as_deref()
            .map(|n| n.strip_prefix('@').unwrap_or(n))
    }
}

fn parse_api_url(raw: &str) -> Result<Url, TelegramConfigError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| TelegramConfigError::ApiUrl(format!("not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TelegramConfigError::ApiUrl(format!(
            "expected an http or https URL, got scheme `{}`",
            url.scheme()
        )));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(TelegramConfigError::ApiUrl(
            "expected a URL with a host".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(TelegramConfigError::ApiUrl(
            "must not have a query or fragment".into(),
        ));
    }
    // teloxide appends `/bot<token>/<Method>` segments; a trailing slash would leave an empty
    // segment before them.
    let mut url = url;
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

fn validate_token(token: &str) -> Result<(), TelegramConfigError> {
    if token.trim().is_empty() {
        return Err(TelegramConfigError::BotToken("is empty"));
    }
    // A token goes into the URL path as one segment: it must not contain anything that would
    // change the path or be percent-encoded (BotFather tokens are `<digits>:<[A-Za-z0-9_-]>`).
    if !token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'))
    {
        return Err(TelegramConfigError::BotToken(
            "expected `<bot id>:<secret>` (letters, digits, `:`, `_`, `-`)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:AAE-secret_token";

    fn parse(toml_like_json: serde_json::Value) -> TelegramConfig {
        serde_json::from_value(toml_like_json).unwrap()
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let typo = serde_json::from_value::<TelegramConfig>(serde_json::json!({
            "bot_token": TOKEN, "bot_usrname": "acme_bot"
        }))
        .unwrap_err()
        .to_string();
        assert!(typo.contains("unknown field `bot_usrname`"), "{typo}");
        let c = parse(serde_json::json!({ "bot_token": TOKEN }));
        assert_eq!(c.api_url, DEFAULT_API_URL);
        assert_eq!(c.mode, Mode::Polling);
        assert!(c.bot_username.is_none());
        assert_eq!(c.validate().unwrap().as_str(), "https://api.telegram.org/");
    }

    #[test]
    fn webhook_mode_and_username() {
        let c = parse(serde_json::json!({
            "bot_token": TOKEN, "mode": "webhook", "secret_token": "s3cr3t-_X",
            "bot_username": "@acme_notify_bot", "api_url": "http://127.0.0.1:9/tg/"
        }));
        assert_eq!(c.mode, Mode::Webhook);
        assert_eq!(c.username(), Some("acme_notify_bot"));
        assert_eq!(c.validate().unwrap().as_str(), "http://127.0.0.1:9/tg");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = parse(serde_json::json!({
            "bot_token": TOKEN, "mode": "webhook", "secret_token": "hook-secret-value"
        }));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("AAE-secret_token"), "{dbg}");
        assert!(!dbg.contains("hook-secret-value"), "{dbg}");
    }

    #[test]
    fn bad_keys_are_named_and_token_never_printed() {
        let mut c = TelegramConfig::new(TOKEN);
        c.api_url = "not a url".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("channels.telegram.api_url"), "{e}");

        c.api_url = "ftp://example.com".into();
        assert!(matches!(c.validate(), Err(TelegramConfigError::ApiUrl(_))));

        let bad = "123:abc/../x y";
        let c = TelegramConfig::new(bad);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("channels.telegram.bot_token"), "{e}");
        assert!(!e.contains(bad), "{e}");

        let c = TelegramConfig::new("");
        assert!(matches!(
            c.validate(),
            Err(TelegramConfigError::BotToken(_))
        ));

        let mut c = TelegramConfig::new(TOKEN);
        c.mode = Mode::Webhook;
        assert!(matches!(
            c.validate(),
            Err(TelegramConfigError::SecretToken(_))
        ));
        c.secret_token = Some(SecretString::from("bad secret!".to_string()));
        let e = c.validate().unwrap_err().to_string();
        assert!(!e.contains("bad secret!"), "{e}");

        let mut c = TelegramConfig::new(TOKEN);
        c.bot_username = Some("no spaces please".into());
        assert!(matches!(
            c.validate(),
            Err(TelegramConfigError::BotUsername(_))
        ));
    }
}
