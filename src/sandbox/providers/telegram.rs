//! The simulated Telegram Bot API: `/bot<token>/<method>` for `sendMessage` and the few methods
//! the channel calls at start-up, with the Bot API's `{"ok": false, ...}` answers for each [`Mode`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::Utc;
use lifeboat_channel::ChannelKind;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{
    serve, Mode, Received, Refusal, Simulated, ACCEPTS, TELEGRAM_BOT_TOKEN, TELEGRAM_BOT_USERNAME,
    THROTTLE_SECS,
};

/// One line saying what the simulated provider answers in `mode`.
pub(super) fn describe(mode: &Mode) -> String {
    let to = mode.address().unwrap_or_default();
    let text = match mode {
        Mode::Accept => ACCEPTS,
        Mode::Transient => {
            "502 Bad Gateway (teloxide waits 10 s after a 5xx; the channel times out first)"
        }
        Mode::Throttle => {
            "429 Too Many Requests: retry after 10 (parameters.retry_after = 10)"
        }
        Mode::Restrict => {
            "400: the Bot API has no restriction signal, so this refuses each message (rejected)"
        }
        Mode::Ban => {
            "401 Unauthorized: the Bot API has no ban signal; a deleted bot or revoked token is the nearest (config_error)"
        }
        Mode::RejectRecipient { .. } => {
            return format!("403 Forbidden: bot was blocked by the user, for chat {to}; accepts others")
        }
    };
    text.to_string()
}

fn telegram_error(status: StatusCode, description: &str, parameters: Option<Value>) -> Refusal {
    let mut body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let Some(p) = parameters {
        body["parameters"] = p;
    }
    Refusal::new(status, body)
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
pub async fn start() -> std::io::Result<(Arc<Simulated>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let sim = Arc::new(Simulated::new(ChannelKind::Telegram, url.clone()));
    let router = Router::new()
        .route("/{bot}/{method}", any(telegram_method))
        .with_state(sim.clone());
    serve(listener, router, "Telegram");
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
        sim.refuse(format!("to {chat}: {}", describe(&mode)));
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
