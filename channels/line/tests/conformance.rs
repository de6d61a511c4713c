//! The push bodies this crate puts on the wire conform to LINE's own OpenAPI document
//! (`channels/line/vendor/line-messaging-api.yml`, schema `PushMessageRequest`; its source and
//! licence are in `vendor/README.md`).
//!
//! `Message` is polymorphic through an OpenAPI `discriminator`, which JSON Schema validators
//! ignore; so each message is also validated against `TextMessage`, the schema the
//! discriminator picks for `"type": "text"`.

mod common;

use std::path::PathBuf;

use common::*;
use jsonschema::Validator;
use lifeboat_channel::Channel;
use lifeboat_line::PushMessageRequest;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn spec_path() -> PathBuf {
    // Inside the crate, so a plain clone has it.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vendor/line-messaging-api.yml")
}

fn components() -> Value {
    let path = spec_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("LINE's OpenAPI document at {}: {e}", path.display()));
    let doc: Value = serde_norway::from_str(&text).expect("the vendor YAML parses");
    doc["components"].clone()
}

fn validator(schema_name: &str, components: &Value) -> Validator {
    let root = json!({
        "$ref": format!("#/components/schemas/{schema_name}"),
        "components": components,
    });
    jsonschema::validator_for(&root).expect("the vendor schema compiles")
}

struct Schemas {
    push: Validator,
    text: Validator,
}

impl Schemas {
    fn load() -> Self {
        let components = components();
        Schemas {
            push: validator("PushMessageRequest", &components),
            text: validator("TextMessage", &components),
        }
    }

    /// Every error of `body` against `PushMessageRequest`, and of each message against
    /// `TextMessage`.
    fn errors(&self, body: &Value) -> Vec<String> {
        let mut errors: Vec<String> = self
            .push
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        for m in body["messages"].as_array().into_iter().flatten() {
            errors.extend(
                self.text
                    .iter_errors(m)
                    .map(|e| format!("{e} in a message")),
            );
        }
        errors
    }
}

#[tokio::test]
async fn bodies_on_the_wire_conform_to_push_message_request() {
    let schemas = Schemas::load();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/bot/message/push"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sentMessages": [{"id": "1"}]})),
        )
        .mount(&server)
        .await;
    let line = channel(&server.uri());
    let long = "x".repeat(5000);
    for text in [
        "Your order #1042 has shipped.",
        "Zamówienie wysłane 🚚 — 注文が発送されました",
        "line one\nline two \"quoted\" \\ backslash",
        long.as_str(),
    ] {
        line.send(&message(text)).await;
    }
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 4);
    for request in requests {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let errors = schemas.errors(&body);
        assert!(errors.is_empty(), "{body} does not conform: {errors:?}");
    }
}

#[test]
fn the_builder_conforms() {
    let schemas = Schemas::load();
    let body = serde_json::to_value(PushMessageRequest::text(USER, "hello")).unwrap();
    assert_eq!(schemas.errors(&body), Vec::<String>::new());
}

#[test]
fn the_check_can_fail() {
    let schemas = Schemas::load();
    let good = serde_json::to_value(PushMessageRequest::text(USER, "hello")).unwrap();

    let mut no_to = good.clone();
    no_to.as_object_mut().unwrap().remove("to");
    assert!(
        !schemas.errors(&no_to).is_empty(),
        "a body without `to` passed"
    );

    let mut no_messages = good.clone();
    no_messages["messages"] = json!([]);
    assert!(
        !schemas.errors(&no_messages).is_empty(),
        "no messages passed"
    );

    let mut six = good.clone();
    six["messages"] = json!(vec![json!({"type": "text", "text": "x"}); 6]);
    assert!(!schemas.errors(&six).is_empty(), "six messages passed");

    let mut untyped = good.clone();
    untyped["messages"][0]
        .as_object_mut()
        .unwrap()
        .remove("type");
    assert!(
        !schemas.errors(&untyped).is_empty(),
        "a message without type passed"
    );

    let mut no_text = good.clone();
    no_text["messages"][0]
        .as_object_mut()
        .unwrap()
        .remove("text");
    assert!(
        !schemas.errors(&no_text).is_empty(),
        "a text message without text passed"
    );

    let mut numeric_to = good;
    numeric_to["to"] = json!(42);
    assert!(
        !schemas.errors(&numeric_to).is_empty(),
        "a numeric `to` passed"
    );
}
