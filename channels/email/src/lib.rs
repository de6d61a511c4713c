//! Lifeboat's email channel: one notification, one mail, sent over SMTP with lettre.
//!
//! Email is the channel of last resort in Lifeboat's default order: almost everyone has an
//! address, and no single provider can ban a business from email the way a messenger can. But
//! SMTP servers restrict senders too — by reputation, rate or authentication — and say so only
//! in reply codes and free text. This crate's job is to send one [`OutboundMessage`] as a proper
//! mail and to turn whatever the server answers into one [`Answer`] whose [`Class`] tells the
//! dispatcher whether to retry, fall over for this person, rest the channel, or disable it.
//!
//! - [`config`]: the `[channels.email]` table ([`EmailConfig`]), checked at construction.
//! - `message` (private): the mail itself — `From`, `To`, `Subject`, `Message-ID`
//!   (`<uuid@from-domain>`), `Date`, text/plain or multipart/alternative with HTML, and the
//!   message's extra headers (`List-Unsubscribe`, `List-Unsubscribe-Post`) verbatim.
//! - [`classify`]: SMTP reply code + RFC 3463 enhanced code + telling words → class; the full
//!   table is in that module's documentation.
//! - [`sink`]: a real in-memory SMTP server for tests and the gateway's sandbox mode.
//!
//! # Transport
//!
//! lettre's `AsyncSmtpTransport<Tokio1Executor>`:
//!
//! | `tls` | builder | port default |
//! |---|---|---|
//! | `none` | `builder_dangerous(host)` (no TLS at all) | 25 |
//! | `starttls` | `starttls_relay(host)` (STARTTLS required, certificate checked against `smtp_host`) | 587 |
//! | `tls` | `relay(host)` (implicit TLS) | 465 |
//!
//! **AUTH** is used when both `username` and `password` are set, with `PLAIN` or `LOGIN`
//! (whichever the server offers, `PLAIN` first). lettre 0.11 decides this only from the
//! credentials and the mechanisms the server advertises in `EHLO`; it does not check whether the
//! connection is encrypted. So with `tls = "none"` and credentials, the password is sent in the
//! clear (base64): that is intended for a relay on localhost or a trusted network, and for the
//! tests. With `starttls`, lettre refuses to continue (and so never sends credentials) when the
//! server does not offer STARTTLS.
//!
//! **Timeout**: the channel's `timeout` bounds the whole send (connect, greeting, AUTH, envelope,
//! data) and the health check; lettre additionally applies it to the TCP connect.
//!
//! **Connections are not reused.** lettre's pool is configured with `max_size(0)`, so every send
//! opens its own connection and closes it afterwards. A send cut off by the timeout would
//! otherwise hand a connection in the middle of a conversation back to the pool, and the next
//! send would read the stale reply of the previous one. The transport is built on first use, so
//! [`EmailChannel::new`] works outside a tokio runtime.
//!
//! The `starttls` and `tls` modes are not exercised by the tests: the [`sink`] speaks plain SMTP.

pub mod classify;
pub mod config;
mod message;
pub mod sink;

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use lifeboat_channel::{redact, Answer, Channel, ChannelKind, Class, Health, OutboundMessage};
use secrecy::{ExposeSecret, SecretString};

pub use classify::{classify_reply, parse_enhanced_code, EnhancedCode};
pub use config::{EmailConfig, EmailConfigError, TlsMode};
pub use message::DEFAULT_SUBJECT;

/// The email channel: sends over SMTP and classifies the server's replies.
pub struct EmailChannel {
    from: Mailbox,
    /// `host:port`, for health reports and logs.
    endpoint: String,
    builder: AsyncSmtpTransportBuilder,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    timeout: Duration,
    /// Kept only to redact it from anything a server echoes back.
    password: Option<SecretString>,
}

impl fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailChannel")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// Checks the config and prepares the transport (no connection is made). `timeout` bounds
    /// each send and health check. The error names the bad key and never contains the password.
    pub fn new(config: EmailConfig, timeout: Duration) -> Result<Self, EmailConfigError> {
        let from = config.validate()?;
        let host = config.smtp_host.trim().to_string();
        let port = config.port();
        let tls_error = |e: lettre::transport::smtp::Error| {
            EmailConfigError::invalid("smtp_host", format!("cannot set up TLS for `{host}`: {e}"))
        };
        let mut builder = match config.tls {
            TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
            TlsMode::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host).map_err(tls_error)?
            }
            TlsMode::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&host).map_err(tls_error)?
            }
        }
        .port(port)
        .timeout(Some(timeout))
        .pool_config(PoolConfig::new().min_idle(0).max_size(0));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder
                .credentials(Credentials::new(
                    user.clone(),
                    password.expose_secret().to_string(),
                ))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(EmailChannel {
            from,
            endpoint: format!("{host}:{port}"),
            builder,
            transport: OnceLock::new(),
            timeout,
            password: config.password,
        })
    }

    /// The transport, built on first use (building it spawns lettre's pool task, which needs
    /// a runtime).
    fn transport(&self) -> &AsyncSmtpTransport<Tokio1Executor> {
        self.transport.get_or_init(|| self.builder.clone().build())
    }

    /// Removes the password from text a server or lettre produced.
    fn redacted(&self, mut answer: Answer) -> Answer {
        if let Some(password) = &self.password {
            let secret = password.expose_secret();
            answer.detail = answer.detail.map(|d| redact(&d, secret));
            answer.code = answer.code.map(|c| redact(&c, secret));
        }
        answer
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, message: &OutboundMessage) -> Answer {
        let mail = match message::build(&self.from, message) {
            Ok(mail) => mail,
            Err(e) => {
                return self.redacted(Answer::failed(Class::Rejected, e.code(), e.to_string()));
            }
        };
        let sent = tokio::time::timeout(self.timeout, self.transport().send(mail.message)).await;
        let answer = match sent {
            Err(_) => Answer::timeout(self.timeout),
            Ok(Ok(_)) => Answer::sent(mail.message_id),
            Ok(Err(e)) => self.redacted(classify::classify_error(&e, self.timeout)),
        };
        tracing::debug!(
            notification_id = %message.notification_id,
            class = answer.class.as_str(),
            code = answer.code.as_deref().unwrap_or(""),
            "email send"
        );
        answer
    }

    /// Connects, reads the greeting, sends `EHLO` (and `AUTH` when configured) and a `NOOP`.
    async fn health(&self) -> Health {
        let checked = tokio::time::timeout(self.timeout, self.transport().test_connection()).await;
        match checked {
            Err(_) => Health::Unreachable(format!(
                "smtp {}: no answer within {}s",
                self.endpoint,
                self.timeout.as_secs_f64()
            )),
            Ok(Ok(true)) => Health::Ok(format!("smtp {}", self.endpoint)),
            Ok(Ok(false)) => Health::Unreachable(format!("smtp {}: NOOP failed", self.endpoint)),
            Ok(Err(e)) => {
                let answer = self.redacted(classify::classify_error(&e, self.timeout));
                let words = format!(
                    "smtp {}: {} {}",
                    self.endpoint,
                    answer.code.unwrap_or_default(),
                    answer.detail.unwrap_or_default()
                );
                if answer.class == Class::ConfigError {
                    Health::ConfigError(words)
                } else {
                    Health::Unreachable(words)
                }
            }
        }
    }
}
