//! Announcements between the instances on one database (docs/fleet.md): PostgreSQL
//! `LISTEN`/`NOTIFY` on two channels.
//!
//! - `lifeboat_states`: sent by the statement that stores a channel state
//!   (`save_channel_state`: `pg_notify` in the same statement, so it is delivered when, and
//!   only if, the write commits; never before the state is durable, never for a write that
//!   failed). Rare (a ban, a restriction, an admin toggle), so one per change. Also sent,
//!   in the same transaction, by an announced record's update (`kv_update_announced`: the
//!   WhatsApp quality signal, the portfolio's restriction and limit records; payload
//!   `kv <namespace>`): a listener bumps its handle's `records_changed` (the portfolio cache
//!   reads again at its next use) and fires the states wake-up (the quality signal is re-read
//!   with the states).
//! - `lifeboat_work`: "notifications were accepted here", coalesced: an accept only marks that
//!   one is owed ([`Announcer::work_accepted`]); one task sends at most one `NOTIFY` per
//!   [`WORK_WINDOW`] for all the accepts of that window. Never one per accept: a `NOTIFY` takes
//!   a database-wide lock at commit, and one per accept serialised the accepts' commits
//!   (measured 6,861 → 1,127 accepts/s).
//!
//! The payload is the sending store handle's owner id and what changed; a listener ignores
//! its own instance's announcements. Each instance keeps ONE dedicated listener connection,
//! made outside the pool: `LISTEN` is the session's state, and a pooled connection would be
//! handed to other callers (or recycled) while it listens, and would hold one pool slot for
//! ever. The listener checks its connection every [`HEARTBEAT`] (a `SELECT 1` answered within
//! [`HEARTBEAT_WAIT`]), and makes it again with backoff ([`BACKOFF_MIN`] doubling to
//! [`BACKOFF_MAX`]) when it drops; once listening again it fires both wake-ups, since what was
//! announced meanwhile was missed. The periodic re-read of the states (1 s) and the
//! scheduler's queue poll (250 ms) stay as the backstop for whatever is lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Notification};

use super::{tls, Fail, PgStore, Target, CONNECT_TIMEOUT};
use crate::store::Announcements;

/// The channel of channel state changes.
pub const STATES_CHANNEL: &str = "lifeboat_states";
/// The channel of accepted work.
pub const WORK_CHANNEL: &str = "lifeboat_work";
/// The listener connection's `application_name`.
pub const LISTENER_NAME: &str = "lifeboat-listener";
/// At most one `lifeboat_work` announcement per instance per this.
pub const WORK_WINDOW: Duration = Duration::from_millis(100);
/// How often the listener checks that its connection still answers.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long that check may take before the connection is given up and made again.
pub const HEARTBEAT_WAIT: Duration = Duration::from_secs(5);
/// The first wait before connecting again; doubled per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A store handle's side of the announcements: the wake-ups it gives, what is owed, counts.
#[derive(Default)]
pub(crate) struct Announcer {
    /// Fired when another instance announced a state change / accepted work.
    states: Arc<Notify>,
    work: Arc<Notify>,
    /// Holds a permit while a `lifeboat_work` announcement is owed.
    owed: Notify,
    listening: AtomicBool,
    pub states_sent: AtomicU64,
    pub work_sent: AtomicU64,
    pub states_heard: AtomicU64,
    pub work_heard: AtomicU64,
    pub reconnects: AtomicU64,
    /// Announced record changes, this handle's and those heard ([`crate::store::Store::records_changed`]).
    records: AtomicU64,
}

impl Announcer {
    pub fn announcements(&self) -> Announcements {
        Announcements {
            states: self.states.clone(),
            work: self.work.clone(),
        }
    }

    /// Notifications were accepted: one `lifeboat_work` announcement is owed (coalesced).
    pub fn work_accepted(&self) {
        self.owed.notify_one();
    }

    /// An announced record changed (here, or another instance said so).
    pub fn record_changed(&self) {
        self.records.fetch_add(1, Ordering::SeqCst);
    }

    pub fn records_changed(&self) -> u64 {
        self.records.load(Ordering::SeqCst)
    }

    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }
}

/// The `pg_notify` payload: the sender, a space, what changed.
pub(crate) fn payload(owner: &str, what: &str) -> String {
    format!("{owner} {what}")
}

/// What an announced record's change says: `kv <namespace>`.
pub(crate) fn record_what(namespace: &str) -> String {
    format!("{RECORD_PREFIX}{namespace}")
}

const RECORD_PREFIX: &str = "kv ";

/// The listener and the work announcer of one store handle; both stop when this is dropped.
pub struct AnnounceTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for AnnounceTasks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AnnounceTasks {
    /// Starts listening on `store`'s database (on its own connection) and announcing its
    /// accepts.
    pub fn start(store: Arc<PgStore>) -> AnnounceTasks {
        let listen = tokio::spawn(listen(store.clone()));
        let announce = tokio::spawn(announce_work(store));
        AnnounceTasks {
            tasks: vec![listen, announce],
        }
    }
}

/// Sends one `lifeboat_work` announcement per window in which accepts happened.
async fn announce_work(store: Arc<PgStore>) {
    let mut failing = false;
    loop {
        store.announcer.owed.notified().await;
        match store.notify(WORK_CHANNEL, "accepted").await {
            Ok(()) => {
                store.announcer.work_sent.fetch_add(1, Ordering::Relaxed);
                if failing {
                    failing = false;
                    tracing::info!("announcing accepted work to the other instances works again");
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot announce accepted work to the other instances (they find it within 250 ms anyway)");
            }
            Err(_) => {}
        }
        // Accepts during the window leave one permit: one announcement right after it.
        tokio::time::sleep(WORK_WINDOW).await;
    }
}

/// Keeps one listener connection up, turning announcements into wake-ups.
async fn listen(store: Arc<PgStore>) {
    let announcer = &store.announcer;
    let mut backoff = BACKOFF_MIN;
    let mut lost_logged = false;
    let mut first = true;
    loop {
        match connect(&store.target).await {
            Ok((client, driver, mut heard)) => {
                let listened = tokio::time::timeout(
                    HEARTBEAT_WAIT,
                    client
                        .batch_execute(&format!("LISTEN {STATES_CHANNEL}; LISTEN {WORK_CHANNEL}")),
                )
                .await;
                if !matches!(listened, Ok(Ok(()))) {
                    driver.abort();
                    if !lost_logged {
                        lost_logged = true;
                        tracing::warn!("cannot LISTEN for the other instances' announcements; retrying (states are re-read every second meanwhile)");
                    }
                } else {
                    // Whatever was announced while not listening was missed: look now.
                    announcer.record_changed();
                    announcer.states.notify_one();
                    announcer.work.notify_one();
                    announcer.listening.store(true, Ordering::Relaxed);
                    backoff = BACKOFF_MIN;
                    if first {
                        tracing::info!("listening for the other instances' announcements");
                    } else {
                        announcer.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("listening for the other instances' announcements again");
                    }
                    first = false;
                    let why = serve(&store, &client, &mut heard).await;
                    driver.abort();
                    announcer.listening.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        why,
                        "lost the announcement listener connection; connecting again (states are re-read every second meanwhile)"
                    );
                    lost_logged = true;
                }
            }
            Err(e) => {
                if !lost_logged {
                    lost_logged = true;
                    tracing::warn!(error = %e.to_store(&store.location), "cannot connect the announcement listener; retrying");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Hands announcements on until the connection fails; says why it ended.
async fn serve(
    store: &PgStore,
    client: &tokio_postgres::Client,
    heard: &mut mpsc::UnboundedReceiver<Notification>,
) -> &'static str {
    let announcer = &store.announcer;
    let mine = format!("{} ", store.owner);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            n = heard.recv() => {
                let Some(n) = n else { return "the connection closed" };
                if n.payload().starts_with(&mine) {
                    continue;
                }
                match n.channel() {
                    STATES_CHANNEL => {
                        announcer.states_heard.fetch_add(1, Ordering::Relaxed);
                        let what = n.payload().split_once(' ').map_or("", |(_, w)| w);
                        if what.starts_with(RECORD_PREFIX) {
                            announcer.record_changed();
                        }
                        announcer.states.notify_one();
                    }
                    WORK_CHANNEL => {
                        announcer.work_heard.fetch_add(1, Ordering::Relaxed);
                        announcer.work.notify_one();
                    }
                    _ => {}
                }
            }
            _ = beat.tick() => {
                match tokio::time::timeout(HEARTBEAT_WAIT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return "the heartbeat failed",
                    Err(_) => return "the heartbeat got no answer",
                }
            }
        }
    }
}

type Connected = (
    tokio_postgres::Client,
    JoinHandle<()>,
    mpsc::UnboundedReceiver<Notification>,
);

/// One connection outside the pool, its messages driven by a task that hands the
/// notifications on (and ends when the connection does).
async fn connect(target: &Target) -> Result<Connected, Fail> {
    let (tx, rx) = mpsc::unbounded_channel();
    // Named apart in `pg_stat_activity`, for operators (and the tests that cut it).
    let mut config = target.config.clone();
    config.application_name(LISTENER_NAME);
    let task = async {
        if target.tls {
            let (client, conn) = config.connect(tls::MakeRustls::new()).await?;
            Ok::<_, Fail>((client, tokio::spawn(drive(conn, tx))))
        } else {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            Ok((client, tokio::spawn(drive(conn, tx))))
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, task).await {
        Ok(Ok((client, driver))) => Ok((client, driver, rx)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Fail::Timeout("connecting the listener")),
    }
}

async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    heard: mpsc::UnboundedSender<Notification>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if heard.send(n).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}
