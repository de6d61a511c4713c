//! The long-polling loop: `getUpdates` with the next offset, each update handled, then the
//! offset after it saved durably (`kv "telegram"/"offset"`), so a restart neither loses nor
//! re-applies updates. In a fleet only the elected instance polls ([`super::election`]); it
//! reads the stored offset when its term begins, and again before each update (skipping one a
//! previous poller already handled), and the saved offset only moves forward. Provider failures (a 409 from a second poller, a webhook left set, a
//! network error, a 5xx) are logged once per kind and retried with exponential backoff capped
//! at 60 s; nothing here stops the gateway.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use teloxide::payloads::GetUpdatesSetters;
use teloxide::requests::{Request, Requester};
use teloxide::types::AllowedUpdate;
use teloxide::{ApiError, RequestError};
use tokio::sync::watch;

use super::election::Election;
use super::handler::BotContext;
use crate::store::{Durability, StoreResult};

const NAMESPACE: &str = "telegram";
const OFFSET_KEY: &str = "offset";
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// An empty answer faster than this (a server that ignores the long-poll timeout) is
/// followed by a short pause, so the loop never spins.
const QUICK_EMPTY: Duration = Duration::from_secs(1);
const QUICK_EMPTY_PAUSE: Duration = Duration::from_millis(200);

/// The offset to ask for next, as saved.
pub async fn load_offset(ctx: &BotContext) -> StoreResult<Option<i32>> {
    Ok(parse_offset(
        ctx.store.kv_get(NAMESPACE, OFFSET_KEY).await?.as_deref(),
    ))
}

fn parse_offset(bytes: Option<&[u8]>) -> Option<i32> {
    bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Saves `offset` durably unless a later one is stored (the offset never goes back).
async fn save_offset(ctx: &BotContext, offset: i32) -> StoreResult<()> {
    let edit = Box::new(move |old: Option<&[u8]>| {
        let next = parse_offset(old).map_or(offset, |o| o.max(offset));
        Some(next.to_string().into_bytes())
    });
    ctx.store
        .kv_update(NAMESPACE, OFFSET_KEY, edit, Durability::Durable)
        .await?;
    Ok(())
}

/// Sleeps `d`, or less if asked to stop; true if asked to stop.
pub async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Failures, logged once per kind until the next success.
struct Failures {
    logged: BTreeSet<&'static str>,
    streak: u32,
}

impl Failures {
    fn new() -> Self {
        Failures {
            logged: BTreeSet::new(),
            streak: 0,
        }
    }

    /// Records a failure and returns how long to wait before the next try.
    fn failed(&mut self, kind: &'static str, detail: &str, hint: Option<Duration>) -> Duration {
        if self.logged.insert(kind) {
            let advice = match kind {
                "conflict" => " (another process polls with the same bot token: run one poller per bot, or use mode = \"webhook\")",
                "webhook_active" => " (a webhook is set for this bot: delete it with deleteWebhook, or set mode = \"webhook\")",
                "unauthorized" => " (check channels.telegram.bot_token)",
                _ => "",
            };
            tracing::warn!(
                kind,
                detail,
                "telegram: getUpdates failed; retrying with backoff{advice}"
            );
        } else {
            tracing::debug!(kind, detail, "telegram: getUpdates failed again");
        }
        let backoff = BACKOFF_BASE
            .saturating_mul(1u32 << self.streak.min(10))
            .min(BACKOFF_CAP);
        self.streak += 1;
        hint.map_or(backoff, |h| h.max(backoff).min(BACKOFF_CAP))
    }

    fn succeeded(&mut self) {
        if self.streak > 0 {
            tracing::info!("telegram: getUpdates works again");
        }
        self.logged.clear();
        self.streak = 0;
    }
}

fn kind_of(e: &RequestError) -> (&'static str, Option<Duration>) {
    match e {
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => ("conflict", None),
        RequestError::Api(ApiError::CantGetUpdates) => ("webhook_active", None),
        RequestError::Api(ApiError::InvalidToken) => ("unauthorized", None),
        RequestError::RetryAfter(s) => ("throttled", Some(s.duration())),
        RequestError::Network(_) => ("network", None),
        RequestError::InvalidJson { .. } => ("invalid_answer", None),
        RequestError::Io(_) => ("io", None),
        _ => ("api", None),
    }
}

/// How a term of polling ended.
enum Ended {
    Stopped,
    /// The lease is gone: another instance may be polling.
    Lost,
}

/// Sleeps `d`; `Some` if asked to stop or the term was lost meanwhile.
async fn wait(
    d: Duration,
    stop: &mut watch::Receiver<bool>,
    lost: &mut watch::Receiver<bool>,
) -> Option<Ended> {
    if *lost.borrow() {
        return Some(Ended::Lost);
    }
    tokio::select! {
        stopped = pause(d, stop) => stopped.then_some(Ended::Stopped),
        _ = lost.wait_for(|l| *l) => Some(Ended::Lost),
    }
}

/// Polls, while elected, until `stop` turns true; stands by while another instance polls.
pub async fn run(
    ctx: Arc<BotContext>,
    poll_timeout: Duration,
    election: Election,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(term) = election.lead(&mut stop).await else {
            return;
        };
        tracing::info!(instance = %election.instance(), "telegram: this instance polls for updates (elected)");
        let ended = poll(&ctx, poll_timeout, &mut stop, term.lost.clone()).await;
        drop(term);
        match ended {
            Ended::Stopped => {
                if let Err(e) = election.resign().await {
                    tracing::warn!(error = %e, "telegram: could not give up the poller lease; it runs out by itself");
                }
                return;
            }
            Ended::Lost => tracing::warn!(
                instance = %election.instance(),
                "telegram: this instance lost the poller lease (another may poll now); standing by"
            ),
        }
    }
}

/// One term of polling.
async fn poll(
    ctx: &BotContext,
    poll_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
    mut lost: watch::Receiver<bool>,
) -> Ended {
    let mut failures = Failures::new();
    let mut offset = loop {
        match load_offset(ctx).await {
            Ok(o) => break o,
            Err(e) => {
                let pause = failures.failed("store", &e.to_string(), None);
                if let Some(ended) = wait(pause, stop, &mut lost).await {
                    return ended;
                }
            }
        }
    };
    let call_limit = poll_timeout + ctx.call_timeout + Duration::from_secs(5);
    tracing::info!(offset = ?offset, poll_timeout = ?poll_timeout, "telegram: polling for updates");
    loop {
        if *stop.borrow() {
            return Ended::Stopped;
        }
        if *lost.borrow() {
            return Ended::Lost;
        }
        let mut request = ctx
            .bot
            .get_updates()
            .timeout(poll_timeout.as_secs() as u32)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::MyChatMember]);
        if let Some(o) = offset {
            request = request.offset(o);
        }
        let started = Instant::now();
        let answer = tokio::select! {
            a = tokio::time::timeout(call_limit, request.send()) => a,
            _ = stop.changed() => return Ended::Stopped,
            _ = lost.wait_for(|l| *l) => return Ended::Lost,
        };
        let updates = match answer {
            Ok(Ok(updates)) => updates,
            Ok(Err(e)) => {
                let (kind, hint) = kind_of(&e);
                let detail = lifeboat_telegram::classify::scrub(&e.to_string(), ctx.bot.token());
                let pause = failures.failed(kind, &detail, hint);
                if let Some(ended) = wait(pause, stop, &mut lost).await {
                    return ended;
                }
                continue;
            }
            Err(_) => {
                let pause = failures.failed("timeout", "no answer in time", None);
                if let Some(ended) = wait(pause, stop, &mut lost).await {
                    return ended;
                }
                continue;
            }
        };
        failures.succeeded();
        if updates.is_empty() && started.elapsed() < QUICK_EMPTY {
            if let Some(ended) = wait(QUICK_EMPTY_PAUSE, stop, &mut lost).await {
                return ended;
            }
        }
        for update in updates {
            let id = update.id.0 as i32;
            let next = id.saturating_add(1);
            loop {
                if *lost.borrow() {
                    // Not handled here: the next poller asks for it again.
                    return Ended::Lost;
                }
                let done = async {
                    // A poller before this one may have handled it meanwhile (the stored
                    // offset is past it): skip it.
                    let stored = load_offset(ctx).await?;
                    offset = offset.max(stored);
                    if offset.is_some_and(|o| id < o) {
                        return Ok(());
                    }
                    ctx.process(&update).await?;
                    save_offset(ctx, next).await
                }
                .await;
                match done {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(update_id = id, error = %e, "telegram: could not handle an update; retrying");
                        if let Some(ended) = wait(BACKOFF_BASE * 4, stop, &mut lost).await {
                            return ended;
                        }
                    }
                }
            }
            offset = offset.max(Some(next));
        }
    }
}
