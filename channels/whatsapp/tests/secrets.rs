//! The access token (and the webhook secrets) never show in `Debug`, answers, health words or
//! config errors, even when the provider echoes the token back.

mod common;

use std::time::Duration;

use common::*;
use lifeboat_channel::{Channel, Class, Health};
use lifeboat_whatsapp::{WhatsappChannel, WhatsappConfig};
use secrecy::SecretString;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[test]
fn debug_never_shows_secrets() {
    let mut config = config("http://127.0.0.1:9");
    config.app_secret = Some(SecretString::from("app-secret-value-42"));
    config.verify_token = Some(SecretString::from("verify-token-value-42"));
    let debug = format!("{config:?}");
    for secret in [TOKEN, "app-secret-value-42", "verify-token-value-42"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains(PHONE_NUMBER_ID), "{debug}");

    let channel = WhatsappChannel::new(config, Duration::from_secs(1)).unwrap();
    let debug = format!("{channel:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(!format!("{:?}", channel.config()).contains(TOKEN));
}

#[test]
fn config_errors_never_show_the_token() {
    let config: WhatsappConfig = serde_json::from_value(serde_json::json!({
        "api_base": "not a url",
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token": TOKEN,
    }))
    .unwrap();
    let err = WhatsappChannel::new(config, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.key(), Some("api_base"));
    assert!(!err.to_string().contains(TOKEN));
    assert!(!format!("{err:?}").contains(TOKEN));

    let bad_token = "tok en-with-space";
    let err = WhatsappChannel::new(
        WhatsappConfig::new(PHONE_NUMBER_ID, bad_token),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("access_token"));
    assert!(!err.to_string().contains(bad_token), "{err}");
}

#[tokio::test]
async fn an_echoed_token_is_scrubbed_from_every_answer() {
    let server = MockServer::start().await;
    let echo = format!("Invalid OAuth access token - Cannot parse access token: {TOKEN}");
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(graph_error(
            190,
            &echo,
            &format!("token {TOKEN}"),
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(graph_error(190, &echo, "")))
        .mount(&server)
        .await;
    let channel = channel(&server.uri());

    let answer = channel.send(&text_message("hi")).await;
    assert_eq!(answer.class, Class::ConfigError);
    let detail = answer.detail.clone().unwrap();
    assert!(!detail.contains(TOKEN), "{detail}");
    assert!(detail.contains("***"), "{detail}");
    assert!(!format!("{answer:?}").contains(TOKEN));

    let answer = channel.send(&template_message(&["x"])).await;
    assert!(!format!("{answer:?}").contains(TOKEN));

    let health = channel.health().await;
    assert!(matches!(health, Health::ConfigError(_)), "{health:?}");
    assert!(!format!("{health:?}").contains(TOKEN), "{health:?}");

    // A non-JSON body that echoes the token.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string(format!("bad token {TOKEN}")))
        .mount(&server)
        .await;
    let answer = common::channel(&server.uri())
        .send(&text_message("hi"))
        .await;
    assert!(!format!("{answer:?}").contains(TOKEN), "{answer:?}");
}

#[tokio::test]
async fn network_errors_never_show_the_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let channel = channel(&format!("http://127.0.0.1:{port}"));
    let answer = channel.send(&text_message("hi")).await;
    assert!(!format!("{answer:?}").contains(TOKEN), "{answer:?}");
    let health = channel.health().await;
    assert!(!format!("{health:?}").contains(TOKEN), "{health:?}");
}
