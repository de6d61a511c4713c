//! `GET /admin`: the admin web page — every channel's state with enable/disable buttons — for
//! the person on call during a ban, who should not need curl.
//!
//! It is server-rendered HTML with a little inline CSS: no JavaScript, no build step and
//! nothing loaded from elsewhere, so it works on a locked-down network. It does not reload by
//! itself (a reload would wipe a disable reason being typed): a Refresh link and the time of
//! the last update say how fresh it is. Per channel it shows how the channel comes back (a ban
//! only through Enable), a per-minute chart of the last hour drawn as SVG on the server, and
//! below the table the recent state changes from the stored history. The table is built from
//! [`channel_row`](crate::api::admin::channel_row), the same rows `GET /v1/admin/channels` answers, so the page and the API
//! never disagree; enable and disable go through [`ChannelStates`](crate::states)
//! exactly as the API's do.
//!
//! Sign-in: the admin token is posted once through a form (`POST /admin/login`), never put in
//! a URL or a log. On success the browser gets a cookie holding a random session id (not the
//! token) that is `HttpOnly`, `SameSite=Strict`, `Path=/admin` and `Secure` when
//! `server.public_url` is https. Sessions live in the store, so every instance of a fleet
//! knows them and a restart keeps them, for [`SESSION_LIFETIME`](session::SESSION_LIFETIME). Every form carries the session's CSRF token in a hidden field, checked
//! in constant time; a post without a valid session and CSRF token changes nothing (403).
//! Everything printed is HTML-escaped: reasons and provider errors are untrusted text.
//!
//! This file holds the routes and handlers; [`session`] the sign-in sessions and CSRF tokens;
//! [`render`] the HTML.

mod render;
mod session;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use lifeboat_channel::ChannelKind;

use super::AppState;
use render::{dashboard, forbidden, login_page, no_such_channel};
use session::{authorised, Refused, Sessions, SESSION_LIFETIME};

/// The routes of the admin page.
pub fn routes(state: &AppState) -> Router<AppState> {
    let sessions = Arc::new(Sessions::new(
        state.config.server.public_url.starts_with("https://"),
        state.store.clone(),
    ));
    Router::new()
        .route("/admin", get(page))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/channels/{channel}/enable", post(enable))
        .route("/admin/channels/{channel}/disable", post(disable))
        .layer(Extension(sessions))
}

/// The members of a form body.
fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
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
    match sessions.csrf_of(&headers).await {
        Ok(Some(csrf)) => dashboard(&state, &csrf, StatusCode::OK, None).await,
        Ok(None) => login_page(StatusCode::OK, None),
        Err(e) => session_failed(e),
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
    let id = match sessions.create().await {
        Ok(id) => id,
        Err(e) => return session_failed(e),
    };
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
    if let Err(refused) = authorised(&sessions, &headers, &form(&body)).await {
        return refusal(refused);
    }
    if let Err(e) = sessions.remove(&headers).await {
        return session_failed(e);
    }
    let mut response = see_admin();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions.cookie("", 0));
    response
}

/// Checks a channel post: the session and CSRF token (else 403), then the channel name (else
/// 404). Answers the session's CSRF token and the channel.
async fn channel_post(
    sessions: &Sessions,
    headers: &HeaderMap,
    fields: &HashMap<String, String>,
    channel: &str,
) -> Result<(String, ChannelKind), Box<Response>> {
    let csrf = authorised(sessions, headers, fields)
        .await
        .map_err(|refused| Box::new(refusal(refused)))?;
    let kind = channel
        .parse::<ChannelKind>()
        .map_err(|_| Box::new(no_such_channel(channel)))?;
    Ok((csrf, kind))
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
    let (csrf, kind) = match channel_post(&sessions, &headers, &form(&body), &channel).await {
        Ok(checked) => checked,
        Err(refused) => return *refused,
    };
    if let Err(e) = state.states.enable(kind).await {
        return store_failed(&state, &csrf, e).await;
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
    let (csrf, kind) = match channel_post(&sessions, &headers, &fields, &channel).await {
        Ok(checked) => checked,
        Err(refused) => return *refused,
    };
    let reason = fields.get("reason").map(|r| r.trim()).unwrap_or("");
    if reason.is_empty() || reason.chars().count() > 500 {
        return dashboard(
            &state,
            &csrf,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("A reason of 1–500 characters is needed to disable a channel."),
        )
        .await;
    }
    if let Err(e) = state.states.disable(kind, reason).await {
        return store_failed(&state, &csrf, e).await;
    }
    tracing::info!(channel = %kind, "admin page: channel disabled");
    see_admin()
}

/// The answer to a refused post.
fn refusal(refused: Refused) -> Response {
    match refused {
        Refused::Forbidden(why) => forbidden(why),
        Refused::Store(e) => session_failed(e),
    }
}

/// The store could not read or write a session: the sign-in form with the reason (the cause
/// stays in the log).
fn session_failed(e: crate::store::StoreError) -> Response {
    let reference = uuid::Uuid::new_v4();
    tracing::error!(%reference, error = %crate::store::error_chain(&e), "admin page: the store could not read or write a session");
    let status = if e.is_unavailable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    login_page(
        status,
        Some(&format!(
            "Your session could not be checked: internal error (reference {reference}); see the gateway's log. Nothing was changed."
        )),
    )
}

async fn store_failed(state: &AppState, csrf: &str, e: crate::store::StoreError) -> Response {
    let reference = uuid::Uuid::new_v4();
    tracing::error!(%reference, error = %crate::store::error_chain(&e), "admin page: the store could not save a channel change");
    // The cause stays in the log: store errors can name keys and paths.
    let (status, message) = if e.is_unavailable() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "The change could not be saved: the gateway is stopping. Try again in a moment."
                .to_string(),
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("The change could not be saved: internal error (reference {reference}); see the gateway's log."),
        )
    };
    dashboard(state, csrf, status, Some(&message)).await
}
