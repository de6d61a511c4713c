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
    /// Per api key (same order): the namespace of its idempotency keys.
    scopes: Vec<ApiKeyScope>,
    admin_token: [u8; 32],
}

/// Which app (api key) made a request, as its idempotency keys' namespace, so two apps never
/// see each other's keys. Put in the request's extensions by [`require_api_key`].
///
/// The first key of `server.api_keys` has the empty namespace: its idempotency keys are stored
/// as they were before keys were scoped, so records written before the upgrade still belong
/// to it (the usual one-app deployment keeps working across the upgrade). Every other key is
/// named by a non-secret identifier: 16 hex digits of a SHA-256 of the key under a label (not
/// the digest kept for authentication), which stays the same when keys are added or reordered
/// behind it. Never the key itself.
#[derive(Clone, Debug, Default)]
pub struct ApiKeyScope(Option<String>);

impl ApiKeyScope {
    fn of(index: usize, secret: &str) -> ApiKeyScope {
        if index == 0 {
            return ApiKeyScope(None);
        }
        let mut hasher = Sha256::new();
        hasher.update(b"lifeboat idempotency scope\0");
        hasher.update(secret.as_bytes());
        ApiKeyScope(Some(hex::encode(&hasher.finalize()[..8])))
    }

    /// The key under which `key` is stored for this app. The separator is a control
    /// character, which idempotency keys may not hold, so no app's key can name another's.
    pub fn idempotency_key(&self, key: &str) -> String {
        match &self.0 {
            None => key.to_string(),
            Some(scope) => format!("{scope}\u{1f}{key}"),
        }
    }
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
            scopes: config
                .server
                .api_keys
                .iter()
                .enumerate()
                .map(|(i, k)| ApiKeyScope::of(i, k.expose_secret()))
                .collect(),
            admin_token: digest(config.server.admin_token.expose_secret()),
        }
    }

    fn is_api_key(&self, presented: &[u8; 32]) -> bool {
        self.api_key_index(presented).is_some()
    }

    /// Which api key `presented` is (the first match), comparing with every key.
    fn api_key_index(&self, presented: &[u8; 32]) -> Option<usize> {
        self.api_keys
            .iter()
            .enumerate()
            .fold(None, |found, (i, k)| {
                if same(k, presented) {
                    found.or(Some(i))
                } else {
                    found
                }
            })
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
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = presented(&req)?;
    if let Some(index) = state.keys.api_key_index(&token) {
        let scope = state.keys.scopes.get(index).cloned().unwrap_or_default();
        req.extensions_mut().insert(scope);
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
