//! `send` against a wiremock Graph API: request shape, success, and one case of every class
//! with Meta's real error bodies.

mod common;

use std::time::Duration;

use common::*;
use lifeboat_channel::{Answer, Channel, Class, OptOut, ThrottleScope};
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn messages_path() -> String {
    format!("/{PHONE_NUMBER_ID}/messages")
}

/// Serves `response` for `POST /{id}/messages`, sends a text message, and returns the answer.
async fn answer_for(response: ResponseTemplate) -> Answer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    channel(&server.uri())
        .send(&text_message("Your code is 4711"))
        .await
}

fn error_response(status: u16, code: i64, message: &str, details: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(graph_error(code, message, details))
}

fn assert_failed(answer: &Answer, class: Class, code: &str, detail: &str) {
    assert_eq!(answer.class, class, "{answer:?}");
    assert_eq!(answer.code.as_deref(), Some(code), "{answer:?}");
    assert_eq!(answer.detail.as_deref(), Some(detail), "{answer:?}");
    assert_eq!(answer.message_id, None, "{answer:?}");
}

#[tokio::test]
async fn text_message_is_posted_with_bearer_token_and_returns_the_wamid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(sent_body("accepted")))
        .expect(1)
        .mount(&server)
        .await;

    let answer = channel(&server.uri())
        .send(&text_message("Your code is 4711"))
        .await;
    assert_eq!(answer, Answer::sent(WAMID));

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), messages_path());
    assert_eq!(
        request.headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}")
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": TO,
            "type": "text",
            "text": { "body": "Your code is 4711", "preview_url": false }
        })
    );
}

#[tokio::test]
async fn template_message_is_posted_with_body_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(sent_body("accepted")))
        .expect(1)
        .mount(&server)
        .await;

    let answer = channel(&server.uri())
        .send(&template_message(&["Ada", "1234"]))
        .await;
    assert_eq!(answer, Answer::sent(WAMID));

    let requests = server.received_requests().await.unwrap();
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), messages_path());
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": TO,
            "type": "template",
            "template": {
                "name": "order_shipped",
                "language": { "policy": "deterministic", "code": "en_US" },
                "components": [ {
                    "type": "body",
                    "parameters": [
                        { "type": "text", "text": "Ada" },
                        { "type": "text", "text": "1234" }
                    ]
                } ]
            }
        })
    );
}

#[tokio::test]
async fn api_base_with_version_and_trailing_slash() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v23.0/{PHONE_NUMBER_ID}/messages")))
        .respond_with(ResponseTemplate::new(200).set_body_json(sent_body("accepted")))
        .expect(1)
        .mount(&server)
        .await;
    let answer = channel(&format!("{}/v23.0/", server.uri()))
        .send(&text_message("hi"))
        .await;
    assert_eq!(answer.class, Class::Sent);
}

#[tokio::test]
async fn a_held_message_keeps_its_status_in_detail() {
    let answer = answer_for(
        ResponseTemplate::new(200).set_body_json(sent_body("held_for_quality_assessment")),
    )
    .await;
    assert_eq!(answer.class, Class::Sent);
    assert_eq!(answer.message_id.as_deref(), Some(WAMID));
    assert_eq!(
        answer.detail.as_deref(),
        Some("message_status: held_for_quality_assessment")
    );
}

#[tokio::test]
async fn a_200_without_a_message_id_is_not_sent() {
    let answer = answer_for(ResponseTemplate::new(200).set_body_string("<html>ok</html>")).await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(answer.message_id, None);
}

// ---- channel banned / restricted ----

#[tokio::test]
async fn account_locked_131031_bans_the_channel() {
    let answer = answer_for(error_response(
        403,
        131031,
        "(#131031) Account has been locked",
        "Business Account has been restricted or disabled for violating a platform policy.",
    ))
    .await;
    assert_failed(
        &answer,
        Class::ChannelBanned,
        "131031",
        "(#131031) Account has been locked: Business Account has been restricted or disabled for violating a platform policy.",
    );
}

#[tokio::test]
async fn policy_block_368_restricts_the_channel() {
    let answer = answer_for(error_response(
        403,
        368,
        "(#368) Temporarily blocked for policies violations",
        "The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy.",
    ))
    .await;
    assert_failed(
        &answer,
        Class::ChannelRestricted { retry_after: None },
        "368",
        "(#368) Temporarily blocked for policies violations: The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy.",
    );
}

#[tokio::test]
async fn spam_rate_limit_131048_restricts_the_channel() {
    let answer = answer_for(error_response(
        400,
        131048,
        "(#131048) Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be sent from this phone number. This may be because too many previous messages were blocked or flagged as spam.",
    ))
    .await;
    assert_eq!(answer.class, Class::ChannelRestricted { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("131048"));
}

// ---- throttled ----

#[tokio::test]
async fn pair_rate_limit_131056_throttles_only_the_recipient() {
    let answer = answer_for(error_response(
        429,
        131056,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time",
    ))
    .await;
    assert_failed(
        &answer,
        Class::Throttled {
            retry_after: None,
            scope: ThrottleScope::Recipient,
        },
        "131056",
        "(#131056) (Business Account, Consumer Account) pair rate limit hit: Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time",
    );
}

#[tokio::test]
async fn throughput_130429_throttles_the_channel_and_honours_retry_after() {
    let answer = answer_for(
        error_response(
            429,
            130429,
            "(#130429) Rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number in a short period of time",
        )
        .insert_header("Retry-After", "60"),
    )
    .await;
    assert_failed(
        &answer,
        Class::Throttled {
            retry_after: Some(Duration::from_secs(60)),
            scope: ThrottleScope::Channel,
        },
        "130429",
        "(#130429) Rate limit hit: Message failed to send because there were too many messages sent from this phone number in a short period of time",
    );
}

// ---- recipient unreachable ----

#[tokio::test]
async fn undeliverable_131026_is_recipient_unreachable() {
    let answer = answer_for(error_response(
        400,
        131026,
        "(#131026) Message Undeliverable",
        "Message Undeliverable.",
    ))
    .await;
    assert_failed(
        &answer,
        Class::RecipientUnreachable { opt_out: None },
        "131026",
        "(#131026) Message Undeliverable: Message Undeliverable.",
    );
}

#[tokio::test]
async fn stopped_marketing_131050_revokes_marketing() {
    let answer = answer_for(error_response(
        400,
        131050,
        "(#131050) Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
        "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
    ))
    .await;
    assert_failed(
        &answer,
        Class::RecipientUnreachable {
            opt_out: Some(OptOut::StoppedMarketing),
        },
        "131050",
        "(#131050) Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business: Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
    );
}

#[tokio::test]
async fn code_100_not_a_whatsapp_user_is_recipient_unreachable() {
    let answer = answer_for(error_response(
        400,
        100,
        "(#100) Invalid parameter",
        "Recipient is not a valid WhatsApp user",
    ))
    .await;
    assert_failed(
        &answer,
        Class::RecipientUnreachable { opt_out: None },
        "100",
        "(#100) Invalid parameter: Recipient is not a valid WhatsApp user",
    );
}

// ---- rejected ----

#[tokio::test]
async fn window_closed_131047_is_rejected() {
    let answer = answer_for(error_response(
        400,
        131047,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    ))
    .await;
    assert_failed(
        &answer,
        Class::Rejected,
        "131047",
        "(#131047) Re-engagement message: Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    );
}

#[tokio::test]
async fn unknown_code_with_400_is_rejected() {
    let answer = answer_for(error_response(
        400,
        139999,
        "(#139999) Something new",
        "A code Meta added later",
    ))
    .await;
    assert_failed(
        &answer,
        Class::Rejected,
        "139999",
        "(#139999) Something new: A code Meta added later",
    );
}

// ---- config error ----

#[tokio::test]
async fn expired_token_190_is_a_config_error() {
    let server_body = json!({
        "error": {
            "message": "Error validating access token: Session has expired on Friday, 21-Nov-25 02:00:00 PST. The current time is Friday, 21-Nov-25 03:18:00 PST.",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
            "fbtrace_id": "A1b2C3d4"
        }
    });
    let answer = answer_for(ResponseTemplate::new(401).set_body_json(server_body)).await;
    assert_failed(
        &answer,
        Class::ConfigError,
        "190",
        "Error validating access token: Session has expired on Friday, 21-Nov-25 02:00:00 PST. The current time is Friday, 21-Nov-25 03:18:00 PST.",
    );
}

#[tokio::test]
async fn missing_template_132001_takes_that_template_out_not_the_channel() {
    let answer = answer_for(error_response(
        404,
        132001,
        "(#132001) Template name does not exist in the translation",
        "template name (order_shipped) does not exist in en_US",
    ))
    .await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(
        answer.signal,
        Some(lifeboat_channel::Signal::TemplateDisabled)
    );
    assert_eq!(answer.code.as_deref(), Some("132001"));
}

#[tokio::test]
async fn paused_template_132015_says_so() {
    let answer = answer_for(error_response(
        400,
        132015,
        "(#132015) Cannot send message with a paused template",
        "Template is paused due to low quality so it cannot be sent in a template message.",
    ))
    .await;
    assert_eq!(answer.class, Class::Rejected);
    assert_eq!(
        answer.signal,
        Some(lifeboat_channel::Signal::TemplatePaused)
    );
}

// ---- transient ----

#[tokio::test]
async fn something_went_wrong_131000_with_500_is_transient() {
    let answer = answer_for(error_response(
        500,
        131000,
        "(#131000) Something went wrong",
        "Message failed to send due to an unknown error. When setting a business public key, it either failed to calculate the signature, call the GraphQL endpoint, or the GraphQL endpoint returned an error.",
    ))
    .await;
    assert_failed(
        &answer,
        Class::Transient { retry_after: None },
        "131000",
        "(#131000) Something went wrong: Message failed to send due to an unknown error. When setting a business public key, it either failed to calculate the signature, call the GraphQL endpoint, or the GraphQL endpoint returned an error.",
    );
}

#[tokio::test]
async fn unknown_code_with_503_is_transient() {
    let answer = answer_for(
        error_response(503, 139998, "(#139998) Overloaded", "Try later")
            .insert_header("Retry-After", "5"),
    )
    .await;
    assert_failed(
        &answer,
        Class::Transient {
            retry_after: Some(Duration::from_secs(5)),
        },
        "139998",
        "(#139998) Overloaded: Try later",
    );
}

#[tokio::test]
async fn a_non_json_502_is_transient_and_a_non_json_400_is_rejected() {
    let answer =
        answer_for(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>")).await;
    assert_failed(
        &answer,
        Class::Transient { retry_after: None },
        "502",
        "HTTP 502: <html>Bad Gateway</html>",
    );
    let answer = answer_for(ResponseTemplate::new(400).set_body_string("bad request")).await;
    assert_failed(&answer, Class::Rejected, "400", "HTTP 400: bad request");
}

#[tokio::test]
async fn a_slow_provider_times_out_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(sent_body("accepted"))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let channel = channel_with_timeout(&server.uri(), Duration::from_millis(300));
    let started = std::time::Instant::now();
    let answer = channel.send(&text_message("hi")).await;
    assert!(started.elapsed() < Duration::from_secs(2), "not bounded");
    assert_failed(
        &answer,
        Class::Transient { retry_after: None },
        "timeout",
        "no answer within 0.3s",
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // Bind a port, then free it: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let answer = channel(&format!("http://127.0.0.1:{port}"))
        .send(&text_message("hi"))
        .await;
    assert_eq!(answer.class, Class::Transient { retry_after: None });
    assert_eq!(answer.code.as_deref(), Some("connect"));
    let detail = answer.detail.unwrap();
    assert!(!detail.is_empty());
    assert!(!detail.contains(TOKEN), "{detail}");
    assert_eq!(answer.message_id, None);
}

#[tokio::test]
async fn waba_rate_limit_80007_waits_for_the_usage_headers_estimate() {
    let answer = answer_for(
        error_response(
            400,
            80007,
            "(#80007) There have been too many calls to this WhatsApp Business account.",
            "Try again later or reduce the frequency",
        )
        .insert_header(
            "x-business-use-case-usage",
            r#"{"102290129340398":[{"type":"whatsapp","call_count":100,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":3}]}"#,
        ),
    )
    .await;
    assert_failed(
        &answer,
        Class::Throttled {
            retry_after: Some(Duration::from_secs(180)),
            scope: ThrottleScope::Channel,
        },
        "80007",
        "(#80007) There have been too many calls to this WhatsApp Business account.: Try again later or reduce the frequency",
    );
}
