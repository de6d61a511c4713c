//! Lifeboat's Telegram channel: sends a notification as a bot message through the Telegram Bot
//! API (via teloxide) and classifies Telegram's answer for the dispatcher.
//!
//! Why it exists: Telegram is the fallback when WhatsApp restricts or bans the business
//! account, and the dispatcher can only fail over well if every Telegram answer lands in the
//! right [`Class`]: a blocked bot revokes the person's consent, a flood-wait pauses the channel,
//! a revoked token takes it out of rotation, a Bot API hiccup is retried. The mapping is in
//! [`classify`] (with the full table); this module builds the bot and bounds every call.
//!
//! Two teloxide behaviours shape the code:
//! - it sleeps 10 s after any 5xx before reading the body, so every call here runs under
//!   `tokio::time::timeout` with the channel's own timeout;
//! - the bot token sits in every request URL (`/bot<TOKEN>/SendMessage`), and reqwest errors
//!   print that URL, so every text that leaves this crate goes through [`classify::scrub`].
//!   [`TelegramChannel`]'s `Debug` prints no token; [`TelegramChannel::bot`]'s does (it is
//!   teloxide's), so never log the bot itself.

pub mod classify;
pub mod config;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lifeboat_channel::{Answer, Channel, ChannelKind, Class, Health, OutboundMessage};
use secrecy::ExposeSecret;
use teloxide::requests::Requester;
use teloxide::types::{ChatId, Recipient};
use teloxide::Bot;

pub use config::{Mode, TelegramConfig, TelegramConfigError, DEFAULT_API_URL};

/// The Telegram channel: one bot, one timeout.
pub struct TelegramChannel {
    config: TelegramConfig,
    bot: Bot,
    timeout: Duration,
}

impl fmt::Debug for TelegramChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Bot`'s own Debug prints the token: leave it out.
        f.debug_struct("TelegramChannel")
            .field("config", &self.config)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TelegramChannel {
    /// Checks the config and builds the bot. `timeout` bounds each send and health check.
    pub fn new(config: TelegramConfig, timeout: Duration) -> Result<Self, TelegramConfigError> {
        let api_url = config.validate()?;
        // reqwest's own timeout is only a backstop (ours fires first and is what the answer
        // reports); the connect timeout keeps a black-holed address from using it all.
        let client = teloxide::net::default_reqwest_settings()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout + Duration::from_secs(1))
            .build()
            .map_err(|e| TelegramConfigError::ApiUrl(format!("can't build an HTTP client: {e}")))?;
        let bot = Bot::with_client(config.bot_token.expose_secret(), client).set_api_url(api_url);
        Ok(TelegramChannel {
            config,
            bot,
            timeout,
        })
    }

    /// The teloxide bot (for the update loop). Its `Debug` shows the token: don't log it.
    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    /// The config this channel was built from.
    pub fn config(&self) -> &TelegramConfig {
        &self.config
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn token(&self) -> &str {
        self.bot.token()
    }
}

/// Parses a Telegram address: a numeric chat id (`812345678`, `-1001234567890`) or a public
/// channel/supergroup username (`@channelusername`).
pub fn parse_recipient(address: &str) -> Result<Recipient, String> {
    let address = address.trim();
    if let Ok(id) = address.parse::<i64>() {
        if id == 0 {
            return Err("Telegram chat id 0 is not a chat".to_string());
        }
        return Ok(Recipient::Id(ChatId(id)));
    }
    if let Some(name) = address.strip_prefix('@') {
        if !name.is_empty()
            && name.len() <= 32
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Ok(Recipient::ChannelUsername(address.to_string()));
        }
    }
    Err(format!(
        "`{address}` is not a Telegram address: expected a numeric chat id or @channelusername"
    ))
}

#[async_trait]
impl Channel for TelegramChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Telegram
    }

    async fn send(&self, message: &OutboundMessage) -> Answer {
        let recipient = match parse_recipient(&message.to) {
            Ok(r) => r,
            Err(detail) => return Answer::failed(Class::Rejected, "invalid_address", detail),
        };
        let call = self.bot.send_message(recipient, message.text.clone());
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Err(_elapsed) => Answer::timeout(self.timeout),
            Ok(Ok(sent)) => Answer::sent(sent.id.0.to_string()),
            Ok(Err(error)) => classify::classify(&error, self.token()),
        };
        if answer.class != Class::Sent {
            tracing::debug!(
                notification_id = %message.notification_id,
                class = answer.class.as_str(),
                code = answer.code.as_deref().unwrap_or(""),
                "telegram send failed"
            );
        }
        answer
    }

    async fn health(&self) -> Health {
        match tokio::time::timeout(self.timeout, self.bot.get_me()).await {
            Err(_elapsed) => Health::Unreachable(format!(
                "getMe: no answer within {}s",
                self.timeout.as_secs_f64()
            )),
            Ok(Err(error)) => classify::health(&error, self.token()),
            Ok(Ok(me)) => {
                let Some(username) = me.user.username.clone() else {
                    return Health::Ok(format!("bot id {}", me.user.id));
                };
                match self.config.username() {
                    Some(want) if !want.eq_ignore_ascii_case(&username) => Health::ConfigError(
                        format!("bot_username is `{want}` but the token belongs to @{username}"),
                    ),
                    _ => Health::Ok(format!("@{username}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_recipient("812345678").unwrap(),
            Recipient::Id(ChatId(812345678))
        );
        assert_eq!(
            parse_recipient("-1001234567890").unwrap(),
            Recipient::Id(ChatId(-1001234567890))
        );
        assert_eq!(
            parse_recipient("@acme_news").unwrap(),
            Recipient::ChannelUsername("@acme_news".into())
        );
        for bad in [
            "",
            "0",
            "@",
            "ana@example.com",
            "+48600100200x",
            "@a b",
            "12abc",
        ] {
            assert!(parse_recipient(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_has_no_token() {
        let ch = TelegramChannel::new(
            TelegramConfig::new("123456:AAE-very-secret-part"),
            Duration::from_secs(10),
        )
        .unwrap();
        let dbg = format!("{ch:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert_eq!(ch.bot().api_url().as_str(), "https://api.telegram.org/");
    }
}
