//! The HTTP API (README "The API at a glance", `GET /openapi.json`): routes, shared state and authentication.
//!
//! `/v1/...` takes an app's api key; `/v1/admin/...` takes the admin token, and an api key
//! there is a 403 (the keys are for different people). Every error is [`ApiError`]'s shape.

mod admin;
mod admin_page;
mod auth;
mod contacts;
pub mod error;
pub mod extract;
mod notifications;
pub mod openapi;
mod ops;
mod optin_links;
mod policy_preview;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use tokio::sync::Notify;

use crate::channels::Registry;
use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::states::ChannelStates;
use crate::metrics::Metrics;
use crate::store::Store;

pub use error::ApiError;

/// What every handler can reach. One `Arc`: axum clones the state for every extractor of
/// every request, and one reference count is cheaper than a dozen (measured on the accept path).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state's members.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub states: Arc<ChannelStates>,
    pub registry: Registry,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    /// Wakes the dispatcher when a notification is accepted.
    pub wake: Arc<Notify>,
    pub keys: Arc<auth::Keys>,
    /// False once shutdown has begun, or if the dispatcher stopped.
    pub ready: Arc<AtomicBool>,
    /// This gateway's metrics (`GET /metrics`), shared with the workers and channel states.
    pub metrics: Arc<Metrics>,
    /// The guardrails, shared with the workers (the policy preview, marketing pauses).
    pub policy: Arc<crate::policy::Policy>,
    /// Work started by a request that goes on after its answer; stopped at shutdown.
    pub background: crate::tasks::Background,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        states: Arc<ChannelStates>,
        registry: Registry,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        ready: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let keys = Arc::new(auth::Keys::from_config(&config));
        let policy = Arc::new(crate::policy::Policy::new(
            config.policy_config().unwrap_or_default(),
            store.clone(),
        ));
        AppState(Arc::new(Shared {
            store,
            states,
            registry,
            config,
            clock,
            wake,
            keys,
            ready,
            metrics,
            policy,
            background: crate::tasks::Background::default(),
        }))
    }

    /// Shares the workers' [`crate::policy::Policy`] (its pacing and holds) with the API.
    pub fn with_policy(mut self, policy: Arc<crate::policy::Policy>) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("the policy is set before the state is shared")
            .policy = policy;
        self
    }
}

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
