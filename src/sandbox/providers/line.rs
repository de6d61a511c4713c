//! The simulated LINE Messaging API: push (answering a repeated `X-Line-Retry-Key` with 409 and
//! the first `sentMessages`) and the two quota reads, with LINE's `{"message": ...}` errors for
//! each [`Mode`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use lifeboat_channel::ChannelKind;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{
    bearer, lock, serve, Mode, Received, Refusal, Simulated, ACCEPTS, LINE_CHANNEL_ACCESS_TOKEN,
};

/// One line saying what the simulated provider answers in `mode`.
pub(super) fn describe(mode: &Mode) -> String {
    let to = mode.address().unwrap_or_default();
    let text = match mode {
        Mode::Accept => ACCEPTS,
        Mode::Transient => "500 Internal server error",
        Mode::Throttle => "429 The API rate limit has been exceeded. Try again later.",
        Mode::Restrict => "429 You have reached your monthly limit.",
        Mode::Ban => "403 Access to this API is not available for your account",
        Mode::RejectRecipient { .. } => {
            return format!("400 Failed to send messages, for user {to}; accepts others")
        }
    };
    text.to_string()
}

/// The simulated LINE platform: the provider state plus the retry keys it has accepted.
struct Line {
    sim: Arc<Simulated>,
    /// `X-Line-Retry-Key` → the `sentMessages` of the push it was accepted with.
    retry_keys: Mutex<HashMap<String, (String, Value)>>,
}

fn line_error(status: StatusCode, message: &str) -> Refusal {
    Refusal::new(status, json!({"message": message}))
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
pub async fn start() -> std::io::Result<(Arc<Simulated>, String)> {
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
    serve(listener, router, "LINE");
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
        let r = Refusal::new(
            StatusCode::BAD_REQUEST,
            json!({"message": "The request body has 1 error(s)",
                "details": [{"message": "May not be empty",
                    "property": if to.is_empty() { "to" } else { "messages" }}]}),
        );
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
        sim.refuse(format!("to {to}: {}", describe(&mode)));
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
