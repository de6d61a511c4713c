//! Channel states: which channels are in rotation right now, and the transitions that
//! provider answers and admins cause.
//!
//! The states live in memory (every send consults them) and in the store (they survive a
//! restart, and every instance sharing the store reads them). A change is computed from the
//! stored state (read again first), saved durably *before* it takes effect in memory, logged
//! once, and counted. Since every send reads the in-memory table, a ban answer takes the
//! channel out for every queued and later notification at once.
//!
//! Several instances on one store (docs/fleet.md): each re-reads the stored states
//! ([`ChannelStates::refresh`]) at least every [`REFRESH_EVERY`] and whenever the `changed`
//! notifier of [`ChannelStates::watch`] fires (the seam for a store that announces changes,
//! PostgreSQL's `LISTEN`/`NOTIFY`), and the worker asks for a read at most [`FRESH_AT_SEND`]
//! old before it starts a send ([`ChannelStates::fresh`]), so a ban recorded by another
//! instance stops this one's sends within that bound even if every announcement was lost.
//!
//! A restricted channel rests until its `until`; then exactly one notification of the whole
//! fleet gets to probe it (a real send: a health check cannot see a sending restriction): the
//! instance holding the channel's probe lease in the store ([`ChannelStates::claim_probe`],
//! [`crate::fleet::lease`]). Success makes it active; another restriction answer restricts it
//! again for twice the cooldown.
//!
//! Provider signals that are not answers to a send (WhatsApp `account_update`) change states
//! the same way through [`ChannelStates::apply_signal`]; the messaging-quality signal
//! (`phone_number_quality_update`) is kept beside the state ([`ChannelStates::set_quality`]) for
//! the admin view and the guardrails.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use lifeboat_channel::{Answer, ChannelKind, Class, ThrottleScope};

#[cfg(test)]
mod fleet_tests;
pub mod history;
pub mod shared;
#[cfg(test)]
mod shared_tests;

use crate::fleet::lease::Lease;
use crate::fleet::InstanceId;
use crate::metrics::Metrics;
use crate::model::{
    later, ChannelQuality, ChannelState, ChannelStatus, LastError, SkipReason, Timestamp,
};
use crate::store::{Store, StoreResult};
use history::StateChange;

/// What a provider's signal about the account (not a send's answer) does to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Out of rotation until an admin enables it (or the provider reinstates it).
    Banned,
    /// Rests until then, then one notification probes it.
    RestrictedUntil(Timestamp),
    /// A ban or restriction lifted by the provider: back in rotation (an admin's or a
    /// configuration error's `disabled` stays).
    Reinstated,
    /// A warning: recorded as the last error, no state change.
    Warning,
}

/// The longest the stored states go unread by an instance's [`ChannelStates::watch`] loop (the
/// backstop for a lost announcement).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How old the states may be when a send starts: older, the worker reads them again first (one
/// read serves every worker starting a send meanwhile).
pub const FRESH_AT_SEND: Duration = Duration::from_millis(100);
/// How long an instance may take to probe a restricted channel before another may.
pub const PROBE_LEASE: Duration = Duration::from_secs(120);
/// Probe leases, keyed by channel.
const PROBE_NAMESPACE: &str = crate::store::namespaces::CHANNEL_PROBE;

/// The key of a channel's quality record: namespace `<channel>_quality` (`whatsapp_quality`).
const QUALITY_KEY: &str = "current";

fn quality_namespace(kind: ChannelKind) -> String {
    format!("{kind}_quality")
}

/// Whether the stored WhatsApp quality signal says quality is low (`FLAGGED`, `DOWNGRADE`), for
/// code that has the store but not the live table (the guardrails).
pub async fn quality_flagged(store: &dyn Store) -> StoreResult<bool> {
    let raw = store
        .kv_get(&quality_namespace(ChannelKind::Whatsapp), QUALITY_KEY)
        .await?;
    Ok(raw
        .and_then(|b| serde_json::from_slice::<ChannelQuality>(&b).ok())
        .is_some_and(|q| q.is_flagged()))
}

/// Whether a notification may use a channel now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// In rotation.
    Open,
    /// Restricted, cooldown over: this notification is the probe.
    Probe,
    /// Throttled (the channel or this recipient) until then.
    WaitUntil(Timestamp),
    /// Out of rotation: skip with this reason (`channel_disabled`, `channel_restricted`,
    /// `channel_banned`).
    Skip(SkipReason),
}

struct Entry {
    status: ChannelStatus,
    probing: bool,
    /// Sends since this process started (for what other channels carried during an outage).
    sent_total: u64,
}

/// The live table of channel states.
pub struct ChannelStates {
    store: Arc<dyn Store>,
    entries: RwLock<BTreeMap<ChannelKind, Entry>>,
    /// Per-recipient pauses (WhatsApp pair rate limit), the fleet's ([`shared::Pauses`]).
    recipient_pauses: shared::Pauses,
    /// Sent and failed per channel and minute, the fleet's ([`shared::Counts`]).
    counts: shared::Counts,
    /// Serialises state changes so that the durable save happens in the order of the changes.
    change_lock: tokio::sync::Mutex<()>,
    /// The last quality signal per channel (WhatsApp only, so far).
    quality: RwLock<BTreeMap<ChannelKind, ChannelQuality>>,
    /// Counts the state changes (the gateway's; a private one until [`Self::with_metrics`]).
    metrics: Arc<Metrics>,
    /// The recent state changes, oldest first, as stored (see [`history`]).
    history: Mutex<VecDeque<StateChange>>,
    /// This instance ([`StateChange::boot`], the owner of probe leases, the log lines).
    instance: InstanceId,
    /// When the stored states were last read (or written) by this instance.
    read_at: Mutex<Instant>,
    /// One re-read at a time; those who wait for it use its result.
    refreshing: tokio::sync::Mutex<()>,
    /// Announces the changes: `channel.state_changed` to the app's endpoints, and the admins'
    /// alerts (none until [`Self::with_events`]).
    events: Option<Arc<crate::events::Events>>,
}

impl ChannelStates {
    /// Loads the stored states; channels never seen start active.
    pub async fn load(store: Arc<dyn Store>) -> StoreResult<Self> {
        let stored = store.channel_states().await?;
        let now = Utc::now();
        let entries = ChannelKind::ALL
            .iter()
            .map(|kind| {
                let status = stored
                    .get(kind)
                    .cloned()
                    .unwrap_or_else(|| ChannelStatus::active(now));
                (
                    *kind,
                    Entry {
                        status,
                        probing: false,
                        sent_total: 0,
                    },
                )
            })
            .collect();
        let mut quality = BTreeMap::new();
        for kind in ChannelKind::ALL {
            let raw = store.kv_get(&quality_namespace(kind), QUALITY_KEY).await?;
            if let Some(q) = raw.and_then(|b| serde_json::from_slice::<ChannelQuality>(&b).ok()) {
                quality.insert(kind, q);
            }
        }
        let history = history::load(store.as_ref()).await?;
        Ok(ChannelStates {
            store,
            entries: RwLock::new(entries),
            recipient_pauses: shared::Pauses::default(),
            counts: shared::Counts::default(),
            change_lock: tokio::sync::Mutex::new(()),
            quality: RwLock::new(quality),
            metrics: Arc::default(),
            history: Mutex::new(history),
            instance: InstanceId::generate(),
            read_at: Mutex::new(Instant::now()),
            refreshing: tokio::sync::Mutex::new(()),
            events: None,
        })
    }

    /// Names this instance (the gateway's id, chosen at start; a generated one until then).
    pub fn with_instance(mut self, instance: InstanceId) -> Self {
        self.instance = instance;
        self
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Announces every recorded state change through `events` (the app's endpoints and the
    /// admins' alerts), after the change's durable save.
    pub fn with_events(mut self, events: Arc<crate::events::Events>) -> Self {
        self.events = Some(events);
        self
    }

    /// Counts state changes in the gateway's `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether `kind` may carry a message to `address` now. May hand out the probe slot.
    pub fn availability(&self, kind: ChannelKind, address: &str, now: Timestamp) -> Availability {
        self.check(kind, address, now, true)
    }

    /// What [`ChannelStates::availability`] would say, handing out nothing (the policy
    /// preview): `Probe` means the next notification would get the probe slot.
    pub fn peek_availability(
        &self,
        kind: ChannelKind,
        address: &str,
        now: Timestamp,
    ) -> Availability {
        self.check(kind, address, now, false)
    }

    fn check(
        &self,
        kind: ChannelKind,
        address: &str,
        now: Timestamp,
        take_probe: bool,
    ) -> Availability {
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            let entry = &entries[&kind];
            match entry.status.state {
                ChannelState::Active => {}
                ChannelState::Disabled => return Availability::Skip(SkipReason::ChannelDisabled),
                ChannelState::Banned => return Availability::Skip(SkipReason::ChannelBanned),
                ChannelState::Throttled => {
                    if let Some(until) = entry.status.until.filter(|u| *u > now) {
                        return Availability::WaitUntil(until);
                    }
                }
                ChannelState::Restricted => {
                    let rested = entry.status.until.is_none_or(|u| u <= now);
                    if !rested || entry.probing {
                        return Availability::Skip(SkipReason::ChannelRestricted);
                    }
                    if !take_probe {
                        return Availability::Probe;
                    }
                    drop(entries);
                    let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
                    let entry = entries.get_mut(&kind).expect("every channel has an entry");
                    if entry.probing || entry.status.state != ChannelState::Restricted {
                        return Availability::Skip(SkipReason::ChannelRestricted);
                    }
                    entry.probing = true;
                    return Availability::Probe;
                }
            }
        }
        match self.recipient_pauses.until(kind, address, now) {
            Some(until) => Availability::WaitUntil(until),
            None => Availability::Open,
        }
    }

    /// Gives back a probe slot that ended without a verdict (e.g. a transient error), and the
    /// fleet's probe lease with it (in the background; if that fails the lease runs out).
    pub fn release_probe(&self, kind: ChannelKind) {
        let was = {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            entries
                .get_mut(&kind)
                .map(|e| std::mem::replace(&mut e.probing, false))
                .unwrap_or(false)
        };
        if was {
            self.release_probe_lease(kind);
        }
    }

    fn probe_lease(&self, kind: ChannelKind) -> Lease {
        Lease::new(
            PROBE_NAMESPACE,
            kind.as_str(),
            self.instance.clone(),
            PROBE_LEASE,
        )
    }

    fn release_probe_lease(&self, kind: ChannelKind) {
        let (store, lease) = (self.store.clone(), self.probe_lease(kind));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = lease.release(store.as_ref()).await {
                    tracing::warn!(channel = %kind, error = %e, "could not give back the probe lease; it runs out by itself");
                }
            });
        }
    }

    /// After [`ChannelStates::availability`] said `Probe`: takes the fleet's probe lease of the
    /// channel, so that one instance probes, not one per instance. `false`: another instance
    /// holds it; the local slot is given back and the notification passes the channel over.
    pub async fn claim_probe(&self, kind: ChannelKind, now: Timestamp) -> StoreResult<bool> {
        let taken = match self
            .probe_lease(kind)
            .acquire(self.store.as_ref(), now)
            .await
        {
            Ok(taken) => taken,
            Err(e) => {
                self.release_probe(kind);
                return Err(e);
            }
        };
        if taken {
            tracing::info!(instance = %self.instance, channel = %kind, "probing the restricted channel");
        } else {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = entries.get_mut(&kind) {
                entry.probing = false;
            }
        }
        Ok(taken)
    }

    /// Applies what a send's answer means for the channel. `cooldown` is the channel's
    /// configured cooldown; `was_probe` says whether this send was the probe.
    pub async fn report(
        &self,
        kind: ChannelKind,
        address: &str,
        answer: &Answer,
        was_probe: bool,
        cooldown: Duration,
        now: Timestamp,
    ) -> StoreResult<()> {
        let last_error = || LastError {
            at: now,
            outcome: answer.class.as_str().to_string(),
            code: answer.code.clone(),
            detail: answer.detail.clone(),
        };
        match &answer.class {
            Class::Sent | Class::RecipientUnreachable { .. } | Class::Rejected => {
                if was_probe {
                    self.change(kind, now, |s| {
                        *s = ChannelStatus {
                            last_error: s.last_error.clone(),
                            reason: Some("probe succeeded".into()),
                            ..ChannelStatus::active(now)
                        };
                    })
                    .await?;
                } else if answer.class != Class::Sent {
                    self.note_error(kind, last_error());
                }
            }
            Class::Transient { .. } => {
                if was_probe {
                    self.release_probe(kind);
                }
                self.note_error(kind, last_error());
            }
            Class::Throttled { retry_after, scope } => {
                if was_probe {
                    self.release_probe(kind);
                }
                let until = later(now, retry_after.unwrap_or(Duration::from_secs(1)));
                match scope {
                    ThrottleScope::Recipient => {
                        self.recipient_pauses
                            .pause(self.store.as_ref(), kind, address, until)
                            .await?;
                        self.note_error(kind, last_error());
                    }
                    ThrottleScope::Channel => {
                        let reason = format!(
                            "provider asked to slow down ({})",
                            answer.code.as_deref().unwrap_or("throttled")
                        );
                        self.change(kind, now, |s| {
                            if matches!(s.state, ChannelState::Active | ChannelState::Throttled) {
                                s.state = ChannelState::Throttled;
                                s.reason = Some(reason.clone());
                                s.until = Some(until.max(s.until.unwrap_or(until)));
                            }
                            s.last_error = Some(last_error());
                        })
                        .await?;
                    }
                }
            }
            Class::ChannelRestricted { retry_after } => {
                let base = if was_probe {
                    self.current(kind)
                        .next_cooldown_secs
                        .map(Duration::from_secs)
                        .unwrap_or(cooldown)
                } else {
                    cooldown
                };
                let rest = base.max(retry_after.unwrap_or_default());
                let reason = describe(answer, "restricted");
                self.change(kind, now, |s| {
                    if s.state == ChannelState::Banned || s.state == ChannelState::Disabled {
                        s.last_error = Some(last_error());
                        return;
                    }
                    s.state = ChannelState::Restricted;
                    s.reason = Some(reason.clone());
                    s.since = now;
                    s.until = Some(later(now, rest));
                    s.next_cooldown_secs = Some(base.as_secs().saturating_mul(2).max(1));
                    s.last_error = Some(last_error());
                })
                .await?;
            }
            Class::ChannelBanned => {
                let reason = describe(answer, "banned");
                self.change(kind, now, |s| {
                    if s.state == ChannelState::Disabled {
                        s.last_error = Some(last_error());
                        return;
                    }
                    s.state = ChannelState::Banned;
                    s.reason = Some(reason.clone());
                    s.since = now;
                    s.until = None;
                    s.last_error = Some(last_error());
                })
                .await?;
            }
            Class::ConfigError => {
                let reason = describe(answer, "configuration error");
                self.change(kind, now, |s| {
                    s.state = ChannelState::Disabled;
                    s.reason = Some(reason.clone());
                    s.since = now;
                    s.until = None;
                    s.last_error = Some(last_error());
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Applies a provider's signal about the account (WhatsApp `account_update`) as a send's
    /// answer of the same meaning would: stored before it takes effect, logged once. `code` is
    /// the provider's event (`DISABLED_UPDATE`, ...), `detail` what it said.
    pub async fn apply_signal(
        &self,
        kind: ChannelKind,
        signal: Signal,
        code: &str,
        detail: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        let error = |outcome: &str| LastError {
            at: now,
            outcome: outcome.to_string(),
            code: Some(code.to_string()),
            detail: Some(detail.to_string()),
        };
        let reason = |what: &str| format!("{what} by the provider: {code} {detail}");
        match signal {
            Signal::Banned => {
                self.change(kind, now, |s| {
                    s.last_error = Some(error("channel_banned"));
                    if s.state != ChannelState::Disabled {
                        s.state = ChannelState::Banned;
                        s.reason = Some(reason("banned"));
                        s.until = None;
                    }
                })
                .await
            }
            Signal::RestrictedUntil(until) => {
                self.change(kind, now, |s| {
                    s.last_error = Some(error("channel_restricted"));
                    if matches!(
                        s.state,
                        ChannelState::Active | ChannelState::Throttled | ChannelState::Restricted
                    ) {
                        s.state = ChannelState::Restricted;
                        s.reason = Some(reason("restricted"));
                        s.until = Some(until);
                    }
                })
                .await
            }
            Signal::Reinstated => {
                self.change(kind, now, |s| {
                    if s.state != ChannelState::Disabled {
                        *s = ChannelStatus {
                            last_error: s.last_error.clone(),
                            reason: Some(reason("reinstated")),
                            ..ChannelStatus::active(now)
                        };
                    }
                })
                .await
            }
            Signal::Warning => {
                tracing::warn!(channel = %kind, code, detail, "provider warning about the account");
                self.change(kind, now, |s| s.last_error = Some(error("warning")))
                    .await
            }
        }
    }

    /// Records a quality signal durably (announced to the other instances sharing the store,
    /// whose watch loop re-reads it at once), then makes it live.
    pub async fn set_quality(&self, kind: ChannelKind, quality: ChannelQuality) -> StoreResult<()> {
        let bytes = serde_json::to_vec(&quality).expect("quality always serializes");
        self.store
            .kv_update_announced(
                &quality_namespace(kind),
                QUALITY_KEY,
                Box::new(move |_| Some(bytes.clone())),
            )
            .await?;
        if quality.is_flagged() {
            tracing::warn!(channel = %kind, event = %quality.event, limit = ?quality.current_limit, "provider says message quality is low");
        } else {
            tracing::info!(channel = %kind, event = %quality.event, limit = ?quality.current_limit, "provider quality signal");
        }
        self.quality
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind, quality);
        Ok(())
    }

    /// The last quality signal of a channel, if any came.
    pub fn quality(&self, kind: ChannelKind) -> Option<ChannelQuality> {
        self.quality
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kind)
            .cloned()
    }

    /// Whether the provider says quality is low on `kind` (`FLAGGED`, `DOWNGRADE`).
    pub fn quality_flagged(&self, kind: ChannelKind) -> bool {
        self.quality(kind).is_some_and(|q| q.is_flagged())
    }

    /// Admin action: out of rotation until enabled.
    pub async fn disable(&self, kind: ChannelKind, reason: &str) -> StoreResult<ChannelStatus> {
        let now = Utc::now();
        let reason = format!("disabled by admin: {reason}");
        self.change(kind, now, |s| {
            s.state = ChannelState::Disabled;
            s.reason = Some(reason.clone());
            s.since = now;
            s.until = None;
        })
        .await?;
        Ok(self.current(kind))
    }

    /// Admin action: back to active, clearing a restriction, ban or disable.
    pub async fn enable(&self, kind: ChannelKind) -> StoreResult<ChannelStatus> {
        let now = Utc::now();
        self.change(kind, now, |s| {
            *s = ChannelStatus {
                last_error: s.last_error.clone(),
                reason: Some("enabled by admin".into()),
                ..ChannelStatus::active(now)
            };
        })
        .await?;
        Ok(self.current(kind))
    }

    /// The state of one channel, with an elapsed throttle shown as active.
    pub fn current(&self, kind: ChannelKind) -> ChannelStatus {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut status = entries[&kind].status.clone();
        if status.state == ChannelState::Throttled && status.until.is_none_or(|u| u <= Utc::now()) {
            // The throttle is over: active since it ended, and its reason is over with it.
            status.state = ChannelState::Active;
            status.since = status.until.unwrap_or(status.since);
            status.until = None;
            status.reason = None;
        }
        status
    }

    /// The fleet's sends and failures per minute over the last hour, oldest first: 60 entries,
    /// the last one the current minute (read from the store, see [`shared::Counts`]).
    pub async fn per_minute(
        &self,
        kind: ChannelKind,
        now: Timestamp,
    ) -> StoreResult<Vec<(u64, u64)>> {
        self.counts.per_minute(self.store.as_ref(), kind, now).await
    }

    /// Writes this instance's counted results to the store now (they are also written every
    /// [`shared::COUNTS_FLUSH_EVERY`] by [`ChannelStates::keep_counts`] and before each read).
    pub async fn flush_counts(&self, now: Timestamp) -> StoreResult<()> {
        self.counts.flush(self.store.as_ref(), now).await
    }

    /// Writes the counted results to the store every `every` until the handle is aborted.
    pub fn keep_counts(
        self: &Arc<Self>,
        clock: Arc<dyn crate::clock::Clock>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let states = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(every).await;
                match states.flush_counts(clock.now()).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot write the channel counts to the store; they are kept for the next try");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// The stored quality signal of a channel (the fleet's latest word; the admin table).
    pub async fn stored_quality(&self, kind: ChannelKind) -> StoreResult<Option<ChannelQuality>> {
        let raw = self
            .store
            .kv_get(&quality_namespace(kind), QUALITY_KEY)
            .await?;
        Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The recent state changes, oldest first (at most [`history::HISTORY_LIMIT`]).
    pub fn history(&self) -> Vec<StateChange> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.iter().cloned().collect()
    }

    /// Sends per channel since this process started, and its instance id (see
    /// [`history::carried`]).
    pub fn sent_totals(&self) -> (BTreeMap<ChannelKind, u64>, String) {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let totals = entries.iter().map(|(k, e)| (*k, e.sent_total)).collect();
        (totals, self.instance.to_string())
    }

    /// Notifications sent on `kind` and notifications that left it unsent after it was tried,
    /// over the last hour, by the whole fleet: each notification counts once per channel (a
    /// retry or a throttled wait is not a failure; the answer that finally moves it on, or the
    /// fall-over after its waits, is). See [`ChannelStates::count_result`].
    pub async fn counts(&self, kind: ChannelKind, now: Timestamp) -> StoreResult<(u64, u64)> {
        Ok((self.per_minute(kind, now).await?)
            .into_iter()
            .fold((0, 0), |(s, f), (ds, df)| (s + ds, f + df)))
    }

    /// Counts one notification's result on `kind` (the admin table's `sent_1h` / `failed_1h`):
    /// sent there, or tried there and moved on (or ended) unsent. The worker calls it once per
    /// notification and channel.
    pub fn count_result(&self, kind: ChannelKind, sent: bool, now: Timestamp) {
        self.metrics.channel_result(kind, sent);
        if sent {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            entries.get_mut(&kind).expect("entry").sent_total += 1;
        }
        self.counts.add(kind, sent, now);
    }

    fn note_error(&self, kind: ChannelKind, error: LastError) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.get_mut(&kind).expect("entry").status.last_error = Some(error);
    }

    /// Computes a new status, stores it durably, then makes it live and logs the transition.
    async fn change(
        &self,
        kind: ChannelKind,
        now: Timestamp,
        edit: impl FnOnce(&mut ChannelStatus),
    ) -> StoreResult<()> {
        let _serial = self.change_lock.lock().await;
        // Start from the stored state: another instance may have changed it since this one
        // last read it, and a change computed from a stale copy would undo theirs.
        if let Some(stored) = self.store.channel_states().await?.remove(&kind) {
            if self.adopt(kind, stored) {
                self.reload_history().await?;
            }
        }
        let (old, mut new) = {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            let s = entries[&kind].status.clone();
            (s.clone(), s)
        };
        edit(&mut new);
        if new.state != old.state {
            new.since = now;
        }
        // Why it came back goes into the history; the row of an active channel shows no
        // reason (the old one is over).
        let why = if new.state == ChannelState::Active {
            new.reason.take()
        } else {
            new.reason.clone()
        };
        if new == old {
            return Ok(());
        }
        // A throttle that is over counts as active (as `current` shows it).
        let from = if old.state == ChannelState::Throttled && old.until.is_none_or(|u| u <= now) {
            ChannelState::Active
        } else {
            old.state
        };
        let mut change = history::recorded(from, new.state).then(|| {
            let (sent_totals, boot) = self.sent_totals();
            let seq = self
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .back()
                .map_or(0, |c| c.seq + 1);
            StateChange {
                seq,
                at: now,
                channel: kind,
                from,
                to: new.state,
                reason: why,
                until: new.until,
                sent_totals,
                boot,
            }
        });
        // The change's event is staged before the change is saved and made due after it (or
        // deleted if the save fails): a crash after the save cannot lose it (docs/events.md).
        let staged = match (&self.events, &change) {
            (Some(events), Some(c)) => Some(
                events
                    .stage_state_changed(
                        c.channel,
                        c.from,
                        c.to,
                        c.reason.as_deref(),
                        c.until,
                        c.at,
                    )
                    .await,
            ),
            _ => None,
        };
        let discard = |staged: Option<crate::events::Staged>| async {
            if let (Some(events), Some(staged)) = (&self.events, staged) {
                events.discard(staged).await;
            }
        };
        let mut appended = history::Appended::New;
        if let Some(change) = &mut change {
            // Written first (under a sequence number no other instance took), unless another
            // instance recorded this very change already.
            appended = match history::append(self.store.as_ref(), change).await {
                Ok(appended) => appended,
                Err(e) => {
                    discard(staged).await;
                    return Err(e);
                }
            };
        }
        // Another instance recorded this very change: its event is that instance's.
        let staged = if appended == history::Appended::Same {
            discard(staged).await;
            None
        } else {
            staged
        };
        if let Err(e) = self.store.save_channel_state(kind, &new).await {
            discard(staged).await;
            return Err(e);
        }
        if appended == history::Appended::Same {
            self.reload_history().await?;
        } else if let Some(change) = &change {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history.push_back(change.clone());
            while history.len() > history::HISTORY_LIMIT {
                history.pop_front();
            }
        }
        if new.state != old.state {
            self.metrics.state_change(kind, new.state);
            tracing::warn!(
                instance = %self.instance,
                channel = %kind,
                from = old.state.as_str(),
                to = new.state.as_str(),
                reason = new.reason.as_deref().unwrap_or(""),
                until = ?new.until,
                "channel state changed"
            );
        }
        let was_probing = {
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            let entry = entries.get_mut(&kind).expect("entry");
            entry.status = new;
            // Any verdict ends a probe; a new restriction rests before the next probe anyway.
            std::mem::replace(&mut entry.probing, false)
        };
        // After the save (and live): the event made due (by the instance that recorded the
        // change), the alerts through the accept path (keyed by the change's sequence number:
        // an instance that made the same change sends the same alert, accepted once). Neither
        // can fail the change.
        if let (Some(events), Some(staged)) = (&self.events, staged) {
            events.release(staged).await;
        }
        if was_probing {
            self.probe_lease(kind).release(self.store.as_ref()).await?;
        }
        if let (Some(events), Some(c)) = (&self.events, change) {
            events
                .alerts()
                .send(crate::events::alerts::Alert::StateChanged {
                    seq: c.seq,
                    channel: c.channel,
                    from: c.from,
                    to: c.to,
                    reason: c.reason,
                    until: c.until,
                    at: c.at,
                })
                .await;
        }
        Ok(())
    }

    /// Makes a stored status live if it differs from this instance's copy (another instance
    /// changed it), keeping a newer error note this instance only has in memory. Says whether
    /// the state itself moved (logged once).
    fn adopt(&self, kind: ChannelKind, mut stored: ChannelStatus) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries.get_mut(&kind) else {
            return false;
        };
        if let Some(mine) = &entry.status.last_error {
            if stored.last_error.as_ref().is_none_or(|e| e.at < mine.at) {
                stored.last_error = Some(mine.clone());
            }
        }
        if entry.status == stored {
            return false;
        }
        let moved = entry.status.state != stored.state
            || entry.status.until != stored.until
            || entry.status.since != stored.since;
        if moved {
            tracing::warn!(
                instance = %self.instance,
                channel = %kind,
                from = entry.status.state.as_str(),
                to = stored.state.as_str(),
                reason = stored.reason.as_deref().unwrap_or(""),
                until = ?stored.until,
                "channel state changed (recorded by another instance)"
            );
        }
        if stored.state != ChannelState::Restricted {
            entry.probing = false;
        }
        entry.status = stored;
        moved
    }

    async fn reload_history(&self) -> StoreResult<()> {
        let loaded = history::load(self.store.as_ref()).await?;
        *self.history.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// Reads the stored states (and quality signals) and makes what another instance changed
    /// live here. The [`ChannelStates::watch`] loop calls it; see also [`ChannelStates::fresh`].
    pub async fn refresh(&self) -> StoreResult<()> {
        let started = Instant::now();
        let _serial = self.change_lock.lock().await;
        let stored = self.store.channel_states().await?;
        let mut moved = false;
        for (kind, status) in stored {
            moved |= self.adopt(kind, status);
        }
        for kind in ChannelKind::ALL {
            let raw = self
                .store
                .kv_get(&quality_namespace(kind), QUALITY_KEY)
                .await?;
            if let Some(q) = raw.and_then(|b| serde_json::from_slice::<ChannelQuality>(&b).ok()) {
                let mut quality = self.quality.write().unwrap_or_else(|p| p.into_inner());
                if quality.get(&kind) != Some(&q) {
                    quality.insert(kind, q);
                }
            }
        }
        if moved {
            self.reload_history().await?;
        }
        self.recipient_pauses.reload(self.store.as_ref()).await?;
        *self.read_at.lock().unwrap_or_else(|p| p.into_inner()) = started;
        Ok(())
    }

    /// Makes sure the states in memory were read from the store at most `max_age` ago (the
    /// worker asks for [`FRESH_AT_SEND`] before each send): a stale copy cannot start a send on
    /// a channel another instance has banned. Concurrent callers share one read.
    pub async fn fresh(&self, max_age: Duration) -> StoreResult<()> {
        let stale = || {
            self.read_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                >= max_age
        };
        if !stale() {
            return Ok(());
        }
        let _one = self.refreshing.lock().await;
        if !stale() {
            return Ok(());
        }
        self.refresh().await
    }

    /// Re-reads the stored states every `every` ([`REFRESH_EVERY`]) and at once whenever
    /// `changed` is notified: the hook for a store that announces state changes (PostgreSQL
    /// `LISTEN`/`NOTIFY`), the period the backstop for a lost announcement. Runs until the
    /// handle is aborted.
    pub fn watch(
        self: &Arc<Self>,
        changed: Arc<tokio::sync::Notify>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let states = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = changed.notified() => {}
                }
                let _one = states.refreshing.lock().await;
                match states.refresh().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("reading the channel states works again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "cannot read the channel states from the store; retrying");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

fn describe(answer: &Answer, what: &str) -> String {
    match (&answer.code, &answer.detail) {
        (Some(code), Some(detail)) => format!("{what}: {code} {detail}"),
        (Some(code), None) => format!("{what}: {code}"),
        (None, Some(detail)) => format!("{what}: {detail}"),
        (None, None) => what.to_string(),
    }
}
