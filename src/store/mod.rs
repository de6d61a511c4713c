//! Where Lifeboat keeps everything: contacts and consents (with their append-only history),
//! notifications with their attempts, the queue of due work, idempotency keys and channel states.
//!
//! The [`Store`] trait is shaped for a shared SQL database as much as for the embedded sled
//! default: whole-record reads and writes, atomic "accept" and "claim" operations, no
//! iterators crossing the boundary. Edits (`update_contact`, `edit_notification`, `kv_update`)
//! pass a pure function of the current record, which a backend may run more than once (a
//! compare-and-set retry) and applies atomically: in SQL, a `SELECT ... FOR UPDATE` and an
//! `UPDATE` in one transaction. Two backends implement it: `sled/` (one process, the default) and
//! `postgres/` (several gateway instances on one database; claims with `FOR UPDATE SKIP LOCKED`
//! and a lease). [`open`] picks one from `[store]`. Both run the contract tests of `suite.rs`
//! (`store_suite!`, `portable_suite!`).

#[cfg(test)]
/// Instantiates each named test (an `async fn(Arc<S: Store>)` of the calling module) once on a
/// fresh embedded store and once on a fresh PostgreSQL database (`LIFEBOAT_TEST_DATABASE_URL`):
/// the two-instances-on-one-store tests of `policy` and `states`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = crate::store::SledStore::open(&dir.path().join("db"), 8).unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::store::postgres::testdb::TestDb::create().await;
                    let store = crate::store::PgStore::open(&db.options(crate::store::DEFAULT_LEASE))
                        .await
                        .unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}
#[cfg(test)]
pub(crate) use on_both_stores;

mod group_commit;
mod journal;
pub mod lanes;
pub mod namespaces;
mod open;
pub mod portable;
pub mod postgres;
mod retention;
mod sled;
#[cfg(test)]
mod suite;
mod threads;

use std::collections::BTreeMap;

use async_trait::async_trait;
use lifeboat_channel::ChannelKind;

use crate::model::{
    ChannelStatus, Consent, Contact, ContactPatch, Notification, Status, Timestamp,
};

pub use self::sled::{SledStore, DEFAULT_LEASE};
pub use crate::config::RetentionConfig;
pub use lanes::{ClaimLimits, Lane};
pub use open::{open, open_idle, OpenedStore};
pub use postgres::PgStore;
pub use retention::{Purged, Purger};

/// A failure of the store itself (not of the caller's input). Each variant keeps its cause as
/// its `source`; the message repeats it too, because operators read errors at start-up and in
/// the CLI by their message alone (see [`error_chain`] for logs).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the data folder {path} is already in use by another Lifeboat process (only one process can open an embedded store)")]
    Locked {
        path: String,
        #[source]
        source: ::sled::Error,
    },
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: OpenCause,
    },
    /// sled failed to read or write (the disk, or sled's own files).
    #[error("store I/O failed: {0}")]
    Io(#[from] ::sled::Error),
    /// A file the store keeps beside sled (the accept journal) could not be written.
    #[error("{what} failed: {source}")]
    File {
        what: &'static str,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    #[error("stored record {key} cannot be read: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A thread of the store (committer, saver) is gone: the store is shutting down. The only
    /// store error worth retrying.
    #[error("{what} has stopped")]
    Stopped { what: &'static str },
    /// A thread of the store could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The database cannot serve right now: connection refused or lost, no pooled connection
    /// free within the wait, a statement timeout, the server shutting down. A retry may
    /// succeed. `location` is the URL without its password.
    #[error("the database {location} is unavailable: {source}")]
    Unavailable {
        location: String,
        #[source]
        source: DbFailure,
    },
    /// The database refused a statement for another reason (not worth retrying).
    #[error("the database {location} failed: {source}")]
    Database {
        location: String,
        #[source]
        source: DbFailure,
    },
    /// The database's schema was made by a newer Lifeboat than this one.
    #[error("the database schema is version {found}, newer than this Lifeboat knows (version {known}): run a Lifeboat at least as new as the one that migrated it")]
    SchemaTooNew { found: i32, known: i32 },
}

/// What a database client reported (shared, so that one failure of a group commit can be
/// answered to each of its callers). Its text never holds the database password.
#[derive(Debug, Clone)]
pub struct DbFailure(pub std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl DbFailure {
    /// A failure described by a message alone.
    pub fn message(text: impl Into<String>) -> DbFailure {
        DbFailure(std::sync::Arc::new(std::io::Error::other(text.into())))
    }
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenCause {
    #[error(transparent)]
    File(#[from] std::io::Error),
    #[error(transparent)]
    Sled(#[from] ::sled::Error),
}

impl StoreError {
    /// Whether the store is unavailable for a moment (shutting down, the database out of
    /// reach) rather than broken: a request may be retried.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Stopped { .. } | StoreError::Unavailable { .. }
        )
    }
}

/// `e` and its causes, one after another, skipping a cause whose words its error already
/// repeats: for logging an error once, whole.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let words = c.to_string();
        if !out.contains(&words) {
            out.push_str(": ");
            out.push_str(&words);
        }
        cause = c.source();
    }
    out
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An edit applied to a stored contact under its lock (no I/O inside, it may not block).
pub type ContactEdit = Box<dyn FnOnce(&mut Contact) + Send>;

/// An edit applied to a stored notification (no I/O inside, it may not block).
pub type NotificationEdit = Box<dyn FnOnce(&mut Notification) + Send>;

/// A read-modify-write of one kv record: given what the record holds (`None`: nothing), what it
/// should hold (`None`: delete it). It may run more than once (a compare-and-set retry when
/// another writer got in between), so it must only compute, no I/O and no side effects.
pub type KvEdit = Box<dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send>;

/// When a write must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns (like [`Store::kv_put`]).
    Durable,
    /// With the store's next flush (like [`Store::kv_put_relaxed`]).
    Relaxed,
}

/// What `edit_notification` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Edited {
    /// No such notification.
    Missing,
    /// A worker holds it right now; nothing was changed (try again shortly).
    Claimed,
    /// The notification after the edit (stored if the edit changed it).
    Done(Box<Notification>),
}

/// The idempotency key of a request and a fingerprint of its body.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

/// A notification to accept, with the contact addresses it carries.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewNotification {
    pub notification: Notification,
    pub contact_patch: Option<ContactPatch>,
    pub idempotency: Option<IdempotencyKey>,
}

impl NewNotification {
    /// Without a patch that changes something, the contact must already exist
    /// ([`Store::accept_known`]).
    pub fn needs_known_contact(&self) -> bool {
        self.contact_patch.as_ref().is_none_or(|p| p.is_empty())
    }
}

/// What `accept` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Stored and queued; durable.
    Created,
    /// The same key and body was accepted before (within 24 h): nothing new stored.
    Duplicate { id: String },
    /// The same key came with a different body.
    Conflict { id: String },
    /// [`Store::accept_known`] only: no patch and no such contact; nothing stored.
    UnknownContact,
}

/// Filters for listing notifications, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub contact_id: Option<String>,
    pub status: Option<Status>,
    pub limit: usize,
    /// The last id of the previous page.
    pub cursor: Option<String>,
}

pub use crate::config::retention::IDEMPOTENCY_WINDOW_SECS;

/// What a shared store tells this instance about the others (docs/fleet.md): `states` fires
/// when another instance stored a channel state change, `work` when another instance accepted
/// notifications (at most about once per 100 ms per instance). Plain wake-ups, no payload:
/// whoever waits re-reads the store. A store that announces nothing (the embedded one: one
/// process) has none ([`Store::announcements`] is `None`). `states` also fires for another
/// instance's announced record ([`Store::kv_update_announced`]: the quality signal, read with
/// the states).
#[derive(Clone, Debug)]
pub struct Announcements {
    pub states: std::sync::Arc<tokio::sync::Notify>,
    pub work: std::sync::Arc<tokio::sync::Notify>,
}

/// A database store's figures for `/readyz` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseStatus {
    /// The pool's configured size (`[store] pool`).
    pub pool_max: usize,
    /// Connections open now.
    pub pool_open: usize,
    /// Open connections free now.
    pub pool_available: usize,
    /// Callers waiting for a connection now.
    pub pool_waiting: usize,
    /// Whether the dedicated listener connection is up and listening.
    pub listening: bool,
    /// Announcements this instance sent and heard (other instances' only), and how often the
    /// listener connection had to be made again.
    pub states_sent: u64,
    pub work_sent: u64,
    pub states_heard: u64,
    pub work_heard: u64,
    pub listener_reconnects: u64,
    /// What this instance did with the database since it started, by name: grouped
    /// transactions and the requests they carried (`accept_groups`/`accepts`,
    /// `save_groups`/`saves`, `read_groups`/`reads`), claims and rows claimed, lease renewals
    /// and rows renewed, connections taken from the pool and the microseconds spent waiting.
    pub work: Vec<(&'static str, u64)>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates the contact if needed and applies the patch.
    async fn upsert_contact(
        &self,
        id: &str,
        patch: &ContactPatch,
        now: Timestamp,
    ) -> StoreResult<Contact>;
    async fn get_contact(&self, id: &str) -> StoreResult<Option<Contact>>;
    /// Whether the contact exists, without reading it (the alerts and [`Store::accept_known`]'s
    /// default need only that).
    async fn contact_exists(&self, id: &str) -> StoreResult<bool>;
    /// Erases addresses, consents and pending notifications; the consent history keeps only an
    /// anonymised tombstone. Returns whether the contact existed.
    async fn erase_contact(&self, id: &str, now: Timestamp) -> StoreResult<bool>;
    /// Sets the current consent and appends it to the history, atomically. `None` if the
    /// contact does not exist.
    async fn set_consent(
        &self,
        contact_id: &str,
        channel: ChannelKind,
        consent: Consent,
    ) -> StoreResult<Option<Consent>>;
    /// Every consent change on a channel, oldest first.
    async fn consent_history(
        &self,
        contact_id: &str,
        channel: ChannelKind,
    ) -> StoreResult<Vec<Consent>>;

    /// Stores and queues a notification. Returns only once it is durable (committed);
    /// concurrent callers share one flush (one group commit). Idempotency is a uniqueness rule
    /// of the store, not of one process: the same key accepted from two tasks or two
    /// instances at the same moment creates one notification (`Created` once, `Duplicate` or
    /// `Conflict` for the others).
    async fn accept(&self, new: NewNotification, now: Timestamp) -> StoreResult<AcceptOutcome>;
    /// [`Store::accept`] as the API needs it: a notification without a contact patch (none,
    /// or one that changes nothing) needs its contact to exist; when it does not, nothing is
    /// stored (no idempotency key either) and the answer is `UnknownContact`. The default
    /// asks [`Store::contact_exists`] first: two calls, fine where a read is a lookup in
    /// memory-mapped pages (the embedded store). PostgreSQL makes the check part of the
    /// accept's statement: one round trip per group instead of a read group and an accept group.
    async fn accept_known(
        &self,
        new: NewNotification,
        now: Timestamp,
    ) -> StoreResult<AcceptOutcome> {
        if new.needs_known_contact() && !self.contact_exists(&new.notification.contact_id).await? {
            return Ok(AcceptOutcome::UnknownContact);
        }
        self.accept(new, now).await
    }
    async fn get_notification(&self, id: &str) -> StoreResult<Option<Notification>>;
    /// One page, newest first, and the cursor of the next page.
    async fn list_notifications(
        &self,
        query: &ListQuery,
    ) -> StoreResult<(Vec<Notification>, Option<String>)>;

    /// Takes up to `limit` notifications due by `now` off the queue, each with a lease: no
    /// other claimer (another worker, another instance on the same store) gets it until the
    /// lease ends, at `now + self.lease()` unless [`Store::renew_claims`] extends it, or until
    /// `save_progress` releases it. A lease that ends without its save (a crash, a stuck or
    /// lost worker) leaves the notification claimable again, as it was: at least once.
    async fn claim_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<Notification>> {
        self.claim_lanes(now, &ClaimLimits::any(limit)).await
    }
    /// [`Store::claim_due`] with a limit per lane (the lane a notification waits in is
    /// [`Lane::of`] it, kept in step by every write that queues it): the earliest due of what
    /// each lane may give, at most `limits.total`. The dispatcher takes from a paced channel's
    /// lane only what the channel can send now.
    async fn claim_lanes(
        &self,
        now: Timestamp,
        limits: &ClaimLimits,
    ) -> StoreResult<Vec<Notification>>;
    /// Extends the leases of claims this store handle holds among `ids` to `now + lease()`,
    /// and says how many it still held (a lease that had already ended and was taken by
    /// another claimer is not renewed). The dispatcher calls it for everything it holds,
    /// about three times per lease.
    async fn renew_claims(&self, ids: &[String], now: Timestamp) -> StoreResult<usize>;
    /// How long a claim lasts without renewal (`[store] lease`, 30 s by default).
    fn lease(&self) -> std::time::Duration;
    /// Saves a claimed notification and releases the claim: back on the queue at
    /// [`Notification::queue_due`] if it has one (still queued, or sent with a receipt check
    /// pending), off the queue otherwise. Also keeps the index of provider message ids
    /// ([`Store::find_by_message_id`]) in step with its attempts.
    async fn save_progress(&self, n: &Notification) -> StoreResult<()>;
    /// Applies `edit` to a notification no worker has claimed (read-modify-write, atomic
    /// against claims: a SQL backend does it in one transaction with `FOR UPDATE`), keeps its
    /// queue entry in step with [`Notification::queue_due`] (never two entries), and stores it
    /// durably. For provider signals about a notification after its send (receipts, a late
    /// failure that must fall over).
    async fn edit_notification(&self, id: &str, edit: NotificationEdit) -> StoreResult<Edited>;
    /// The notification one of whose attempts got `message_id` from `channel` (a WhatsApp
    /// `wamid`), to tie a delivery receipt to it.
    async fn find_by_message_id(
        &self,
        channel: ChannelKind,
        message_id: &str,
    ) -> StoreResult<Option<String>>;
    /// When the earliest queued notification is due.
    async fn next_due(&self) -> StoreResult<Option<Timestamp>>;
    /// Notifications waiting on the queue (not counting claimed ones). May be a moment old
    /// (a shared database counts it at most about once a second).
    async fn queue_depth(&self) -> StoreResult<u64>;
    /// Whether the store can serve requests right now (for `/readyz`): the embedded store
    /// always can while open; a database store answers whether it is reachable.
    async fn check(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The wake-ups this store gives when other instances change channel states or accept
    /// work (see [`Announcements`]); `None` for a store only one process uses.
    fn announcements(&self) -> Option<Announcements> {
        None
    }

    /// The database's pool and listener figures (`None`: not a database store).
    fn database_status(&self) -> Option<DatabaseStatus> {
        None
    }

    async fn channel_states(&self) -> StoreResult<BTreeMap<ChannelKind, ChannelStatus>>;
    /// Saves a channel state durably (a state change is stored before it takes effect).
    async fn save_channel_state(
        &self,
        kind: ChannelKind,
        status: &ChannelStatus,
    ) -> StoreResult<()>;

    /// Applies `edit` to a contact (read-modify-write, atomic for that contact) and stores it
    /// durably, keeping the address index in step. `None` if the contact does not exist.
    async fn update_contact(&self, id: &str, edit: ContactEdit) -> StoreResult<Option<Contact>>;
    /// Every contact whose address on `channel` is `address` (several contacts may share one:
    /// a family's email, a shop's WhatsApp number), in contact id order. An opt-out is about
    /// the address, so it applies to all of them.
    async fn find_contacts_by_address(
        &self,
        channel: ChannelKind,
        address: &str,
    ) -> StoreResult<Vec<Contact>>;
    /// One contact holding `address` on `channel` (the most recently updated), for what needs
    /// only one (replies naming a state). Opt-outs use [`Store::find_contacts_by_address`].
    async fn find_contact_by_address(
        &self,
        channel: ChannelKind,
        address: &str,
    ) -> StoreResult<Option<Contact>> {
        Ok(self
            .find_contacts_by_address(channel, address)
            .await?
            .into_iter()
            .max_by_key(|c| c.updated_at))
    }

    /// Small records other modules keep (opt-in tokens, the Telegram update offset, ...),
    /// under a namespace. A SQL backend keeps them in one `(namespace, key, value)` table.
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Stores durably.
    async fn kv_put(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Stores durably only if `namespace`/`key` holds nothing yet, atomically (a SQL backend:
    /// `INSERT ... ON CONFLICT DO NOTHING`), and says whether it did. For "first time this
    /// provider event is seen" records shared by every instance.
    async fn kv_insert_new(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<bool>;
    /// Stores without waiting for the disk: the record is durable with the store's next
    /// flush (within about half a second; PostgreSQL: a commit with `synchronous_commit = off`),
    /// and a crash may lose the last moment's writes. Every reader sees it at once. For
    /// counters on the send path, where losing the last moment's counts in a crash is better
    /// than a flush per send.
    async fn kv_put_relaxed(&self, namespace: &str, key: &str, value: &[u8]) -> StoreResult<()>;
    /// [`Store::kv_put_relaxed`] of several records of one namespace at once: one statement
    /// on PostgreSQL (one round trip and one pooled connection, however many records), one by
    /// one on the embedded store (where a relaxed write is a memory write). For the events'
    /// due entries, one per endpoint of each event, written on the notification workers'
    /// path: each endpoint configured must not cost those workers another round trip.
    async fn kv_put_many_relaxed(
        &self,
        namespace: &str,
        records: &[(String, Vec<u8>)],
    ) -> StoreResult<()> {
        for (key, value) in records {
            self.kv_put_relaxed(namespace, key, value).await?;
        }
        Ok(())
    }
    /// Applies `edit` to `namespace`/`key` atomically and returns what the record holds after
    /// it: no concurrent write to that record, from this process or another instance on the
    /// same store, is lost. For counters and lists kept in one record (caps, risk figures).
    /// sled retries a compare-and-swap; a SQL backend does it in one transaction with
    /// `SELECT ... FOR UPDATE` (or a compare-and-set on the old value, retried).
    async fn kv_update(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
        durability: Durability,
    ) -> StoreResult<Option<Vec<u8>>>;
    /// A durable [`Store::kv_update`] that also tells the other instances sharing the store
    /// that a record of `namespace` changed, for records every instance caches and must see at
    /// once (the WhatsApp quality signal, the portfolio's restrictions and limit; docs/fleet.md).
    /// PostgreSQL sends `pg_notify('lifeboat_states', ...)` in the update's own transaction:
    /// heard at its commit and only if it commits, never when the edit left the record as it
    /// was. The others' listeners bump their [`Store::records_changed`] and fire
    /// [`Announcements::states`].
    async fn kv_update_announced(
        &self,
        namespace: &str,
        key: &str,
        edit: KvEdit,
    ) -> StoreResult<Option<Vec<u8>>>;
    /// How many announced record changes ([`Store::kv_update_announced`]) this handle knows
    /// of: its own, and on a shared store the other instances' it heard. A cache of such
    /// records read at a lower count is stale (the count only grows).
    fn records_changed(&self) -> u64;
    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<()>;
    /// Deletes without waiting for the disk (see [`Store::kv_put_relaxed`]): for records that
    /// only expire, where one that comes back after a crash is harmless.
    async fn kv_delete_relaxed(&self, namespace: &str, key: &str) -> StoreResult<()>;
    /// Every record of `namespace` whose key starts with `prefix`, in key order.
    async fn kv_scan(&self, namespace: &str, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;
    /// One page of [`Store::kv_scan`]: at most `limit` records whose key starts with `prefix`
    /// and sorts after `after` (`""`: from the first), in key order, reading no more of the
    /// namespace than that (a range read in both backends). For queues and listings that page.
    async fn kv_scan_page(
        &self,
        namespace: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, Vec<u8>)>>;

    /// Makes every write so far durable.
    async fn flush(&self) -> StoreResult<()>;
}
