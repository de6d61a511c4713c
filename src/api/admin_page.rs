//! `GET /admin`: the admin web page — every channel's state with enable/disable buttons — for
//! the person on call during a ban, who should not need curl.
//!
//! It is server-rendered HTML with a little inline CSS: no JavaScript, no build step and
//! nothing loaded from elsewhere, so it works on a locked-down network. The table is built from
//! [`channel_row`], the same rows `GET /v1/admin/channels` answers, so the page and the API
//! never disagree; enable and disable go through [`ChannelStates`](crate::dispatch::states)
//! exactly as the API's do.
//!
//! Sign-in: the admin token is posted once through a form (`POST /admin/login`), never put in
//! a URL or a log. On success the browser gets a cookie holding a random session id (not the
//! token) that is `HttpOnly`, `SameSite=Strict`, `Path=/admin` and `Secure` when
//! `server.public_url` is https. Sessions live in memory (a restart signs everyone out) for
//! [`SESSION_LIFETIME`]. Every form carries the session's CSRF token in a hidden field, checked
//! in constant time; a post without a valid session and CSRF token changes nothing (403).
//! Everything printed is HTML-escaped: reasons and provider errors are untrusted text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use lifeboat_channel::ChannelKind;
use rand::TryRngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::admin::channel_row;
use super::AppState;
use crate::unsubscribe::escape;

/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The cookie's name.
pub const COOKIE: &str = "lifeboat_admin";
/// At most this many live sessions; the oldest is dropped past it.
const MAX_SESSIONS: usize = 1000;

/// The routes of the admin page.
pub fn routes(state: &AppState) -> Router<AppState> {
    let sessions = Arc::new(Sessions {
        secure: state.config.server.public_url.starts_with("https://"),
        live: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/admin", get(page))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/channels/{channel}/enable", post(enable))
        .route("/admin/channels/{channel}/disable", post(disable))
        .layer(Extension(sessions))
}

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
    /// A new session: its id (for the cookie).
    fn create(&self) -> String {
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
    fn csrf_of(&self, headers: &HeaderMap) -> Option<String> {
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

    fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.remove(&key(&id));
        }
    }

    fn cookie(&self, value: &str, max_age: u64) -> HeaderValue {
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

/// The members of a form body.
fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Checks a post's session and CSRF token; `Err` says why it is refused (see [`forbidden`]).
fn authorised(
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

/// The 403 page for a refused post.
fn forbidden(why: &str) -> Response {
    html(
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!(
            "<p class=\"error\">{}</p><p><a href=\"/admin\">Back to the admin page</a></p>",
            escape(why)
        ),
    )
}

/// A complete page with the security headers every admin answer carries.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    document(status, title, body, false)
}

fn document(status: StatusCode, title: &str, body: &str, refresh: bool) -> Response {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"10\">\n"
    } else {
        ""
    };
    let text = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n{refresh}\
         <title>{title} · Lifeboat</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Lifeboat · {title}</h1>\n{body}\n</body>\n</html>\n",
        title = escape(title),
    );
    let mut response = (status, text).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.4rem;\
text-align:left;vertical-align:top}th{background:#f4f4f4}.state{font-weight:bold}\
.active{color:#17702a}.throttled,.restricted{color:#a15c00}.banned,.disabled{color:#b00020}\
.error{color:#b00020}.muted{color:#777;font-size:.9em}form.inline{display:inline}\
input[type=text],input[type=password]{padding:.3rem}button{padding:.3rem .7rem}";

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\" id=\"message\">{}</p>\n", escape(m)))
        .unwrap_or_default();
    html(
        status,
        "Sign in",
        &format!(
            "{message}<form method=\"post\" action=\"/admin/login\" id=\"login\">\n\
             <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" \
             autocomplete=\"current-password\" required></label>\n\
             <button type=\"submit\" id=\"sign-in\">Sign in</button>\n</form>"
        ),
    )
}

fn text(row: &Value, key: &str) -> String {
    row[key].as_str().map(escape).unwrap_or_default()
}

/// The signed-in page: the channel table with a form per action.
fn dashboard(state: &AppState, csrf: &str, status: StatusCode, message: Option<&str>) -> Response {
    let csrf = escape(csrf);
    let mut rows = String::new();
    for kind in ChannelKind::ALL {
        let row = channel_row(state, kind);
        let name = kind.as_str();
        let channel_state = text(&row, "state");
        let state_label = channel_state.replace('_', " ");
        let configured = if row["configured"].as_bool() == Some(true) {
            "yes".to_string()
        } else {
            format!(
                "no<br><span class=\"muted\">{}</span>",
                text(&row, "not_configured_reason")
            )
        };
        let last_error = match &row["last_error"] {
            Value::Object(_) => {
                let e = &row["last_error"];
                let code = e["code"]
                    .as_str()
                    .map(|c| format!(" ({})", escape(c)))
                    .unwrap_or_default();
                format!(
                    "{}{code}<br>{}<br><span class=\"muted\">{}</span>",
                    text(e, "outcome"),
                    text(e, "detail"),
                    text(e, "at"),
                )
            }
            _ => String::new(),
        };
        let until = text(&row, "until");
        rows.push_str(&format!(
            "<tr id=\"row-{name}\" data-state=\"{channel_state}\">\n\
             <td>{name}</td>\n<td>{configured}</td>\n\
             <td class=\"state {channel_state}\" id=\"state-{name}\">{state_label}</td>\n\
             <td class=\"reason\">{reason}</td>\n\
             <td>{since}{until}</td>\n<td>{last_error}</td>\n\
             <td>{sent} / {failed}</td>\n<td>\n\
             <form class=\"inline\" method=\"post\" action=\"/admin/channels/{name}/enable\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"enable-{name}\">Enable</button></form>\n\
             <form class=\"inline\" method=\"post\" action=\"/admin/channels/{name}/disable\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"text\" name=\"reason\" id=\"reason-{name}\" placeholder=\"reason\" \
             maxlength=\"500\" required> \
             <button type=\"submit\" id=\"disable-{name}\">Disable</button></form>\n\
             </td>\n</tr>\n",
            reason = text(&row, "reason"),
            since = text(&row, "since"),
            until = if until.is_empty() {
                String::new()
            } else {
                format!("<br>until {until}")
            },
            sent = row["counts"]["sent_1h"].as_u64().unwrap_or(0),
            failed = row["counts"]["failed_1h"].as_u64().unwrap_or(0),
        ));
    }
    let message = message
        .map(|m| format!("<p class=\"error\" id=\"message\">{}</p>\n", escape(m)))
        .unwrap_or_default();
    let body = format!(
        "{message}<table>\n<thead><tr><th>Channel</th><th>Configured</th><th>State</th>\
         <th>Reason</th><th>Since / until</th><th>Last error</th><th>Sent / failed (1 h)</th>\
         <th>Actions</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n\
         <p class=\"muted\">This page refreshes every 10 seconds.</p>\n\
         <form method=\"post\" action=\"/admin/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" id=\"sign-out\">Sign out</button></form>"
    );
    document(status, "Channels", &body, true)
}

fn see_admin() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response()
}

/// `GET /admin`: the channel table when signed in, else the sign-in form.
#[utoipa::path(get, path = "/admin", tag = "admin page",
    responses((status = 200, description = "The channel table (signed in) or the sign-in form",
        content_type = "text/html", body = String)))]
pub async fn page(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
) -> Response {
    match sessions.csrf_of(&headers) {
        Some(csrf) => dashboard(&state, &csrf, StatusCode::OK, None),
        None => login_page(StatusCode::OK, None),
    }
}

/// `POST /admin/login` with `token`: a session cookie and back to the page, or 401.
#[utoipa::path(post, path = "/admin/login", tag = "admin page",
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`token`: the admin token", content = String),
    responses(
        (status = 303, description = "Signed in: a session cookie is set; go to /admin"),
        (status = 401, description = "Wrong token: the sign-in form again with a message",
            content_type = "text/html", body = String)))]
pub async fn login(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let token = fields.get("token").map(|t| t.trim()).unwrap_or("");
    if token.is_empty() || !state.keys.is_admin_token(token) {
        tracing::warn!("admin page: sign-in with a wrong token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        );
    }
    let id = sessions.create();
    tracing::info!("admin page: signed in");
    let mut response = see_admin();
    response.headers_mut().insert(
        header::SET_COOKIE,
        sessions.cookie(&id, SESSION_LIFETIME.as_secs()),
    );
    response
}

/// `POST /admin/logout` with `csrf`: ends the session.
#[utoipa::path(post, path = "/admin/logout", tag = "admin page",
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`csrf`: the session's CSRF token", content = String),
    responses(
        (status = 303, description = "Signed out; go to /admin"),
        (status = 403, description = "No valid session or CSRF token; nothing changed",
            content_type = "text/html", body = String)))]
pub async fn logout(
    Extension(sessions): Extension<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(why) = authorised(&sessions, &headers, &form(&body)) {
        return forbidden(why);
    }
    sessions.remove(&headers);
    let mut response = see_admin();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions.cookie("", 0));
    response
}

/// `POST /admin/channels/{channel}/enable` with `csrf`.
#[utoipa::path(post, path = "/admin/channels/{channel}/enable", tag = "admin page",
    params(("channel" = String, Path, description = "whatsapp, telegram, email or line")),
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`csrf`: the session's CSRF token", content = String),
    responses(
        (status = 303, description = "Enabled; go to /admin"),
        (status = 403, description = "No valid session or CSRF token; nothing changed",
            content_type = "text/html", body = String),
        (status = 404, description = "No such channel", content_type = "text/html", body = String)))]
pub async fn enable(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let csrf = match authorised(&sessions, &headers, &form(&body)) {
        Ok(csrf) => csrf,
        Err(why) => return forbidden(why),
    };
    let Ok(kind) = channel.parse::<ChannelKind>() else {
        return no_such_channel(&channel);
    };
    if let Err(e) = state.states.enable(kind).await {
        return store_failed(&state, &csrf, e);
    }
    state.wake.notify_one();
    tracing::info!(channel = %kind, "admin page: channel enabled");
    see_admin()
}

/// `POST /admin/channels/{channel}/disable` with `csrf` and `reason`.
#[utoipa::path(post, path = "/admin/channels/{channel}/disable", tag = "admin page",
    params(("channel" = String, Path, description = "whatsapp, telegram, email or line")),
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`csrf`: the session's CSRF token; `reason`: 1–500 characters",
        content = String),
    responses(
        (status = 303, description = "Disabled; go to /admin"),
        (status = 403, description = "No valid session or CSRF token; nothing changed",
            content_type = "text/html", body = String),
        (status = 404, description = "No such channel", content_type = "text/html", body = String),
        (status = 422, description = "The reason is empty or too long; the page with a message",
            content_type = "text/html", body = String)))]
pub async fn disable(
    State(state): State<AppState>,
    Extension(sessions): Extension<Arc<Sessions>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let csrf = match authorised(&sessions, &headers, &fields) {
        Ok(csrf) => csrf,
        Err(why) => return forbidden(why),
    };
    let Ok(kind) = channel.parse::<ChannelKind>() else {
        return no_such_channel(&channel);
    };
    let reason = fields.get("reason").map(|r| r.trim()).unwrap_or("");
    if reason.is_empty() || reason.chars().count() > 500 {
        return dashboard(
            &state,
            &csrf,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("A reason of 1–500 characters is needed to disable a channel."),
        );
    }
    if let Err(e) = state.states.disable(kind, reason).await {
        return store_failed(&state, &csrf, e);
    }
    tracing::info!(channel = %kind, "admin page: channel disabled");
    see_admin()
}

fn no_such_channel(name: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        "No such channel",
        &format!(
            "<p class=\"error\">There is no channel named “{}”.</p>\
             <p><a href=\"/admin\">Back to the admin page</a></p>",
            escape(name)
        ),
    )
}

fn store_failed(state: &AppState, csrf: &str, e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "admin page: the store could not save a channel change");
    dashboard(
        state,
        csrf,
        StatusCode::SERVICE_UNAVAILABLE,
        Some(&format!("The change could not be saved: {e}. Try again.")),
    )
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
