//! `GET /admin`: the admin web page — every channel's state with enable/disable buttons — for
//! the person on call during a ban, who should not need curl.
//!
//! It is server-rendered HTML with a little inline CSS: no JavaScript, no build step and
//! nothing loaded from elsewhere, so it works on a locked-down network. It does not reload by
//! itself (a reload would wipe a disable reason being typed): a Refresh link and the time of
//! the last update say how fresh it is. Per channel it shows how the channel comes back (a ban
//! only through Enable), a per-minute chart of the last hour drawn as SVG on the server, and
//! below the table the recent state changes from the stored history. The table is built from
//! [`channel_row`], the same rows `GET /v1/admin/channels` answers, so the page and the API
//! never disagree; enable and disable go through [`ChannelStates`](crate::states)
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

use super::admin::{channel_row, history_rows};
use super::AppState;
use crate::model::Timestamp;
use crate::web::html::escape;
use chrono::{DateTime, SecondsFormat, Utc};

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
    let text = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
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
input[type=text],input[type=password]{padding:.3rem}button{padding:.3rem .7rem}\
.hint{margin:.3rem 0 0;font-size:.9em;max-width:28rem}#timeline li{margin:.3rem 0}";

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

/// A time as the page shows it: `2026-12-04 15:40:31 UTC (5 min ago)`, in a `<time>` element.
fn when(at: Timestamp, now: Timestamp) -> String {
    format!(
        "<time datetime=\"{}\">{} <span class=\"muted\">({})</span></time>",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        at.format("%Y-%m-%d %H:%M:%S UTC"),
        relative(at, now)
    )
}

/// `just now`, `5 min ago`, `in 3 h 20 min`, `2 d ago`.
fn relative(at: Timestamp, now: Timestamp) -> String {
    let secs = (now - at).num_seconds();
    let (future, secs) = (secs < 0, secs.unsigned_abs());
    let span = match secs {
        0..=9 => return "just now".into(),
        10..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => match secs % 3600 / 60 {
            0 => format!("{} h", secs / 3600),
            m => format!("{} h {m} min", secs / 3600),
        },
        _ => format!("{} d", secs / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A JSON time of a channel row.
fn time_of(v: &Value) -> Option<Timestamp> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What the admin should know about a channel in this state: how it comes back.
fn hint(kind: ChannelKind, state: &str, until: Option<Timestamp>, now: Timestamp) -> String {
    let provider = if kind == ChannelKind::Whatsapp {
        "Meta"
    } else {
        "the provider"
    };
    match state {
        "banned" => format!(
            "Out of rotation; its traffic goes to the next channel. It comes back only when you \
             press Enable after {provider} lifts the ban (appeal). Nothing brings it back by \
             itself."
        ),
        "restricted" => match until {
            Some(u) if u > now => format!(
                "Resting; its traffic goes to the next channel. After the cooldown, at {}, one \
                 notification probes it: success brings it back, another restriction rests it \
                 twice as long. Enable brings it back now.",
                when(u, now)
            ),
            _ => "Cooldown over: the next notification probes it; success brings it back. \
                  Enable brings it back now."
                .into(),
        },
        "disabled" => "Out of rotation until someone presses Enable (a configuration error: \
                       fix the credentials or settings first)."
            .into(),
        "throttled" => match until {
            Some(u) => format!(
                "The provider asked to slow down; sending resumes by itself at {}.",
                when(u, now)
            ),
            None => "The provider asked to slow down; sending resumes by itself.".into(),
        },
        _ => String::new(),
    }
}

/// Sends (green) and failures (red, stacked on top) per minute over the last hour, as an SVG
/// bar chart drawn on the server: no script needed.
fn chart(name: &str, minutes: &[(u64, u64)]) -> String {
    const W: usize = 4;
    const H: u64 = 40;
    let top = minutes.iter().map(|(s, f)| s + f).max().unwrap_or(0).max(1);
    let (sent, failed) = minutes
        .iter()
        .fold((0, 0), |(s, f), (ds, df)| (s + ds, f + df));
    let mut bars = String::new();
    for (i, (s, f)) in minutes.iter().enumerate() {
        let x = i * W;
        let hs = (s * H).div_ceil(top);
        let hf = (f * H).div_ceil(top);
        if hs > 0 {
            bars.push_str(&format!(
                "<rect class=\"sent\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{hs}\" fill=\"#2e8b57\"/>",
                H - hs,
                W - 1
            ));
        }
        if hf > 0 {
            bars.push_str(&format!(
                "<rect class=\"failed\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{hf}\" fill=\"#c62828\"/>",
                H.saturating_sub(hs + hf),
                W - 1
            ));
        }
    }
    let width = minutes.len() * W;
    format!(
        "<svg id=\"chart-{name}\" class=\"chart\" width=\"{width}\" height=\"{h}\" \
         viewBox=\"0 0 {width} {h}\" role=\"img\" aria-label=\"{name}: {sent} sent, {failed} \
         failed per minute over the last hour\">\
         <title>{name}: {sent} sent, {failed} failed in the last hour (peak {top}/min)</title>\
         <line x1=\"0\" y1=\"{H}\" x2=\"{width}\" y2=\"{H}\" stroke=\"#bbb\"/>{bars}</svg>\
         <br><span class=\"muted\">{sent} sent / {failed} failed · peak {top}/min · \
         60 min → now</span>",
        h = H + 1,
    )
}

/// The recent state changes, newest first: when a channel went out, why, what the others
/// carried meanwhile, when it came back.
fn timeline(state: &AppState, now: Timestamp) -> String {
    const SHOWN: usize = 30;
    let rows = history_rows(state);
    if rows.is_empty() {
        return "<p class=\"muted\" id=\"timeline-empty\">No state changes recorded yet.</p>"
            .into();
    }
    let mut items = String::new();
    for row in rows.iter().take(SHOWN) {
        let at = time_of(&row["at"]).unwrap_or(now);
        let to = text(row, "to");
        let reason = match text(row, "reason") {
            r if r.is_empty() => String::new(),
            r => format!(" — {r}"),
        };
        let mut after = String::new();
        if let Some(carried) = row["carried_by_others"].as_object() {
            let parts: Vec<String> = carried
                .iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{} {}", escape(k), n))
                .collect();
            let period = if row["back_at"].is_null() {
                "since then"
            } else {
                "meanwhile"
            };
            after = if parts.is_empty() {
                format!("<br>Sent by other channels {period}: none.")
            } else {
                format!("<br>Sent by other channels {period}: {}.", parts.join(", "))
            };
        } else if row.get("carried_by_others").is_some() {
            after =
                "<br>Sent by other channels meanwhile: not known (the gateway restarted).".into();
        }
        match time_of(&row["back_at"]) {
            Some(back) => after.push_str(&format!(" Back in rotation {}.", when(back, now))),
            None if row.get("back_at").is_some() => after.push_str(" Still out of rotation."),
            None => {}
        }
        items.push_str(&format!(
            "<li id=\"change-{seq}\" class=\"change to-{to}\">{at} <b>{channel}</b>: \
             {from} → <span class=\"state {to}\">{to}</span>{reason}{after}</li>\n",
            seq = row["seq"],
            at = when(at, now),
            channel = text(row, "channel"),
            from = text(row, "from"),
        ));
    }
    format!("<ol id=\"timeline\" reversed>\n{items}</ol>")
}

/// The signed-in page: the channel table with a form per action, then the timeline.
fn dashboard(state: &AppState, csrf: &str, status: StatusCode, message: Option<&str>) -> Response {
    let csrf = escape(csrf);
    let now = state.clock.now();
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
                    "{}{code}<br>{}<br>{}",
                    text(e, "outcome"),
                    text(e, "detail"),
                    time_of(&e["at"]).map(|t| when(t, now)).unwrap_or_default(),
                )
            }
            _ => String::new(),
        };
        let until = time_of(&row["until"]);
        let since = time_of(&row["since"])
            .map(|t| when(t, now))
            .unwrap_or_default();
        let until_text = until
            .map(|t| when(t, now))
            .unwrap_or_else(|| "— (no end set)".into());
        let hint = match hint(kind, &channel_state, until, now) {
            h if h.is_empty() => String::new(),
            h => format!("<p class=\"hint\" id=\"hint-{name}\">{h}</p>"),
        };
        let enable = if channel_state != "active" {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/admin/channels/{name}/enable\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\" id=\"enable-{name}\">Enable</button></form>\n"
            )
        } else {
            String::new()
        };
        let disable = if channel_state != "disabled" {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/admin/channels/{name}/disable\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"text\" name=\"reason\" id=\"reason-{name}\" placeholder=\"reason\" \
                 maxlength=\"500\" required> \
                 <button type=\"submit\" id=\"disable-{name}\">Disable</button></form>\n"
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr id=\"row-{name}\" data-state=\"{channel_state}\">\n\
             <td>{name}</td>\n<td>{configured}</td>\n\
             <td class=\"state {channel_state}\" id=\"state-{name}\">{state_label}</td>\n\
             <td class=\"reason\" id=\"reason-text-{name}\">{reason}{hint}</td>\n\
             <td>since {since}<br>until {until_text}</td>\n<td>{last_error}</td>\n\
             <td>{chart}</td>\n<td>\n{enable}{disable}</td>\n</tr>\n",
            reason = text(&row, "reason"),
            chart = chart(name, &state.states.per_minute(kind, now)),
        ));
    }
    let message = message
        .map(|m| format!("<p class=\"error\" id=\"message\">{}</p>\n", escape(m)))
        .unwrap_or_default();
    let body = format!(
        "{message}<p id=\"updated\">Last updated {updated} · <a href=\"/admin\" id=\"refresh\">\
         Refresh</a> <span class=\"muted\">(the page does not reload by itself, so nothing you \
         type is lost)</span></p>\n\
         <table>\n<thead><tr><th>Channel</th><th>Configured</th><th>State</th>\
         <th>Reason</th><th>Since / until</th><th>Last error</th>\
         <th>Sent / failed per minute (1 h)</th><th>Actions</th></tr></thead>\n\
         <tbody>\n{rows}</tbody>\n</table>\n\
         <h2>Recent changes</h2>\n{timeline}\n\
         <p class=\"muted\">Counts per minute are kept in memory: a restart starts them at zero. \
         The changes are kept in the store (the last {limit}).</p>\n\
         <form method=\"post\" action=\"/admin/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
        updated = when(now, now),
        timeline = timeline(state, now),
        limit = crate::states::history::HISTORY_LIMIT,
    );
    html(status, "Channels", &body)
}

fn see_admin() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response()
}

/// `GET /admin`: the channel table when signed in, else the sign-in form.
#[utoipa::path(get, path = "/admin", tag = "admin page", operation_id = "admin_page",
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
#[utoipa::path(post, path = "/admin/login", tag = "admin page", operation_id = "admin_page_login",
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`token`: the admin token", content = crate::api::openapi::LoginForm),
    responses(
        (status = 303, description = "Signed in: a session cookie is set; go to /admin"),
        (status = 401, description = "Wrong token: the sign-in form again with a message",
            content_type = "text/html", body = String),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String)))]
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
#[utoipa::path(post, path = "/admin/logout", tag = "admin page", operation_id = "admin_page_logout",
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`csrf`: the session's CSRF token", content = crate::api::openapi::CsrfForm),
    responses(
        (status = 303, description = "Signed out; go to /admin"),
        (status = 403, description = "No valid session or CSRF token; nothing changed",
            content_type = "text/html", body = String),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String)))]
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
#[utoipa::path(post, path = "/admin/channels/{channel}/enable", tag = "admin page", operation_id = "admin_page_enable_channel",
    params(("channel" = String, Path, description = "whatsapp, telegram, email or line")),
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`csrf`: the session's CSRF token", content = crate::api::openapi::CsrfForm),
    responses(
        (status = 303, description = "Enabled; go to /admin"),
        (status = 403, description = "No valid session or CSRF token; nothing changed",
            content_type = "text/html", body = String),
        (status = 404, description = "No such channel", content_type = "text/html", body = String),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String)))]
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
#[utoipa::path(post, path = "/admin/channels/{channel}/disable", tag = "admin page", operation_id = "admin_page_disable_channel",
    params(("channel" = String, Path, description = "whatsapp, telegram, email or line")),
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`csrf`: the session's CSRF token; `reason`: 1–500 characters",
        content = crate::api::openapi::DisableForm),
    responses(
        (status = 303, description = "Disabled; go to /admin"),
        (status = 403, description = "No valid session or CSRF token; nothing changed",
            content_type = "text/html", body = String),
        (status = 404, description = "No such channel", content_type = "text/html", body = String),
        (status = 422, description = "The reason is empty or too long; the page with a message",
            content_type = "text/html", body = String),
        (status = 413, description = "Body over 64 KiB", content_type = "text/plain", body = String)))]
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
    fn times_read_as_utc_seconds_with_an_age() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T15:40:31.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = now - chrono::Duration::seconds(5 * 60 + 7);
        let shown = when(at, now);
        assert!(shown.contains(">2026-12-04 15:35:24 UTC <"), "{shown}");
        assert!(shown.contains("(5 min ago)"), "{shown}");
        assert!(
            shown.contains("datetime=\"2026-12-04T15:35:24Z\""),
            "{shown}"
        );
        assert_eq!(relative(now, now), "just now");
        assert_eq!(
            relative(now + chrono::Duration::seconds(3 * 3600 + 1200), now),
            "in 3 h 20 min"
        );
        assert_eq!(relative(now - chrono::Duration::days(2), now), "2 d ago");
    }

    #[test]
    fn the_chart_has_a_bar_per_busy_minute_scaled_to_the_peak() {
        let mut minutes = vec![(0, 0); 60];
        minutes[0] = (4, 0);
        minutes[59] = (1, 1);
        let svg = chart("whatsapp", &minutes);
        assert!(svg.starts_with("<svg id=\"chart-whatsapp\""), "{svg}");
        assert_eq!(svg.matches("class=\"sent\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"failed\"").count(), 1, "{svg}");
        // The peak (4/min) is full height; the last minute's 1 + 1 stack to half.
        assert!(
            svg.contains("x=\"0\" y=\"0\" width=\"3\" height=\"40\""),
            "{svg}"
        );
        assert!(
            svg.contains("x=\"236\" y=\"20\" width=\"3\" height=\"10\""),
            "{svg}"
        );
        assert!(svg.contains("5 sent / 1 failed"), "{svg}");
    }

    #[test]
    fn compares_tokens() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", ""));
    }
}
