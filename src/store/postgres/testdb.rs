//! Throw-away databases for tests: [`TestDb::create`] makes `lifeboat_t_<random>` on the
//! server named by `LIFEBOAT_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), and dropping the guard drops the database
//! (`WITH (FORCE)`: connections still open are ended). For the store's tests and the gateway's
//! black-box tests alike.

use std::str::FromStr;

/// The server tests use when `LIFEBOAT_TEST_DATABASE_URL` is not set.
pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The admin URL tests create their databases with.
pub fn server_url() -> String {
    std::env::var("LIFEBOAT_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVER.to_string())
}

/// A database made for one test, dropped with the guard.
pub struct TestDb {
    /// The URL of the new database (for `[store] url`).
    pub url: String,
    pub name: String,
    admin: String,
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client, String> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|_| "LIFEBOAT_TEST_DATABASE_URL is not a PostgreSQL URL".to_string())?;
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
        format!(
            "cannot reach the test database server {}: {e} (start it with `pg_ctlcluster 15 main start`)",
            super::printable_url(url)
        )
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl TestDb {
    /// Creates an empty database (no schema: the store migrates it when opened).
    pub async fn create() -> TestDb {
        Self::try_create().await.unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn try_create() -> Result<TestDb, String> {
        let admin = server_url();
        let name = format!("lifeboat_t_{}", uuid::Uuid::new_v4().simple());
        let client = admin_client(&admin).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("cannot create the test database {name}: {e}"))?;
        let mut url = url::Url::parse(&admin).map_err(|e| e.to_string())?;
        url.set_path(&format!("/{name}"));
        Ok(TestDb {
            url: url.to_string(),
            name,
            admin,
        })
    }

    /// The options to open a store on this database (pool 8, lease as given).
    pub fn options(&self, lease: std::time::Duration) -> super::PgOptions {
        super::PgOptions {
            url: secrecy::SecretString::from(self.url.clone()),
            pool: 8,
            lease,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime: on a thread of its own with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = admin_client(&admin).await.ok()?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: the test database {} was not dropped", self.name);
        }
    }
}
