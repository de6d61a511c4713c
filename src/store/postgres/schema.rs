//! Schema migrations, embedded in the binary and applied in order, each in its own
//! transaction, under a session advisory lock held on one dedicated connection: two
//! instances starting together serialise on it (one migrates, the other waits, then finds
//! nothing left to do). `lifeboat_schema` records each version applied. A database whose
//! schema is newer than this binary knows is refused.

use super::{Fail, Target};
use crate::store::{StoreError, StoreResult};

/// Every migration, in order: `(version, SQL)`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_queue_lanes.sql")),
];

/// The schema version this binary writes and reads.
pub const KNOWN_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock migrations hold ("Lifeboat" in ASCII).
const MIGRATION_LOCK: i64 = 0x4c69_6665_626f_6174;

/// How the database's schema compares with this binary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    Current,
    /// Older (or none): `lifeboat migrate` (or `serve`) brings it up to date.
    Behind {
        found: i32,
    },
    /// Newer than this binary knows: refused.
    Ahead {
        found: i32,
    },
}

/// What a migration run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// The version the database is at (0: no schema yet).
async fn version(client: &tokio_postgres::Client) -> Result<i32, Fail> {
    let exists: bool = client
        .query_one("SELECT to_regclass('lifeboat_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT coalesce(max(version), 0) FROM lifeboat_schema", &[])
        .await?
        .try_get(0)?)
}

/// How the schema of the database at `target` compares with this binary's.
pub(crate) async fn state(target: &Target) -> StoreResult<SchemaState> {
    let work = async {
        let client = target.connect().await?;
        version(&client).await
    };
    let found = work.await.map_err(|e| e.into_store(&target.location))?;
    Ok(compare(found))
}

fn compare(found: i32) -> SchemaState {
    if found == KNOWN_VERSION {
        SchemaState::Current
    } else if found < KNOWN_VERSION {
        SchemaState::Behind { found }
    } else {
        SchemaState::Ahead { found }
    }
}

/// Brings the schema up to [`KNOWN_VERSION`].
pub(crate) async fn migrate(target: &Target) -> StoreResult<Migrated> {
    let location = target.location.clone();
    let work = async {
        let mut client = target.connect().await?;
        // A migration may take longer than a request's statement; waiting for the lock
        // (another instance migrating) too.
        client
            .batch_execute("SET statement_timeout = '10min'")
            .await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let outcome = apply(&mut client).await;
        // Released with the connection anyway; explicitly when the connection still works.
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        outcome
    };
    let migrated = work.await.map_err(|e| e.into_store(&location))?;
    if migrated.from != migrated.to {
        tracing::info!(
            database = %location,
            from = migrated.from,
            to = migrated.to,
            "applied the database schema migrations"
        );
    }
    Ok(migrated)
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<Migrated, Fail> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS lifeboat_schema ( \
               version integer PRIMARY KEY, \
               applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let from = version(client).await?;
    if from > KNOWN_VERSION {
        return Err(Fail::Store(StoreError::SchemaTooNew {
            found: from,
            known: KNOWN_VERSION,
        }));
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO lifeboat_schema (version, applied_at) VALUES ($1, now())",
            &[v],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(Migrated {
        from,
        to: KNOWN_VERSION,
    })
}
