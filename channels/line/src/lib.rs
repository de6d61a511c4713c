//! The LINE channel of Lifeboat: sends a notification as a LINE push message and tells the
//! dispatcher, in the terms of [`lifeboat_channel::Class`], what LINE's answer means.
//!
//! Why a crate of its own: LINE answers failures with an HTTP status and an English sentence
//! instead of error codes, and two very different conditions share a status (a per-second rate
//! limit and the exhausted monthly quota are both 429). Keeping that knowledge here means the
//! dispatcher only ever sees classes; see [`classify`] for the full table.
//!
//! # Sending
//!
//! [`LineChannel::send`] makes one `POST {api_base}/v2/bot/message/push` with
//! `Authorization: Bearer <channel access token>` and the body
//! `{"to": <user id>, "messages": [{"type": "text", "text": <text>}]}` (LINE's
//! `PushMessageRequest`), bounded by the configured timeout.
//!
//! # Retry key: at most one delivery across retries
//!
//! Every push carries `X-Line-Retry-Key: <OutboundMessage::retry_key>`. The dispatcher keeps
//! that UUID the same for every attempt of one notification on LINE, including attempts after a
//! gateway restart. LINE executes a request with a given key only once (for 24 hours): when an
//! attempt timed out or got a 5xx but LINE had in fact accepted it, the retry is answered
//! `409 The retry key is already accepted` with the first attempt's `sentMessages`. This crate
//! reports that 409 as [`Class::Sent`] with the first attempt's message id (or, without a body,
//! the `x-line-accepted-request-id` header), so the person gets the message once and the
//! notification is not failed over to another channel. A retry key that is not a UUID is refused
//! locally as [`Class::Rejected`] before anything is sent: LINE would reject it, and sending
//! without it would give up the once-only guarantee.
//!
//! # Health
//!
//! [`LineChannel::health`] reads this month's quota (`GET /v2/bot/message/quota` and
//! `/quota/consumption`): it proves the token works without sending anything. It can't see a
//! sending restriction; a real notification probes that.
//!
//! Secrets (the channel access token and secret) never appear in `Debug` output, logs, answers or
//! errors: reqwest errors are stripped of their URL and every detail is passed through
//! [`lifeboat_channel::redact`].

pub mod classify;
pub mod config;
pub mod request;

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lifeboat_channel::{
    error_chain, redact, Answer, Channel, ChannelKind, Class, Health, OutboundMessage,
};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::ExposeSecret;

pub use crate::classify::{classify_push, until_next_month_jst, HttpReply, DEFAULT_THROTTLE};
pub use crate::config::{LineConfig, LineConfigError, DEFAULT_API_BASE};
pub use crate::request::PushMessageRequest;

use crate::request::{
    is_valid_retry_key, ErrorResponse, MessageQuotaResponse, QuotaConsumptionResponse,
    ACCEPTED_REQUEST_ID_HEADER, CONSUMPTION_PATH, PUSH_PATH, QUOTA_PATH, REQUEST_ID_HEADER,
    RETRY_KEY_HEADER,
};

/// The LINE Messaging API as a Lifeboat [`Channel`].
pub struct LineChannel {
    config: LineConfig,
    /// `api_base` without a trailing slash, so a path prefix (a proxy) is kept.
    base: String,
    /// The push endpoint, parsed once (not per send).
    push_url: reqwest::Url,
    http: reqwest::Client,
    timeout: Duration,
}

/// This month's message quota, as LINE reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The monthly limit, or `None` when the account has no limit (`type: none`).
    pub limit: Option<u64>,
    /// Messages sent this month (`totalUsage`).
    pub used: u64,
}

impl Quota {
    /// Whether the monthly limit is used up (the next push would get 429 "monthly limit").
    pub fn exhausted(&self) -> bool {
        self.limit.is_some_and(|l| self.used >= l)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            Some(limit) => write!(f, "quota limited {limit}, used {}", self.used)?,
            None => write!(f, "quota none, used {}", self.used)?,
        }
        if self.exhausted() {
            f.write_str(" (monthly limit reached)")?;
        }
        Ok(())
    }
}

/// Why the quota couldn't be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// LINE refused the credentials (401/403) or the API base is wrong (404).
    #[error("LINE refused the quota request ({status}): {detail}")]
    Refused { status: u16, detail: String },
    /// A network failure, a timeout, a 5xx or 429, or a body that isn't LINE's.
    #[error("LINE could not be reached: {0}")]
    Unreachable(String),
}

impl LineChannel {
    /// Builds the channel. `timeout` bounds each call to LINE (connect, send and read).
    ///
    /// Fails with an error naming the bad key when the config is unusable; the error never
    /// contains a secret.
    pub fn new(config: LineConfig, timeout: Duration) -> Result<Self, LineConfigError> {
        let base = config
            .validate()?
            .as_str()
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("lifeboat-line/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LineConfigError::Client {
                reason: e.without_url().to_string(),
            })?;
        let push_url = reqwest::Url::parse(&format!("{base}{PUSH_PATH}")).map_err(|e| {
            LineConfigError::InvalidApiBase {
                reason: e.to_string(),
            }
        })?;
        Ok(LineChannel {
            config,
            base,
            push_url,
            http,
            timeout,
        })
    }

    /// The configuration this channel was built from.
    pub fn config(&self) -> &LineConfig {
        &self.config
    }

    fn token(&self) -> &str {
        self.config.channel_access_token.expose_secret()
    }

    /// Removes every secret from a text about to leave this crate.
    fn scrub(&self, text: String) -> String {
        let text = redact(&text, self.token());
        match &self.config.channel_secret {
            Some(secret) => redact(&text, secret.expose_secret()),
            None => text,
        }
    }

    fn scrub_answer(&self, mut answer: Answer) -> Answer {
        answer.detail = answer.detail.map(|d| self.scrub(d));
        answer.code = answer.code.map(|c| self.scrub(c));
        answer
    }

    /// An [`Answer`] for a request that got no HTTP answer.
    fn transport_failure(&self, error: reqwest::Error) -> Answer {
        let error = error.without_url();
        if error.is_timeout() {
            return Answer::timeout(self.timeout);
        }
        let code = if error.is_connect() {
            "connect"
        } else {
            "network"
        };
        Answer::failed(
            Class::Transient { retry_after: None },
            code,
            self.scrub(error_chain(&error)),
        )
    }

    async fn push(&self, message: &OutboundMessage) -> Answer {
        if !is_valid_retry_key(&message.retry_key) {
            return Answer::failed(
                Class::Rejected,
                "invalid_retry_key",
                "the retry key must be a UUID; not sent, so LINE can't deliver it twice",
            );
        }
        let body = PushMessageRequest::text(&message.to, &message.text);
        let response = match self
            .http
            .post(self.push_url.clone())
            .bearer_auth(self.token())
            .header(RETRY_KEY_HEADER, &message.retry_key)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return self.transport_failure(e),
        };

        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(t) => t,
            // The status is known; a lost body only costs the details (a 200 is still sent).
            Err(e) if (200..300).contains(&status) || status == 409 => {
                tracing::debug!(error = %e.without_url(), "LINE answer body lost");
                String::new()
            }
            Err(e) => return self.transport_failure(e),
        };
        let reply = HttpReply {
            status,
            retry_after: retry_after(&headers),
            accepted_request_id: header_str(&headers, ACCEPTED_REQUEST_ID_HEADER),
            request_id: header_str(&headers, REQUEST_ID_HEADER),
            body: &text,
        };
        classify_push(&reply, SystemTime::now())
    }

    /// Reads this month's quota and consumption.
    pub async fn quota(&self) -> Result<Quota, QuotaError> {
        let quota: MessageQuotaResponse = self.get_json(QUOTA_PATH).await?;
        let used: QuotaConsumptionResponse = self.get_json(CONSUMPTION_PATH).await?;
        let limit = match quota.kind.as_str() {
            "limited" => quota.value,
            _ => None,
        };
        Ok(Quota {
            limit,
            used: used.total_usage,
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, QuotaError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token())
            .send()
            .await
            .map_err(|e| QuotaError::Unreachable(self.scrub(error_chain(&e.without_url()))))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| QuotaError::Unreachable(self.scrub(error_chain(&e.without_url()))))?;
        if status == 200 {
            return serde_json::from_str(&text).map_err(|e| {
                QuotaError::Unreachable(format!("{path} answered a body that isn't LINE's: {e}"))
            });
        }
        let detail = match serde_json::from_str::<ErrorResponse>(&text) {
            Ok(e) => e.message,
            Err(_) => format!("HTTP {status}"),
        };
        let detail = self.scrub(detail);
        match status {
            401 | 403 | 404 => Err(QuotaError::Refused { status, detail }),
            _ => Err(QuotaError::Unreachable(format!("{status} {detail}"))),
        }
    }
}

/// `Retry-After` in seconds (LINE sends none; a proxy might).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().filter(|s| !s.is_empty())
}

#[async_trait]
impl Channel for LineChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Line
    }

    async fn send(&self, message: &OutboundMessage) -> Answer {
        let answer = self.scrub_answer(self.push(message).await);
        tracing::debug!(
            notification_id = %message.notification_id,
            class = answer.class.as_str(),
            code = answer.code.as_deref().unwrap_or(""),
            message_id = answer.message_id.as_deref().unwrap_or(""),
            "LINE push answered"
        );
        answer
    }

    async fn health(&self) -> Health {
        match self.quota().await {
            Ok(quota) => Health::Ok(quota.to_string()),
            Err(QuotaError::Refused { status, detail }) => {
                Health::ConfigError(format!("{status} {detail}"))
            }
            Err(QuotaError::Unreachable(detail)) => Health::Unreachable(detail),
        }
    }
}

impl fmt::Debug for LineChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineChannel")
            .field("config", &self.config)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
