//! The HTTP API (README "The API at a glance", `GET /openapi.json`): routes, shared state and authentication.
//!
//! `/v1/...` takes an app's api key; `/v1/admin/...` takes the admin token, and an api key
//! there is a 403 (the keys are for different people). Every error is [`ApiError`]'s shape.

mod admin;
mod admin_page;
mod contacts;
mod events;
mod notifications;
pub mod openapi;
mod ops;
mod optin_links;
mod policy_preview;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;

use crate::web::auth;
pub use crate::web::{error, extract, ApiError, AppState, Shared};

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let app_routes = Router::new()
        .route(
            "/contacts/{contact_id}",
            put(contacts::put_contact)
                .get(contacts::get_contact)
                .delete(contacts::delete_contact),
        )
        .route(
            "/contacts/{contact_id}/consents/{channel}",
            put(contacts::put_consent),
        )
        .route(
            "/contacts/{contact_id}/consents/{channel}/history",
            get(contacts::consent_history),
        )
        .route(
            "/notifications",
            post(notifications::create).get(notifications::list),
        )
        .route("/notifications/{id}", get(notifications::get_one))
        .route("/events", get(events::list))
        .route(
            "/contacts/{contact_id}/optin-links",
            post(optin_links::create),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));

    let admin_routes = Router::new()
        .route("/channels", get(admin::list_channels))
        .route("/channels/history", get(admin::channel_history))
        .route("/channels/{channel}/disable", post(admin::disable))
        .route("/channels/{channel}/enable", post(admin::enable))
        .route(
            "/channels/{channel}/marketing/resume",
            post(admin::resume_marketing),
        )
        .route("/policy/preview", get(policy_preview::preview))
        .route("/events/{id}/retry", post(events::retry))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_token,
        ));

    Router::new()
        .nest("/v1/admin", admin_routes)
        .nest("/v1", app_routes)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(crate::webhooks::routes(&state))
        .merge(admin_page::routes(&state))
        .merge(openapi::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .with_state(state)
}
