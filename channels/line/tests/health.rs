//! The health check reads this month's quota: it proves the token without sending anything.

mod common;

use std::time::Duration;

use common::*;
use lifeboat_channel::{Channel, Health};
use lifeboat_line::{Quota, QuotaError};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn line_with(quota: ResponseTemplate, consumption: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    let bearer = format!("Bearer {TOKEN}");
    Mock::given(method("GET"))
        .and(path("/v2/bot/message/quota"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(quota)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/bot/message/quota/consumption"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(consumption)
        .mount(&server)
        .await;
    server
}

fn ok(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

#[tokio::test]
async fn limited_quota() {
    let server = line_with(
        ok(json!({"type": "limited", "value": 1000})),
        ok(json!({"totalUsage": 500})),
    )
    .await;
    let line = channel(&server.uri());
    assert_eq!(
        line.quota().await.unwrap(),
        Quota {
            limit: Some(1000),
            used: 500
        }
    );
    assert_eq!(
        line.health().await,
        Health::Ok("quota limited 1000, used 500".to_string())
    );
    // Nothing was pushed by a health check.
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.method.as_str() == "GET"));
}

#[tokio::test]
async fn unlimited_quota() {
    let server = line_with(ok(json!({"type": "none"})), ok(json!({"totalUsage": 12}))).await;
    let health = channel(&server.uri()).health().await;
    let Health::Ok(text) = health else {
        panic!("expected ok, got {health:?}")
    };
    assert!(text.starts_with("quota none"), "{text}");
}

#[tokio::test]
async fn exhausted_quota_is_still_healthy_but_says_so() {
    let server = line_with(
        ok(json!({"type": "limited", "value": 200})),
        ok(json!({"totalUsage": 200})),
    )
    .await;
    let health = channel(&server.uri()).health().await;
    assert_eq!(
        health,
        Health::Ok("quota limited 200, used 200 (monthly limit reached)".to_string())
    );
}

#[tokio::test]
async fn bad_token_is_config_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "message": "Authentication failed due to the following reason: invalid token. Confirm that the access token in the authorization header is valid."
        })))
        .mount(&server)
        .await;
    let line = channel(&server.uri());
    let health = line.health().await;
    let Health::ConfigError(text) = &health else {
        panic!("expected config error, got {health:?}")
    };
    assert!(text.contains("Authentication failed"), "{text}");
    assert_no_secret(text);
    assert!(matches!(
        line.quota().await,
        Err(QuotaError::Refused { status: 401, .. })
    ));
}

#[tokio::test]
async fn server_error_is_unreachable() {
    let server = line_with(
        ResponseTemplate::new(500)
            .set_body_json(json!({"message": "An error occurred in the internal server"})),
        ok(json!({"totalUsage": 1})),
    )
    .await;
    assert!(matches!(
        channel(&server.uri()).health().await,
        Health::Unreachable(_)
    ));
}

#[tokio::test]
async fn a_body_that_is_not_lines_is_unreachable() {
    let server = line_with(
        ResponseTemplate::new(200).set_body_string("<html>captive portal</html>"),
        ok(json!({"totalUsage": 1})),
    )
    .await;
    assert!(matches!(
        channel(&server.uri()).health().await,
        Health::Unreachable(_)
    ));
}

#[tokio::test]
async fn refused_connection_and_timeout_are_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let health = channel(&format!("http://127.0.0.1:{port}")).health().await;
    let Health::Unreachable(text) = &health else {
        panic!("expected unreachable, got {health:?}")
    };
    assert_no_secret(text);
    assert!(!text.contains("/v2/bot"), "{text}");

    let server = line_with(
        ok(json!({"type": "none"})).set_delay(Duration::from_secs(3)),
        ok(json!({"totalUsage": 1})),
    )
    .await;
    let line = channel_with_timeout(&server.uri(), Duration::from_millis(300));
    assert!(matches!(line.health().await, Health::Unreachable(_)));
}
