//! Bearer authentication. Keys are kept only as SHA-256 digests and compared in constant
//! time, so neither a timing side channel nor a memory dump of this table reveals them.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::config::Config;

pub struct Keys {
    api_keys: Vec<[u8; 32]>,
    admin_token: [u8; 32],
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equal digests, in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keys {
    pub fn from_config(config: &Config) -> Keys {
        Keys {
            api_keys: config
                .server
                .api_keys
                .iter()
                .map(|k| digest(k.expose_secret()))
                .collect(),
            admin_token: digest(config.server.admin_token.expose_secret()),
        }
    }

    fn is_api_key(&self, presented: &[u8; 32]) -> bool {
        self.api_keys
            .iter()
            .fold(false, |found, k| found | same(k, presented))
    }

    fn is_admin(&self, presented: &[u8; 32]) -> bool {
        same(&self.admin_token, presented)
    }

    /// Whether `token` is the admin token (the admin page's sign-in form).
    pub fn is_admin_token(&self, token: &str) -> bool {
        self.is_admin(&digest(token))
    }
}

/// The token of `Authorization: Bearer <token>`, hashed.
fn presented(req: &Request) -> Result<[u8; 32], ApiError> {
    let value = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <key>` header"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
    Ok(digest(token))
}

pub async fn require_api_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = presented(&req)?;
    if state.keys.is_api_key(&token) {
        return Ok(next.run(req).await);
    }
    if state.keys.is_admin(&token) {
        return Err(ApiError::forbidden(
            "the admin token only works on /v1/admin; apps use an api key",
        ));
    }
    Err(ApiError::unauthorized("unknown api key"))
}

pub async fn require_admin_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = presented(&req)?;
    if state.keys.is_admin(&token) {
        return Ok(next.run(req).await);
    }
    if state.keys.is_api_key(&token) {
        return Err(ApiError::forbidden(
            "an api key cannot use /v1/admin; use the admin token",
        ));
    }
    Err(ApiError::unauthorized("unknown admin token"))
}
