//! Wires the store, channel states, dispatcher and HTTP API together, runs them until a
//! shutdown signal, then stops in order: stop taking requests, let in-flight sends finish
//! (bounded by `server.shutdown_grace`), flush the store.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::Router;
use lifeboat_channel::ChannelKind;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::channels::Registry;
use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::worker::WorkerContext;
use crate::dispatch::Dispatcher;
use crate::states::ChannelStates;
use crate::store::StoreError;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
        /// What to do about it, when there is something to say (a busy port).
        hint: String,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Options for [`run`] beyond the config.
pub struct RunOptions {
    pub clock: Arc<dyn Clock>,
    /// Extra routes merged into the API (the sandbox's controls).
    pub extra_routes: Option<Router>,
    /// Accept and store, but send nothing (the benchmark's "all channels paused" queue).
    pub hold_deliveries: bool,
    /// Printed on stdout once the store is open and the gateway is about to serve (the
    /// sandbox's banner), so a start that fails prints only its error.
    pub banner: Option<String>,
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.server.listen.to_string(),
            hint: bind_hint(&source, "`listen` under [server] in the config"),
            source,
        })
}

/// A hint for a bind error: which setting picks another address (`setting` names it).
pub fn bind_hint(error: &std::io::Error, setting: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            " (another program is using this port: stop it, or choose another address with {setting})"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            " (ports below 1024 need privileges: choose a higher port with {setting})"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            " (this machine has no such address: choose another with {setting})"
        ),
        _ => String::new(),
    }
}

/// Runs the gateway on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    registry: Registry,
    listener: TcpListener,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Who this instance is among those sharing the store: in the logs, `/readyz`, the leases.
    let instance = crate::fleet::InstanceId::generate();
    let opened = crate::store::open(&config.store, options.clock.clone()).await?;
    let store = opened.store.clone();
    // One registry per gateway: several gateways in one process keep their own counts.
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let events = Arc::new(crate::events::Events::new(
        &config,
        store.clone(),
        options.clock.clone(),
        metrics.clone(),
    ));
    let states = Arc::new(
        ChannelStates::load(store.clone())
            .await?
            .with_instance(instance.clone())
            .with_metrics(metrics.clone())
            .with_events(events.clone()),
    );
    // Every instance re-reads the stored states (a ban recorded by another one) at least every
    // second, and at once when the store announces another instance's change (PostgreSQL's
    // `LISTEN`; the embedded store, one process, announces nothing).
    let announcements = store.announcements();
    let states_changed = announcements
        .as_ref()
        .map(|a| a.states.clone())
        .unwrap_or_default();
    let states_watch = states.watch(states_changed, crate::states::REFRESH_EVERY);
    // The admin table's counts are the fleet's: this instance's results go to the store in a
    // batch every second.
    let counts_writer = states.keep_counts(
        options.clock.clone(),
        crate::states::shared::COUNTS_FLUSH_EVERY,
    );
    let cooldowns: BTreeMap<ChannelKind, _> = ChannelKind::ALL
        .iter()
        .map(|k| (*k, config.cooldown(*k)))
        .collect();
    let mut policy = crate::policy::Policy::new(config.policy.clone(), store.clone());
    if config.store.url.is_some() {
        // Several instances may share this store: pace for the fleet, not per instance.
        policy = policy.with_shared_pacing();
    }
    let policy = Arc::new(policy.with_events(events.clone()));
    let ctx = Arc::new(WorkerContext {
        store: store.clone(),
        states: states.clone(),
        registry: registry.clone(),
        routing: config.routing.clone(),
        cooldowns,
        clock: options.clock.clone(),
        optout: Arc::new(crate::optout::MarketingOptOut::new(&config, store.clone())),
        metrics: metrics.clone(),
        policy: policy.clone(),
        events: events.clone(),
    });
    let dispatcher = Dispatcher::start(ctx, config.server.concurrency, options.hold_deliveries);
    // Work another instance accepted wakes this scheduler too (else its queue poll finds it).
    let work_wake = announcements.map(|a| {
        let wake = dispatcher.waker();
        tokio::spawn(async move {
            loop {
                a.work.notified().await;
                wake.notify_one();
            }
        })
    });
    // The app's event endpoints: their own tasks, apart from the notification workers.
    let event_workers = events.start();
    let ready = Arc::new(AtomicBool::new(true));
    let state = AppState::new(
        store.clone(),
        states.clone(),
        registry.clone(),
        config.clone(),
        options.clock.clone(),
        dispatcher.waker(),
        ready.clone(),
        metrics.clone(),
        policy.clone(),
        events.clone(),
        dispatcher.claims(),
    );
    let clock = options.clock.clone();
    let mut telegram = crate::telegram_bot::start(
        &config,
        store.clone(),
        clock,
        metrics,
        events.clone(),
        instance.clone(),
    );
    let background = state.background.clone();
    let mut app = api::router(state);
    if let Some(routes) = telegram.take_routes() {
        app = app.merge(routes);
    }
    if let Some(extra) = options.extra_routes {
        app = app.merge(extra);
    }

    let addr = listener.local_addr().map_err(ServeError::Http)?;
    let configured: Vec<String> = registry.configured().map(|(k, _)| k.to_string()).collect();
    tracing::info!(%addr, %instance, channels = ?configured, store = %opened.location, "lifeboat started");
    if let Some(banner) = &options.banner {
        print!("{banner}");
    }
    println!("lifeboat listening on http://{addr}");

    let limits = crate::edge::Limits::from_config(&config.server);
    let app = crate::edge::layers(app, &limits);
    // Returns once every connection is closed, or when the grace ran out (then it closed
    // them): a client that never finishes its request cannot hold the shutdown up.
    let shutdown_began = crate::edge::serve(listener, app, limits, shutdown).await;
    ready.store(false, Ordering::Relaxed);
    telegram.stop().await;
    states_watch.abort();
    if let Some(task) = work_wake {
        task.abort();
    }
    tracing::info!("stopped taking requests; letting in-flight sends finish");
    // One grace for the whole shutdown: what the connections used is not given again.
    let grace_left = config
        .server
        .shutdown_grace
        .saturating_sub(shutdown_began.elapsed());
    let drained = dispatcher.shutdown(grace_left).await;
    if !drained {
        tracing::warn!(
            grace = ?config.server.shutdown_grace,
            "some sends were still in flight at shutdown; they are retried after the next start"
        );
    }
    // Events still in flight get a moment; the rest are delivered after the next start.
    event_workers.stop(std::time::Duration::from_secs(2)).await;
    counts_writer.abort();
    if let Err(e) = states.flush_counts(options.clock.now()).await {
        tracing::warn!(error = %e, "could not write the last channel counts to the store");
    }
    // Best-effort work requests left running (receipt retries, STOP replies) ends here, so
    // that nothing outlives the gateway or keeps its store open.
    background.stop().await;
    // Figures counted in memory for a quarter second (pricing, marketing sends) are written.
    policy.flush_figures().await;
    // The backend's background work (the purge) stops before the last flush.
    drop(opened);
    store.flush().await?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
