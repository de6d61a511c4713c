//! Builds the JSON body of `POST /{phone_number_id}/messages` (operationId `sendMessage`).
//!
//! Kept apart from the HTTP code so the conformance test can check exactly these bodies
//! against the `Message` schema of Meta's OpenAPI document.

use lifeboat_channel::{OutboundMessage, WhatsappTemplate};
use serde_json::{json, Value};

/// The body for one message: a template when `message.whatsapp_template` is set, otherwise
/// free-form text (which only reaches people inside the 24 h customer-service window).
pub fn send_body(message: &OutboundMessage) -> Value {
    match &message.whatsapp_template {
        Some(template) => template_body(&message.to, template),
        None => text_body(&message.to, &message.text),
    }
}

/// A text message: `text.body`, link previews off.
pub fn text_body(to: &str, text: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": { "body": text, "preview_url": false }
    })
}

/// A template message: name, language and, when there are parameters, one `body` component
/// with one `text` parameter each.
///
/// `language.policy` is `"deterministic"`: the vendor's `LanguageObject` schema requires it
/// (and it is the only value), Meta's own examples send it, and the Cloud API accepts it.
pub fn template_body(to: &str, template: &WhatsappTemplate) -> Value {
    let mut tpl = json!({
        "name": template.name,
        "language": { "policy": "deterministic", "code": template.language }
    });
    if !template.parameters.is_empty() {
        let parameters: Vec<Value> = template
            .parameters
            .iter()
            .map(|text| json!({ "type": "text", "text": text }))
            .collect();
        tpl["components"] = json!([{ "type": "body", "parameters": parameters }]);
    }
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": tpl
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_without_parameters_has_no_components() {
        let body = template_body(
            "+15551234567",
            &WhatsappTemplate {
                name: "hello_world".into(),
                language: "en_US".into(),
                parameters: vec![],
                alternative: None,
            },
        );
        assert!(body["template"].get("components").is_none());
        assert_eq!(body["template"]["language"]["code"], "en_US");
    }
}
