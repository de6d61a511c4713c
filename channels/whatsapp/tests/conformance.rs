//! The request bodies conform to the `sendMessage` request schema of Meta's own OpenAPI
//! document (`channels/whatsapp/vendor/whatsapp-business-messaging-api_v23.0.yaml`, copied
//! into the repository with its source and licence in `vendor/README.md`).
//!
//! One repair is applied to the vendor document, and only because its own examples fail
//! without it: message schemas like `TextMessage` are `allOf: [BaseMessageProperties, {...,
//! additionalProperties: false}]`. In JSON Schema `additionalProperties` only sees the
//! properties of its own branch, so that branch forbids `messaging_product`, `to` and
//! `recipient_type`, which the other branch requires: no text message could ever be valid
//! (Meta's "Send Text Message" example included). The repair moves the restriction to
//! `unevaluatedProperties: false` on the `allOf` schema, which is what was meant: unknown
//! members are still rejected. A test below proves the unrepaired document rejects Meta's own
//! example, so the repair fixes a defect and loosens nothing else.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use jsonschema::Validator;
use lifeboat_whatsapp::request;
use serde_json::{json, Value};

fn vendor_document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("vendor/whatsapp-business-messaging-api_v23.0.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_norway::from_str(&text).expect("the vendor YAML parses")
    })
}

/// The `sendMessage` operation: `(requestBody schema, requestBody examples)`.
fn send_message_operation() -> (Value, Value) {
    let paths = vendor_document()["paths"].as_object().expect("paths");
    for item in paths.values() {
        for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
            if operation["operationId"] == "sendMessage" {
                let content = &operation["requestBody"]["content"]["application/json"];
                return (content["schema"].clone(), content["examples"].clone());
            }
        }
    }
    panic!("no sendMessage operation in the vendor document");
}

/// A root schema the validator can resolve: the request-body schema (a `$ref` into
/// `#/components/schemas`) next to the document's `components`.
fn root_schema(repair: bool) -> Value {
    let (schema, _) = send_message_operation();
    assert!(
        schema.get("$ref").is_some(),
        "the request body schema is a $ref: {schema}"
    );
    let mut components = vendor_document()["components"].clone();
    if repair {
        move_additional_properties_out_of_all_of(&mut components);
    }
    let mut root = schema;
    root["components"] = components;
    root
}

fn move_additional_properties_out_of_all_of(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let mut moved = false;
            if let Some(Value::Array(branches)) = map.get_mut("allOf") {
                for branch in branches.iter_mut() {
                    if let Some(branch) = branch.as_object_mut() {
                        if branch.get("additionalProperties") == Some(&Value::Bool(false)) {
                            branch.remove("additionalProperties");
                            moved = true;
                        }
                    }
                }
            }
            if moved {
                map.insert("unevaluatedProperties".into(), Value::Bool(false));
            }
            for child in map.values_mut() {
                move_additional_properties_out_of_all_of(child);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(move_additional_properties_out_of_all_of),
        _ => {}
    }
}

fn validator(repair: bool) -> Validator {
    jsonschema::draft202012::new(&root_schema(repair)).expect("the schema compiles")
}

fn repaired() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| validator(true))
}

fn errors(validator: &Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(body: &Value) {
    let errors = errors(repaired(), body);
    assert!(errors.is_empty(), "{body}\n{errors:#?}");
}

fn assert_invalid(body: &Value) {
    assert!(
        !repaired().is_valid(body),
        "the schema accepted a broken body: {body}"
    );
}

fn text_body() -> Value {
    request::send_body(&text_message("Your code is 4711"))
}

fn template_body() -> Value {
    request::send_body(&template_message(&["Ada", "1234"]))
}

#[test]
fn the_text_body_conforms() {
    assert_valid(&text_body());
}

#[test]
fn the_template_body_conforms() {
    assert_valid(&template_body());
    assert_valid(&request::send_body(&template_message(&[])));
}

#[test]
fn dropping_a_required_member_fails() {
    for member in ["messaging_product", "to", "type", "recipient_type"] {
        for body in [text_body(), template_body()] {
            let mut broken = body.clone();
            broken.as_object_mut().unwrap().remove(member);
            assert_invalid(&broken);
        }
    }
    let mut broken = template_body();
    broken["template"].as_object_mut().unwrap().remove("name");
    assert_invalid(&broken);
    let mut broken = template_body();
    broken["template"]["language"]
        .as_object_mut()
        .unwrap()
        .remove("code");
    assert_invalid(&broken);
}

#[test]
fn wrong_values_and_unknown_members_fail() {
    let mut broken = text_body();
    broken["recipient_type"] = json!("everyone");
    assert_invalid(&broken);
    let mut broken = text_body();
    broken["text"]["preview_url"] = json!("no");
    assert_invalid(&broken);
    let mut broken = text_body();
    broken["surprise"] = json!(1);
    assert_invalid(&broken);
    let mut broken = template_body();
    broken["template"]["components"][0]["type"] = json!("footer");
    assert_invalid(&broken);
}

#[test]
fn the_repair_only_fixes_the_documents_own_examples() {
    let (_, examples) = send_message_operation();
    let example = |name: &str| examples[name]["value"].clone();
    let text = example("Send Text Message");
    assert!(text.is_object(), "Meta's example is in the document");
    // The document as published rejects its own text example …
    assert!(!validator(false).is_valid(&text));
    // … and accepts it once repaired, as it does the reply example.
    assert_valid(&text);
    assert_valid(&example("Send Reply to Text Message"));
}
