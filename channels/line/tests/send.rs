//! Pushes against a wiremock LINE: the request on the wire, the retry key, and one case of every
//! class with LINE's real error bodies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use lifeboat_channel::{Answer, Channel, ChannelKind, Class, ThrottleScope};
use lifeboat_line::until_next_month_jst;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const PUSH: &str = "/v2/bot/message/push";
const FIRST_ID: &str = "461230966842064897";

async fn answer_for(response: ResponseTemplate) -> Answer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PUSH))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let answer = channel(&server.uri()).send(&message("hello")).await;
    assert_no_secret(&format!("{answer:?}"));
    answer
}

fn line_error(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-line-request-id", "123e4567-e89b-12d3-a456-426655440002")
        .set_body_json(body)
}

#[tokio::test]
async fn success_sends_the_documented_request() {
    let server = MockServer::start().await;
    let msg = message("Your order #1042 has shipped. 🚚");
    Mock::given(method("POST"))
        .and(path(PUSH))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("x-line-retry-key", msg.retry_key.as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "to": USER,
            "messages": [{"type": "text", "text": "Your order #1042 has shipped. 🚚"}]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sentMessages": [{"id": FIRST_ID, "quoteToken": "IStG5h1Tz7b"}]
        })))
        .expect(1)
        .mount(&server)
        .await;

    let line = channel(&server.uri());
    assert_eq!(line.kind(), ChannelKind::Line);
    assert!(!line.has_receipts());
    let answer = line.send(&msg).await;
    assert_eq!(answer, Answer::sent(FIRST_ID));

    // Exactly what went over the wire, key for key.
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only to and messages: {body}"
    );
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn api_base_with_a_path_prefix_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/line-proxy{PUSH}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sentMessages": [{"id": "1"}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let line = channel(&format!("{}/line-proxy/", server.uri()));
    assert_eq!(line.send(&message("hi")).await, Answer::sent("1"));
}

/// LINE as it behaves with retry keys: the first request fails with a 500 after LINE has in
/// fact accepted it; any later request with the same key gets 409 and the first `sentMessages`.
/// A request with a different key would be a new message and gets a new id.
struct LineWithRetryKeys {
    seen_keys: Mutex<Vec<String>>,
}

impl Respond for LineWithRetryKeys {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let key = request
            .headers
            .get("x-line-retry-key")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let mut seen = self.seen_keys.lock().unwrap();
        let first = seen.is_empty();
        let repeated = seen.contains(&key);
        seen.push(key);
        if first {
            ResponseTemplate::new(500)
                .set_body_json(json!({"message": "An error occurred in the internal server"}))
        } else if repeated {
            ResponseTemplate::new(409)
                .insert_header("x-line-request-id", "123e4567-e89b-12d3-a456-426655440002")
                .insert_header(
                    "x-line-accepted-request-id",
                    "123e4567-e89b-12d3-a456-426655440001",
                )
                .set_body_json(json!({
                    "message": "The retry key is already accepted",
                    "sentMessages": [{"id": FIRST_ID, "quoteToken": "IStG5h1Tz7b"}]
                }))
        } else {
            ResponseTemplate::new(200)
                .set_body_json(json!({"sentMessages": [{"id": "999999999999999999"}]}))
        }
    }
}

#[tokio::test]
async fn a_retry_after_a_500_reuses_the_key_and_409_means_sent() {
    let server = MockServer::start().await;
    let line_state = Arc::new(LineWithRetryKeys {
        seen_keys: Mutex::new(Vec::new()),
    });
    Mock::given(method("POST"))
        .and(path(PUSH))
        .respond_with(SharedResponder(line_state.clone()))
        .expect(2)
        .mount(&server)
        .await;

    let line = channel(&server.uri());
    let msg = message("once only");
    let first = line.send(&msg).await;
    assert_eq!(first.class, Class::Transient { retry_after: None });
    assert_eq!(first.code.as_deref(), Some("500"));

    let retry = line.send(&msg).await;
    assert_eq!(retry.class, Class::Sent);
    assert_eq!(retry.message_id.as_deref(), Some(FIRST_ID));
    assert_eq!(retry.code.as_deref(), Some("409"));

    let keys = line_state.seen_keys.lock().unwrap().clone();
    assert_eq!(keys, vec![msg.retry_key.clone(), msg.retry_key.clone()]);
}

struct SharedResponder(Arc<LineWithRetryKeys>);

impl Respond for SharedResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request)
    }
}

#[tokio::test]
async fn a_409_without_body_takes_the_id_from_the_accepted_request_header() {
    let answer = answer_for(
        ResponseTemplate::new(409)
            .insert_header(
                "x-line-accepted-request-id",
                "123e4567-e89b-12d3-a456-426655440001",
            )
            .set_body_json(json!({"message": "The retry key is already accepted"})),
    )
    .await;
    assert_eq!(answer.class, Class::Sent);
    assert_eq!(
        answer.message_id.as_deref(),
        Some("123e4567-e89b-12d3-a456-426655440001")
    );
}

#[tokio::test]
async fn rate_limit_429_throttles_the_channel_for_a_second() {
    let answer = answer_for(line_error(
        429,
        json!({"message": "The API rate limit has been exceeded. Try again later."}),
    ))
    .await;
    assert_eq!(
        answer.class,
        Class::Throttled {
            retry_after: Some(Duration::from_secs(1)),
            scope: ThrottleScope::Channel
        }
    );
    assert_eq!(answer.code.as_deref(), Some("429"));
    assert_eq!(
        answer.detail.as_deref(),
        Some("The API rate limit has been exceeded. Try again later.")
    );
}

#[tokio::test]
async fn a_429_with_retry_after_honours_it() {
    let answer = answer_for(
        line_error(
            429,
            json!({"message": "The API rate limit has been exceeded. Try again later."}),
        )
        .insert_header("retry-after", "7"),
    )
    .await;
    assert_eq!(
        answer.class,
        Class::Throttled {
            retry_after: Some(Duration::from_secs(7)),
            scope: ThrottleScope::Channel
        }
    );
}

#[tokio::test]
async fn monthly_limit_429_restricts_the_channel_until_next_month_in_japan() {
    let before = SystemTime::now();
    let answer = answer_for(line_error(
        429,
        json!({"message": "You have reached your monthly limit."}),
    ))
    .await;
    let after = SystemTime::now();
    let Class::ChannelRestricted {
        retry_after: Some(wait),
    } = answer.class
    else {
        panic!("expected channel_restricted, got {answer:?}");
    };
    assert!(wait <= until_next_month_jst(before), "{wait:?}");
    assert!(wait >= until_next_month_jst(after), "{wait:?}");
    assert!(wait <= Duration::from_secs(31 * 86_400));
    assert_eq!(answer.code.as_deref(), Some("429"));
    assert_eq!(
        answer.detail.as_deref(),
        Some("You have reached your monthly limit.")
    );
}

#[tokio::test]
async fn failed_to_send_is_recipient_unreachable() {
    let answer = answer_for(line_error(
        400,
        json!({"message": "Failed to send messages"}),
    ))
    .await;
    assert_eq!(answer.class, Class::RecipientUnreachable { opt_out: None });
    assert_eq!(answer.code.as_deref(), Some("400"));
}

#[tokio::test]
async fn not_found_is_recipient_unreachable() {
    let answer = answer_for(line_error(404, json!({"message": "Not found"}))).await;
    assert_eq!(answer.class, Class::RecipientUnreachable { opt_out: None });
    assert_eq!(answer.code.as_deref(), Some("404"));
}

#[tokio::test]
async fn plan_not_entitled_is_channel_banned() {
    let answer = answer_for(line_error(
        403,
        json!({"message": "Access to this API is not available for your account"}),
    ))
    .await;
    assert_eq!(answer.class, Class::ChannelBanned);
    assert_eq!(answer.code.as_deref(), Some("403"));
}

#[tokio::test]
async fn bad_token_is_config_error() {
    let answer = answer_for(line_error(
        401,
        json!({"message": "Authentication failed due to the following reason: invalid token. Confirm that the access token in the authorization header is valid."}),
    ))
    .await;
    assert_eq!(answer.class, Class::ConfigError);
    assert_eq!(answer.code.as_deref(), Some("401"));
    assert!(answer.detail.unwrap().starts_with("Authentication failed"));
}

#[tokio::test]
async fn too_long_text_is_rejected_with_details() {
    let answer = answer_for(line_error(
        400,
        json!({"message": "The request body has 1 error(s)",
               "details": [{"message": "Length must be between 0 and 5000", "property": "messages[0].text"}]}),
    ))
    .await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(
        answer.detail.as_deref(),
        Some(
            "The request body has 1 error(s) (messages[0].text: Length must be between 0 and 5000)"
        )
    );
}

#[tokio::test]
async fn envelope_errors_are_config_errors() {
    let answer = answer_for(line_error(
        400,
        json!({"message": "The request body has 2 error(s)",
               "details": [{"message": "May not be empty", "property": "messages[0].text"},
                           {"message": "Must be one of the following values: [true, false]", "property": "notificationDisabled"}]}),
    ))
    .await;
    assert_eq!(answer.class, Class::ConfigError);

    let answer = answer_for(line_error(
        400,
        json!({"message": "The request body could not be parsed as JSON (line: 1, column: 13)"}),
    ))
    .await;
    assert_eq!(answer.class, Class::ConfigError);
}

#[tokio::test]
async fn a_malformed_user_id_is_recipient_unreachable() {
    let answer = answer_for(line_error(
        400,
        json!({"message": "The request body has 1 error(s)",
               "details": [{"message": "Invalid user ID", "property": "to"}]}),
    ))
    .await;
    assert_eq!(answer.class, Class::RecipientUnreachable { opt_out: None });
}

#[tokio::test]
async fn too_large_and_unsupported_media_are_rejected() {
    let answer = answer_for(ResponseTemplate::new(413)).await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(answer.code.as_deref(), Some("413"));
    let answer = answer_for(line_error(
        415,
        json!({"message": "The content type, text/plain, is not supported"}),
    ))
    .await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(answer.code.as_deref(), Some("415"));
}

#[tokio::test]
async fn server_errors_are_transient() {
    for status in [500, 502, 503, 504] {
        let answer = answer_for(line_error(
            status,
            json!({"message": "An error occurred in the internal server"}),
        ))
        .await;
        assert_eq!(answer.class, Class::Transient { retry_after: None });
        assert_eq!(answer.code, Some(status.to_string()));
    }
    let answer = answer_for(
        ResponseTemplate::new(503)
            .insert_header("retry-after", "30")
            .set_body_string("<html>Service Unavailable</html>"),
    )
    .await;
    assert_eq!(
        answer.class,
        Class::Transient {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert_eq!(
        answer.detail.as_deref(),
        Some("<html>Service Unavailable</html>")
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PUSH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"sentMessages": [{"id": "late"}]}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let line = channel_with_timeout(&server.uri(), Duration::from_millis(300));
    let started = std::time::Instant::now();
    let answer = line.send(&message("hi")).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.class, Class::Transient { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("timeout"));
    assert_no_secret(&format!("{answer:?}"));
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let line = channel(&format!("http://127.0.0.1:{port}"));
    let answer = line.send(&message("hi")).await;
    assert_eq!(answer.class, Class::Transient { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("connect"));
    let shown = format!("{answer:?}");
    assert_no_secret(&shown);
    assert!(
        !shown.contains("/v2/bot"),
        "the URL must not be in the answer: {shown}"
    );
}

#[tokio::test]
async fn a_retry_key_that_is_not_a_uuid_is_refused_before_sending() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut msg = message("hi");
    msg.retry_key = "not-a-uuid".to_string();
    let answer = channel(&server.uri()).send(&msg).await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(answer.code.as_deref(), Some("invalid_retry_key"));
}

#[tokio::test]
async fn secrets_echoed_by_the_provider_are_redacted() {
    let answer = answer_for(line_error(
        401,
        json!({"message": format!("Authentication failed due to the following reason: token {TOKEN} revoked"),
               "details": [{"message": format!("secret {SECRET}"), "property": "x"}]}),
    ))
    .await;
    assert_eq!(answer.class, Class::ConfigError);
    let detail = answer.detail.unwrap();
    assert!(detail.contains("token *** revoked"), "{detail}");
    assert_no_secret(&detail);
}

#[tokio::test]
async fn debug_output_shows_no_secret() {
    let line = channel("https://api.line.me");
    let shown = format!("{line:?} {line:#?} {:?}", line.config());
    assert_no_secret(&shown);
    assert!(shown.contains("api.line.me"));
    assert_eq!(line.config().basic_id.as_deref(), Some("@acme"));
}

#[tokio::test]
async fn config_errors_name_the_key_and_hide_the_token() {
    let mut bad = config("https://api.line.me");
    bad.channel_access_token = format!("{TOKEN}\n").into();
    let err = lifeboat_line::LineChannel::new(bad, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.key(), "channel_access_token");
    assert_no_secret(&format!("{err} {err:?}"));

    let mut bad = config("https://api.line.me");
    bad.api_base = "api.line.me".to_string();
    let err = lifeboat_line::LineChannel::new(bad, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.key(), "api_base");
    assert!(err.to_string().contains("api_base"));
}

#[tokio::test]
async fn config_deserializes_from_the_gateway_table() {
    let config: lifeboat_line::LineConfig = serde_json::from_value(json!({
        "channel_access_token": TOKEN,
        "channel_secret": SECRET,
        "basic_id": "@acme"
    }))
    .unwrap();
    assert_eq!(config.api_base, "https://api.line.me");
    assert_no_secret(&format!("{config:?}"));
    assert!(lifeboat_line::LineChannel::new(config, Duration::from_secs(10)).is_ok());
}
