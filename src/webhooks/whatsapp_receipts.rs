//! WhatsApp delivery statuses of our own messages (the `statuses` of Meta's `messages` webhook), tied to their
//! notification by the `wamid` the send returned (the store indexes every attempt's provider
//! message id, [`Store::find_by_message_id`]).
//!
//! - `delivered` / `read` move the carrying attempt and the notification forward (`sent` →
//!   `delivered` → `read`, never back; a late `sent` changes nothing). A receipt also cancels a
//!   pending `fallback_after` check, since the notification leaves the queue.
//! - `failed` after a 200 send: Meta reports several recipient-level failures only this way
//!   (131026, 131049, 131050, 130497, ...). The code is classified like a send's answer
//!   ([`class_for_code`]); the failure is recorded as an attempt and the notification is queued
//!   again, at its next channel (at the same one for a transient code). 131050 also revokes the
//!   marketing scope, as the worker does for the same answer. A channel-level code (368,
//!   131031, a throughput limit, ...) changes the channel state exactly as a send error would.
//!
//! A status can arrive before the worker has saved the send it belongs to (Meta is fast, the
//! worker still holds the notification): such statuses are retried in the background for a few
//! seconds and then dropped, and Meta gets its 200 at once either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_channel::{Answer, ChannelKind, Class};
use lifeboat_whatsapp::classify::{class_for_code, signal_for_code};
use serde::Deserialize;
use serde_json::Value;

use crate::dispatch::transitions::Receipt;
use crate::dispatch::worker;
use crate::model::{Notification, Pricing, PricingCategory, Timestamp};
use crate::store::{Edited, Store, StoreResult};
use crate::web::AppState;

const WA: ChannelKind = ChannelKind::Whatsapp;

/// When statuses that found no saved notification yet are tried again.
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(10),
];

/// One entry of `statuses` (spec `Statuses`): only what is used.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusEvent {
    /// The `wamid` of our message.
    pub id: String,
    /// `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    #[serde(default)]
    pub recipient_id: Option<String>,
    #[serde(default)]
    pub errors: Vec<Value>,
    /// `{billable, pricing_model, category}` on sent/delivered/read (and some failed) statuses.
    #[serde(default)]
    pub pricing: Option<Value>,
}

impl StatusEvent {
    /// The status's `pricing`, when it has a `billable` flag and a `category`.
    fn pricing(&self) -> Option<Pricing> {
        let p = self.pricing.as_ref()?;
        let billable = p["billable"].as_bool()?;
        let category = p["category"].as_str()?;
        let category: PricingCategory =
            serde_json::from_value(Value::String(category.to_ascii_lowercase())).ok()?;
        Some(Pricing { billable, category })
    }
}

/// What a status asks of its notification.
#[derive(Debug, Clone)]
enum Change {
    /// Move forward to `delivered` or `read`.
    Receipt(Receipt),
    /// The message did not go: record it and queue the notification again.
    Failed(Answer),
    /// What Meta says the message costs: kept on its attempt and counted, once.
    Priced(Pricing),
}

/// A status waiting to be applied to its notification.
#[derive(Debug, Clone)]
struct Pending {
    wamid: String,
    change: Change,
}

/// Applies the `statuses` of one webhook, each once per message and status (a redelivered or
/// replayed status changes nothing). Those whose notification is not saved yet are retried in
/// the background.
pub async fn handle(state: &AppState, statuses: Vec<Value>, now: Timestamp) -> StoreResult<()> {
    let mut later = Vec::new();
    for raw in statuses {
        let event: StatusEvent = match serde_json::from_value(raw.clone()) {
            Ok(e) => e,
            Err(_) => {
                super::store_event(state.store.as_ref(), WA, "messages.statuses", &raw, now)
                    .await?;
                continue;
            }
        };
        // Pricing comes on sent, delivered and read alike: the attempt takes the first.
        if let Some(pricing) = event.pricing() {
            let pending = Pending {
                wamid: event.id.clone(),
                change: Change::Priced(pricing),
            };
            if !apply(state, &pending, now).await? {
                later.push(pending);
            }
        }
        if event.status == "sent" {
            // Changes nothing else: not worth a record.
            continue;
        }
        let seen = format!("status/{}/{}", event.id, event.status);
        let step = status_step(state, &event, &raw, now);
        if let Some(Some(pending)) = super::once(state.store.as_ref(), WA, &seen, now, step).await?
        {
            later.push(pending);
        }
    }
    if !later.is_empty() {
        retry_later(state.clone(), later);
    }
    Ok(())
}

/// Applies one status; returns it if it must be tried again later.
async fn status_step(
    state: &AppState,
    event: &StatusEvent,
    raw: &Value,
    now: Timestamp,
) -> StoreResult<Option<Pending>> {
    let change = match event.status.as_str() {
        "delivered" => Change::Receipt(Receipt::Delivered),
        "read" => Change::Receipt(Receipt::Read),
        "failed" => {
            let answer = failure_answer(event);
            report_to_channel(state, event, &answer, now).await?;
            Change::Failed(answer)
        }
        _ => {
            super::store_event(state.store.as_ref(), WA, "messages.statuses", raw, now).await?;
            return Ok(None);
        }
    };
    let pending = Pending {
        wamid: event.id.clone(),
        change,
    };
    Ok((!apply(state, &pending, now).await?).then_some(pending))
}

fn retry_later(state: AppState, mut pending: Vec<Pending>) {
    let background = state.background.clone();
    background.spawn("WhatsApp status retry", async move {
        for delay in RETRY_DELAYS {
            tokio::time::sleep(delay).await;
            let mut still = Vec::new();
            for p in pending {
                match apply(&state, &p, state.clock.now()).await {
                    Ok(true) => {}
                    Ok(false) => still.push(p),
                    Err(e) => {
                        tracing::error!(error = %e, "applying a WhatsApp status failed");
                        still.push(p);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                return;
            }
        }
        tracing::debug!(
            count = pending.len(),
            "WhatsApp statuses for messages with no notification (not ours, or erased); ignored"
        );
    });
}

/// The class, code and words of a `failed` status, as a send's answer would carry them.
fn failure_answer(event: &StatusEvent) -> Answer {
    let error = event.errors.first();
    let code = error.and_then(|e| match &e["code"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let text = |key: &str| {
        error
            .and_then(|e| e[key].as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let details = error
        .and_then(|e| e["error_data"]["details"].as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let words = text("message").or(text("title"));
    let detail = match (words, details) {
        (Some(w), Some(d)) if w != d => format!("{w}: {d}"),
        (Some(w), _) => w.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "failed status without an error".to_string(),
    };
    let class = match code {
        Some(code) => class_for_code(code, None, &detail, None),
        None => Class::Rejected,
    };
    Answer {
        class,
        code: code.map(|c| c.to_string()),
        detail: Some(detail),
        message_id: Some(event.id.clone()),
        signal: code.and_then(signal_for_code),
    }
}

/// A channel-level failure changes the channel state like the same answer to a send would.
async fn report_to_channel(
    state: &AppState,
    event: &StatusEvent,
    answer: &Answer,
    now: Timestamp,
) -> StoreResult<()> {
    if matches!(
        answer.class,
        Class::Sent | Class::RecipientUnreachable { .. } | Class::Rejected
    ) {
        return Ok(());
    }
    let address = event
        .recipient_id
        .as_deref()
        .map(|r| format!("+{}", r.trim_start_matches('+')))
        .unwrap_or_default();
    let cooldown = state.config.cooldown(WA);
    state
        .states
        .report(WA, &address, answer, false, cooldown, now)
        .await
}

/// Applies one status to its notification. `false` if it must be tried again later (not saved
/// yet, or a worker holds it right now).
async fn apply(state: &AppState, pending: &Pending, now: Timestamp) -> StoreResult<bool> {
    let store = state.store.as_ref();
    let Some(id) = store.find_by_message_id(WA, &pending.wamid).await? else {
        return Ok(false);
    };
    // A receipt's event is staged before the edit that saves the receipt, from the
    // notification as the edit will leave it, and made due after it (or deleted if the edit
    // does not apply it): a crash after the edit cannot lose it, and Meta's redelivery of the
    // receipt would not bring it back (the receipt is applied by then).
    let staged = match &pending.change {
        Change::Receipt(to) if state.events.enabled() => match store.get_notification(&id).await? {
            Some(mut n) => match n.record_receipt(WA, &pending.wamid, *to, now) {
                true => Some(state.events.stage_receipt(&n, WA, &pending.wamid).await),
                false => None,
            },
            None => None,
        },
        _ => None,
    };
    let discard = |staged: Option<crate::events::Staged>| async {
        if let Some(staged) = staged {
            state.events.discard(staged).await;
        }
    };
    let applied = Arc::new(AtomicBool::new(false));
    let edit: crate::store::NotificationEdit = {
        let (wamid, change, applied) = (
            pending.wamid.clone(),
            pending.change.clone(),
            applied.clone(),
        );
        let retry = state.config.routing.retry.clone();
        Box::new(move |n: &mut Notification| {
            let done = match &change {
                Change::Receipt(to) => n.record_receipt(WA, &wamid, *to, now),
                Change::Failed(answer) => n.receipt_failed(WA, &wamid, answer, &retry, now),
                Change::Priced(pricing) => n.record_pricing(WA, &wamid, *pricing),
            };
            applied.store(done, Ordering::Relaxed);
        })
    };
    let edited = store.edit_notification(&id, edit).await;
    let n = match edited {
        Ok(Edited::Done(n)) if applied.load(Ordering::Relaxed) => n,
        Ok(Edited::Done(_)) | Ok(Edited::Missing) => {
            discard(staged).await;
            return Ok(true);
        }
        Ok(Edited::Claimed) => {
            discard(staged).await;
            return Ok(false);
        }
        Err(e) => {
            discard(staged).await;
            return Err(e);
        }
    };
    match &pending.change {
        Change::Receipt(to) => {
            tracing::debug!(notification = %n.id, status = to.status().as_str(), "WhatsApp receipt applied");
            match staged {
                Some(staged) => state.events.release(staged).await,
                // The notification changed between the read and the edit (rare): recorded
                // after the edit, as the edit left it.
                None => state.events.receipt(&n).await,
            }
        }
        Change::Priced(pricing) => {
            state.policy.count_priced(WA, *pricing);
            state
                .metrics
                .priced(WA, pricing.category.as_str(), pricing.billable);
        }
        Change::Failed(answer) => {
            tracing::info!(
                notification = %n.id,
                outcome = answer.class.as_str(),
                code = ?answer.code,
                "WhatsApp reported a failed delivery after accepting the send; falling over"
            );
            if let Class::RecipientUnreachable {
                opt_out: Some(opt_out),
            } = answer.class
            {
                revoke(store, &state.events, &n, opt_out, answer, now).await?;
            }
            if answer.signal == Some(lifeboat_channel::Signal::RecipientMarketingHeld) {
                if let Some(contact) = store.get_contact(&n.contact_id).await? {
                    if let Some(address) = contact.address(WA) {
                        state.policy.hold_marketing(address, answer, now).await?;
                    }
                }
            }
            // The template the failed message used (kept on the attempt that sent it).
            let template = n
                .attempts
                .iter()
                .rev()
                .find(|a| {
                    a.provider_message_id.as_deref() == Some(pending.wamid.as_str())
                        && a.template.is_some()
                })
                .and_then(|a| a.template.clone());
            if let Some(template) = template {
                state
                    .policy
                    .template_answer(&state.metrics, &template, answer, now)
                    .await?;
            }
            state.wake.notify_one();
        }
    }
    Ok(true)
}

/// The person opted out (131050 in a `failed` status): consent changes as for the same answer
/// to a send, once per message even if Meta delivers the webhook again.
async fn revoke(
    store: &dyn Store,
    events: &crate::events::Events,
    n: &Notification,
    opt_out: lifeboat_channel::OptOut,
    answer: &Answer,
    now: Timestamp,
) -> StoreResult<()> {
    let seen = format!("failed/{}", answer.message_id.as_deref().unwrap_or(""));
    if super::already_applied(store, WA, &seen).await? {
        return Ok(());
    }
    if let Some(contact) = store.get_contact(&n.contact_id).await? {
        worker::revoke(store, events, &contact, WA, opt_out, answer, now).await?;
    }
    super::mark_applied(store, WA, &seen, now).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_channel::OptOut;

    fn failed(code: i64) -> StatusEvent {
        serde_json::from_value(serde_json::json!({
            "id": "wamid.A", "status": "failed", "timestamp": "1750000000", "recipient_id": "16505551234",
            "errors": [{"code": code, "title": "Unable to deliver the message", "message": "Unable to deliver the message",
                        "error_data": {"details": "The recipient stopped marketing"}, "href": "https://x"}]
        }))
        .unwrap()
    }

    #[test]
    fn failed_statuses_are_classified_like_send_answers() {
        let a = failure_answer(&failed(131050));
        assert_eq!(
            a.class,
            Class::RecipientUnreachable {
                opt_out: Some(OptOut::StoppedMarketing)
            }
        );
        assert_eq!(a.code.as_deref(), Some("131050"));
        assert!(a.detail.unwrap().contains("stopped marketing"));
        assert_eq!(failure_answer(&failed(131031)).class, Class::ChannelBanned);
        let mut no_errors = failed(1);
        no_errors.errors.clear();
        assert_eq!(failure_answer(&no_errors).class, Class::Rejected);
    }
}
