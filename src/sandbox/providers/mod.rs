//! The simulated WhatsApp Cloud API, Telegram Bot API and LINE Messaging API: small axum
//! servers on 127.0.0.1 ephemeral ports, one per provider, started inside the sandbox process.
//!
//! They speak the real request and answer shapes (the codes each channel crate's
//! `classify.rs` tabulates, and the vendor documents in `channels/*/vendor/`), so the
//! real channel crates talk to them unchanged and classify their answers with the same code that
//! classifies the real providers. Each has a [`Mode`] the `/sandbox/...` controls set, and keeps
//! what it accepted (time, recipient, text, the raw request) for listing. Nothing here opens a
//! connection to anything but 127.0.0.1.
//!
//! What each mode answers (the bodies are the providers' own wording where they have one):
//!
//! | mode | WhatsApp (`POST /v23.0/{phone_number_id}/messages`) | Telegram (`POST /bot<token>/SendMessage`) | LINE (`POST /v2/bot/message/push`) |
//! |---|---|---|---|
//! | `accept` | 200 `messages[0].id = wamid.SANDBOX…`, `message_status: accepted` | 200 `{"ok":true,"result":{message}}` | 200 `sentMessages` (a repeated `X-Line-Retry-Key` answers 409 with the first `sentMessages`) |
//! | `transient` | 500, Graph code `131000` "Something went wrong" | 502 `Bad Gateway` (teloxide waits 10 s after a 5xx, so the channel's 3 s timeout ends it first) | 500 `Internal server error` |
//! | `throttle` | 429, code `130429` "Rate limit hit", `Retry-After: 10` | 429 `Too Many Requests: retry after 10`, `parameters.retry_after: 10` | 429 `The API rate limit has been exceeded. Try again later.` |
//! | `restrict` | 403, code `368` "Temporarily blocked for policies violations" | 400 explaining that the Bot API has no restriction signal (→ `rejected`) | 429 `You have reached your monthly limit.` |
//! | `ban` | 403, code `131031` "Business Account locked" | 401 `Unauthorized` — what Telegram answers for a deleted bot or revoked token, the nearest real signal (→ `config_error`, channel `disabled`) | 403 `Access to this API is not available for your account` |
//! | `reject_recipient` | 400, code `131026` "Message Undeliverable" for that number | 403 `Forbidden: bot was blocked by the user` for that chat | 400 `Failed to send messages` for that user id |
//!
//! The HTTP status of the WhatsApp refusals is a choice (Meta documents the `code`, which is what
//! the channel classifies on); the rest is each provider's documented answer.
//!
//! This module holds what the three share (the [`Mode`], the [`Simulated`] record of what was
//! accepted and refused, the fake credentials); [`whatsapp`], [`telegram`] and [`line`] are one
//! simulator each. The mail server is [`super::smtp`].

pub mod line;
pub mod telegram;
pub mod whatsapp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use lifeboat_channel::ChannelKind;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;

pub use line::start as start_line;
pub use telegram::start as start_telegram;
pub use whatsapp::start as start_whatsapp;

/// The phone number id, access token, bot token and channel access token the sandbox's channels
/// are configured with. They are fake and printed nowhere; the simulated providers check them the
/// way the real ones would (a wrong one gets the provider's authentication error).
pub const WHATSAPP_PHONE_NUMBER_ID: &str = "100000000000001";
pub const WHATSAPP_ACCESS_TOKEN: &str = "sandbox-whatsapp-access-token";
pub const WHATSAPP_API_VERSION: &str = "v23.0";
/// Signs the WhatsApp webhooks the sandbox sends its gateway (a template approved again).
pub const WHATSAPP_APP_SECRET: &str = "sandbox-whatsapp-app-secret";
pub const TELEGRAM_BOT_TOKEN: &str = "1000000001:SANDBOX-sandbox-sandbox-sandbox-000";
pub const TELEGRAM_BOT_USERNAME: &str = "lifeboat_sandbox_bot";
pub const LINE_CHANNEL_ACCESS_TOKEN: &str = "sandbox-line-channel-access-token";

/// How long the simulated WhatsApp and Telegram ask to be left alone in `throttle` mode. It is
/// longer than the sandbox's `routing.max_wait`, so a throttle visibly moves notifications on.
pub const THROTTLE_SECS: u64 = 10;

/// How a simulated provider answers sends. Set through `POST /sandbox/providers/{channel}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mode {
    /// Accept every message (the default).
    #[default]
    Accept,
    /// Fail every send as a passing server error (retried, then failed over).
    Transient,
    /// Ask the sender to slow down (the channel pauses).
    Throttle,
    /// Limit the account for a while (the channel rests for its cooldown).
    Restrict,
    /// Lock the account (the channel is out until an admin enables it).
    Ban,
    /// Accept everything except sends to this one address.
    RejectRecipient { address: String },
}

impl Mode {
    /// The name used in the controls' JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Accept => "accept",
            Mode::Transient => "transient",
            Mode::Throttle => "throttle",
            Mode::Restrict => "restrict",
            Mode::Ban => "ban",
            Mode::RejectRecipient { .. } => "reject_recipient",
        }
    }

    /// Every mode name, for error messages.
    pub const NAMES: &'static str = "accept, transient, throttle, restrict, ban, reject_recipient";

    pub fn address(&self) -> Option<&str> {
        match self {
            Mode::RejectRecipient { address } => Some(address),
            _ => None,
        }
    }
}

/// One message a simulated provider accepted.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// When the provider accepted it.
    pub at: DateTime<Utc>,
    /// The recipient as the channel addressed it (phone number, chat id, LINE user id, mailbox).
    pub to: String,
    /// The text a person would read (for a WhatsApp template, its name and parameters).
    pub text: String,
    /// The id the provider answered with.
    pub message_id: String,
    /// Email only: the `Subject` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The request as the provider got it: the JSON body, or for email the envelope and message.
    pub request: Value,
}

/// The state every simulated provider shares with the controls.
pub struct Simulated {
    pub kind: ChannelKind,
    /// The base URL the channel is configured with (`api_base`, `api_url`, `smtp://…`).
    pub url: String,
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
    refused: AtomicU64,
    /// When each refusal happened (the benchmark counts sends after a ban).
    refused_at: Mutex<Vec<DateTime<Utc>>>,
    last_refusal: Mutex<Option<String>>,
    seq: AtomicU64,
    /// WhatsApp: templates Meta has paused (sends with them are answered 132015).
    paused_templates: Mutex<std::collections::BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Simulated {
    pub fn new(kind: ChannelKind, url: String) -> Simulated {
        Simulated {
            kind,
            url,
            mode: Mutex::new(Mode::Accept),
            received: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
            refused_at: Mutex::new(Vec::new()),
            last_refusal: Mutex::new(None),
            seq: AtomicU64::new(0),
            paused_templates: Mutex::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        lock(&self.mode).clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.mode) = mode;
    }

    /// WhatsApp: pauses (`true`) or approves again (`false`) a template by name.
    pub fn set_template_paused(&self, name: &str, paused: bool) {
        let mut set = lock(&self.paused_templates);
        if paused {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    pub fn template_paused(&self, name: &str) -> bool {
        lock(&self.paused_templates).contains(name)
    }

    /// The paused templates, by name.
    pub fn paused_templates(&self) -> Vec<String> {
        lock(&self.paused_templates).iter().cloned().collect()
    }

    /// Everything accepted so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    pub fn received_count(&self) -> usize {
        lock(&self.received).len()
    }

    pub fn clear_received(&self) {
        lock(&self.received).clear();
    }

    pub fn record(&self, received: Received) {
        lock(&self.received).push(received);
    }

    /// Counts a refused send and keeps a one-line summary of it.
    pub fn refuse(&self, summary: String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        lock(&self.refused_at).push(Utc::now());
        *lock(&self.last_refusal) = Some(summary);
    }

    /// When each refused send came in, oldest first.
    pub fn refused_at(&self) -> Vec<DateTime<Utc>> {
        lock(&self.refused_at).clone()
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn last_refusal(&self) -> Option<String> {
        lock(&self.last_refusal).clone()
    }

    /// A fresh number for message ids.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether `to` is the recipient `reject_recipient` names (phone numbers compare by
    /// digits, mailboxes case-insensitively).
    pub fn rejects(&self, to: &str) -> bool {
        match &*lock(&self.mode) {
            Mode::RejectRecipient { address } => same_address(self.kind, address, to),
            _ => false,
        }
    }
}

/// Whether two addresses name the same recipient on `kind`.
pub fn same_address(kind: ChannelKind, a: &str, b: &str) -> bool {
    match kind {
        ChannelKind::Whatsapp => {
            let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
            digits(a) == digits(b)
        }
        ChannelKind::Email => a.trim().eq_ignore_ascii_case(b.trim()),
        ChannelKind::Telegram | ChannelKind::Line => a.trim() == b.trim(),
    }
}

/// What every simulator says of [`Mode::Accept`].
const ACCEPTS: &str = "accepts every message";

/// One line saying what the provider answers in `mode`, for the controls and the banner.
pub fn describe(kind: ChannelKind, mode: &Mode) -> String {
    match kind {
        ChannelKind::Whatsapp => whatsapp::describe(mode),
        ChannelKind::Telegram => telegram::describe(mode),
        ChannelKind::Line => line::describe(mode),
        ChannelKind::Email => super::smtp::describe(mode),
    }
}

/// A provider's refusal: status, extra headers and JSON body.
struct Refusal {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

impl Refusal {
    fn new(status: StatusCode, body: Value) -> Refusal {
        Refusal {
            status,
            headers: vec![],
            body,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Serves a simulator's routes on its listener until the process ends.
fn serve(listener: TcpListener, router: Router, name: &'static str) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the simulated {name} stopped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_per_channel() {
        assert!(same_address(
            ChannelKind::Whatsapp,
            "+48600100200",
            "48600100200"
        ));
        assert!(same_address(
            ChannelKind::Email,
            "Ana@Example.com",
            "ana@example.com"
        ));
        assert!(!same_address(ChannelKind::Telegram, "5551234", "5551235"));
    }

    #[test]
    fn every_mode_is_described() {
        for kind in ChannelKind::ALL {
            for mode in [
                Mode::Accept,
                Mode::Transient,
                Mode::Throttle,
                Mode::Restrict,
                Mode::Ban,
                Mode::RejectRecipient {
                    address: "x".into(),
                },
            ] {
                assert!(!describe(kind, &mode).is_empty());
            }
        }
    }
}
