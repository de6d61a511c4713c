//! Who is signed in to the admin page: the in-memory sessions (a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie, never the token; [`SESSION_LIFETIME`] each, at most
//! [`MAX_SESSIONS`]) and the CSRF token each form carries, checked in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The cookie's name.
pub const COOKIE: &str = "lifeboat_admin";
/// At most this many live sessions; the oldest is dropped past it.
const MAX_SESSIONS: usize = 1000;

struct Session {
    csrf: String,
    expires: Instant,
}

/// The signed-in browsers, keyed by the SHA-256 of their session id (the ids themselves are
/// only in the cookies).
pub struct Sessions {
    secure: bool,
    live: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system provides random bytes");
    hex::encode(bytes)
}

fn key(session_id: &str) -> [u8; 32] {
    Sha256::digest(session_id.as_bytes()).into()
}

/// Equal strings, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (key(a), key(b));
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// No one signed in yet; `secure`: the cookie gets `Secure` (an https public URL).
    pub fn new(secure: bool) -> Sessions {
        Sessions {
            secure,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// A new session: its id (for the cookie).
    pub(super) fn create(&self) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| s.expires > now);
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                live.remove(&oldest);
            }
        }
        live.insert(
            key(&id),
            Session {
                csrf: random_hex(),
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    /// The CSRF token of the request's live session, if it has one.
    pub(super) fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = session_cookie(headers)?;
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(&id);
        match live.get(&k) {
            Some(s) if s.expires > Instant::now() => Some(s.csrf.clone()),
            Some(_) => {
                live.remove(&k);
                None
            }
            None => None,
        }
    }

    pub(super) fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove(&key(&id));
        }
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

/// Checks a post's session and CSRF token; `Err` says why it is refused (see
/// [`forbidden`](super::render::forbidden)).
pub(super) fn authorised(
    sessions: &Sessions,
    headers: &HeaderMap,
    fields: &HashMap<String, String>,
) -> Result<String, &'static str> {
    let Some(csrf) = sessions.csrf_of(headers) else {
        return Err("You are not signed in (or your session expired). Nothing was changed.");
    };
    let presented = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !same(&csrf, presented) {
        return Err("This form is stale or did not come from this page. Nothing was changed.");
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

    #[test]
    fn sessions_expire_and_are_forgotten_on_removal() {
        let sessions = Sessions {
            secure: true,
            live: Mutex::new(HashMap::new()),
        };
        let id = sessions.create();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={id}")).unwrap(),
        );
        let csrf = sessions.csrf_of(&headers).expect("live session");
        assert_eq!(csrf.len(), 64);
        assert_ne!(csrf, id);
        sessions
            .live
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|s| s.expires = Instant::now() - Duration::from_secs(1));
        assert!(sessions.csrf_of(&headers).is_none(), "expired");
        let id = sessions.create();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}={id}")).unwrap(),
        );
        sessions.remove(&headers);
        assert!(sessions.csrf_of(&headers).is_none(), "signed out");
        let cookie = sessions.cookie("x", 10);
        assert!(cookie.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn compares_tokens() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", ""));
    }
}
