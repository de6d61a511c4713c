//! One turn of one notification: walk its plan from where it stands, channel by channel,
//! until it is sent, must wait (a retry, a throttle), or has nothing left to try.
//!
//! Each channel is either passed over with a recorded reason (not configured, no address,
//! no consent, out of rotation) or tried; the answer's class alone decides what happens next
//! (docs/failover.md). Every step is appended to the notification's attempts.
//!
//! Receipt-based fallback (`fallback_after`, docs/receipts.md): a send accepted by a channel
//! with delivery receipts (WhatsApp) stays `sent` but remains on the queue until
//! `sent + fallback_after`. A `delivered`/`read` receipt (the WhatsApp webhook) takes it off;
//! if the check comes due first, the worker records `no_receipt` on that channel and the plan
//! goes on with the next one. The trade-off: a receipt can be late or switched off (`read`
//! receipts are a user setting, and a phone offline for ten minutes delivers later), so the
//! person may get the message twice; the business chose that by setting `fallback_after`.
//!
//! A panic while a notification is processed (a bug) is caught here, not left to kill the
//! worker task with the claim held: the notification is saved as `failed` with an
//! `internal_error` attempt — or as `sent` if a send went out in that turn — and the claim is
//! released. It is not retried, neither now nor after a restart: a bug that struck once would
//! strike again, and the person must not get the message twice.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lifeboat_channel::{Answer, Category, ChannelKind, Class, OptOut, OutboundMessage};
use uuid::Uuid;

use crate::channels::Registry;
use crate::clock::Clock;
use crate::config::RoutingConfig;
use crate::model::{
    later, Attempt, Consent, ConsentStatus, Contact, Notification, Outcome, SkipReason, Timestamp,
};
use crate::policy::window::Form;
use crate::policy::{Candidate, Decision, Mode, WaitReason};
use crate::states::ChannelStates;
use crate::store::{Store, StoreResult};

/// Everything a worker needs; shared by all workers.
pub struct WorkerContext {
    pub store: Arc<dyn Store>,
    pub states: Arc<ChannelStates>,
    pub registry: Registry,
    pub routing: RoutingConfig,
    pub cooldowns: BTreeMap<ChannelKind, Duration>,
    pub clock: Arc<dyn Clock>,
    /// Adds the opt-out line / `List-Unsubscribe` to marketing messages.
    pub optout: Arc<crate::optout::MarketingOptOut>,
    /// Counts attempts, failovers and provider latency (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The guardrails: decides, with the channel state, whether a channel is tried now.
    pub policy: Arc<crate::policy::Policy>,
    /// Stages the turn's events for the app's endpoints before the turn's save, releases them after.
    pub events: Arc<crate::events::Events>,
}

enum Step {
    /// Carried: done.
    Sent,
    /// Go on with the next channel.
    Next,
    /// Come back to this same channel then.
    WaitUntil(Timestamp),
}

/// Namespace for retry keys: the key of (notification, channel) is the same on every attempt
/// and after a restart, so LINE delivers a retried push once.
const RETRY_KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6c69_6665_626f_6174_7265_7472_796b_6579);

pub fn retry_key(notification_id: &str, kind: ChannelKind) -> String {
    Uuid::new_v5(
        &RETRY_KEY_NAMESPACE,
        format!("{notification_id}/{kind}").as_bytes(),
    )
    .to_string()
}

/// Advances `n` as far as it can go now and saves it (releasing its claim), also when
/// advancing it panicked (see the module's comment).
pub async fn process(ctx: &WorkerContext, mut n: Notification) -> StoreResult<Notification> {
    let recorded = n.attempts.len();
    let status = n.status;
    match CatchUnwind(Box::pin(advance(ctx, &mut n))).await {
        Ok(result) => result?,
        Err(panic) => internal_error(ctx, &mut n, recorded, panic.as_ref()),
    }
    // Nothing after a receipt-less send could carry it: it did go out there.
    n.settle_after_no_receipt();
    n.updated_at = ctx.clock.now();
    ctx.policy.release(&n.id).await;
    ctx.metrics.attempts_since(&n.attempts, recorded);
    // The turn's events are written before its save and made due after it: a crash between
    // the two loses none (the events' sweep makes them due at the next start), and no app
    // hears of the turn before the save shows it. A failure is logged, never fails the turn.
    let staged = ctx.events.notification_turn(status, recorded, &n).await;
    ctx.store.save_progress(&n).await?;
    ctx.events.release(staged).await;
    Ok(n)
}

/// One turn's work on `n`, without the save.
async fn advance(ctx: &WorkerContext, n: &mut Notification) -> StoreResult<()> {
    let now = ctx.clock.now();
    n.receipt_overdue(now);
    if !n.status.is_final() {
        if now >= n.expires_at {
            if n.cursor.called {
                if let Some(&kind) = n.channels.get(n.cursor.index) {
                    ctx.states.count_result(kind, false, now);
                }
            }
            n.expire();
        } else {
            let contact = ctx.store.get_contact(&n.contact_id).await?;
            run_plan(ctx, n, contact.as_ref()).await?;
        }
    }
    Ok(())
}

/// Polls a future, turning a panic inside it into an `Err` with the panic's payload.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// What the person sees of a turn that panicked.
const INTERNAL_ERROR_DETAIL: &str = "the gateway hit an internal error while processing this \
notification; it is not retried, so that nothing is sent twice (the gateway's log has the details)";

/// Ends a turn that panicked: `sent` on the channel that accepted it in this turn if one did
/// (that send must not be repeated), else `failed`; either way with an `internal_error` attempt
/// and off the queue. `n` holds everything recorded before the panic.
fn internal_error(
    ctx: &WorkerContext,
    n: &mut Notification,
    recorded: usize,
    panic: &(dyn Any + Send),
) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    let now = ctx.clock.now();
    let sent_on = n
        .attempts
        .get(recorded..)
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|a| a.outcome == Outcome::Sent)
        .map(|a| a.channel);
    tracing::error!(notification = %n.id, panic = %message, sent_on = ?sent_on, "processing a notification panicked; it is saved as {} and not retried", if sent_on.is_some() { "sent" } else { "failed" });
    let kind = sent_on.or_else(|| {
        n.channels
            .get(n.cursor.index)
            .or(n.channels.last())
            .copied()
    });
    if let Some(kind) = kind {
        n.attempts.push(Attempt {
            detail: Some(INTERNAL_ERROR_DETAIL.into()),
            ..Attempt::new(kind, now, Outcome::InternalError)
        });
        // If this turn held the probe of a restricted channel, the probe ended without a
        // verdict: give the slot back, or the channel would never be probed again. (Should
        // another notification hold it, a second probe may go at once: harmless.)
        if ctx.states.current(kind).state == crate::model::ChannelState::Restricted {
            ctx.states.release_probe(kind);
        }
    }
    n.end_after_internal_error(sent_on);
}

async fn run_plan(
    ctx: &WorkerContext,
    n: &mut Notification,
    contact: Option<&Contact>,
) -> StoreResult<()> {
    loop {
        let Some(&kind) = n.channels.get(n.cursor.index) else {
            n.fail();
            return Ok(());
        };
        match step(ctx, n, kind, contact).await? {
            Step::Sent => {
                let check_at = receipt_check_at(ctx, n, kind);
                n.record_sent(kind, check_at);
                return Ok(());
            }
            Step::Next => n.fall_over(),
            Step::WaitUntil(until) => {
                n.wait_until(until);
                return Ok(());
            }
        }
    }
}

async fn step(
    ctx: &WorkerContext,
    n: &mut Notification,
    kind: ChannelKind,
    contact: Option<&Contact>,
) -> StoreResult<Step> {
    let now = ctx.clock.now();
    let candidate = Candidate {
        notification_id: &n.id,
        category: n.category,
        has_template: n.whatsapp_template.is_some(),
        template: n.whatsapp_template.as_ref(),
        kind,
        contact,
    };
    // The states another instance may have changed: read at most FRESH_AT_SEND ago, so a stale
    // copy cannot start a send on a channel banned elsewhere.
    ctx.states.fresh(crate::states::FRESH_AT_SEND).await?;
    // One decision (crate::policy) for the worker and the policy preview.
    let decision = ctx
        .policy
        .decide(&ctx.registry, &ctx.states, &candidate, now, Mode::Live)
        .await?;
    let (was_probe, form) = match decision {
        Decision::Go { probe, form, sleep } => {
            if let Ok(sleep) = sleep.to_std() {
                tokio::time::sleep(sleep).await;
            }
            (probe, form)
        }
        Decision::Skip { reason, detail } => {
            n.attempts.push(Attempt {
                detail,
                ..Attempt::skipped(kind, now, reason)
            });
            return Ok(Step::Next);
        }
        Decision::Wait {
            until,
            reason: WaitReason::Throttled,
            ..
        } => {
            if n.may_wait_throttled(ctx.routing.max_wait, now, until) {
                return Ok(Step::WaitUntil(until));
            }
            let detail = match n.cursor.throttled_since.filter(|since| *since < now) {
                Some(since) => format!(
                    "{kind} asked to wait until {}; waiting on it since {} would exceed routing.max_wait",
                    until.to_rfc3339(),
                    since.to_rfc3339()
                ),
                None => format!(
                    "{kind} asked to wait until {}, longer than routing.max_wait",
                    until.to_rfc3339()
                ),
            };
            n.attempts.push(Attempt {
                detail: Some(detail),
                ..Attempt::new(kind, now, Outcome::Throttled)
            });
            if n.cursor.called {
                ctx.states.count_result(kind, false, now);
            }
            return Ok(Step::Next);
        }
        Decision::Wait {
            until,
            reason,
            detail,
        } => {
            // Quiet hours are shown once per wait; pacing waits (milliseconds) are not.
            if reason == WaitReason::QuietHours {
                n.attempts.push(Attempt {
                    reason: Some(SkipReason::QuietHours),
                    detail,
                    ..Attempt::new(kind, now, Outcome::Deferred)
                });
            }
            return Ok(Step::WaitUntil(until));
        }
    };
    let (Some(channel), Some(contact)) = (ctx.registry.get(kind), contact) else {
        unreachable!("a decision to send implies a channel and a contact");
    };
    let address = contact
        .address(kind)
        .expect("a decision to send implies an address");

    let mut message = OutboundMessage {
        notification_id: n.id.clone(),
        category: n.category,
        to: address.to_string(),
        text: n.text.clone(),
        subject: n.subject.clone(),
        html: n.html.clone(),
        whatsapp_template: match form {
            Some(Form::FreeText) => None,
            Some(Form::Alternative) => n
                .whatsapp_template
                .as_ref()
                .and_then(|t| t.alternative.as_deref().cloned()),
            _ => n.whatsapp_template.clone().map(|mut t| {
                t.alternative = None;
                t
            }),
        },
        retry_key: retry_key(&n.id, kind),
        headers: Vec::new(),
    };
    ctx.optout.decorate(&mut message, kind, &contact.id).await?;
    tracing::debug!(notification = %n.id, channel = %kind, probe = was_probe, "sending");
    ctx.metrics.failover(n, kind);
    let answer = ctx.metrics.timed_send(kind, channel.send(&message)).await;
    let now = ctx.clock.now();
    n.cursor.called = true;
    tracing::debug!(notification = %n.id, channel = %kind, outcome = answer.class.as_str(), code = ?answer.code, "provider answered");
    let template = message
        .whatsapp_template
        .as_ref()
        .map(|t| format!("{}/{}", t.name, t.language));
    n.attempts.push(Attempt {
        template: template.clone(),
        ..Attempt::answered(kind, now, &answer)
    });
    let cooldown = ctx
        .cooldowns
        .get(&kind)
        .copied()
        .unwrap_or(ctx.routing.cooldown);
    ctx.states
        .report(kind, address, &answer, was_probe, cooldown, now)
        .await?;
    ctx.policy
        .after_send(&candidate, &answer, message.whatsapp_template.as_ref(), now)
        .await?;
    if let Some(template) = &template {
        ctx.policy
            .template_answer(&ctx.metrics, template, &answer, now)
            .await?;
    }

    let next = match &answer.class {
        Class::Sent => Step::Sent,
        Class::Transient { retry_after } => n
            .schedule_retry(&ctx.routing.retry, *retry_after, now)
            .map_or(Step::Next, Step::WaitUntil),
        Class::Throttled { retry_after, .. } => {
            // No Retry-After (LINE's 429, SMTP `450 4.2.1`): a second, again and again, but
            // never longer in all than routing.max_wait (`Notification::may_wait_throttled`).
            let until = later(now, retry_after.unwrap_or(Duration::from_secs(1)));
            if n.may_wait_throttled(ctx.routing.max_wait, now, until) {
                Step::WaitUntil(until)
            } else {
                Step::Next
            }
        }
        Class::RecipientUnreachable { opt_out } => {
            if let Some(opt_out) = opt_out {
                revoke(
                    ctx.store.as_ref(),
                    &ctx.events,
                    contact,
                    kind,
                    *opt_out,
                    &answer,
                    now,
                )
                .await?;
            }
            Step::Next
        }
        Class::Rejected
        | Class::ChannelRestricted { .. }
        | Class::ChannelBanned
        | Class::ConfigError => Step::Next,
    };
    match next {
        Step::Sent => ctx.states.count_result(kind, true, now),
        Step::Next => ctx.states.count_result(kind, false, now),
        Step::WaitUntil(_) => {}
    }
    Ok(next)
}

/// When to look for a receipt of a send `kind` just accepted: only if the notification asked
/// for `fallback_after`, the channel has receipts, and a channel is left to fall over to.
fn receipt_check_at(ctx: &WorkerContext, n: &Notification, kind: ChannelKind) -> Option<Timestamp> {
    let secs = n.fallback_after_secs?;
    let has_receipts = ctx.registry.get(kind).is_some_and(|c| c.has_receipts());
    let next_left = n.cursor.index + 1 < n.channels.len();
    let at = later(ctx.clock.now(), Duration::from_secs(secs));
    (has_receipts && next_left && at < n.expires_at).then_some(at)
}

/// The person told the provider they don't want our messages: record it as consent history,
/// for every contact holding the address the answer was about (an opt-out is about the
/// address), each with its own history entry. Also used for a late WhatsApp `failed` status
/// (131050) from the webhook.
pub(crate) async fn revoke(
    store: &dyn Store,
    events: &crate::events::Events,
    contact: &Contact,
    kind: ChannelKind,
    opt_out: OptOut,
    answer: &Answer,
    now: Timestamp,
) -> StoreResult<()> {
    let mut holders = match contact.address(kind) {
        Some(address) => store.find_contacts_by_address(kind, address).await?,
        None => Vec::new(),
    };
    if !holders.iter().any(|c| c.id == contact.id) {
        holders.push(contact.clone());
    }
    let source = match opt_out {
        OptOut::Blocked => format!("{kind}_blocked"),
        OptOut::StoppedMarketing => format!("{kind}_stopped_marketing"),
    };
    let evidence = format!(
        "provider answer {}: {}",
        answer.code.as_deref().unwrap_or("-"),
        answer.detail.as_deref().unwrap_or("-")
    );
    for holder in &holders {
        let current = holder.consents.get(&kind);
        let (status, scopes) = match opt_out {
            OptOut::Blocked => (ConsentStatus::Revoked, Vec::new()),
            OptOut::StoppedMarketing => {
                let scopes: Vec<Category> = current
                    .map(|c| c.scopes.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| *s != Category::Marketing)
                    .collect();
                let status = if scopes.is_empty() {
                    ConsentStatus::Revoked
                } else {
                    ConsentStatus::Granted
                };
                (status, scopes)
            }
        };
        let done = events
            .set_consent(
                store,
                &holder.id,
                kind,
                Consent {
                    status,
                    scopes,
                    source: source.clone(),
                    evidence: Some(evidence.clone()),
                    at: now,
                },
            )
            .await?;
        if done.is_some() {
            tracing::info!(contact = %holder.id, channel = %kind, "consent revoked by a provider signal");
        }
    }
    crate::policy::risk::signal(store, kind, &source, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_keys_are_stable_per_notification_and_channel() {
        let a = retry_key("n1", ChannelKind::Line);
        assert_eq!(a, retry_key("n1", ChannelKind::Line));
        assert_ne!(a, retry_key("n2", ChannelKind::Line));
        assert_ne!(a, retry_key("n1", ChannelKind::Whatsapp));
        assert!(Uuid::parse_str(&a).is_ok());
    }
}
