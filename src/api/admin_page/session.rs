//! Who is signed in to the admin page: the sessions (a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie, never the token; [`SESSION_LIFETIME`] each, at most
//! [`MAX_SESSIONS`]) and the CSRF token each form carries, checked in constant time.
//!
//! Sessions are kept in the store (namespace `admin_sessions`, keyed by the SHA-256 of the
//! session id, holding the CSRF token and the expiry), not in the process: a sign-in on one
//! instance of a fleet is valid on every other (whichever the load balancer picks) and
//! survives a restart. Server-side records rather than signed stateless cookies, so that
//! signing out ends the session everywhere at once and no signing key has to be shared.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use chrono::Utc;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{later, Timestamp};
use crate::store::{namespaces, Store, StoreResult};

/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The cookie's name.
pub const COOKIE: &str = "lifeboat_admin";
/// At most this many live sessions; the oldest is dropped past it.
const MAX_SESSIONS: usize = 1000;
const NAMESPACE: &str = namespaces::ADMIN_SESSIONS;

/// One stored session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    csrf: String,
    expires: Timestamp,
}

/// The signed-in browsers, in the store, keyed by the hex SHA-256 of their session id (the
/// ids themselves are only in the cookies).
pub struct Sessions {
    secure: bool,
    store: Arc<dyn Store>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system provides random bytes");
    hex::encode(bytes)
}

fn key(session_id: &str) -> String {
    hex::encode(digest(session_id))
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Equal strings, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (digest(a), digest(b));
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse(bytes: &[u8]) -> Option<Session> {
    serde_json::from_slice(bytes).ok()
}

impl Sessions {
    /// The sessions kept in `store`; `secure`: the cookie gets `Secure` (an https public URL).
    pub fn new(secure: bool, store: Arc<dyn Store>) -> Sessions {
        Sessions { secure, store }
    }

    /// A new session: its id (for the cookie). Expired sessions are swept out first, and the
    /// oldest one past [`MAX_SESSIONS`].
    pub(super) async fn create(&self) -> StoreResult<String> {
        self.create_at(Utc::now()).await
    }

    async fn create_at(&self, now: Timestamp) -> StoreResult<String> {
        let mut live = Vec::new();
        for (k, v) in self.store.kv_scan(NAMESPACE, "").await? {
            match parse(&v) {
                Some(s) if s.expires > now => live.push((s.expires, k)),
                _ => self.store.kv_delete_relaxed(NAMESPACE, &k).await?,
            }
        }
        if live.len() >= MAX_SESSIONS {
            live.sort();
            for (_, k) in &live[..=live.len() - MAX_SESSIONS] {
                self.store.kv_delete(NAMESPACE, k).await?;
            }
        }
        let id = random_hex();
        let session = Session {
            csrf: random_hex(),
            expires: later(now, SESSION_LIFETIME),
        };
        let bytes = serde_json::to_vec(&session).expect("a session serializes");
        // Durable: the next request may reach another instance.
        self.store.kv_put(NAMESPACE, &key(&id), &bytes).await?;
        Ok(id)
    }

    /// The CSRF token of the request's live session, if it has one.
    pub(super) async fn csrf_of(&self, headers: &HeaderMap) -> StoreResult<Option<String>> {
        self.csrf_at(headers, Utc::now()).await
    }

    async fn csrf_at(&self, headers: &HeaderMap, now: Timestamp) -> StoreResult<Option<String>> {
        let Some(id) = session_cookie(headers) else {
            return Ok(None);
        };
        let k = key(&id);
        match self
            .store
            .kv_get(NAMESPACE, &k)
            .await?
            .as_deref()
            .map(parse)
        {
            Some(Some(s)) if s.expires > now => Ok(Some(s.csrf)),
            Some(_) => {
                self.store.kv_delete_relaxed(NAMESPACE, &k).await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Ends the request's session, on every instance.
    pub(super) async fn remove(&self, headers: &HeaderMap) -> StoreResult<()> {
        if let Some(id) = session_cookie(headers) {
            self.store.kv_delete(NAMESPACE, &key(&id)).await?;
        }
        Ok(())
    }

    pub(super) fn cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={max_age}{secure}"
        ))
        .expect("the cookie is ASCII")
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Why a post is refused.
pub(super) enum Refused {
    /// No valid session or CSRF token (403, with this message).
    Forbidden(&'static str),
    /// The store could not be asked.
    Store(crate::store::StoreError),
}

/// Checks a post's session and CSRF token; `Err` says why it is refused (see
/// [`forbidden`](super::render::forbidden)).
pub(super) async fn authorised(
    sessions: &Sessions,
    headers: &HeaderMap,
    fields: &HashMap<String, String>,
) -> Result<String, Refused> {
    let Some(csrf) = sessions.csrf_of(headers).await.map_err(Refused::Store)? else {
        return Err(Refused::Forbidden(
            "You are not signed in (or your session expired). Nothing was changed.",
        ));
    };
    let presented = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !same(&csrf, presented) {
        return Err(Refused::Forbidden(
            "This form is stale or did not come from this page. Nothing was changed.",
        ));
    }
    Ok(csrf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lifeboat_admin=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    fn with_cookie(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={id}")).unwrap(),
        );
        headers
    }

    /// Two instances (two `Sessions` with nothing in common but the store): a sign-in on one
    /// is valid on the other, a sign-out on either ends it on both, and an expired session is
    /// refused and swept.
    #[tokio::test]
    async fn a_session_made_on_one_instance_works_on_another_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("db"), 8).unwrap());
        let a = Sessions::new(true, store.clone());
        let b = Sessions::new(true, store.clone());
        let id = a.create().await.unwrap();
        let headers = with_cookie(&id);
        let csrf = b.csrf_of(&headers).await.unwrap().expect("live on b");
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, id);
        assert_eq!(a.csrf_of(&headers).await.unwrap(), Some(csrf));
        let stored = store.kv_scan(NAMESPACE, "").await.unwrap();
        assert!(
            stored
                .iter()
                .all(|(k, v)| !k.contains(&id) && !String::from_utf8_lossy(v).contains(&id)),
            "the session id itself is not stored"
        );
        b.remove(&headers).await.unwrap();
        assert_eq!(
            a.csrf_of(&headers).await.unwrap(),
            None,
            "signed out everywhere"
        );

        let id = a.create().await.unwrap();
        let headers = with_cookie(&id);
        let after = Utc::now() + chrono::Duration::hours(13);
        assert_eq!(b.csrf_at(&headers, after).await.unwrap(), None, "expired");
        assert!(
            store.kv_scan(NAMESPACE, "").await.unwrap().is_empty(),
            "swept"
        );
        assert!(a.cookie("x", 10).to_str().unwrap().ends_with("; Secure"));
    }

    #[tokio::test]
    async fn past_the_limit_the_oldest_session_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("db"), 8).unwrap());
        let sessions = Sessions::new(false, store.clone());
        let t0 = Utc::now();
        let first = sessions.create_at(t0).await.unwrap();
        for i in 1..=MAX_SESSIONS as i64 {
            sessions
                .create_at(t0 + chrono::Duration::seconds(i))
                .await
                .unwrap();
        }
        assert_eq!(
            store.kv_scan(NAMESPACE, "").await.unwrap().len(),
            MAX_SESSIONS
        );
        assert_eq!(
            sessions.csrf_at(&with_cookie(&first), t0).await.unwrap(),
            None
        );
    }

    #[test]
    fn compares_tokens() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", ""));
    }
}
