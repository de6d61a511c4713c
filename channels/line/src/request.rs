//! LINE's wire format: the push request body we send and the bodies LINE answers with.
//!
//! The shapes follow LINE's published OpenAPI document (`messaging-api.yml`): `PushMessageRequest`,
//! `PushMessageResponse`, `ErrorResponse`, `MessageQuotaResponse`, `QuotaConsumptionResponse`.
//! The crate's conformance test validates the bodies built here against that document.

use serde::{Deserialize, Serialize};

/// Path of the push endpoint, below the API base.
pub const PUSH_PATH: &str = "/v2/bot/message/push";
/// Path of this month's message quota.
pub const QUOTA_PATH: &str = "/v2/bot/message/quota";
/// Path of this month's message consumption.
pub const CONSUMPTION_PATH: &str = "/v2/bot/message/quota/consumption";
/// Header carrying the idempotency key of a push.
pub const RETRY_KEY_HEADER: &str = "x-line-retry-key";
/// Header LINE sets on a 409: the request id of the earlier request that was accepted.
pub const ACCEPTED_REQUEST_ID_HEADER: &str = "x-line-accepted-request-id";
/// Header LINE sets on every response.
pub const REQUEST_ID_HEADER: &str = "x-line-request-id";

/// Body of `POST /v2/bot/message/push` (`PushMessageRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushMessageRequest<'a> {
    /// The receiver: a user id (`U` + 32 hex digits), group id or room id.
    pub to: &'a str,
    /// 1 to 5 messages; Lifeboat always sends exactly one text message.
    pub messages: Vec<TextMessage<'a>>,
}

/// A `TextMessage` (`{"type":"text","text":...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'a str,
}

impl<'a> PushMessageRequest<'a> {
    /// A push of one text message to `to`.
    pub fn text(to: &'a str, text: &'a str) -> Self {
        PushMessageRequest {
            to,
            messages: vec![TextMessage { kind: "text", text }],
        }
    }
}

/// Whether `key` is what LINE accepts in `X-Line-Retry-Key`: a UUID in hexadecimal notation
/// (`123e4567-e89b-12d3-a456-426614174000`, either case).
pub fn is_valid_retry_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// One entry of `sentMessages`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SentMessage {
    pub id: String,
    #[serde(default, rename = "quoteToken")]
    pub quote_token: Option<String>,
}

/// Body of a 200 answer to a push (`PushMessageResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushMessageResponse {
    #[serde(default, rename = "sentMessages")]
    pub sent_messages: Vec<SentMessage>,
}

/// Body of every 4xx answer (`ErrorResponse`); a 409 on a push repeats `sentMessages`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
    #[serde(default, rename = "sentMessages")]
    pub sent_messages: Vec<SentMessage>,
}

/// One entry of `details` in an [`ErrorResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub property: Option<String>,
}

/// Body of `GET /v2/bot/message/quota` (`MessageQuotaResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageQuotaResponse {
    /// `none` or `limited`.
    #[serde(rename = "type")]
    pub kind: String,
    /// This month's limit, present when `kind` is `limited`.
    #[serde(default)]
    pub value: Option<u64>,
}

/// Body of `GET /v2/bot/message/quota/consumption` (`QuotaConsumptionResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QuotaConsumptionResponse {
    #[serde(rename = "totalUsage")]
    pub total_usage: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_body_shape() {
        let body = serde_json::to_value(PushMessageRequest::text("U1", "hi")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"to": "U1", "messages": [{"type": "text", "text": "hi"}]})
        );
    }

    #[test]
    fn retry_keys() {
        assert!(is_valid_retry_key("123e4567-e89b-12d3-a456-426614174000"));
        assert!(is_valid_retry_key("123E4567-E89B-12D3-A456-426614174000"));
        assert!(!is_valid_retry_key(""));
        assert!(!is_valid_retry_key("123e4567e89b12d3a456426614174000"));
        assert!(!is_valid_retry_key("123e4567-e89b-12d3-a456-42661417400g"));
    }

    #[test]
    fn error_body_parses_with_and_without_optional_parts() {
        let e: ErrorResponse = serde_json::from_str(
            r#"{"message":"The request body has 1 error(s)","details":[{"message":"Length must be between 0 and 5000","property":"messages[0].text"}]}"#,
        )
        .unwrap();
        assert_eq!(e.details[0].property.as_deref(), Some("messages[0].text"));
        let e: ErrorResponse = serde_json::from_str(r#"{"message":"Not found"}"#).unwrap();
        assert!(e.details.is_empty() && e.sent_messages.is_empty());
    }
}
