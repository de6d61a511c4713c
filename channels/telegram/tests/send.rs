//! The Telegram channel against a fake Bot API (wiremock on 127.0.0.1).
//!
//! teloxide posts to `/bot<TOKEN>/<Method>` with the method name capitalised (`SendMessage`,
//! `GetMe`); the path is also Telegram's authentication, so every mock matches it exactly.

use std::time::{Duration, Instant};

use lifeboat_channel::{
    Answer, Category, Channel, ChannelKind, Class, Health, OptOut, OutboundMessage, ThrottleScope,
};
use lifeboat_telegram::{TelegramChannel, TelegramConfig, TelegramConfigError};
use serde_json::{json, Value};
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq";
const SECRET_PART: &str = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq";
const CHAT: i64 = 812345678;

fn send_path() -> String {
    format!("/bot{TOKEN}/SendMessage")
}

fn channel_at(api_url: &str, timeout: Duration) -> TelegramChannel {
    let mut config = TelegramConfig::new(TOKEN);
    config.api_url = api_url.to_string();
    TelegramChannel::new(config, timeout).expect("valid config")
}

fn channel(server: &MockServer) -> TelegramChannel {
    channel_at(&server.uri(), Duration::from_secs(5))
}

fn message(to: &str) -> OutboundMessage {
    OutboundMessage {
        notification_id: "n-1".into(),
        category: Category::Transactional,
        to: to.into(),
        text: "Your order #1042 has shipped.".into(),
        subject: None,
        html: None,
        whatsapp_template: None,
        retry_key: "6f1c1c9e-0000-4000-8000-000000000001".into(),
        headers: vec![],
    }
}

fn assert_no_token(answer: &Answer) {
    let dbg = format!("{answer:?}");
    assert!(!dbg.contains(SECRET_PART), "token leaked: {dbg}");
}

fn error_body(code: u16, description: &str) -> Value {
    json!({"ok": false, "error_code": code, "description": description})
}

/// Mounts a `SendMessage` mock for the default chat and text that answers `status` + `body`.
async fn mount_send(server: &MockServer, status: u16, body: Value) {
    Mock::given(method("POST"))
        .and(path(send_path()))
        .and(body_json(
            json!({"chat_id": CHAT, "text": "Your order #1042 has shipped."}),
        ))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(1)
        .mount(server)
        .await;
}

async fn send_with(status: u16, body: Value) -> Answer {
    let server = MockServer::start().await;
    mount_send(&server, status, body).await;
    let answer = channel(&server).send(&message(&CHAT.to_string())).await;
    assert_no_token(&answer);
    server.verify().await;
    answer
}

fn sent_body(message_id: i64) -> Value {
    json!({"ok": true, "result": {
        "message_id": message_id,
        "date": 1_700_000_000,
        "chat": {"id": CHAT, "type": "private", "first_name": "Ana"},
        "from": {"id": 123456789, "is_bot": true, "first_name": "Acme", "username": "acme_notify_bot"},
        "text": "Your order #1042 has shipped."
    }})
}

#[tokio::test]
async fn success_posts_chat_id_and_text_and_returns_the_message_id() {
    let server = MockServer::start().await;
    mount_send(&server, 200, sent_body(812)).await;
    let ch = channel(&server);
    assert_eq!(ch.kind(), ChannelKind::Telegram);

    let answer = ch.send(&message("812345678")).await;
    assert_eq!(answer, Answer::sent("812"));

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method.as_str(), "POST");
    // Capital S, and the token in the path: that is Telegram's authentication.
    assert_eq!(req.url.path(), format!("/bot{TOKEN}/SendMessage"));
    let body: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["chat_id"], json!(CHAT));
    assert_eq!(body["text"], json!("Your order #1042 has shipped."));
}

#[tokio::test]
async fn channel_username_is_sent_as_a_string_chat_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(send_path()))
        .and(body_json(
            json!({"chat_id": "@acme_news", "text": "Your order #1042 has shipped."}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(sent_body(9)))
        .expect(1)
        .mount(&server)
        .await;
    let answer = channel(&server).send(&message("@acme_news")).await;
    assert_eq!(answer, Answer::sent("9"));
}

#[tokio::test]
async fn unparsable_address_is_rejected_without_a_call() {
    let server = MockServer::start().await;
    let answer = channel(&server).send(&message("ana@example.com")).await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(answer.code.as_deref(), Some("invalid_address"));
    assert!(answer.detail.unwrap().contains("ana@example.com"));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn flood_wait_throttles_the_channel() {
    let answer = send_with(
        429,
        json!({"ok": false, "error_code": 429,
               "description": "Too Many Requests: retry after 7",
               "parameters": {"retry_after": 7}}),
    )
    .await;
    assert_eq!(
        answer.class,
        Class::Throttled {
            retry_after: Some(Duration::from_secs(7)),
            scope: ThrottleScope::Channel
        }
    );
    assert_eq!(answer.code.as_deref(), Some("retry_after"));
}

#[tokio::test]
async fn blocked_bot_revokes_consent() {
    let answer = send_with(
        403,
        error_body(403, "Forbidden: bot was blocked by the user"),
    )
    .await;
    assert_eq!(
        answer.class,
        Class::RecipientUnreachable {
            opt_out: Some(OptOut::Blocked)
        }
    );
    assert_eq!(
        answer.detail.as_deref(),
        Some("Forbidden: bot was blocked by the user")
    );
}

#[tokio::test]
async fn deactivated_user_is_unreachable_without_opt_out() {
    let answer = send_with(403, error_body(403, "Forbidden: user is deactivated")).await;
    assert_eq!(answer.class, Class::RecipientUnreachable { opt_out: None });
    assert_eq!(answer.code.as_deref(), Some("user_deactivated"));
    assert_eq!(
        answer.detail.as_deref(),
        Some("Forbidden: user is deactivated")
    );
}

#[tokio::test]
async fn unknown_chat_is_unreachable() {
    let answer = send_with(400, error_body(400, "Bad Request: chat not found")).await;
    assert_eq!(answer.class, Class::RecipientUnreachable { opt_out: None });
}

#[tokio::test]
async fn cant_initiate_conversation_is_unreachable() {
    // The current wording ("Forbidden:") is not one teloxide knows: it arrives as `Unknown`.
    let answer = send_with(
        403,
        error_body(
            403,
            "Forbidden: bot can't initiate conversation with a user",
        ),
    )
    .await;
    assert_eq!(answer.class, Class::RecipientUnreachable { opt_out: None });
}

#[tokio::test]
async fn unauthorized_is_a_config_error() {
    let answer = send_with(401, error_body(401, "Unauthorized")).await;
    assert_eq!(answer.class, Class::ConfigError);
    assert_eq!(answer.code.as_deref(), Some("invalid_token"));
}

#[tokio::test]
async fn too_long_is_rejected() {
    let answer = send_with(400, error_body(400, "Bad Request: message is too long")).await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(
        answer.detail.as_deref(),
        Some("Bad Request: message is too long")
    );
}

#[tokio::test]
async fn migrated_group_is_unreachable_and_names_the_new_chat() {
    let answer = send_with(
        400,
        json!({"ok": false, "error_code": 400,
               "description": "Bad Request: group chat was upgraded to a supergroup chat",
               "parameters": {"migrate_to_chat_id": -1001234567890_i64}}),
    )
    .await;
    assert_eq!(answer.class, Class::RecipientUnreachable { opt_out: None });
    assert_eq!(answer.code.as_deref(), Some("migrate_to_chat_id"));
    assert!(answer.detail.unwrap().contains("-1001234567890"));
}

#[tokio::test]
async fn server_error_is_transient_within_our_timeout() {
    // teloxide sleeps 10 s after a 5xx; our 1 s timeout answers first.
    let server = MockServer::start().await;
    mount_send(&server, 500, error_body(500, "Internal Server Error")).await;
    let ch = channel_at(&server.uri(), Duration::from_secs(1));
    let started = Instant::now();
    let answer = ch.send(&message(&CHAT.to_string())).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.class, Class::Transient { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("timeout"));
    assert_no_token(&answer);
}

#[tokio::test]
async fn server_error_description_is_transient_after_teloxides_sleep() {
    // With a timeout longer than teloxide's 10 s sleep the body itself is classified:
    // the HTTP status is lost, the description says "Internal Server Error".
    let server = MockServer::start().await;
    mount_send(&server, 500, error_body(500, "Internal Server Error")).await;
    let answer = channel_at(&server.uri(), Duration::from_secs(15))
        .send(&message(&CHAT.to_string()))
        .await;
    assert_eq!(answer.class, Class::Transient { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("internal_server_error"));
}

#[tokio::test]
async fn html_bad_gateway_is_transient_after_teloxides_sleep() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(send_path()))
        .respond_with(ResponseTemplate::new(502).set_body_raw(
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            "text/html",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let answer = channel_at(&server.uri(), Duration::from_secs(15))
        .send(&message(&CHAT.to_string()))
        .await;
    assert_eq!(answer.class, Class::Transient { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("invalid_json"));
    assert_no_token(&answer);
}

#[tokio::test]
async fn slow_provider_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(send_path()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(sent_body(1))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let ch = channel_at(&server.uri(), Duration::from_millis(300));
    let started = Instant::now();
    let answer = ch.send(&message(&CHAT.to_string())).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer, Answer::timeout(Duration::from_millis(300)));
    assert_no_token(&answer);
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn refused_connection_is_transient_and_hides_the_token() {
    let ch = channel_at(&closed_port_url(), Duration::from_secs(5));
    let answer = ch.send(&message(&CHAT.to_string())).await;
    assert_eq!(answer.class, Class::Transient { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("network"));
    let detail = answer.detail.clone().unwrap();
    // reqwest prints the request URL; teloxide masks the token in it (`bot token:redacted`)
    // and `classify::scrub` would mask any that slipped through.
    assert!(detail.contains("Connection refused"), "{detail}");
    assert!(detail.contains("SendMessage"), "{detail}");
    assert_no_token(&answer);
}

fn me_body(username: &str) -> Value {
    json!({"ok": true, "result": {
        "id": 123456789, "is_bot": true, "first_name": "Acme", "username": username,
        "can_join_groups": true, "can_read_all_group_messages": false,
        "supports_inline_queries": false, "has_main_web_app": false
    }})
}

async fn mount_get_me(server: &MockServer, status: u16, body: Value) {
    Mock::given(method("POST"))
        .and(path(format!("/bot{TOKEN}/GetMe")))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn health_ok_names_the_bot() {
    let server = MockServer::start().await;
    mount_get_me(&server, 200, me_body("acme_notify_bot")).await;
    assert_eq!(
        channel(&server).health().await,
        Health::Ok("@acme_notify_bot".into())
    );
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].url.path(), format!("/bot{TOKEN}/GetMe"));
}

#[tokio::test]
async fn health_flags_a_token_of_another_bot() {
    let server = MockServer::start().await;
    mount_get_me(&server, 200, me_body("other_bot")).await;
    let mut config = TelegramConfig::new(TOKEN);
    config.api_url = server.uri();
    config.bot_username = Some("acme_notify_bot".into());
    let ch = TelegramChannel::new(config, Duration::from_secs(5)).unwrap();
    assert!(matches!(ch.health().await, Health::ConfigError(_)));
}

#[tokio::test]
async fn health_unauthorized_is_a_config_error() {
    let server = MockServer::start().await;
    mount_get_me(&server, 401, error_body(401, "Unauthorized")).await;
    let health = channel(&server).health().await;
    assert!(matches!(health, Health::ConfigError(_)), "{health:?}");
    assert!(!format!("{health:?}").contains(SECRET_PART));
}

#[tokio::test]
async fn health_unreachable_on_refused_connection_and_timeout() {
    let health = channel_at(&closed_port_url(), Duration::from_secs(5))
        .health()
        .await;
    assert!(matches!(health, Health::Unreachable(_)), "{health:?}");
    assert!(!format!("{health:?}").contains(SECRET_PART), "{health:?}");

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/bot{TOKEN}/GetMe")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(me_body("acme_notify_bot"))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let health = channel_at(&server.uri(), Duration::from_millis(300))
        .health()
        .await;
    assert!(matches!(health, Health::Unreachable(_)), "{health:?}");
}

#[test]
fn debug_and_config_errors_never_show_the_token() {
    let ch = channel_at("http://127.0.0.1:9", Duration::from_secs(1));
    let dbg = format!("{ch:?} {:?}", ch.config());
    assert!(!dbg.contains(SECRET_PART), "{dbg}");

    let mut config = TelegramConfig::new(TOKEN);
    config.api_url = "api.telegram.org".into();
    let err = TelegramChannel::new(config, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, TelegramConfigError::ApiUrl(_)));
    assert!(err.to_string().contains("api_url"), "{err}");
    assert!(!format!("{err} {err:?}").contains(SECRET_PART));
}

#[test]
fn config_reads_the_gateway_table() {
    let config: TelegramConfig = serde_json::from_value(json!({
        "api_url": "http://127.0.0.1:8081",
        "bot_token": TOKEN,
        "bot_username": "acme_notify_bot",
        "mode": "polling"
    }))
    .unwrap();
    let ch = TelegramChannel::new(config, Duration::from_secs(10)).unwrap();
    assert_eq!(ch.bot().api_url().as_str(), "http://127.0.0.1:8081/");
    assert_eq!(ch.config().username(), Some("acme_notify_bot"));
}
