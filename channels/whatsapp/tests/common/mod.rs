//! Shared test helpers: a channel pointed at a wiremock server and messages to send.
#![allow(dead_code)]

use std::time::Duration;

use lifeboat_channel::{Category, OutboundMessage, WhatsappTemplate};
use lifeboat_whatsapp::{WhatsappChannel, WhatsappConfig};
use serde_json::{json, Value};

pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const TOKEN: &str = "EAAGm0PX4ZCpsBAKsEcReT-t0ken.v23";
pub const TO: &str = "+16505551234";
pub const WAMID: &str = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJCOTY3NDc0NDFDRUI3NTA0Q0UA";

pub fn config(api_base: &str) -> WhatsappConfig {
    let mut config = WhatsappConfig::new(PHONE_NUMBER_ID, TOKEN);
    config.api_base = api_base.to_string();
    config
}

pub fn channel(api_base: &str) -> WhatsappChannel {
    channel_with_timeout(api_base, Duration::from_secs(5))
}

pub fn channel_with_timeout(api_base: &str, timeout: Duration) -> WhatsappChannel {
    WhatsappChannel::new(config(api_base), timeout).expect("valid config")
}

pub fn text_message(text: &str) -> OutboundMessage {
    OutboundMessage {
        notification_id: "ntf_1".into(),
        category: Category::Transactional,
        to: TO.into(),
        text: text.into(),
        subject: None,
        html: None,
        whatsapp_template: None,
        retry_key: "5f0c2f4e-0000-4000-8000-000000000001".into(),
        headers: vec![],
    }
}

pub fn template_message(parameters: &[&str]) -> OutboundMessage {
    let mut message = text_message("Your order 1234 has shipped");
    message.category = Category::Marketing;
    message.whatsapp_template = Some(WhatsappTemplate {
        name: "order_shipped".into(),
        language: "en_US".into(),
        parameters: parameters.iter().map(|p| p.to_string()).collect(),
        alternative: None,
    });
    message
}

/// The 200 answer of `POST /messages` (`MessageResponsePayload`).
pub fn sent_body(status: &str) -> Value {
    json!({
        "messaging_product": "whatsapp",
        "contacts": [ { "input": TO, "wa_id": "16505551234" } ],
        "messages": [ { "id": WAMID, "message_status": status } ]
    })
}

/// A Graph API error body as Meta sends it.
pub fn graph_error(code: i64, message: &str, details: &str) -> Value {
    json!({
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": { "messaging_product": "whatsapp", "details": details },
            "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUv"
        }
    })
}
