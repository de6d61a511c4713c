//! What the HTTP handlers share, below `api` and the inbound modules (`webhooks`,
//! `unsubscribe`, the Telegram bot's webhook) so that none of them imports another:
//! the state every handler reaches ([`AppState`]), the error shape of every answer
//! ([`ApiError`]), the JSON extractors, the key checks and HTML escaping.

pub mod auth;
pub mod error;
pub mod extract;
pub mod html;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::channels::Registry;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::states::ChannelStates;
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
    /// Events for the app's endpoints (`GET /v1/events`, consent changes, receipts).
    pub events: Arc<crate::events::Events>,
    /// How many notifications this instance's dispatcher holds a claim on (`/readyz`,
    /// `/metrics`).
    pub claims: crate::fleet::HeldClaims,
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
        // Shared with the workers: one pacing and one set of holds for both.
        policy: Arc<crate::policy::Policy>,
        events: Arc<crate::events::Events>,
        claims: crate::fleet::HeldClaims,
    ) -> Self {
        let keys = Arc::new(auth::Keys::from_config(&config));
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
            events,
            claims,
        }))
    }
}
