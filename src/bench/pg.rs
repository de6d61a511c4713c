//! `lifeboat bench --store postgres://...`: every phase on a throw-away database of its own,
//! created on that server (`lifeboat_bench_<random>`, empty: the store applies its schema) and
//! dropped when the phase is over (`WITH (FORCE)`, so a sandbox killed a moment ago does not
//! keep it). The user of the URL needs `CREATEDB`. The URL's password is never printed.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

use crate::config::printable_url;

/// A database made for one phase of the benchmark, dropped with this guard.
pub(super) struct BenchDb {
    pub(super) name: String,
    url: SecretString,
    server: SecretString,
}

/// A connection to the database `url` names, for the benchmark's own statements.
async fn client(url: &SecretString) -> Result<tokio_postgres::Client, String> {
    let shown = printable_url(url.expose_secret());
    let config = tokio_postgres::Config::from_str(url.expose_secret())
        .map_err(|_| format!("--store: not a PostgreSQL URL ({shown})"))?;
    let (client, connection) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        config.connect(tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| format!("--store: {shown} did not answer within 10 s"))?
    .map_err(|e| format!("--store: cannot connect to {shown}: {}", error_text(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A PostgreSQL error's own message (its `Display` may name nothing secret, but say less).
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

impl BenchDb {
    /// Creates an empty database on the server `server` names.
    pub(super) async fn create(server: &SecretString) -> Result<BenchDb, String> {
        let name = format!("lifeboat_bench_{}", uuid::Uuid::new_v4().simple());
        client(server)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| {
                format!(
                    "--store: cannot create the database {name}: {}",
                    error_text(&e)
                )
            })?;
        let mut url = url::Url::parse(server.expose_secret())
            .map_err(|_| "--store: not a URL".to_string())?;
        url.set_path(&format!("/{name}"));
        Ok(BenchDb {
            name,
            url: SecretString::from(url.to_string()),
            server: server.clone(),
        })
    }

    /// The URL of this database (for `[store] url`).
    pub(super) fn url(&self) -> &SecretString {
        &self.url
    }

    /// The server processes serving this database now (`pg_stat_activity`): their CPU is the
    /// database's share of a phase.
    pub(super) async fn backend_pids(&self) -> Result<Vec<i32>, String> {
        let rows = client(&self.server)
            .await?
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1",
                &[&self.name],
            )
            .await
            .map_err(|e| error_text(&e))?;
        Ok(rows.iter().map(|r| r.get::<_, i32>(0)).collect())
    }

    /// `pg_database_size`: what the database takes on the server's disk.
    pub(super) async fn size_bytes(&self) -> Result<u64, String> {
        let row = client(&self.server)
            .await?
            .query_one("SELECT pg_database_size($1)", &[&self.name])
            .await
            .map_err(|e| error_text(&e))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run inside the runtime: on a thread of its own, with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                client(&server)
                    .await?
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| error_text(&e))
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the thread dropping it panicked".into()));
        if let Err(e) = dropped {
            eprintln!("bench: the database {} was not dropped: {e}", self.name);
        }
    }
}
