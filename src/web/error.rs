//! The one error shape of the HTTP API: `{"error": {"code", "message", "field"?}}` with a
//! stable `code` per status, so apps can branch on it without parsing messages.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn idempotency_conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "idempotency_conflict", message)
    }
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 64 KiB",
        )
    }
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        )
    }
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        );
        e.field = Some(field.into());
        e
    }
    pub fn overloaded(retry_after: u64, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
        e.retry_after = Some(retry_after);
        e
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

/// A store failure as the client sees it. Only a store that is stopping (a moment away from
/// answering again elsewhere, or after a restart) is `overloaded` with `Retry-After`: a retry
/// may succeed. Broken I/O or a corrupt record is a 500 whose body says nothing of the cause
/// (paths, keys, sled's words stay in the log, logged here once with the whole chain) but
/// carries a reference that the log line repeats.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let chain = crate::store::error_chain(&e);
        if e.is_unavailable() {
            tracing::warn!(error = %chain, "the store is unavailable while serving a request");
            return ApiError::overloaded(1, "the store is not available right now; retry shortly");
        }
        let reference = uuid::Uuid::now_v7();
        tracing::error!(error = %chain, %reference, "store failure while serving a request");
        ApiError::internal(format!(
            "internal error (reference {reference}); see the gateway's log"
        ))
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: StoreError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = ApiError::from(e).into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_store_io_failure_is_a_500_that_keeps_its_cause_out_of_the_body() {
        let cause = std::io::Error::other("disk on fire at /var/lib/lifeboat/db");
        let (status, retry_after, body) = answer(StoreError::Io(sled::Error::Io(cause))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["code"], "internal_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("see the gateway's log"), "{message}");
        assert!(!message.contains("disk on fire"), "{message}");
        assert!(!message.contains("/var/lib"), "{message}");
    }

    #[tokio::test]
    async fn a_corrupt_record_is_a_500_that_names_neither_key_nor_cause() {
        let e = StoreError::Corrupt {
            key: "n/0190-secret-id".into(),
            source: "expected value at line 1 column 1".into(),
        };
        let (status, retry_after, body) = answer(e).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["code"], "internal_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("0190-secret-id"), "{message}");
        assert!(!message.contains("expected value"), "{message}");
    }

    #[tokio::test]
    async fn a_stopping_store_is_a_503_with_retry_after() {
        let e = StoreError::Stopped {
            what: "the accept journal",
        };
        let (status, retry_after, body) = answer(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "overloaded");
    }

    #[test]
    fn the_logged_chain_keeps_the_cause_once() {
        let e = StoreError::Corrupt {
            key: "n/1".into(),
            source: "bad json".into(),
        };
        assert_eq!(
            crate::store::error_chain(&e),
            "stored record n/1 cannot be read: bad json"
        );
        let e = StoreError::Start {
            what: "the saver",
            source: std::io::Error::other("no threads left"),
        };
        assert_eq!(
            crate::store::error_chain(&e),
            "cannot start the saver: no threads left"
        );
    }
}
