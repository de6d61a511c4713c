//! The PostgreSQL store: several gateway instances on one database (docs/postgres.md,
//! docs/fleet.md).
//!
//! The client is tokio-postgres with a deadpool pool: statements are prepared once per
//! connection and pipelined, arrays go over in binary (`UNNEST` multi-row writes), and nothing
//! needs a database at compile time. The hot paths are grouped like the embedded store's:
//! accepts by a committer ([`accept`]), one transaction per group with the callers answered
//! after its commit; the dispatcher's saves by a saver ([`save`]). Claims are leases in the
//! `queue` table (River's pattern): a claim sets `available_at` to the end of its lease and
//! `owner` to this handle, so a lease that ends is simply due again, and a save deletes the row
//! or sets it back to the notification's due time.
//!
//! Read-modify-writes of one contact take a transaction-scoped advisory lock on its id (which
//! works for a contact not stored yet); notifications are locked by their rows (`FOR UPDATE`),
//! always before their queue rows, so writers never wait on each other in a cycle.

mod accept;
pub mod announce;
#[doc(hidden)]
pub mod bench;
mod grouped;
mod kv;
mod portable;
mod reads;
mod retention;
mod save;
mod schema;
mod tally;
#[doc(hidden)]
pub mod testdb;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use lifeboat_channel::ChannelKind;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Json, Type};

use super::{
    AcceptOutcome, Announcements, ClaimLimits, ContactEdit, DatabaseStatus, DbFailure, Durability,
    Edited, KvEdit, Lane, ListQuery, NewNotification, NotificationEdit, Store, StoreError,
    StoreResult,
};
use crate::model::{
    ChannelStatus, Consent, Contact, ContactPatch, Notification, Status, Timestamp,
};

pub use announce::AnnounceTasks;
pub use retention::PgPurger;
pub use schema::{Migrated, SchemaState, KNOWN_VERSION};

/// A new connection must be made within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A statement running longer is cancelled by the server.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// No store call waits longer than this for the database (a lost connection that the
/// operating system has not noticed yet answers an error here, not a hang): an accept facing a
/// silent database answers 503 within a few seconds, as the fleet spec asks. Every call on the
/// hot paths is one short transaction; the purge, which runs many batches, has its own bound.
const CALL_TIMEOUT: Duration = Duration::from_secs(6);
/// The bound on one whole purge pass of one rule (each of its batches is a statement under
/// `STATEMENT_TIMEOUT`).
const PURGE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a counted queue depth is reused.
const DEPTH_CACHE: Duration = Duration::from_secs(1);
/// Transaction retries after a deadlock or serialisation failure.
const RETRIES: usize = 5;

/// What a PostgreSQL store is opened with (`[store] url`, `pool`, `lease`).
#[derive(Clone)]
pub struct PgOptions {
    pub url: SecretString,
    /// Connections in this handle's pool.
    pub pool: usize,
    pub lease: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: SecretString::from(url.into()),
            pool: 16,
            lease: crate::config::DEFAULT_LEASE,
        }
    }
}

/// A database URL, parsed, with its printable form and the TLS it asks for.
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub location: String,
    pub tls: bool,
}

pub use crate::config::printable_url;

impl Target {
    pub fn parse(url: &SecretString) -> StoreResult<Target> {
        let text = url.expose_secret();
        let location = printable_url(text);
        let bad = |why: &str| StoreError::Database {
            location: location.clone(),
            source: DbFailure::message(format!(
                "not a PostgreSQL URL like postgres://user:password@host:5432/database ({why})"
            )),
        };
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(bad("it must start with postgres://"));
        }
        // tokio-postgres's parse errors may quote the text: never shown.
        let mut config =
            tokio_postgres::Config::from_str(text).map_err(|_| bad("it cannot be read"))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(CALL_TIMEOUT)
            .options(format!(
                "-c statement_timeout={}",
                STATEMENT_TIMEOUT.as_millis()
            ));
        if config.get_application_name().is_none() {
            config.application_name("lifeboat");
        }
        let tls = config.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
        Ok(Target {
            config,
            location,
            tls,
        })
    }

    /// One connection outside any pool (migrations hold their advisory lock on it).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, Fail> {
        let task = async {
            if self.tls {
                let (client, conn) = self.config.connect(tls::MakeRustls::new()).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            } else {
                let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, task).await {
            Ok(r) => r,
            Err(_) => Err(Fail::Timeout("connecting")),
        }
    }

    fn pool(&self, size: usize) -> StoreResult<Pool> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if self.tls {
            Manager::from_config(self.config.clone(), tls::MakeRustls::new(), manager_config)
        } else {
            Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager_config)
        };
        Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database {
                location: self.location.clone(),
                source: DbFailure::message(format!("cannot build the connection pool: {e}")),
            })
    }
}

/// A failure inside the store, before it is told as a [`StoreError`].
#[derive(Debug)]
pub(crate) enum Fail {
    Pg(tokio_postgres::Error),
    Pool(PoolError),
    Timeout(&'static str),
    Store(StoreError),
    /// A race that running the transaction again resolves.
    Retry,
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}
impl From<PoolError> for Fail {
    fn from(e: PoolError) -> Self {
        Fail::Pool(e)
    }
}
impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// Whether a database error means "try again" (the server or the connection), by SQLSTATE.
fn transient_code(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08") // connection exception
        || c.starts_with("53") // insufficient resources (too many connections, disk full)
        || c.starts_with("57P") // admin / crash shutdown, cannot connect now
        || *code == SqlState::QUERY_CANCELED // statement timeout
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::LOCK_NOT_AVAILABLE
}

fn pg_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => transient_code(code),
        // No SQLSTATE: the connection itself (closed, I/O, timeout while connecting).
        None => {
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || e.to_string().contains("connect")
                || e.to_string().contains("timed out")
        }
    }
}

impl Fail {
    /// A transaction worth running again at once (a deadlock or serialisation failure).
    fn retry_at_once(&self) -> bool {
        matches!(self, Fail::Retry)
            || matches!(self, Fail::Pg(e) if e.code().is_some_and(|c| *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE))
    }

    fn transient(&self) -> bool {
        match self {
            Fail::Pg(e) => pg_transient(e),
            Fail::Pool(PoolError::Backend(e)) => pg_transient(e),
            Fail::Pool(_) => true,
            Fail::Timeout(_) | Fail::Retry => true,
            Fail::Store(e) => e.is_unavailable(),
        }
    }

    fn failure(&self) -> DbFailure {
        match self {
            Fail::Pg(e) => DbFailure::message(crate::store::error_chain(e)),
            Fail::Pool(PoolError::Backend(e)) => DbFailure::message(crate::store::error_chain(e)),
            Fail::Pool(PoolError::Timeout(_)) => DbFailure::message(format!(
                "no database connection became free within {}s",
                POOL_WAIT.as_secs()
            )),
            Fail::Pool(e) => DbFailure::message(e.to_string()),
            Fail::Timeout(what) => DbFailure::message(format!(
                "no answer from the database in time while {what} (calls are bounded at {}s)",
                CALL_TIMEOUT.as_secs()
            )),
            Fail::Store(e) => DbFailure::message(e.to_string()),
            Fail::Retry => DbFailure::message("a concurrent change kept it from completing"),
        }
    }

    /// The store error a caller sees (`location`: the printable URL).
    pub(crate) fn into_store(self, location: &str) -> StoreError {
        if let Fail::Store(e) = self {
            return e;
        }
        self.to_store(location)
    }

    /// The same, leaving `self` (a group's failure, told to each caller).
    pub(crate) fn to_store(&self, location: &str) -> StoreError {
        let location = location.to_string();
        let source = self.failure();
        if self.transient() {
            StoreError::Unavailable { location, source }
        } else {
            StoreError::Database { location, source }
        }
    }
}

type Result<T, E = Fail> = std::result::Result<T, E>;

/// A JSON body as stored (`jsonb`'s binary form is a version byte and the text).
struct JsonBytes<'a>(&'a [u8]);

impl<'a> FromSql<'a> for JsonBytes<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => Ok(JsonBytes(rest)),
                _ => Err("unknown jsonb version".into()),
            }
        } else {
            Ok(JsonBytes(raw))
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }
}

/// Reads column `col` of `row` as a `T` stored as JSON; `key` names the record in an error.
fn body<T: DeserializeOwned>(row: &tokio_postgres::Row, col: usize, key: &str) -> Result<T> {
    let raw: JsonBytes = row.try_get(col)?;
    serde_json::from_slice(raw.0).map_err(|e| {
        Fail::Store(StoreError::Corrupt {
            key: key.to_string(),
            source: Box::new(e),
        })
    })
}

/// `t` to the millisecond (queue times are kept as the embedded store keeps them).
fn ms(t: Timestamp) -> Timestamp {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The advisory lock key of one record (a contact id), the same in every instance.
fn lock_key(kind: &str, id: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let digest = h.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Takes the advisory locks of [`contact_lock_keys`], in their order.
const LOCK_CONTACTS: &str =
    "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) WITH ORDINALITY AS t(k, i) ORDER BY i";

/// The lock keys of contacts `ids`, sorted (so two transactions never wait on each other in
/// a cycle).
fn contact_lock_keys(ids: &[&str]) -> Vec<i64> {
    let mut keys: Vec<i64> = ids.iter().map(|id| lock_key("contact", id)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Locks contacts `ids` for this transaction.
async fn lock_contacts(tx: &impl GenericClient, ids: &[&str]) -> Result<()> {
    let keys = contact_lock_keys(ids);
    if keys.is_empty() {
        return Ok(());
    }
    let st = tx.prepare_cached(LOCK_CONTACTS).await?;
    tx.query(&st, &[&keys]).await?;
    Ok(())
}

/// Writes contacts (each with what it was before, `None` if new) and keeps the address index
/// in step. The caller holds their locks.
async fn write_contacts(
    tx: &impl GenericClient,
    changes: &[(Option<Contact>, Contact)],
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    let mut updated = Vec::new();
    let (mut del_ch, mut del_addr, mut del_id) = (Vec::new(), Vec::new(), Vec::new());
    let (mut add_ch, mut add_addr, mut add_id) = (Vec::new(), Vec::new(), Vec::new());
    for (old, new) in changes {
        ids.push(new.id.as_str());
        bodies.push(Json(new));
        updated.push(new.updated_at);
        for kind in ChannelKind::ALL {
            let before = old.as_ref().and_then(|c| c.address(kind));
            let after = new.address(kind);
            if before == after {
                continue;
            }
            if let Some(a) = before {
                del_ch.push(kind.as_str());
                del_addr.push(a);
                del_id.push(new.id.as_str());
            }
            if let Some(a) = after {
                add_ch.push(kind.as_str());
                add_addr.push(a);
                add_id.push(new.id.as_str());
            }
        }
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO contacts (id, body, updated_at) \
             SELECT * FROM unnest($1::text[], $2::jsonb[], $3::timestamptz[]) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at",
        )
        .await?;
    tx.execute(&st, &[&ids, &bodies, &updated]).await?;
    if !del_ch.is_empty() {
        let st = tx
            .prepare_cached(
                "DELETE FROM contact_addresses a USING unnest($1::text[], $2::text[], $3::text[]) AS d(channel, address, contact_id) \
                 WHERE a.channel = d.channel AND a.address = d.address AND a.contact_id = d.contact_id",
            )
            .await?;
        tx.execute(&st, &[&del_ch, &del_addr, &del_id]).await?;
    }
    if !add_ch.is_empty() {
        let st = tx
            .prepare_cached(
                "INSERT INTO contact_addresses (channel, address, contact_id) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&st, &[&add_ch, &add_addr, &add_id]).await?;
    }
    Ok(())
}

/// What an erasure leaves of a notification: the bare record, so that ids handed out stay
/// resolvable, without its content or its contact, and never tried again (as the embedded
/// store does).
pub(crate) fn erase_content(n: &mut Notification, now: Timestamp) {
    if !n.status.is_final() {
        n.status = Status::Cancelled;
    }
    n.next_attempt_at = None;
    n.text = String::new();
    n.subject = None;
    n.html = None;
    n.whatsapp_template = None;
    n.contact_id = String::new();
    n.updated_at = now;
}

/// The PostgreSQL store: one handle per gateway instance (its claims are its own).
pub struct PgStore {
    pool: Pool,
    location: String,
    /// Who this handle's claims belong to (`queue.owner`).
    owner: String,
    lease: Duration,
    accepts: mpsc::UnboundedSender<accept::Request>,
    saves: mpsc::UnboundedSender<save::Request>,
    reads: mpsc::UnboundedSender<reads::Request>,
    /// Bumped by every local write to the queue: a cached depth is reused only while unchanged.
    queue_writes: AtomicU64,
    depth: Mutex<Option<(Instant, u64, u64)>>,
    /// Where the database is (the listener connects outside the pool).
    target: Target,
    /// `LISTEN`/`NOTIFY` between instances ([`announce`]).
    announcer: announce::Announcer,
    /// What this handle did with the database ([`tally`]).
    tally: Arc<tally::Tally>,
}

impl PgStore {
    /// Applies the schema migrations (under an advisory lock), then connects the pool. An
    /// unreachable database or a schema newer than this binary is an error.
    pub async fn open(options: &PgOptions) -> StoreResult<PgStore> {
        let target = Target::parse(&options.url)?;
        schema::migrate(&target).await?;
        Self::connect_target(target, options).await
    }

    /// Connects without migrating; refuses a database whose schema is not this binary's.
    pub async fn connect(options: &PgOptions) -> StoreResult<PgStore> {
        let target = Target::parse(&options.url)?;
        match schema::state(&target).await? {
            SchemaState::Current => {}
            SchemaState::Behind { found } => {
                return Err(StoreError::Database {
                    location: target.location.clone(),
                    source: DbFailure::message(format!(
                        "the schema is version {found}, this Lifeboat needs {KNOWN_VERSION}: run `lifeboat migrate`"
                    )),
                })
            }
            SchemaState::Ahead { found } => {
                return Err(StoreError::SchemaTooNew {
                    found,
                    known: KNOWN_VERSION,
                })
            }
        }
        Self::connect_target(target, options).await
    }

    async fn connect_target(target: Target, options: &PgOptions) -> StoreResult<PgStore> {
        let pool = target.pool(options.pool)?;
        let location = target.location.clone();
        // A first connection now: an unreachable database is an error at start.
        {
            let client = pool
                .get()
                .await
                .map_err(|e| Fail::from(e).into_store(&location))?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| Fail::from(e).into_store(&location))?;
        }
        let tally = Arc::new(tally::Tally::default());
        let accepts = accept::start(
            pool.clone(),
            location.clone(),
            accept::COMMITTERS,
            tally.clone(),
        );
        let saves = save::start(pool.clone(), location.clone(), save::SAVERS, tally.clone());
        let reads = reads::start(
            pool.clone(),
            location.clone(),
            reads::READERS,
            tally.clone(),
        );
        Ok(PgStore {
            pool,
            location,
            owner: uuid::Uuid::new_v4().simple().to_string(),
            lease: options.lease,
            accepts,
            saves,
            reads,
            queue_writes: AtomicU64::new(0),
            depth: Mutex::new(None),
            target,
            announcer: announce::Announcer::default(),
            tally,
        })
    }

    /// Applies the schema migrations and says from which version to which.
    pub async fn migrate(options: &PgOptions) -> StoreResult<schema::Migrated> {
        schema::migrate(&Target::parse(&options.url)?).await
    }

    /// How the database's schema compares with this binary's (it must be reachable).
    pub async fn schema_state(options: &PgOptions) -> StoreResult<SchemaState> {
        schema::state(&Target::parse(&options.url)?).await
    }

    /// Where the store is, for logs (no password).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// `pg_notify(channel, '<owner> <what>')` on a pooled connection, committed at once.
    async fn notify(&self, channel: &'static str, what: &str) -> StoreResult<()> {
        let payload = announce::payload(&self.owner, what);
        self.call("announcing to the other instances", async {
            let client = self.client().await?;
            let st = client.prepare_cached("SELECT pg_notify($1, $2)").await?;
            client.query(&st, &[&channel, &payload]).await?;
            Ok(())
        })
        .await
    }

    /// Runs `work` with a bound on its time, telling its failure as a [`StoreError`].
    async fn call<T>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T>>,
    ) -> StoreResult<T> {
        self.call_within(CALL_TIMEOUT, what, work).await
    }

    /// [`call`](Self::call) with another bound.
    async fn call_within<T>(
        &self,
        bound: Duration,
        what: &'static str,
        work: impl Future<Output = Result<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(bound, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into_store(&self.location)),
            Err(_) => Err(Fail::Timeout(what).into_store(&self.location)),
        }
    }

    /// Hands an accept to the grouped committers (`accept.rs`) and waits for its answer.
    async fn accept_grouped(
        &self,
        new: NewNotification,
        now: Timestamp,
        check_contact: bool,
    ) -> StoreResult<AcceptOutcome> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let stopped = || StoreError::Stopped {
            what: "the store's committer",
        };
        self.accepts
            .send(accept::Request {
                new,
                at: now,
                check_contact,
                answer,
            })
            .map_err(|_| stopped())?;
        let outcome = answered.await.map_err(|_| stopped())??;
        if outcome == AcceptOutcome::Created {
            self.queue_changed();
            self.announcer.work_accepted();
        }
        Ok(outcome)
    }

    /// Hands a contact read to the grouped readers (`reads.rs`) and waits for its answer.
    async fn read_contact<T>(
        &self,
        id: &str,
        want: reads::Want,
        answered: tokio::sync::oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        let stopped = || StoreError::Stopped {
            what: "the store's contact readers",
        };
        self.reads
            .send(reads::Request {
                id: id.to_string(),
                want,
            })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.tally.get(&self.pool).await
    }

    fn queue_changed(&self) {
        self.queue_writes.fetch_add(1, Ordering::Relaxed);
    }

    fn until(&self, now: Timestamp) -> Timestamp {
        crate::model::later(now, self.lease)
    }

    /// A notification as the API shows it: a claimed one still queued is `sending`. The record
    /// and its claim are read in one statement, so a record already saved is never shown as
    /// still being sent.
    async fn notification_as_seen(&self, id: &str) -> Result<Option<Notification>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT n.body, q.owner IS NOT NULL FROM notifications n \
                 LEFT JOIN queue q ON q.id = n.id WHERE n.id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&st, &[&id]).await? else {
            return Ok(None);
        };
        let mut n: Notification = body(&row, 0, id)?;
        let claimed: bool = row.try_get(1)?;
        if claimed && n.status == Status::Queued {
            n.status = Status::Sending;
        }
        Ok(Some(n))
    }

    /// Runs `work` in a transaction, again after a deadlock or serialisation failure.
    async fn transaction<T, F>(&self, mut work: F) -> Result<T>
    where
        F: for<'a> FnMut(
            &'a deadpool_postgres::Transaction<'a>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>,
    {
        let mut client = self.client().await?;
        let mut tries = 0;
        loop {
            let tx = client.transaction().await?;
            let outcome = work(&tx).await;
            let outcome = match outcome {
                Ok(v) => tx.commit().await.map(|()| v).map_err(Fail::from),
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Err(e) if e.retry_at_once() && tries < RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn erase_now(&self, id: &str, now: Timestamp) -> Result<bool> {
        let id = id.to_string();
        self.transaction(move |tx| {
            let id = id.clone();
            Box::pin(async move { erase_in(tx, &id, now).await })
        })
        .await
    }

    async fn edit_contact(
        &self,
        id: &str,
        create: Option<Timestamp>,
        edit: &mut Option<ContactEdit>,
    ) -> Result<Option<Contact>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_contacts(&tx, &[id]).await?;
        let st = tx
            .prepare_cached("SELECT body FROM contacts WHERE id = $1")
            .await?;
        let old: Option<Contact> = match tx.query_opt(&st, &[&id]).await? {
            Some(row) => Some(body(&row, 0, id)?),
            None => None,
        };
        let mut contact = match (&old, create) {
            (Some(c), _) => c.clone(),
            (None, Some(now)) => Contact::new(id, now),
            (None, None) => return Ok(None),
        };
        if let Some(edit) = edit.take() {
            edit(&mut contact);
        }
        contact.id = id.to_string();
        write_contacts(&tx, &[(old, contact.clone())]).await?;
        tx.commit().await?;
        Ok(Some(contact))
    }

    async fn claim_now(&self, now: Timestamp, limits: &ClaimLimits) -> Result<Vec<Notification>> {
        let client = self.client().await?;
        // Each lane's earliest due rows (its own limit, by its index), then the earliest of
        // those up to the total. Rows a lane gave that the total leaves out are only locked
        // until this statement's end.
        let st = client
            .prepare_cached(
                "WITH due AS MATERIALIZED ( \
                   SELECT d.id, d.available_at, d.owner \
                   FROM unnest($5::text[], $6::int8[]) AS l(lane, n) \
                   CROSS JOIN LATERAL ( \
                     SELECT id, available_at, owner FROM queue \
                     WHERE queue.lane = l.lane AND available_at <= $1 \
                     ORDER BY available_at, id LIMIT l.n FOR UPDATE SKIP LOCKED) d \
                   ORDER BY d.available_at, d.id LIMIT $2) \
                 UPDATE queue q SET available_at = $3, owner = $4 FROM due WHERE q.id = due.id \
                 RETURNING q.id, due.available_at, due.owner",
            )
            .await?;
        let (mut lanes, mut wants): (Vec<&str>, Vec<i64>) = (Vec::new(), Vec::new());
        for lane in Lane::ALL {
            let want = limits.of(lane);
            if want > 0 {
                lanes.push(lane.as_str());
                wants.push(i64::try_from(want).unwrap_or(i64::MAX));
            }
        }
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limits.total).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &st,
                &[&now, &limit, &self.until(now), &self.owner, &lanes, &wants],
            )
            .await?;
        tally::Tally::group(&self.tally.claims, &self.tally.claimed, rows.len());
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.queue_changed();
        let mut claimed: Vec<(Timestamp, String)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(0)?;
            let at: Timestamp = row.try_get(1)?;
            let before: Option<String> = row.try_get(2)?;
            if before.is_some() {
                tracing::warn!(notification = %id, "a claim's lease ended without its save; the notification is claimed again");
            }
            claimed.push((at, id));
        }
        claimed.sort();
        let ids: Vec<&str> = claimed.iter().map(|(_, id)| id.as_str()).collect();
        let st = client
            .prepare_cached("SELECT id, body FROM notifications WHERE id = ANY($1)")
            .await?;
        let mut bodies: HashMap<String, Notification> = HashMap::with_capacity(ids.len());
        for row in client.query(&st, &[&ids]).await? {
            let id: String = row.try_get(0)?;
            let n = body(&row, 1, &id)?;
            bodies.insert(id, n);
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut orphans = Vec::new();
        for id in ids {
            match bodies.remove(id) {
                Some(n) => out.push(n),
                // A queue row without its record cannot be sent; drop it.
                None => orphans.push(id),
            }
        }
        if !orphans.is_empty() {
            let st = client
                .prepare_cached("DELETE FROM queue WHERE id = ANY($1)")
                .await?;
            client.execute(&st, &[&orphans]).await?;
        }
        Ok(out)
    }

    async fn edit_now(&self, id: &str, edit: NotificationEdit) -> Result<Edited> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let st = tx
            .prepare_cached("SELECT body FROM notifications WHERE id = $1 FOR UPDATE")
            .await?;
        let Some(row) = tx.query_opt(&st, &[&id]).await? else {
            return Ok(Edited::Missing);
        };
        let old: Notification = body(&row, 0, id)?;
        let st = tx
            .prepare_cached("SELECT owner, available_at FROM queue WHERE id = $1 FOR UPDATE")
            .await?;
        if let Some(q) = tx.query_opt(&st, &[&id]).await? {
            let owner: Option<String> = q.try_get(0)?;
            let until: Timestamp = q.try_get(1)?;
            if owner.is_some() && until > Utc::now() {
                return Ok(Edited::Claimed);
            }
        }
        let mut n = old.clone();
        edit(&mut n);
        n.id = old.id.clone();
        if n == old {
            return Ok(Edited::Done(Box::new(n)));
        }
        let st = tx
            .prepare_cached(
                "UPDATE notifications SET body = $2, status = $3, contact_id = $4, updated_at = $5 WHERE id = $1",
            )
            .await?;
        tx.execute(
            &st,
            &[
                &id,
                &Json(&n),
                &n.status.as_str(),
                &n.contact_id,
                &n.updated_at,
            ],
        )
        .await?;
        save::index_message_ids(&tx, std::slice::from_ref(&n)).await?;
        match n.queue_due() {
            Some(due) => {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO queue (id, available_at, owner, lane) VALUES ($1, $2, NULL, $3) \
                         ON CONFLICT (id) DO UPDATE SET available_at = EXCLUDED.available_at, owner = NULL, \
                         lane = EXCLUDED.lane",
                    )
                    .await?;
                tx.execute(&st, &[&id, &ms(due), &Lane::of(&n).as_str()])
                    .await?;
            }
            None => {
                let st = tx.prepare_cached("DELETE FROM queue WHERE id = $1").await?;
                tx.execute(&st, &[&id]).await?;
            }
        }
        tx.commit().await?;
        self.queue_changed();
        Ok(Edited::Done(Box::new(n)))
    }

    async fn list_now(&self, query: &ListQuery) -> Result<(Vec<Notification>, Option<String>)> {
        let limit = query.limit.max(1);
        let client = self.client().await?;
        // The status filter is on the status as shown: `sending` is a queued one claimed.
        let (status, claimed): (Option<&str>, Option<bool>) = match query.status {
            None => (None, None),
            Some(Status::Sending) => (Some("queued"), Some(true)),
            Some(Status::Queued) => (Some("queued"), Some(false)),
            Some(s) => (Some(s.as_str()), None),
        };
        let sql = match &query.contact_id {
            Some(_) => {
                "SELECT n.id, n.body, q.owner IS NOT NULL FROM notifications n LEFT JOIN queue q ON q.id = n.id \
                 WHERE n.contact_id = $1 AND ($2::text IS NULL OR n.id < $2) \
                 AND ($3::text IS NULL OR n.status = $3) \
                 AND ($4::bool IS NULL OR (q.owner IS NOT NULL) = $4) \
                 ORDER BY n.id DESC LIMIT $5"
            }
            None => {
                "SELECT n.id, n.body, q.owner IS NOT NULL FROM notifications n LEFT JOIN queue q ON q.id = n.id \
                 WHERE ($1::text IS NULL OR true) AND ($2::text IS NULL OR n.id < $2) \
                 AND ($3::text IS NULL OR n.status = $3) \
                 AND ($4::bool IS NULL OR (q.owner IS NOT NULL) = $4) \
                 ORDER BY n.id DESC LIMIT $5"
            }
        };
        let st = client.prepare_cached(sql).await?;
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = client
            .query(
                &st,
                &[&query.contact_id, &query.cursor, &status, &claimed, &fetch],
            )
            .await?;
        let mut out = Vec::with_capacity(limit);
        let more = rows.len() > limit;
        for row in rows.iter().take(limit) {
            let id: String = row.try_get(0)?;
            let mut n: Notification = body(row, 1, &id)?;
            let is_claimed: bool = row.try_get(2)?;
            if is_claimed && n.status == Status::Queued {
                n.status = Status::Sending;
            }
            out.push(n);
        }
        let next = if more {
            out.last().map(|n| n.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }

    async fn depth_now(&self) -> Result<u64> {
        let writes = self.queue_writes.load(Ordering::Relaxed);
        if let Some((at, depth, seen)) = *self.depth.lock().unwrap_or_else(|p| p.into_inner()) {
            if seen == writes && at.elapsed() < DEPTH_CACHE {
                return Ok(depth);
            }
        }
        let client = self.client().await?;
        let st = client
            .prepare_cached("SELECT count(*) FROM queue WHERE owner IS NULL")
            .await?;
        let count: i64 = client.query_one(&st, &[]).await?.try_get(0)?;
        let depth = count.max(0) as u64;
        *self.depth.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), depth, writes));
        Ok(depth)
    }
}

/// The erasure of contact `id` inside transaction `tx` (see [`Store::erase_contact`]).
async fn erase_in(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    now: Timestamp,
) -> Result<bool> {
    lock_contacts(tx, &[id]).await?;
    let st = tx
        .prepare_cached("DELETE FROM contacts WHERE id = $1 RETURNING id")
        .await?;
    let existed = tx.query_opt(&st, &[&id]).await?.is_some();
    let st = tx
        .prepare_cached(
            "DELETE FROM contact_addresses WHERE contact_id = $1 RETURNING channel, address",
        )
        .await?;
    let mut whatsapp: Option<String> = None;
    for row in tx.query(&st, &[&id]).await? {
        let channel: String = row.try_get(0)?;
        if channel == ChannelKind::Whatsapp.as_str() {
            whatsapp = Some(row.try_get(1)?);
        }
    }
    let st = tx
        .prepare_cached("DELETE FROM consent_history WHERE contact_id = $1")
        .await?;
    let changes = tx.execute(&st, &[&id]).await?;

    // Its notifications, locked (a save racing the erasure waits, then stores the erased
    // form; one applied before is read here, its indexes and queue row removed).
    let st = tx
        .prepare_cached(
            "SELECT id, body FROM notifications WHERE contact_id = $1 ORDER BY id FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&st, &[&id]).await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    for row in &rows {
        let nid: String = row.try_get(0)?;
        let mut n: Notification = body(row, 1, &nid)?;
        erase_content(&mut n, now);
        statuses.push(n.status.as_str());
        bodies.push(n);
        ids.push(nid);
    }
    if !ids.is_empty() {
        let json: Vec<Json<&Notification>> = bodies.iter().map(Json).collect();
        let st = tx
            .prepare_cached(
                "UPDATE notifications n SET body = u.body, status = u.status, contact_id = '', \
                 erased = true, updated_at = $4 \
                 FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS u(id, status, body) WHERE n.id = u.id",
            )
            .await?;
        tx.execute(&st, &[&ids, &statuses, &json, &now]).await?;
        let st = tx
            .prepare_cached("DELETE FROM message_ids WHERE notification_id = ANY($1)")
            .await?;
        tx.execute(&st, &[&ids]).await?;
        let st = tx
            .prepare_cached("DELETE FROM queue WHERE id = ANY($1)")
            .await?;
        tx.execute(&st, &[&ids]).await?;
    }
    let mentions = kv::erase_mentions(tx, id, whatsapp.as_deref()).await?;
    if !existed && changes == 0 && mentions == 0 {
        // Nothing of this contact: leave everything as it was (the caller rolls back).
        return Err(Fail::Store(StoreError::Stopped {
            what: NOTHING_TO_ERASE,
        }));
    }
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    let tombstone = serde_json::json!({ "erased_at": now, "consent_changes": changes });
    let st = tx
        .prepare_cached(
            "INSERT INTO tombstones (key, body) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body",
        )
        .await?;
    tx.execute(&st, &[&digest, &Json(&tombstone)]).await?;
    Ok(true)
}

/// Marks an erasure that found nothing (rolled back, answered `false`).
const NOTHING_TO_ERASE: &str = "(nothing to erase)";

#[async_trait]
impl Store for PgStore {
    async fn upsert_contact(
        &self,
        id: &str,
        patch: &ContactPatch,
        now: Timestamp,
    ) -> StoreResult<Contact> {
        let patch = patch.clone();
        let mut edit: Option<ContactEdit> =
            Some(Box::new(move |c: &mut Contact| c.apply(&patch, now)));
        let contact = self
            .call(
                "saving a contact",
                self.edit_contact(id, Some(now), &mut edit),
            )
            .await?;
        Ok(contact.expect("created when missing"))
    }

    async fn get_contact(&self, id: &str) -> StoreResult<Option<Contact>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.read_contact(id, reads::Want::Body(answer), answered)
            .await
    }

    async fn contact_exists(&self, id: &str) -> StoreResult<bool> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.read_contact(id, reads::Want::Exists(answer), answered)
            .await
    }

    async fn erase_contact(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        match self
            .call("erasing a contact", self.erase_now(id, now))
            .await
        {
            Err(StoreError::Stopped { what }) if what == NOTHING_TO_ERASE => Ok(false),
            other => {
                self.queue_changed();
                other
            }
        }
    }

    async fn set_consent(
        &self,
        contact_id: &str,
        channel: ChannelKind,
        consent: Consent,
    ) -> StoreResult<Option<Consent>> {
        self.call("saving a consent", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            lock_contacts(&tx, &[contact_id]).await?;
            let st = tx
                .prepare_cached("SELECT body FROM contacts WHERE id = $1")
                .await?;
            let Some(row) = tx.query_opt(&st, &[&contact_id]).await? else {
                return Ok(None);
            };
            let mut contact: Contact = body(&row, 0, contact_id)?;
            contact.consents.insert(channel, consent.clone());
            contact.updated_at = consent.at;
            let st = tx
                .prepare_cached("UPDATE contacts SET body = $2, updated_at = $3 WHERE id = $1")
                .await?;
            tx.execute(&st, &[&contact_id, &Json(&contact), &contact.updated_at])
                .await?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO consent_history (contact_id, channel, body) VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&st, &[&contact_id, &channel.as_str(), &Json(&consent)])
                .await?;
            tx.commit().await?;
            Ok(Some(consent))
        })
        .await
    }

    async fn consent_history(
        &self,
        contact_id: &str,
        channel: ChannelKind,
    ) -> StoreResult<Vec<Consent>> {
        self.call("reading a consent history", async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT body FROM consent_history WHERE contact_id = $1 AND channel = $2 ORDER BY seq",
                )
                .await?;
            let rows = client.query(&st, &[&contact_id, &channel.as_str()]).await?;
            rows.iter()
                .map(|row| body(row, 0, contact_id))
                .collect()
        })
        .await
    }

    async fn accept(&self, new: NewNotification, now: Timestamp) -> StoreResult<AcceptOutcome> {
        self.accept_grouped(new, now, false).await
    }

    async fn accept_known(
        &self,
        new: NewNotification,
        now: Timestamp,
    ) -> StoreResult<AcceptOutcome> {
        let check = new.needs_known_contact();
        self.accept_grouped(new, now, check).await
    }

    async fn get_notification(&self, id: &str) -> StoreResult<Option<Notification>> {
        self.call("reading a notification", self.notification_as_seen(id))
            .await
    }

    async fn list_notifications(
        &self,
        query: &ListQuery,
    ) -> StoreResult<(Vec<Notification>, Option<String>)> {
        self.call("listing notifications", self.list_now(query))
            .await
    }

    async fn claim_lanes(
        &self,
        now: Timestamp,
        limits: &ClaimLimits,
    ) -> StoreResult<Vec<Notification>> {
        if limits.total == 0 {
            return Ok(Vec::new());
        }
        self.call("claiming due notifications", self.claim_now(now, limits))
            .await
    }

    async fn renew_claims(&self, ids: &[String], now: Timestamp) -> StoreResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let until = self.until(now);
        self.call("renewing claims", async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "UPDATE queue SET available_at = GREATEST(available_at, $2) \
                     WHERE id = ANY($1) AND owner = $3",
                )
                .await?;
            let mut tries = 0;
            loop {
                match client.execute(&st, &[&ids, &until, &self.owner]).await {
                    Ok(n) => {
                        tally::Tally::group(&self.tally.renewals, &self.tally.renewed, n as usize);
                        return Ok(n as usize);
                    }
                    Err(e) => {
                        let e = Fail::from(e);
                        if e.retry_at_once() && tries < RETRIES {
                            tries += 1;
                            continue;
                        }
                        return Err(e);
                    }
                }
            }
        })
        .await
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    async fn save_progress(&self, n: &Notification) -> StoreResult<()> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let stopped = || StoreError::Stopped {
            what: "the store's saver",
        };
        self.saves
            .send(save::Request {
                n: n.clone(),
                answer,
            })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())??;
        self.queue_changed();
        Ok(())
    }

    async fn edit_notification(&self, id: &str, edit: NotificationEdit) -> StoreResult<Edited> {
        self.call("editing a notification", self.edit_now(id, edit))
            .await
    }

    async fn find_by_message_id(
        &self,
        channel: ChannelKind,
        message_id: &str,
    ) -> StoreResult<Option<String>> {
        self.call("finding a message id", async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT notification_id FROM message_ids WHERE channel = $1 AND message_id = $2",
                )
                .await?;
            Ok(client
                .query_opt(&st, &[&channel.as_str(), &message_id])
                .await?
                .map(|row| row.try_get(0))
                .transpose()?)
        })
        .await
    }

    async fn next_due(&self) -> StoreResult<Option<Timestamp>> {
        self.call("reading the queue", async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT min(d.available_at) FROM unnest($1::text[]) AS l(lane) \
                     CROSS JOIN LATERAL (SELECT available_at FROM queue \
                       WHERE queue.lane = l.lane AND owner IS NULL \
                       ORDER BY available_at LIMIT 1) d",
                )
                .await?;
            let lanes: Vec<&str> = Lane::ALL.iter().map(|lane| lane.as_str()).collect();
            Ok(client.query_one(&st, &[&lanes]).await?.try_get(0)?)
        })
        .await
    }

    async fn queue_depth(&self) -> StoreResult<u64> {
        self.call("counting the queue", self.depth_now()).await
    }

    fn announcements(&self) -> Option<Announcements> {
        Some(self.announcer.announcements())
    }

    fn database_status(&self) -> Option<DatabaseStatus> {
        let pool = self.pool.status();
        let a = &self.announcer;
        Some(DatabaseStatus {
            pool_max: pool.max_size,
            pool_open: pool.size,
            pool_available: pool.available,
            pool_waiting: pool.waiting,
            listening: a.listening(),
            states_sent: a.states_sent.load(Ordering::Relaxed),
            work_sent: a.work_sent.load(Ordering::Relaxed),
            states_heard: a.states_heard.load(Ordering::Relaxed),
            work_heard: a.work_heard.load(Ordering::Relaxed),
            listener_reconnects: a.reconnects.load(Ordering::Relaxed),
            work: self.tally.figures(),
        })
    }

    async fn check(&self) -> StoreResult<()> {
        self.call("checking the database", async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    async fn channel_states(&self) -> StoreResult<BTreeMap<ChannelKind, ChannelStatus>> {
        self.call("reading channel states", async {
            let client = self.client().await?;
            let st = client
                .prepare_cached("SELECT channel, body FROM channel_states")
                .await?;
            let mut out = BTreeMap::new();
            for row in client.query(&st, &[]).await? {
                let name: String = row.try_get(0)?;
                if let Ok(kind) = name.parse::<ChannelKind>() {
                    out.insert(kind, body(&row, 1, &name)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn save_channel_state(
        &self,
        kind: ChannelKind,
        status: &ChannelStatus,
    ) -> StoreResult<()> {
        // The announcement is sent by the statement that stores the state: delivered at its
        // commit, and only if it commits (the other instances never hear of a state that is
        // not durable, nor miss one that is, while listening).
        let payload = announce::payload(&self.owner, kind.as_str());
        self.call("saving a channel state", async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "WITH saved AS ( \
                       INSERT INTO channel_states (channel, body) VALUES ($1, $2) \
                       ON CONFLICT (channel) DO UPDATE SET body = EXCLUDED.body RETURNING channel) \
                     SELECT pg_notify($3, $4) FROM saved",
                )
                .await?;
            client
                .query(
                    &st,
                    &[
                        &kind.as_str(),
                        &Json(status),
                        &announce::STATES_CHANNEL,
                        &payload,
                    ],
                )
                .await?;
            Ok(())
        })
        .await?;
        self.announcer.states_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn update_contact(&self, id: &str, edit: ContactEdit) -> StoreResult<Option<Contact>> {
        let mut edit = Some(edit);
        self.call("saving a contact", self.edit_contact(id, None, &mut edit))
            .await
    }

    async fn find_contacts_by_address(
        &self,
        channel: ChannelKind,
        address: &str,
    ) -> StoreResult<Vec<Contact>> {
        self.call("finding contacts by address", async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT c.id, c.body FROM contact_addresses a JOIN contacts c ON c.id = a.contact_id \
                     WHERE a.channel = $1 AND a.address = $2 ORDER BY a.contact_id",
                )
                .await?;
            let mut out = Vec::new();
            for row in client.query(&st, &[&channel.as_str(), &address]).await? {
                let id: String = row.try_get(0)?;
                let c: Contact = body(&row, 1, &id)?;
                if c.address(channel) == Some(address) {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.call("reading a record", kv::get(self, namespace, key))
            .await
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.call(
            "writing a record",
            kv::put(self, namespace, key, value, Durability::Durable),
        )
        .await
    }

    async fn kv_insert_new(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<bool> {
        self.call(
            "writing a record",
            kv::insert_new(self, namespace, key, value),
        )
        .await
    }

    async fn kv_put_relaxed(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()> {
        self.call(
            "writing a record",
            kv::put(self, namespace, key, value, Durability::Relaxed),
        )
        .await
    }

    async fn kv_put_many_relaxed(
        &self,
        namespace: &str,
        records: &[(String, Vec<u8>)],
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.call(
            "writing records",
            kv::put_many_relaxed(self, namespace, records),
        )
        .await
    }

    async fn kv_update(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
        durability: Durability,
    ) -> StoreResult<Option<Vec<u8>>> {
        self.call(
            "updating a record",
            kv::update(self, namespace, key, edit, durability, None),
        )
        .await
        .map(|(after, _)| after)
    }

    async fn kv_update_announced(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
    ) -> StoreResult<Option<Vec<u8>>> {
        let payload = announce::payload(&self.owner, &announce::record_what(namespace));
        let (after, announced) = self
            .call(
                "updating a record",
                kv::update(
                    self,
                    namespace,
                    key,
                    edit,
                    Durability::Durable,
                    Some((announce::STATES_CHANNEL, &payload)),
                ),
            )
            .await?;
        if announced {
            self.announcer.states_sent.fetch_add(1, Ordering::Relaxed);
        }
        self.announcer.record_changed();
        Ok(after)
    }

    fn records_changed(&self) -> u64 {
        self.announcer.records_changed()
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()> {
        self.call(
            "deleting a record",
            kv::delete(self, namespace, key, Durability::Durable),
        )
        .await
    }

    async fn kv_delete_relaxed(&self, namespace: &str, key: &str) -> StoreResult<()> {
        self.call(
            "deleting a record",
            kv::delete(self, namespace, key, Durability::Relaxed),
        )
        .await
    }

    async fn kv_scan(&self, namespace: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.call("scanning records", kv::scan(self, namespace, prefix))
            .await
    }

    async fn kv_scan_page(
        &self,
        namespace: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.call(
            "scanning records",
            kv::scan_page(self, namespace, prefix, after, limit),
        )
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every write is committed before its call returns (relaxed ones within moments).
        Ok(())
    }
}
