//! `lifeboat migrate`: applies the PostgreSQL store's schema migrations and exits (what
//! `serve` does at start), for operators who migrate before a rollout.

use std::path::Path;
use std::process::ExitCode;

use super::fail;
use crate::config::{Config, StoreConfig};
use crate::store::postgres::{PgOptions, PgStore, SchemaState, KNOWN_VERSION};
use crate::store::{error_chain, StoreError};

/// The options of the PostgreSQL store `config` names, if it names one.
pub(super) fn pg_options(store: &StoreConfig) -> Option<PgOptions> {
    store.url.as_ref().map(|url| PgOptions {
        url: url.clone(),
        pool: 1,
        lease: store.lease,
    })
}

pub async fn run(path: &Path) -> ExitCode {
    let mut config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = crate::config_env::apply_from_process(&mut config) {
        return fail(2, e);
    }
    let Some(options) = pg_options(&config.store) else {
        return fail(
            2,
            format!(
                "{}: store.url is not set: only the PostgreSQL store has a schema to migrate (the embedded store at store.path needs none)",
                path.display()
            ),
        );
    };
    let location = config.store.printable_url().unwrap_or_default();
    match PgStore::migrate(&options).await {
        Ok(m) if m.from == m.to => {
            println!(
                "the database {location} is at schema version {} (current)",
                m.to
            );
            ExitCode::SUCCESS
        }
        Ok(m) => {
            println!(
                "migrated the database {location} from schema version {} to {}",
                m.from, m.to
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, error_chain(&e)),
    }
}

/// `check-config`'s line about the store: for PostgreSQL, whether the database answers and
/// its schema is current. `false` when it is unreachable or newer than this binary.
pub(super) async fn check_store(store: &StoreConfig) -> bool {
    let Some(options) = pg_options(store) else {
        println!("{:<9} embedded at {}", "store", store.path.display());
        return true;
    };
    let location = store.printable_url().unwrap_or_default();
    match PgStore::schema_state(&options).await {
        Ok(SchemaState::Current) => {
            println!(
                "{:<9} PostgreSQL at {location}: schema version {KNOWN_VERSION} (current)",
                "store"
            );
            true
        }
        Ok(SchemaState::Behind { found }) => {
            println!(
                "{:<9} PostgreSQL at {location}: schema version {found}, {KNOWN_VERSION} needed (`lifeboat migrate` or `serve` applies it)",
                "store"
            );
            true
        }
        Ok(SchemaState::Ahead { found }) => {
            let e = StoreError::SchemaTooNew {
                found,
                known: KNOWN_VERSION,
            };
            println!("{:<9} PostgreSQL at {location}: {e}", "store");
            false
        }
        Err(e) => {
            println!("{:<9} unreachable: {}", "store", error_chain(&e));
            false
        }
    }
}
