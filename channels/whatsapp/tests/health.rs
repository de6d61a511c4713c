//! `health()`: `GET /{phone_number_id}?fields=...` tells good credentials from bad ones and
//! from a provider that can't be reached.

mod common;

use common::*;
use lifeboat_channel::{Channel, Health};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn health_for(response: ResponseTemplate) -> Health {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/{PHONE_NUMBER_ID}")))
        .and(query_param(
            "fields",
            "display_phone_number,verified_name,quality_rating",
        ))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    channel(&server.uri()).health().await
}

#[tokio::test]
async fn working_credentials_report_number_and_quality() {
    let health = health_for(ResponseTemplate::new(200).set_body_json(json!({
        "display_phone_number": "+1 555-000-1111",
        "verified_name": "Acme",
        "quality_rating": "GREEN",
        "id": PHONE_NUMBER_ID
    })))
    .await;
    assert_eq!(health, Health::Ok("+1 555-000-1111 quality GREEN".into()));
}

#[tokio::test]
async fn an_expired_token_is_a_config_error() {
    let health = health_for(ResponseTemplate::new(401).set_body_json(graph_error(
        190,
        "Error validating access token: Session has expired",
        "",
    )))
    .await;
    match health {
        Health::ConfigError(words) => {
            assert!(words.contains("Session has expired"), "{words}");
            assert!(words.contains("190"), "{words}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_phone_number_id_is_a_config_error() {
    let health = health_for(ResponseTemplate::new(400).set_body_json(graph_error(
        100,
        "Unsupported get request. Object with ID '106540352242922' does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
        "",
    )))
    .await;
    assert!(matches!(health, Health::ConfigError(_)), "{health:?}");
}

#[tokio::test]
async fn a_server_error_is_unreachable() {
    let health =
        health_for(ResponseTemplate::new(503).set_body_string("Service Unavailable")).await;
    assert!(matches!(health, Health::Unreachable(_)), "{health:?}");
}

#[tokio::test]
async fn a_refused_connection_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let health = channel(&format!("http://127.0.0.1:{port}")).health().await;
    match health {
        Health::Unreachable(words) => assert!(!words.contains(TOKEN), "{words}"),
        other => panic!("{other:?}"),
    }
}
