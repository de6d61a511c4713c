//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated from the code
//! with utoipa, so client authors get a machine-readable contract that cannot drift from the
//! handlers.
//!
//! Each handler under `src/api` carries its own `#[utoipa::path]` (path, method, parameters,
//! body, answers, which credential it takes); [`ApiDoc`] lists them. Routes that other modules
//! merge into the API as plain routers (provider webhooks, one-click unsubscribe, the Telegram
//! webhook) are described by the stubs at the end of this file, which keeps those modules free
//! of documentation concerns. A test builds the real router, asks it which (method, path)
//! pairs it serves, and compares them with this document both ways, so a route added without
//! documentation (or documented but not served) fails CI.
//!
//! Served without auth: it holds no secrets, and clients need it before they have a key.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;

/// The error shape every `/v1` answer uses (error.rs).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorInner,
}

/// What went wrong.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorInner {
    /// Stable per status: `invalid_json` 400, `unauthorized` 401, `forbidden` 403,
    /// `not_found` 404, `idempotency_conflict` 409, `payload_too_large` 413,
    /// `unsupported_media_type` 415, `validation_failed` 422, `overloaded` 503.
    #[schema(example = "validation_failed")]
    code: String,
    /// For people; may change between versions.
    message: String,
    /// The offending member (only with `validation_failed`).
    field: Option<String>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(what.to_string());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "api_key",
            bearer("An app's api key (`server.api_keys`), for /v1 except /v1/admin."),
        );
        components.add_security_scheme(
            "admin_token",
            bearer("The admin token (`server.admin_token`), for /v1/admin; an api key gets 403."),
        );
    }
}

/// The document: every documented operation, the schemas and the two credentials.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lifeboat",
        description = "One HTTP endpoint for notifications, delivered over WhatsApp, Telegram, \
                       email or LINE with failover when a channel is restricted or banned."
    ),
    paths(
        super::contacts::put_contact,
        super::contacts::get_contact,
        super::contacts::delete_contact,
        super::contacts::put_consent,
        super::contacts::consent_history,
        super::notifications::create,
        super::notifications::list,
        super::notifications::get_one,
        super::optin_links::create,
        super::admin::list_channels,
        super::admin::disable,
        super::admin::enable,
        super::admin::resume_marketing,
        super::admin::channel_history,
        super::policy_preview::preview,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::admin_page::page,
        super::admin_page::login,
        super::admin_page::logout,
        super::admin_page::enable,
        super::admin_page::disable,
        openapi_json,
        whatsapp_verify,
        whatsapp_receive,
        line_receive,
        telegram_receive,
        unsubscribe_page,
        unsubscribe_post,
    ),
    components(schemas(ErrorBody, ErrorInner)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn json() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
}

/// `GET /openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

// Routes merged from other modules as plain routers, described here.

/// WhatsApp's subscribe handshake: echoes `hub.challenge` when `hub.verify_token` matches.
#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "webhooks",
    params(
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query, description = "`channels.whatsapp.verify_token`"),
        ("hub.challenge" = String, Query, description = "Echoed back")),
    responses(
        (status = 200, description = "The challenge", content_type = "text/plain", body = String),
        (status = 403, description = "Wrong verify token", body = ErrorBody)))]
#[allow(dead_code)]
fn whatsapp_verify() {}

/// WhatsApp Cloud API events (statuses, messages), verified by `X-Hub-Signature-256`.
#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "webhooks",
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=HMAC of the body with the app secret")),
    request_body(content = Object, description = "The Graph webhook payload"),
    responses(
        (status = 200, description = "Applied (or a redelivery, ignored)"),
        (status = 401, description = "Missing or wrong signature; nothing changed", body = ErrorBody)))]
#[allow(dead_code)]
fn whatsapp_receive() {}

/// LINE webhook events (follow, unfollow, messages), verified by `X-Line-Signature`.
#[utoipa::path(post, path = "/webhooks/line", tag = "webhooks",
    params(("X-Line-Signature" = String, Header, description = "base64 HMAC-SHA256 of the body with the channel secret")),
    request_body(content = Object, description = "The LINE webhook payload"),
    responses(
        (status = 200, description = "Applied"),
        (status = 401, description = "Missing or wrong signature; nothing changed", body = ErrorBody)))]
#[allow(dead_code)]
fn line_receive() {}

/// Telegram bot updates in webhook mode (`channels.telegram.mode = "webhook"`), verified by
/// `X-Telegram-Bot-Api-Secret-Token`. Served only in that mode.
#[utoipa::path(post, path = "/webhooks/telegram", tag = "webhooks",
    params(("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "`channels.telegram.secret_token`")),
    request_body(content = Object, description = "A Telegram Update"),
    responses(
        (status = 200, description = "Handled"),
        (status = 401, description = "Missing or wrong secret; nothing changed", body = ErrorBody)))]
#[allow(dead_code)]
fn telegram_receive() {}

/// The unsubscribe page behind an email's link.
#[utoipa::path(get, path = "/unsubscribe/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "From the email's List-Unsubscribe link")),
    responses(
        (status = 200, description = "A page with an Unsubscribe button", content_type = "text/html", body = String),
        (status = 404, description = "Not a valid link", content_type = "text/html", body = String)))]
#[allow(dead_code)]
fn unsubscribe_page() {}

/// RFC 8058 one-click unsubscribe (and the page's button): revokes the marketing scope of
/// the contact's email consent.
#[utoipa::path(post, path = "/unsubscribe/{token}", tag = "unsubscribe",
    params(("token" = String, Path, description = "From the email's List-Unsubscribe link")),
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`List-Unsubscribe=One-Click`", content = String),
    responses(
        (status = 200, description = "Unsubscribed", content_type = "text/html", body = String),
        (status = 404, description = "Not a valid link", body = ErrorBody)))]
#[allow(dead_code)]
fn unsubscribe_post() {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;
    use crate::api::{router, AppState};
    use crate::channels::Registry;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::dispatch::states::ChannelStates;
    use crate::store::{SledStore, Store};

    /// Served only when the config asks for it, so absent from the router built here.
    const CONDITIONAL: &[(&str, &str)] = &[("POST", "/webhooks/telegram")];

    /// The real API router, on a throwaway store.
    async fn app(dir: &Path) -> axum::Router {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\napi_keys = [\"key-0123456789\"]\nadmin_token = \"admin-0123456789\"\n\
             [store]\npath = {:?}\n[channels.line]\nchannel_access_token = \"x\"\n\
             channel_secret = \"s\"\n",
            dir.join("s.sled").display().to_string()
        );
        let config = Config::from_toml(&text, Path::new("<test>"), &|_| None).expect("config");
        let registry = Registry::from_config(&config).expect("registry");
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(&config.store.path, 8).expect("store"));
        let states = Arc::new(ChannelStates::load(store.clone()).await.expect("states"));
        router(AppState::new(
            store,
            states,
            registry,
            Arc::new(config),
            Arc::new(SystemClock::default()),
            Arc::new(Notify::new()),
            Arc::new(AtomicBool::new(true)),
            Arc::default(),
        ))
    }

    /// The path templates the router holds, read from its `Debug` form (axum has no public
    /// route listing). Every `"/..."` string inside a `paths: {...}` map.
    fn route_paths(router: &axum::Router) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let mut paths = BTreeSet::new();
        for map in debug.split("paths: {").skip(1) {
            // The map ends at the first `}` outside quotes (templates hold `{param}`).
            let mut quoted = false;
            let end = map
                .char_indices()
                .find(|(_, c)| {
                    if *c == '"' {
                        quoted = !quoted;
                    }
                    *c == '}' && !quoted
                })
                .map_or(map.len(), |(i, _)| i);
            let map = &map[..end];
            for piece in map.split('"').skip(1).step_by(2) {
                if piece.starts_with('/') {
                    paths.insert(piece.to_string());
                }
            }
        }
        paths
    }

    /// (method, path) for every route the router serves: each path asked with TRACE (which no
    /// route takes) answers 405 with an `Allow` header listing its methods (or 404 for the
    /// entries axum adds for the fallback).
    async fn served(router: axum::Router) -> BTreeSet<(String, String)> {
        let paths = route_paths(&router);
        assert!(
            paths.contains("/v1/notifications") && paths.contains("/admin"),
            "could not read the routes from the router's Debug form: {paths:?}"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = reqwest::Client::new();
        let mut out = BTreeSet::new();
        let all = paths.clone();
        for path in paths {
            let concrete: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let answer = client
                .request(reqwest::Method::TRACE, format!("{base}{concrete}"))
                // The auth layers run before the method check.
                .bearer_auth(if path.starts_with("/v1/admin/") {
                    "admin-0123456789"
                } else {
                    "key-0123456789"
                })
                .send()
                .await
                .unwrap();
            if answer.status() == 404 {
                // axum's own fallback entries (`/`, `/{*__private__axum_fallback}`): no route.
                continue;
            }
            assert_eq!(answer.status(), 405, "TRACE {path} (of {all:?})");
            let allow = answer.headers()["allow"].to_str().unwrap().to_string();
            for method in allow.split(',').map(str::trim) {
                if method != "HEAD" {
                    out.insert((method.to_string(), path.clone()));
                }
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[tokio::test]
    async fn every_served_route_is_documented_and_every_documented_route_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let served = served(app(dir.path()).await).await;
        let documented = documented();
        let conditional: BTreeSet<(String, String)> = CONDITIONAL
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes without #[utoipa::path] in ApiDoc: {undocumented:?}"
        );
        let unserved: Vec<_> = documented
            .difference(&served)
            .filter(|r| !conditional.contains(*r))
            .collect();
        assert!(
            unserved.is_empty(),
            "documented but not served: {unserved:?}"
        );
        assert!(served.len() >= 20, "{served:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_credentials_and_the_error_shape() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["api_key"]["scheme"], "bearer");
        assert_eq!(schemes["admin_token"]["scheme"], "bearer");
        let create = &doc["paths"]["/v1/notifications"]["post"];
        assert_eq!(create["security"][0]["api_key"], serde_json::json!([]));
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/NotificationRequest"
        );
        assert_eq!(
            create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let disable = &doc["paths"]["/v1/admin/channels/{channel}/disable"]["post"];
        assert_eq!(disable["security"][0]["admin_token"], serde_json::json!([]));
        assert!(doc["components"]["schemas"]["ErrorInner"]["properties"]["code"].is_object());
    }
}
