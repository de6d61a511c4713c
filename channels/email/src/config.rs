//! The `[channels.email]` table: what it may contain and how it is checked.

use std::fmt;

use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::Deserialize;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP, no TLS at all (port 25 by default). Credentials, when set, are sent in the clear:
    /// only for a relay on localhost or a trusted network, and for tests.
    None,
    /// Plain TCP upgraded with `STARTTLS`, which is required: a server that doesn't offer it
    /// fails the send before any credential or message is sent (port 587 by default).
    #[default]
    Starttls,
    /// Implicit TLS from the first byte ("SMTPS", port 465 by default).
    Tls,
}

impl TlsMode {
    /// The port used when `smtp_port` is not set: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }
}

/// The `[channels.email]` table.
///
/// `Debug` never shows the password (it is a [`SecretString`]).
/// Unknown keys are errors (a typo must not pass silently). The gateway's own keys in the same
/// table (`cooldown`, `timeout`, ...) are taken out before the table reaches this crate.
///
/// ```toml
/// [channels.email]
/// smtp_host = "smtp.example.com"
/// smtp_port = 587                 # default: 25 for none, 587 for starttls, 465 for tls
/// tls = "starttls"                # "none" | "starttls" | "tls" (default "starttls")
/// username = "notify@acme.example"
/// password = "..."
/// from = "Acme <notify@acme.example>"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Host name of the SMTP server (also the name its TLS certificate must carry).
    pub smtp_host: String,
    /// Port; when absent, [`TlsMode::default_port`].
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    /// SMTP AUTH user name; AUTH is used only when both `username` and `password` are set.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The `From` mailbox, e.g. `Acme <notify@acme.example>`; its domain names the `Message-ID`s.
    pub from: String,
}

impl EmailConfig {
    /// The port to connect to: `smtp_port`, or the default for the TLS mode.
    pub fn port(&self) -> u16 {
        self.smtp_port.unwrap_or_else(|| self.tls.default_port())
    }

    /// Checks every key and returns the parsed `From` mailbox.
    pub(crate) fn validate(&self) -> Result<Mailbox, EmailConfigError> {
        let host = self.smtp_host.trim();
        if host.is_empty() {
            return Err(EmailConfigError::invalid("smtp_host", "must not be empty"));
        }
        if host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(EmailConfigError::invalid(
                "smtp_host",
                "must be a bare host name or IP address",
            ));
        }
        if self.smtp_port == Some(0) {
            return Err(EmailConfigError::invalid("smtp_port", "must be 1..=65535"));
        }
        match (&self.username, &self.password) {
            (Some(user), _) if user.is_empty() => {
                return Err(EmailConfigError::invalid("username", "must not be empty"));
            }
            (Some(_), None) => {
                return Err(EmailConfigError::invalid(
                    "password",
                    "is required when username is set",
                ));
            }
            (None, Some(_)) => {
                return Err(EmailConfigError::invalid(
                    "username",
                    "is required when password is set",
                ));
            }
            _ => {}
        }
        self.from.trim().parse::<Mailbox>().map_err(|e| {
            EmailConfigError::invalid(
                "from",
                format!(
                    "`{}` is not a mailbox like `Acme <notify@acme.example>` ({e})",
                    self.from
                ),
            )
        })
    }
}

/// A `[channels.email]` value that can't work. Names the key; never contains the password.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("channels.email.{key}: {reason}")]
pub struct EmailConfigError {
    /// The offending key, e.g. `from`.
    pub key: &'static str,
    pub reason: String,
}

impl EmailConfigError {
    pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        EmailConfigError {
            key,
            reason: reason.into(),
        }
    }
}

impl fmt::Debug for EmailConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> EmailConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_and_unknown_keys() {
        let typo = serde_json::from_value::<EmailConfig>(serde_json::json!({
            "smtp_host": "smtp.example.com",
            "from": "Acme <notify@acme.example>",
            "smtp_prot": 25,
        }))
        .unwrap_err()
        .to_string();
        assert!(typo.contains("unknown field `smtp_prot`"), "{typo}");
        let c = config(serde_json::json!({
            "smtp_host": "smtp.example.com",
            "from": "Acme <notify@acme.example>",
        }));
        assert_eq!(c.tls, TlsMode::Starttls);
        assert_eq!(c.port(), 587);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn port_follows_tls_mode() {
        for (tls, port) in [("none", 25), ("starttls", 587), ("tls", 465)] {
            let c = config(serde_json::json!({
                "smtp_host": "h", "from": "a@b.example", "tls": tls,
            }));
            assert_eq!(c.port(), port);
        }
        let c = config(serde_json::json!({
            "smtp_host": "h", "from": "a@b.example", "tls": "tls", "smtp_port": 2465,
        }));
        assert_eq!(c.port(), 2465);
    }

    #[test]
    fn bad_keys_are_named() {
        let mut c = config(serde_json::json!({
            "smtp_host": "h", "from": "not a mailbox", "password": "hunter2-secret", "username": "u",
        }));
        let err = c.validate().unwrap_err();
        assert_eq!(err.key, "from");
        assert!(!format!("{err} {err:?}").contains("hunter2-secret"));

        c.from = "a@b.example".into();
        c.username = None;
        assert_eq!(c.validate().unwrap_err().key, "username");

        c.smtp_host = " ".into();
        assert_eq!(c.validate().unwrap_err().key, "smtp_host");
    }

    #[test]
    fn unknown_tls_mode_is_an_error() {
        let r: Result<EmailConfig, _> = serde_json::from_value(serde_json::json!({
            "smtp_host": "h", "from": "a@b.example", "tls": "ssl",
        }));
        assert!(r.is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let c = config(serde_json::json!({
            "smtp_host": "h", "from": "a@b.example", "username": "u", "password": "hunter2-secret",
        }));
        assert!(!format!("{c:?}").contains("hunter2-secret"));
    }
}
