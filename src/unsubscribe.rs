//! Email one-click unsubscribe (RFC 8058): the link in every marketing email's
//! `List-Unsubscribe` header, and the small page behind it.
//!
//! Tokens are stateless, so nothing is stored per email sent:
//! `<base64url(contact_id)>.<base64url(first 16 bytes of HMAC-SHA256(secret, "unsubscribe:" + contact_id))>`.
//! The secret is `server.unsubscribe_secret` if set (its SHA-256; the same value on every
//! instance of a fleet), else 32 random bytes made on first use and kept in the store (`meta` /
//! `unsubscribe_secret`; inserted only if absent, so when several instances make one at once
//! the first one stored wins and all use it), so links keep working across restarts and
//! instances; it never leaves the gateway.
//!
//! `GET /unsubscribe/{token}` shows a page with one button (a GET never unsubscribes: mail
//! scanners follow links). `POST /unsubscribe/{token}` (the mailbox provider's one-click POST
//! with `List-Unsubscribe=One-Click`, or the page's button) removes the `marketing` scope from
//! the email consent of the contact and of every other contact with the same email address (an
//! opt-out is about the address), keeping `transactional` if it was granted. No auth, no
//! cookies, no redirects.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use lifeboat_channel::{Category, ChannelKind};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::model::{Consent, ConsentStatus};
use crate::store::{Store, StoreError, StoreResult};
use crate::web::html::escape;
use crate::web::{ApiError, AppState};

const META_NAMESPACE: &str = "meta";
const SECRET_KEY: &str = "unsubscribe_secret";
const MAC_BYTES: usize = 16;

/// Makes and checks unsubscribe tokens; the secret is loaded (or created) once, then cached.
pub struct Keys {
    store: Arc<dyn Store>,
    secret: OnceCell<[u8; 32]>,
}

impl Keys {
    /// Keys with the secret kept in (or first made into) the store.
    pub fn new(store: Arc<dyn Store>) -> Keys {
        Keys {
            store,
            secret: OnceCell::new(),
        }
    }

    /// Keys with `server.unsubscribe_secret` if it is set, else as [`Keys::new`].
    pub fn from_config(config: &crate::config::Config, store: Arc<dyn Store>) -> Keys {
        Keys::configured(config.server.unsubscribe_secret.as_ref(), store)
    }

    fn configured(secret: Option<&secrecy::SecretString>, store: Arc<dyn Store>) -> Keys {
        use secrecy::ExposeSecret;
        let keys = Keys::new(store);
        if let Some(secret) = secret {
            let key: [u8; 32] = Sha256::digest(secret.expose_secret().as_bytes()).into();
            keys.secret.set(key).expect("a new cell is empty");
        }
        keys
    }

    async fn secret(&self) -> StoreResult<&[u8; 32]> {
        self.secret
            .get_or_try_init(|| async {
                if let Some(secret) = self.load().await? {
                    return Ok(secret);
                }
                let mut secret = [0u8; 32];
                rand::rngs::OsRng
                    .try_fill_bytes(&mut secret)
                    .expect("the operating system provides random bytes");
                // Insert-if-absent, so two holders of [`Keys`] (the workers and the HTTP API,
                // or two instances on a shared store) can't each make a different one on their
                // first use: whoever loses reads the winner's.
                if !self
                    .store
                    .kv_insert_new(META_NAMESPACE, SECRET_KEY, &secret)
                    .await?
                {
                    return self.load().await?.ok_or(StoreError::Corrupt {
                        key: format!("{META_NAMESPACE}/{SECRET_KEY}"),
                        source: "the unsubscribe secret vanished after it was created".into(),
                    });
                }
                tracing::info!("created the unsubscribe link secret");
                Ok(secret)
            })
            .await
    }

    async fn load(&self) -> StoreResult<Option<[u8; 32]>> {
        match self.store.kv_get(META_NAMESPACE, SECRET_KEY).await? {
            None => Ok(None),
            Some(bytes) => bytes.try_into().map(Some).map_err(|_| StoreError::Corrupt {
                key: format!("{META_NAMESPACE}/{SECRET_KEY}"),
                source: "the unsubscribe secret is not 32 bytes".into(),
            }),
        }
    }

    /// The token of `contact_id`'s unsubscribe link.
    pub async fn token(&self, contact_id: &str) -> StoreResult<String> {
        let mac = mac(self.secret().await?, contact_id)
            .finalize()
            .into_bytes();
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(contact_id),
            URL_SAFE_NO_PAD.encode(&mac[..MAC_BYTES])
        ))
    }

    /// The contact id a token was made for, or `None` for a token we did not make.
    pub async fn verify(&self, token: &str) -> StoreResult<Option<String>> {
        let Some((id_part, mac_part)) = token.split_once('.') else {
            return Ok(None);
        };
        let (Ok(id), Ok(tag)) = (
            URL_SAFE_NO_PAD.decode(id_part),
            URL_SAFE_NO_PAD.decode(mac_part),
        ) else {
            return Ok(None);
        };
        let Ok(contact_id) = String::from_utf8(id) else {
            return Ok(None);
        };
        if tag.len() != MAC_BYTES {
            return Ok(None);
        }
        let valid = mac(self.secret().await?, &contact_id)
            .verify_truncated_left(&tag)
            .is_ok();
        Ok(valid.then_some(contact_id))
    }
}

fn mac(secret: &[u8; 32], contact_id: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a 32-byte key");
    mac.update(b"unsubscribe:");
    mac.update(contact_id.as_bytes());
    mac
}

/// The link for `token` under the configured `server.public_url`.
pub fn link(public_url: &str, token: &str) -> String {
    format!("{}/unsubscribe/{token}", public_url.trim_end_matches('/'))
}

/// `GET` and `POST /unsubscribe/{token}`.
pub fn routes(state: &AppState) -> Router<AppState> {
    let keys = Arc::new(Keys::from_config(&state.config, state.store.clone()));
    Router::new()
        .route("/unsubscribe/{token}", get(page).post(unsubscribe))
        .layer(Extension(keys))
}

async fn page(
    State(state): State<AppState>,
    Extension(keys): Extension<Arc<Keys>>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let business = escape(&state.config.server.business_name);
    if keys.verify(&token).await?.is_none() {
        return Ok(html(
            StatusCode::NOT_FOUND,
            "Link not valid",
            "<p>This unsubscribe link is not valid. Please use the link from the latest email.</p>",
        ));
    }
    let body = format!(
        "<p>Stop receiving marketing email from {business}?</p>\n\
         <form method=\"post\" action=\"/unsubscribe/{}\">\n\
         <input type=\"hidden\" name=\"from\" value=\"page\">\n\
         <button type=\"submit\">Unsubscribe</button>\n</form>\n\
         <p>Service messages about your orders and account will still reach you.</p>",
        escape(&token)
    );
    Ok(html(
        StatusCode::OK,
        &format!("Unsubscribe from {business}"),
        &body,
    ))
}

async fn unsubscribe(
    State(state): State<AppState>,
    Extension(keys): Extension<Arc<Keys>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(contact_id) = keys.verify(&token).await? else {
        return Err(ApiError::not_found("unknown unsubscribe link"));
    };
    let evidence = if is_one_click(&headers, &body) {
        "one-click"
    } else {
        "page"
    };
    let store = state.store.as_ref();
    if let Some(contact) = store.get_contact(&contact_id).await? {
        // An opt-out is about the address: every contact holding this email address.
        let mut holders = match contact.address(ChannelKind::Email) {
            Some(address) => {
                store
                    .find_contacts_by_address(ChannelKind::Email, address)
                    .await?
            }
            None => Vec::new(),
        };
        if !holders.iter().any(|c| c.id == contact.id) {
            holders.push(contact);
        }
        let now = state.clock.now();
        let mut removed = false;
        for holder in holders {
            let Some(current) = holder
                .consents
                .get(&ChannelKind::Email)
                .filter(|c| c.scopes.contains(&Category::Marketing))
            else {
                continue;
            };
            let scopes: Vec<Category> = current
                .scopes
                .iter()
                .copied()
                .filter(|s| *s != Category::Marketing)
                .collect();
            let status = if scopes.is_empty() || current.status == ConsentStatus::Revoked {
                ConsentStatus::Revoked
            } else {
                ConsentStatus::Granted
            };
            state
                .events
                .set_consent(
                    store,
                    &holder.id,
                    ChannelKind::Email,
                    Consent {
                        status,
                        scopes,
                        source: "email_unsubscribe".into(),
                        evidence: Some(evidence.into()),
                        at: now,
                    },
                )
                .await?;
            removed = true;
            tracing::info!(contact = %holder.id, evidence, "email marketing unsubscribed");
        }
        if removed {
            crate::policy::risk::signal(store, ChannelKind::Email, "email_unsubscribe", now)
                .await?;
        }
    }
    // Also when there was nothing to remove (a repeated click, an erased contact): the person
    // gets what they asked for either way.
    let business = escape(&state.config.server.business_name);
    Ok(html(
        StatusCode::OK,
        "Unsubscribed",
        &format!("<p>You will no longer receive marketing email from {business}.</p>"),
    ))
}

/// RFC 8058's body: `List-Unsubscribe=One-Click`, form-encoded (or as a multipart field).
fn is_one_click(headers: &HeaderMap, body: &[u8]) -> bool {
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if multipart {
        let text = String::from_utf8_lossy(body);
        return text.contains("name=\"List-Unsubscribe\"") && text.contains("One-Click");
    }
    url::form_urlencoded::parse(body).any(|(k, v)| k == "List-Unsubscribe" && v == "One-Click")
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}\
         button{{font-size:1rem;padding:.5rem 1.5rem}}</style></head>\n\
         <body><h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        page,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[tokio::test]
    async fn tokens_verify_only_for_their_contact_and_survive_a_new_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let keys = Keys::new(store.clone());
        let token = keys.token("c-1042").await.unwrap();
        assert_eq!(
            keys.verify(&token).await.unwrap().as_deref(),
            Some("c-1042")
        );

        // Another holder (the HTTP side) reads the same stored secret.
        let other = Keys::new(store.clone());
        assert_eq!(
            other.verify(&token).await.unwrap().as_deref(),
            Some("c-1042")
        );

        // Another contact's id with this contact's MAC, a cut MAC, garbage: all refused.
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("c-1043"));
        assert_eq!(keys.verify(&forged).await.unwrap(), None);
        assert_eq!(keys.verify(&token[..token.len() - 2]).await.unwrap(), None);
        assert_eq!(keys.verify("nope").await.unwrap(), None);
        assert_eq!(keys.verify("a.b.c").await.unwrap(), None);

        // A different secret (another installation) refuses the token.
        let dir2 = tempfile::tempdir().unwrap();
        let store2: Arc<dyn Store> = Arc::new(SledStore::open(&dir2.path().join("db"), 8).unwrap());
        assert_eq!(Keys::new(store2).verify(&token).await.unwrap(), None);
    }

    /// Holders of [`Keys`] with nothing in common but the store (as two instances on a shared
    /// store) making their first token at once all end up with the one stored secret.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holders_creating_the_secret_at_once_agree_on_one() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let keys = Keys::new(store);
                    barrier.wait().await;
                    keys.token("c-1042").await.unwrap()
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.unwrap());
        }
        let later = Keys::new(store);
        for token in &tokens {
            assert_eq!(
                later.verify(token).await.unwrap().as_deref(),
                Some("c-1042")
            );
        }
    }

    /// A configured secret: instances that share nothing but the setting (two stores here)
    /// accept each other's links, nothing is stored, and the stored secret is not used.
    #[tokio::test]
    async fn a_configured_secret_is_the_same_on_every_instance_and_nothing_is_stored() {
        let secret = secrecy::SecretString::from("a-long-operator-chosen-secret-0123456789");
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let stores: Vec<Arc<dyn Store>> = (dirs.iter())
            .map(|d| Arc::new(SledStore::open(&d.path().join("db"), 8).unwrap()) as Arc<dyn Store>)
            .collect();
        let a = Keys::configured(Some(&secret), stores[0].clone());
        let b = Keys::configured(Some(&secret), stores[1].clone());
        let token = a.token("c-7").await.unwrap();
        assert_eq!(b.verify(&token).await.unwrap().as_deref(), Some("c-7"));
        for store in &stores {
            assert_eq!(
                store.kv_get(META_NAMESPACE, SECRET_KEY).await.unwrap(),
                None
            );
        }
        // Without the setting the gateway would use (and store) its own: the links differ.
        let own = Keys::new(stores[0].clone());
        assert_eq!(own.verify(&token).await.unwrap(), None);
    }

    #[test]
    fn one_click_bodies_are_recognised() {
        let h = HeaderMap::new();
        assert!(is_one_click(&h, b"List-Unsubscribe=One-Click"));
        assert!(!is_one_click(&h, b"from=page"));
        let mut m = HeaderMap::new();
        m.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=x".parse().unwrap(),
        );
        assert!(is_one_click(
            &m,
            b"--x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--x--\r\n"
        ));
    }
}
