//! `POST /webhooks/telegram` (webhook mode): Telegram delivers each update here with the
//! `secret_token` from `setWebhook` in `X-Telegram-Bot-Api-Secret-Token`. A missing or wrong
//! secret is a 401 and changes nothing; an unparsable body a 400 (logged without its content);
//! a store failure a 503, so Telegram delivers the update again.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use teloxide::types::Update;

use super::handler::BotContext;
use crate::web::ApiError;

pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

struct Hook {
    ctx: Arc<BotContext>,
    secret: [u8; 32],
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The webhook route.
pub fn routes(ctx: Arc<BotContext>, secret: &SecretString) -> Router {
    let hook = Arc::new(Hook {
        ctx,
        secret: digest(secret.expose_secret()),
    });
    Router::new()
        .route("/webhooks/telegram", post(receive))
        .with_state(hook)
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(digest);
    // Digests of equal length, compared in time independent of where they differ.
    let ok = presented.is_some_and(|p| {
        p.iter()
            .zip(hook.secret.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if !ok {
        return ApiError::unauthorized(format!("missing or wrong `{SECRET_HEADER}` header"))
            .into_response();
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(
                bytes = body.len(),
                line = e.line(),
                column = e.column(),
                "telegram webhook: the body is not an update"
            );
            return ApiError::invalid_json("the body is not a Telegram update").into_response();
        }
    };
    match hook.ctx.process(&update).await {
        Ok(()) => Json(serde_json::json!({"ok": true})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
