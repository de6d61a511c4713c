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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use lifeboat_channel::ChannelKind;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The phone number id, access token, bot token and channel access token the sandbox's channels
/// are configured with. They are fake and printed nowhere; the simulated providers check them the
/// way the real ones would (a wrong one gets the provider's authentication error).
pub const WHATSAPP_PHONE_NUMBER_ID: &str = "100000000000001";
pub const WHATSAPP_ACCESS_TOKEN: &str = "sandbox-whatsapp-access-token";
pub const WHATSAPP_API_VERSION: &str = "v23.0";
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
        }
    }

    pub fn mode(&self) -> Mode {
        lock(&self.mode).clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.mode) = mode;
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

/// One line saying what the provider answers in `mode`, for the controls and the banner.
pub fn describe(kind: ChannelKind, mode: &Mode) -> String {
    let to = mode.address().unwrap_or_default();
    let text = match (kind, mode) {
        (_, Mode::Accept) => "accepts every message",
        (ChannelKind::Whatsapp, Mode::Transient) => "500, Graph code 131000 Something went wrong",
        (ChannelKind::Whatsapp, Mode::Throttle) => {
            "429, Graph code 130429 Rate limit hit, Retry-After: 10"
        }
        (ChannelKind::Whatsapp, Mode::Restrict) => {
            "403, Graph code 368 Temporarily blocked for policies violations"
        }
        (ChannelKind::Whatsapp, Mode::Ban) => "403, Graph code 131031 Business Account locked",
        (ChannelKind::Whatsapp, Mode::RejectRecipient { .. }) => {
            return format!("400, Graph code 131026 Message Undeliverable for {to}; accepts others")
        }
        (ChannelKind::Telegram, Mode::Transient) => {
            "502 Bad Gateway (teloxide waits 10 s after a 5xx; the channel times out first)"
        }
        (ChannelKind::Telegram, Mode::Throttle) => {
            "429 Too Many Requests: retry after 10 (parameters.retry_after = 10)"
        }
        (ChannelKind::Telegram, Mode::Restrict) => {
            "400: the Bot API has no restriction signal, so this refuses each message (rejected)"
        }
        (ChannelKind::Telegram, Mode::Ban) => {
            "401 Unauthorized: the Bot API has no ban signal; a deleted bot or revoked token is the nearest (config_error)"
        }
        (ChannelKind::Telegram, Mode::RejectRecipient { .. }) => {
            return format!("403 Forbidden: bot was blocked by the user, for chat {to}; accepts others")
        }
        (ChannelKind::Line, Mode::Transient) => "500 Internal server error",
        (ChannelKind::Line, Mode::Throttle) => {
            "429 The API rate limit has been exceeded. Try again later."
        }
        (ChannelKind::Line, Mode::Restrict) => "429 You have reached your monthly limit.",
        (ChannelKind::Line, Mode::Ban) => {
            "403 Access to this API is not available for your account"
        }
        (ChannelKind::Line, Mode::RejectRecipient { .. }) => {
            return format!("400 Failed to send messages, for user {to}; accepts others")
        }
        (ChannelKind::Email, mode) => return super::smtp::describe(mode),
    };
    text.to_string()
}

/// A provider's refusal: status, extra headers and JSON body.
struct Refusal {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
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

// ---------------------------------------------------------------------------------------------
// WhatsApp Cloud API

fn graph_error(status: StatusCode, code: i64, message: &str, details: &str) -> Refusal {
    Refusal {
        status,
        headers: vec![],
        body: json!({"error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "ASandboxTraceId"
        }}),
    }
}

fn whatsapp_refusal(mode: &Mode) -> Option<Refusal> {
    Some(match mode {
        Mode::Accept | Mode::RejectRecipient { .. } => return None,
        Mode::Transient => graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            131000,
            "(#131000) Something went wrong",
            "Something went wrong. Try again.",
        ),
        Mode::Throttle => {
            let mut r = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                130429,
                "(#130429) Rate limit hit",
                "Message failed to send because there were too many messages sent from this phone number in a short period of time",
            );
            r.headers.push(("retry-after", THROTTLE_SECS.to_string()));
            r
        }
        Mode::Restrict => graph_error(
            StatusCode::FORBIDDEN,
            368,
            "(#368) Temporarily blocked for policies violations",
            "The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy.",
        ),
        Mode::Ban => graph_error(
            StatusCode::FORBIDDEN,
            131031,
            "(#131031) Business Account locked",
            "The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy, or the data in the request could not be verified against the account.",
        ),
    })
}

/// The simulated Graph API: `POST /v23.0/{phone_number_id}/messages` and the health read
/// `GET /v23.0/{phone_number_id}`. Returns the `api_base` to configure.
pub async fn start_whatsapp() -> std::io::Result<(Arc<Simulated>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}/{WHATSAPP_API_VERSION}");
    let sim = Arc::new(Simulated::new(ChannelKind::Whatsapp, base.clone()));
    let router = Router::new()
        .route(
            &format!("/{WHATSAPP_API_VERSION}/{{phone_number_id}}/messages"),
            post(whatsapp_send),
        )
        .route(
            &format!("/{WHATSAPP_API_VERSION}/{{phone_number_id}}"),
            get(whatsapp_phone),
        )
        .with_state(sim.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the simulated WhatsApp stopped");
        }
    });
    Ok((sim, base))
}

/// Checks the token and the phone number id the way Graph does.
fn whatsapp_gate(phone: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    if bearer(headers) != Some(WHATSAPP_ACCESS_TOKEN) {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
            "Invalid OAuth access token - Cannot parse access token",
        ));
    }
    if phone != WHATSAPP_PHONE_NUMBER_ID {
        let message = format!("(#100) Unsupported post request. Object with ID '{phone}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.");
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            100,
            &message,
            &message,
        ));
    }
    Ok(())
}

async fn whatsapp_phone(Path(phone): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = whatsapp_gate(&phone, &headers) {
        return r.into_response();
    }
    axum::Json(json!({
        "display_phone_number": "+1 555-000-0001",
        "verified_name": "Lifeboat Sandbox",
        "quality_rating": "GREEN",
        "id": phone
    }))
    .into_response()
}

async fn whatsapp_send(
    State(sim): State<Arc<Simulated>>,
    Path(phone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = whatsapp_gate(&phone, &headers) {
        return r.into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let to = request["to"].as_str().unwrap_or_default().to_string();
    if to.is_empty() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            131008,
            "(#131008) Required parameter is missing",
            "Parameter 'to' is required.",
        )
        .into_response();
    }
    let mode = sim.mode();
    if let Some(refusal) = whatsapp_refusal(&mode) {
        sim.refuse(format!("to {to}: {}", describe(sim.kind, &mode)));
        return refusal.into_response();
    }
    if sim.rejects(&to) {
        sim.refuse(format!("to {to}: 131026 Message Undeliverable"));
        return graph_error(
            StatusCode::BAD_REQUEST,
            131026,
            "(#131026) Message Undeliverable",
            "Unable to deliver message. Reasons can include: the recipient phone number is not a WhatsApp phone number; the recipient has not accepted the new Terms of Service; the recipient is using an old WhatsApp version.",
        )
        .into_response();
    }
    let text = match request["type"].as_str() {
        Some("template") => {
            let t = &request["template"];
            let params: Vec<&str> = t["components"][0]["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["text"].as_str()).collect())
                .unwrap_or_default();
            format!(
                "[template {} ({})] {}",
                t["name"].as_str().unwrap_or("?"),
                t["language"]["code"].as_str().unwrap_or("?"),
                params.join(", ")
            )
        }
        _ => request["text"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let id = format!("wamid.SANDBOX{:08}", sim.next_seq());
    let wa_id: String = to.chars().filter(char::is_ascii_digit).collect();
    sim.record(Received {
        at: Utc::now(),
        to: to.clone(),
        text,
        message_id: id.clone(),
        subject: None,
        request,
    });
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [{"id": id, "message_status": "accepted"}]
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Telegram Bot API

fn telegram_error(status: StatusCode, description: &str, parameters: Option<Value>) -> Refusal {
    let mut body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    Refusal {
        status,
        headers: vec![],
        body,
    }
}

fn telegram_refusal(mode: &Mode) -> Option<Refusal> {
    Some(match mode {
        Mode::Accept | Mode::RejectRecipient { .. } => return None,
        Mode::Transient => telegram_error(StatusCode::BAD_GATEWAY, "Bad Gateway", None),
        Mode::Throttle => {
            let mut r = telegram_error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too Many Requests: retry after {THROTTLE_SECS}"),
                Some(json!({"retry_after": THROTTLE_SECS})),
            );
            r.headers.push(("retry-after", THROTTLE_SECS.to_string()));
            r
        }
        Mode::Restrict => telegram_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: the Telegram Bot API has no restriction signal; the Lifeboat sandbox refuses this message to stand in for one",
            None,
        ),
        Mode::Ban => telegram_error(StatusCode::UNAUTHORIZED, "Unauthorized", None),
    })
}

/// The simulated Bot API: `/bot<token>/<method>` for `sendMessage`, `getMe`, `getUpdates`
/// (no one writes to the simulated bot), `setMyCommands` and `deleteWebhook` (method names
/// case-insensitive, as Telegram's are). Returns the `api_url` to configure.
pub async fn start_telegram() -> std::io::Result<(Arc<Simulated>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sim = Arc::new(Simulated::new(ChannelKind::Telegram, url.clone()));
    let router = Router::new()
        .route("/{bot}/{method}", any(telegram_method))
        .with_state(sim.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the simulated Telegram stopped");
        }
    });
    Ok((sim, url))
}

/// A `chat_id` member as text (Telegram takes an integer or `@channelusername`).
fn chat_id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

async fn telegram_method(
    State(sim): State<Arc<Simulated>>,
    Path((bot, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if bot != format!("bot{TELEGRAM_BOT_TOKEN}") {
        return telegram_error(StatusCode::UNAUTHORIZED, "Unauthorized", None).into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    match method.to_ascii_lowercase().as_str() {
        "getme" => {
            if sim.mode() == Mode::Ban {
                return telegram_error(StatusCode::UNAUTHORIZED, "Unauthorized", None)
                    .into_response();
            }
            axum::Json(json!({"ok": true, "result": {
                "id": 1000000001u64, "is_bot": true, "first_name": "Lifeboat Sandbox",
                "username": TELEGRAM_BOT_USERNAME, "can_join_groups": true,
                "can_read_all_group_messages": false, "supports_inline_queries": false,
                "has_main_web_app": false
            }}))
            .into_response()
        }
        "getupdates" => {
            // Nobody writes to the simulated bot: a long poll waits its timeout, then answers
            // no updates (so a poller doesn't spin).
            let wait = request["timeout"].as_u64().unwrap_or(0).min(30);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            axum::Json(json!({"ok": true, "result": []})).into_response()
        }
        "setmycommands" | "deletewebhook" => {
            axum::Json(json!({"ok": true, "result": true})).into_response()
        }
        "sendmessage" => telegram_send(&sim, request).into_response(),
        _ => telegram_error(StatusCode::NOT_FOUND, "Not Found: method not found", None)
            .into_response(),
    }
}

fn telegram_send(sim: &Simulated, request: Value) -> Response {
    let Some(chat) = chat_id_text(&request["chat_id"]) else {
        return telegram_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: chat_id is empty",
            None,
        )
        .into_response();
    };
    let text = request["text"].as_str().unwrap_or_default().to_string();
    if text.is_empty() {
        return telegram_error(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
            None,
        )
        .into_response();
    }
    let mode = sim.mode();
    if let Some(refusal) = telegram_refusal(&mode) {
        sim.refuse(format!("to {chat}: {}", describe(sim.kind, &mode)));
        return refusal.into_response();
    }
    if sim.rejects(&chat) {
        sim.refuse(format!(
            "to {chat}: 403 Forbidden: bot was blocked by the user"
        ));
        return telegram_error(
            StatusCode::FORBIDDEN,
            "Forbidden: bot was blocked by the user",
            None,
        )
        .into_response();
    }
    let message_id = sim.next_seq() + 800;
    let chat_json = match chat.parse::<i64>() {
        Ok(id) => json!({"id": id, "type": "private", "first_name": "Sandbox user"}),
        Err(_) => json!({"id": -1001000000001i64, "type": "channel", "title": "Sandbox channel",
            "username": chat.trim_start_matches('@')}),
    };
    let now = Utc::now();
    sim.record(Received {
        at: now,
        to: chat,
        text: text.clone(),
        message_id: message_id.to_string(),
        subject: None,
        request,
    });
    axum::Json(json!({"ok": true, "result": {
        "message_id": message_id,
        "date": now.timestamp(),
        "chat": chat_json,
        "text": text
    }}))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// LINE Messaging API

/// The simulated LINE platform: the provider state plus the retry keys it has accepted.
struct Line {
    sim: Arc<Simulated>,
    /// `X-Line-Retry-Key` → the `sentMessages` of the push it was accepted with.
    retry_keys: Mutex<HashMap<String, (String, Value)>>,
}

fn line_error(status: StatusCode, message: &str) -> Refusal {
    Refusal {
        status,
        headers: vec![],
        body: json!({"message": message}),
    }
}

fn line_refusal(mode: &Mode) -> Option<Refusal> {
    Some(match mode {
        Mode::Accept | Mode::RejectRecipient { .. } => return None,
        Mode::Transient => line_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
        Mode::Throttle => line_error(
            StatusCode::TOO_MANY_REQUESTS,
            "The API rate limit has been exceeded. Try again later.",
        ),
        Mode::Restrict => line_error(
            StatusCode::TOO_MANY_REQUESTS,
            "You have reached your monthly limit.",
        ),
        Mode::Ban => line_error(
            StatusCode::FORBIDDEN,
            "Access to this API is not available for your account",
        ),
    })
}

/// The simulated Messaging API: push (with `X-Line-Retry-Key`) and the two quota reads.
/// Returns the `api_base` to configure.
pub async fn start_line() -> std::io::Result<(Arc<Simulated>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sim = Arc::new(Simulated::new(ChannelKind::Line, url.clone()));
    let line = Arc::new(Line {
        sim: sim.clone(),
        retry_keys: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route("/v2/bot/message/push", post(line_push))
        .route("/v2/bot/message/quota", get(line_quota))
        .route("/v2/bot/message/quota/consumption", get(line_consumption))
        .with_state(line);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the simulated LINE stopped");
        }
    });
    Ok((sim, url))
}

fn line_gate(headers: &HeaderMap) -> Result<(), Refusal> {
    if bearer(headers) == Some(LINE_CHANNEL_ACCESS_TOKEN) {
        return Ok(());
    }
    Err(line_error(
        StatusCode::UNAUTHORIZED,
        "Authentication failed due to the following reason: invalid token. Confirm that the access token in the authorization header is valid.",
    ))
}

/// Adds `x-line-request-id`, which LINE puts on every answer.
fn with_request_id(mut response: Response, seq: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("sandbox-request-{seq:08}")) {
        response.headers_mut().insert("x-line-request-id", v);
    }
    response
}

async fn line_push(State(line): State<Arc<Line>>, headers: HeaderMap, body: Bytes) -> Response {
    let sim = &line.sim;
    let request_seq = sim.next_seq();
    if let Err(r) = line_gate(&headers) {
        return with_request_id(r.into_response(), request_seq);
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let to = request["to"].as_str().unwrap_or_default().to_string();
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    if to.is_empty() || messages.is_empty() {
        let r = Refusal {
            status: StatusCode::BAD_REQUEST,
            headers: vec![],
            body: json!({"message": "The request body has 1 error(s)",
                "details": [{"message": "May not be empty",
                    "property": if to.is_empty() { "to" } else { "messages" }}]}),
        };
        return with_request_id(r.into_response(), request_seq);
    }
    let retry_key = headers
        .get("x-line-retry-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if let Some(key) = &retry_key {
        if let Some((accepted_id, sent)) = lock(&line.retry_keys).get(key).cloned() {
            let mut response = (
                StatusCode::CONFLICT,
                axum::Json(json!({"message": "The retry key is already accepted",
                    "sentMessages": sent})),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&accepted_id) {
                response
                    .headers_mut()
                    .insert("x-line-accepted-request-id", v);
            }
            return with_request_id(response, request_seq);
        }
    }
    let mode = sim.mode();
    if let Some(refusal) = line_refusal(&mode) {
        sim.refuse(format!("to {to}: {}", describe(sim.kind, &mode)));
        return with_request_id(refusal.into_response(), request_seq);
    }
    if sim.rejects(&to) {
        sim.refuse(format!("to {to}: 400 Failed to send messages"));
        return with_request_id(
            line_error(StatusCode::BAD_REQUEST, "Failed to send messages").into_response(),
            request_seq,
        );
    }
    let sent: Vec<Value> = messages
        .iter()
        .map(|_| {
            let n = sim.next_seq();
            json!({"id": format!("{}", 461230966842064000u64 + n),
                "quoteToken": format!("SandboxQuoteToken{n:08}")})
        })
        .collect();
    let sent = Value::Array(sent);
    if let Some(key) = retry_key {
        lock(&line.retry_keys).insert(
            key,
            (format!("sandbox-request-{request_seq:08}"), sent.clone()),
        );
    }
    let text: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
    sim.record(Received {
        at: Utc::now(),
        to,
        text: text.join("\n"),
        message_id: sent[0]["id"].as_str().unwrap_or_default().to_string(),
        subject: None,
        request,
    });
    with_request_id(
        axum::Json(json!({"sentMessages": sent})).into_response(),
        request_seq,
    )
}

/// The monthly target: unlimited, except in `restrict` mode, where it is used up.
const RESTRICTED_QUOTA: usize = 1000;

async fn line_quota(State(line): State<Arc<Line>>, headers: HeaderMap) -> Response {
    if let Err(r) = line_gate(&headers) {
        return r.into_response();
    }
    match line.sim.mode() {
        Mode::Restrict => {
            axum::Json(json!({"type": "limited", "value": RESTRICTED_QUOTA})).into_response()
        }
        _ => axum::Json(json!({"type": "none"})).into_response(),
    }
}

async fn line_consumption(State(line): State<Arc<Line>>, headers: HeaderMap) -> Response {
    if let Err(r) = line_gate(&headers) {
        return r.into_response();
    }
    let used = match line.sim.mode() {
        Mode::Restrict => RESTRICTED_QUOTA.max(line.sim.received_count()),
        _ => line.sim.received_count(),
    };
    axum::Json(json!({"totalUsage": used})).into_response()
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
