//! Opening the store the config names, with the background work its backend needs (the
//! retention purge: the embedded store's thread, or PostgreSQL's task; PostgreSQL's
//! announcements between instances, [`super::postgres::announce`]), owned by one guard: the
//! one place that knows which backends exist. `[store] url` selects PostgreSQL (its schema is
//! migrated first); otherwise the embedded store at `[store] path`.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::StoreConfig;

use super::portable::Portable;
use super::postgres::{AnnounceTasks, PgOptions, PgPurger, PgStore};
use super::{Purger, SledStore, Store, StoreError, StoreResult};

/// An open store and what runs beside it. Dropping it stops the background work (before the
/// store's last flush, which the caller makes through `store`).
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    /// The same store, for `lifeboat store copy`; `None` for a backend whose records cannot
    /// be copied yet (PostgreSQL until its [`Portable`] lands).
    pub portable: Arc<dyn Portable>,
    /// Where the store is, for logs (never a password).
    pub location: String,
    /// Background work of the backend (the purge), stopped when dropped.
    _background: Vec<Box<dyn Send + Sync>>,
}

impl OpenedStore {
    /// Stops the background work and returns the store alone.
    pub fn into_store(self) -> Arc<dyn Store> {
        self.store
    }
}

/// Opens the store `config` selects, with its background work (the retention purge).
pub async fn open(config: &StoreConfig, clock: Arc<dyn Clock>) -> StoreResult<OpenedStore> {
    open_with(config, Some(clock)).await
}

/// Opens the store `config` selects without any background work: for `lifeboat store copy`,
/// which must move every record as it is (a purge on the real clock would delete records a
/// gateway on another clock, or with other retention settings, still keeps).
pub async fn open_idle(config: &StoreConfig) -> StoreResult<OpenedStore> {
    open_with(config, None).await
}

async fn open_with(
    config: &StoreConfig,
    purge: Option<Arc<dyn Clock>>,
) -> StoreResult<OpenedStore> {
    if let Some(url) = &config.url {
        let options = PgOptions {
            url: url.clone(),
            pool: config.pool,
            lease: config.lease,
        };
        let store = Arc::new(PgStore::open(&options).await?);
        // A serving store also listens for the other instances' announcements and announces
        // its own accepts (docs/fleet.md); a copy does neither.
        let background: Vec<Box<dyn Send + Sync>> = match purge {
            Some(clock) => vec![
                Box::new(PgPurger::start(
                    store.clone(),
                    config.retention.clone(),
                    clock,
                )),
                Box::new(AnnounceTasks::start(store.clone())),
            ],
            None => Vec::new(),
        };
        tracing::info!(database = %store.location(), pool = config.pool, "using the PostgreSQL store");
        return Ok(OpenedStore {
            location: store.location().to_string(),
            store: store.clone(),
            portable: store,
            _background: background,
        });
    }
    let path = config.path.clone();
    let cache_mb = config.cache_mb;
    let lease = config.lease;
    let sled = tokio::task::spawn_blocking(move || {
        SledStore::open(&path, cache_mb).map(|s| s.with_lease(lease))
    })
    .await
    .map_err(|e| StoreError::Start {
        what: "the embedded store",
        source: std::io::Error::other(e.to_string()),
    })??;
    let sled = Arc::new(sled);
    let mut background: Vec<Box<dyn Send + Sync>> = Vec::new();
    if let Some(clock) = purge {
        let purger =
            Purger::start(sled.clone(), config.retention.clone(), clock).map_err(|source| {
                StoreError::Start {
                    what: "the retention purge",
                    source,
                }
            })?;
        background.push(Box::new(purger));
    }
    Ok(OpenedStore {
        store: sled.clone(),
        portable: sled,
        location: config.path.display().to_string(),
        _background: background,
    })
}
