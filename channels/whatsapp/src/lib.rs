//! Lifeboat's WhatsApp channel: sends one notification through the WhatsApp Business Cloud
//! API (Meta Graph API) and says, in one [`Answer`], what Meta's reply means for failover.
//!
//! Why it exists: WhatsApp is usually the first channel a business tries, and also the one
//! most likely to throttle, restrict or lock the account. The dispatcher must tell "slow down"
//! from "this person isn't on WhatsApp" from "the account is locked" without knowing Meta's
//! error codes, so this crate owns the mapping from Graph error codes to a [`Class`] (see
//! [`classify`] for the table) and keeps Meta's own words and message id (`wamid`) on the
//! answer. Delivery receipts arrive later as status webhooks, so
//! [`Channel::has_receipts`] is true.
//!
//! Modules, one job each: [`config`] (the `[channels.whatsapp]` table and its checks),
//! [`request`] (the JSON bodies, conforming to Meta's `sendMessage` schema), [`classify`]
//! (Graph answer → class), and this file (the HTTP calls).
//!
//! The access token never appears in `Debug`, logs, answers or errors: reqwest errors are
//! stripped of their URL and every detail is scrubbed of the token before it leaves.

pub mod classify;
pub mod config;
pub mod request;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lifeboat_channel::{
    error_chain, redact, Answer, Channel, ChannelKind, Class, Health, OutboundMessage,
};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::ExposeSecret;
use serde::Deserialize;

pub use config::{WhatsappConfig, WhatsappConfigError, DEFAULT_API_BASE};

/// The WhatsApp Cloud API channel.
pub struct WhatsappChannel {
    config: WhatsappConfig,
    client: reqwest::Client,
    timeout: Duration,
    /// Parsed once: parsing it per send was ~3% of the gateway's CPU when draining a queue.
    messages_url: reqwest::Url,
    health_url: String,
}

impl fmt::Debug for WhatsappChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhatsappChannel")
            .field("config", &self.config)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `POST /messages` success body (`MessageResponsePayload`).
#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
    #[serde(default)]
    message_status: Option<String>,
}

/// `GET /{phone_number_id}` fields used by the health check.
#[derive(Deserialize)]
struct PhoneNumber {
    #[serde(default)]
    display_phone_number: Option<String>,
    #[serde(default)]
    quality_rating: Option<String>,
}

impl WhatsappChannel {
    /// Checks the config and builds the HTTP client; every call is bounded by `timeout`.
    pub fn new(config: WhatsappConfig, timeout: Duration) -> Result<Self, WhatsappConfigError> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lifeboat-whatsapp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WhatsappConfigError::Client(e.without_url().to_string()))?;
        let base = config.api_base.trim_end_matches('/');
        let messages_url =
            reqwest::Url::parse(&format!("{base}/{}/messages", config.phone_number_id)).map_err(
                |e| WhatsappConfigError::Invalid {
                    key: "phone_number_id",
                    reason: format!("does not make a URL with api_base ({e})"),
                },
            )?;
        let health_url = format!(
            "{base}/{}?fields=display_phone_number,verified_name,quality_rating",
            config.phone_number_id
        );
        Ok(WhatsappChannel {
            config,
            client,
            timeout,
            messages_url,
            health_url,
        })
    }

    /// The config this channel was built from.
    pub fn config(&self) -> &WhatsappConfig {
        &self.config
    }

    fn token(&self) -> &str {
        self.config.access_token.expose_secret()
    }

    /// Removes the access token from any text that leaves this crate.
    fn scrub(&self, text: &str) -> String {
        redact(text, self.token())
    }

    fn scrub_answer(&self, mut answer: Answer) -> Answer {
        answer.detail = answer.detail.map(|d| self.scrub(&d));
        answer.code = answer.code.map(|c| self.scrub(&c));
        answer
    }

    /// A transport failure (no HTTP answer, or the body couldn't be read) as an answer.
    fn network_answer(&self, error: reqwest::Error) -> Answer {
        if error.is_timeout() {
            return Answer::timeout(self.timeout);
        }
        let code = if error.is_connect() {
            "connect"
        } else {
            "network"
        };
        let detail = self.scrub(&error_chain(&error.without_url()));
        Answer::failed(Class::Transient { retry_after: None }, code, detail)
    }

    async fn post_message(&self, message: &OutboundMessage) -> Answer {
        let body = request::send_body(message);
        let response = match self
            .client
            .post(self.messages_url.clone())
            .bearer_auth(self.token())
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => return self.network_answer(e),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return self.network_answer(e),
        };
        if !status.is_success() {
            return classify::classify_failure(status.as_u16(), &bytes, retry_after);
        }
        match serde_json::from_slice::<SendResponse>(&bytes) {
            Ok(SendResponse { messages }) if !messages.is_empty() => {
                let first = &messages[0];
                let mut answer = Answer::sent(first.id.clone());
                if let Some(status) = first.message_status.as_deref().filter(|s| *s != "accepted") {
                    answer.detail = Some(format!("message_status: {status}"));
                }
                answer
            }
            // A 2xx that isn't a send answer: nothing says the message was taken.
            _ => Answer::failed(
                Class::Rejected,
                status.as_u16().to_string(),
                format!(
                    "HTTP {status} without a message id: {}",
                    classify::snippet(&bytes)
                ),
            ),
        }
    }
}

/// How long Graph asks us to wait: `Retry-After` in seconds, else the business use case
/// usage header's `estimated_time_to_regain_access`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    header(RETRY_AFTER.as_str())
        .and_then(classify::parse_retry_after)
        .or_else(|| {
            header("x-business-use-case-usage").and_then(classify::parse_business_use_case_usage)
        })
}

#[async_trait]
impl Channel for WhatsappChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Whatsapp
    }

    async fn send(&self, message: &OutboundMessage) -> Answer {
        let answer = self.scrub_answer(self.post_message(message).await);
        tracing::debug!(
            notification_id = %message.notification_id,
            class = answer.class.as_str(),
            code = answer.code.as_deref().unwrap_or(""),
            message_id = answer.message_id.as_deref().unwrap_or(""),
            "whatsapp send answered"
        );
        answer
    }

    async fn health(&self) -> Health {
        let response = match self
            .client
            .get(&self.health_url)
            .bearer_auth(self.token())
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                let answer = self.network_answer(e);
                return Health::Unreachable(answer.detail.unwrap_or_default());
            }
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                let answer = self.network_answer(e);
                return Health::Unreachable(answer.detail.unwrap_or_default());
            }
        };
        if status.is_success() {
            return match serde_json::from_slice::<PhoneNumber>(&bytes) {
                Ok(PhoneNumber {
                    display_phone_number: Some(number),
                    quality_rating,
                }) => Health::Ok(format!(
                    "{number} quality {}",
                    quality_rating.as_deref().unwrap_or("unknown")
                )),
                _ => Health::Unreachable(self.scrub(&format!(
                    "HTTP {status} without display_phone_number: {}",
                    classify::snippet(&bytes)
                ))),
            };
        }
        let answer = self.scrub_answer(classify::classify_failure(status.as_u16(), &bytes, None));
        let words = format!(
            "{} (code {})",
            answer.detail.unwrap_or_default(),
            answer.code.unwrap_or_default()
        );
        match (status.as_u16(), answer.class) {
            (401 | 403, _) | (_, Class::ConfigError) => Health::ConfigError(words),
            (500..=599, _) | (_, Class::Transient { .. } | Class::Throttled { .. }) => {
                Health::Unreachable(words)
            }
            // Any other refusal (unknown id, wrong api_base, a locked account) needs an admin.
            _ => Health::ConfigError(words),
        }
    }

    fn has_receipts(&self) -> bool {
        true
    }
}
