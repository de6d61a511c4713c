//! A notification's state machine, in one place: every change of its status, carrying
//! channel, plan cursor and queue time is one of these transitions. The worker
//! ([`super::worker`]) and the WhatsApp receipts ([`crate::webhooks::whatsapp_receipts`]) call
//! them; neither writes those fields itself (docs/failover.md, docs/receipts.md).
//!
//! They only change the record: the side effects of a step (channel state counts, the save,
//! waking the workers) stay with the caller.

use std::time::Duration;

use lifeboat_channel::{Answer, ChannelKind, Class};

use super::backoff;
use crate::config::RetryConfig;
use crate::model::{later, Attempt, Cursor, Notification, Outcome, Status, Timestamp};

/// A delivery receipt for a sent message: moves it `sent` → `delivered` → `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    Delivered,
    Read,
}

impl Receipt {
    pub fn status(self) -> Status {
        match self {
            Receipt::Delivered => Status::Delivered,
            Receipt::Read => Status::Read,
        }
    }

    fn outcome(self) -> Outcome {
        match self {
            Receipt::Delivered => Outcome::Delivered,
            Receipt::Read => Outcome::Read,
        }
    }
}

/// Forward order of a carried notification's statuses.
fn rank(status: Status) -> u8 {
    match status {
        Status::Delivered => 2,
        Status::Read => 3,
        _ => 1,
    }
}

impl Notification {
    /// `kind` accepted it: `sent` there. `receipt_check_at`: when to fall over if no receipt
    /// came by then (`fallback_after`); `None` takes it off the queue.
    pub fn record_sent(&mut self, kind: ChannelKind, receipt_check_at: Option<Timestamp>) {
        self.status = Status::Sent;
        self.channel = Some(kind);
        self.next_attempt_at = receipt_check_at;
    }

    /// Queued, to come back at `until` (never later than it expires).
    pub fn wait_until(&mut self, until: Timestamp) {
        self.status = Status::Queued;
        self.next_attempt_at = Some(until.min(self.expires_at));
    }

    /// Go on with the next channel of the plan, from its start.
    pub fn fall_over(&mut self) {
        self.cursor = Cursor::at(self.cursor.index + 1);
    }

    /// One more transient failure on the current channel: when to try it again, or `None`
    /// when `routing.retry.attempts` are used up (the caller then falls over). A provider's
    /// `retry_after` is a floor for the wait.
    pub fn schedule_retry(
        &mut self,
        retry: &RetryConfig,
        retry_after: Option<Duration>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        self.cursor.tries += 1;
        (self.cursor.tries < retry.attempts).then(|| {
            let wait = backoff::delay(retry, self.cursor.tries, retry_after);
            later(now, wait)
        })
    }

    /// Whether it may wait on its throttled channel until `until`: only while all its waiting
    /// on that channel, counted from the first time it had to wait there, stays within
    /// `max_wait` (`routing.max_wait`, failover.md) — whatever the provider says or doesn't
    /// say. The first call on a channel starts that count.
    pub fn may_wait_throttled(
        &mut self,
        max_wait: Duration,
        now: Timestamp,
        until: Timestamp,
    ) -> bool {
        let since = *self.cursor.throttled_since.get_or_insert(now);
        let max_wait = chrono::Duration::from_std(max_wait).unwrap_or(chrono::Duration::MAX);
        until.signed_duration_since(since) <= max_wait
    }

    /// Its time ran out before anything carried it.
    pub fn expire(&mut self) {
        self.status = Status::Expired;
        self.next_attempt_at = None;
    }

    /// The plan has no channel left to try.
    pub fn fail(&mut self) {
        self.status = Status::Failed;
        self.next_attempt_at = None;
    }

    /// Ends a turn that hit an internal error: `sent` on `sent_on` if a send went out in that
    /// turn (it must not be repeated), else `failed`; off the queue either way.
    pub fn end_after_internal_error(&mut self, sent_on: Option<ChannelKind>) {
        match sent_on {
            Some(kind) => self.record_sent(kind, None),
            None => self.fail(),
        }
    }

    /// A notification that ended `failed` or `expired` after a receipt-less send did go out
    /// there: it is `sent` on that channel.
    pub fn settle_after_no_receipt(&mut self) {
        if !matches!(self.status, Status::Failed | Status::Expired) {
            return;
        }
        if let Some(a) = self
            .attempts
            .iter()
            .rev()
            .find(|a| a.outcome == Outcome::NoReceipt)
        {
            let kind = a.channel;
            self.record_sent(kind, None);
        }
    }

    /// A `sent` notification whose receipt check came due (no receipt took it off the queue
    /// in time): records `no_receipt` on the carrying channel and queues it at the next one.
    /// Past its expiry it is only taken off the queue.
    pub fn receipt_overdue(&mut self, now: Timestamp) {
        if self.status != Status::Sent || self.next_attempt_at.is_none() {
            return;
        }
        self.next_attempt_at = None;
        let Some(kind) = self.channel else { return };
        if now >= self.expires_at {
            return;
        }
        self.attempts.push(Attempt {
            detail: Some(format!(
                "no delivery receipt within fallback_after ({}s); trying the next channel",
                self.fallback_after_secs.unwrap_or_default()
            )),
            ..Attempt::new(kind, now, Outcome::NoReceipt)
        });
        self.status = Status::Queued;
        self.channel = None;
        self.fall_over();
    }

    /// Index of the attempt that carries it on `kind` with this provider message id, if it
    /// still does (one that fell over since is no longer moved by that message's statuses).
    fn carrying_attempt(&self, kind: ChannelKind, message_id: &str) -> Option<usize> {
        if self.channel != Some(kind)
            || !matches!(self.status, Status::Sent | Status::Delivered | Status::Read)
        {
            return None;
        }
        let i = self.attempts.iter().rposition(|a| {
            matches!(
                a.outcome,
                Outcome::Sent | Outcome::Delivered | Outcome::Read
            )
        })?;
        let a = &self.attempts[i];
        (a.channel == kind && a.provider_message_id.as_deref() == Some(message_id)).then_some(i)
    }

    /// A receipt for message `message_id` on `kind`: `sent` → `delivered` → `read`, never
    /// back, and off the queue (a pending receipt check). `false` if it changed nothing.
    pub fn record_receipt(
        &mut self,
        kind: ChannelKind,
        message_id: &str,
        receipt: Receipt,
        now: Timestamp,
    ) -> bool {
        let Some(i) = self.carrying_attempt(kind, message_id) else {
            return false;
        };
        if rank(receipt.status()) <= rank(self.status) {
            return false;
        }
        self.status = receipt.status();
        self.attempts[i].outcome = receipt.outcome();
        self.next_attempt_at = None;
        self.updated_at = now;
        true
    }

    /// The provider priced message `message_id` on `kind`: kept on the attempt that sent it,
    /// once. `false` if no attempt has that message id or it was priced already.
    pub fn record_pricing(
        &mut self,
        kind: ChannelKind,
        message_id: &str,
        pricing: crate::model::Pricing,
    ) -> bool {
        let Some(a) = self.attempts.iter_mut().find(|a| {
            a.channel == kind
                && a.provider_message_id.as_deref() == Some(message_id)
                && matches!(
                    a.outcome,
                    Outcome::Sent | Outcome::Delivered | Outcome::Read
                )
        }) else {
            return false;
        };
        if a.pricing.is_some() {
            return false;
        }
        a.pricing = Some(pricing);
        true
    }

    /// The provider reported that the send carrying it (message `message_id` on `kind`)
    /// failed after all: records the answer and queues it again, at the next channel (at the
    /// same one for a transient or throttled failure, while retries are left). `false` if it
    /// changed nothing (delivered or read already, or no longer carried by that message).
    pub fn receipt_failed(
        &mut self,
        kind: ChannelKind,
        message_id: &str,
        answer: &Answer,
        retry: &RetryConfig,
        now: Timestamp,
    ) -> bool {
        if self.carrying_attempt(kind, message_id).is_none() || self.status != Status::Sent {
            // Delivered or read already: it got there, whatever the provider says late.
            return false;
        }
        self.attempts.push(Attempt {
            provider_message_id: Some(message_id.to_string()),
            ..Attempt::answered(kind, now, answer)
        });
        let again = match answer.class {
            Class::Transient { .. } | Class::Throttled { .. } => {
                self.schedule_retry(retry, None, now)
            }
            _ => None,
        };
        let due = again.unwrap_or_else(|| {
            self.fall_over();
            now
        });
        self.channel = None;
        self.wait_until(due);
        self.updated_at = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_channel::{Category, OptOut};

    const WA: ChannelKind = ChannelKind::Whatsapp;

    fn sent_on_whatsapp(wamid: &str) -> Notification {
        let now = chrono::Utc::now();
        Notification {
            id: "n1".into(),
            contact_id: "ana".into(),
            category: Category::Marketing,
            text: "hi".into(),
            subject: None,
            html: None,
            whatsapp_template: None,
            channels: vec![WA, ChannelKind::Telegram],
            status: Status::Sent,
            channel: Some(WA),
            attempts: vec![Attempt {
                provider_message_id: Some(wamid.into()),
                ..Attempt::new(WA, now, Outcome::Sent)
            }],
            created_at: now,
            updated_at: now,
            expires_at: now + chrono::Duration::hours(1),
            fallback_after_secs: None,
            idempotency_key: None,
            cursor: Cursor::default(),
            next_attempt_at: None,
        }
    }

    #[test]
    fn receipts_only_move_forward_and_only_for_the_carrying_message() {
        let now = chrono::Utc::now();
        let mut n = sent_on_whatsapp("wamid.A");
        n.next_attempt_at = Some(now);
        assert!(!n.record_receipt(WA, "wamid.OTHER", Receipt::Delivered, now));
        assert!(!n.record_receipt(ChannelKind::Line, "wamid.A", Receipt::Delivered, now));
        assert!(n.record_receipt(WA, "wamid.A", Receipt::Delivered, now));
        assert_eq!(n.status, Status::Delivered);
        assert_eq!(
            n.next_attempt_at, None,
            "a receipt cancels the receipt check"
        );
        assert!(n.record_receipt(WA, "wamid.A", Receipt::Read, now));
        assert!(!n.record_receipt(WA, "wamid.A", Receipt::Delivered, now));
        assert_eq!(n.status, Status::Read);
        assert_eq!(n.attempts[0].outcome, Outcome::Read);
    }

    #[test]
    fn a_late_failure_queues_the_next_channel_once() {
        let now = chrono::Utc::now();
        let retry = RetryConfig::default();
        let mut n = sent_on_whatsapp("wamid.A");
        let answer = Answer {
            class: Class::RecipientUnreachable {
                opt_out: Some(OptOut::StoppedMarketing),
            },
            code: Some("131050".into()),
            detail: Some("stopped marketing".into()),
            message_id: Some("wamid.A".into()),
            signal: None,
        };
        assert!(n.receipt_failed(WA, "wamid.A", &answer, &retry, now));
        assert_eq!(n.status, Status::Queued);
        assert_eq!(n.cursor.index, 1);
        assert_eq!(n.channel, None);
        assert_eq!(n.queue_due(), Some(now));
        assert_eq!(n.attempts[1].outcome, Outcome::RecipientUnreachable);
        assert_eq!(n.attempts[1].provider_code.as_deref(), Some("131050"));
        // Redelivered: the notification no longer rides on that message.
        assert!(!n.receipt_failed(WA, "wamid.A", &answer, &retry, now));
        assert_eq!(n.attempts.len(), 2);
    }

    #[test]
    fn a_late_transient_failure_retries_the_same_channel_while_retries_are_left() {
        let now = chrono::Utc::now();
        let retry = RetryConfig {
            attempts: 2,
            ..RetryConfig::default()
        };
        let answer = Answer {
            class: Class::Transient { retry_after: None },
            code: Some("131000".into()),
            detail: None,
            message_id: Some("wamid.A".into()),
            signal: None,
        };
        let mut n = sent_on_whatsapp("wamid.A");
        assert!(n.receipt_failed(WA, "wamid.A", &answer, &retry, now));
        assert_eq!(
            (n.status, n.cursor.index, n.cursor.tries),
            (Status::Queued, 0, 1)
        );
        assert!(n.queue_due().is_some_and(|at| at > now));
        // Sent again on WhatsApp, it fails again: no retry left, so the next channel.
        n.attempts.push(Attempt {
            provider_message_id: Some("wamid.B".into()),
            ..Attempt::new(WA, now, Outcome::Sent)
        });
        n.record_sent(WA, None);
        assert!(n.receipt_failed(WA, "wamid.B", &answer, &retry, now));
        assert_eq!((n.cursor.index, n.cursor.tries), (1, 0));
        assert_eq!(n.queue_due(), Some(now));
    }

    #[test]
    fn throttled_waits_on_one_channel_end_at_max_wait_counted_from_the_first() {
        let now = chrono::Utc::now();
        let max_wait = Duration::from_secs(60);
        let secs = chrono::Duration::seconds;
        let mut n = sent_on_whatsapp("wamid.A");
        assert!(n.may_wait_throttled(max_wait, now, now + secs(40)));
        assert!(n.may_wait_throttled(max_wait, now + secs(40), now + secs(60)));
        assert!(!n.may_wait_throttled(max_wait, now + secs(60), now + secs(61)));
        n.fall_over();
        assert!(n.may_wait_throttled(max_wait, now + secs(60), now + secs(100)));
    }

    #[test]
    fn an_overdue_receipt_falls_over_and_a_plan_ending_after_it_is_sent_there() {
        let now = chrono::Utc::now();
        let mut n = sent_on_whatsapp("wamid.A");
        n.next_attempt_at = Some(now);
        n.receipt_overdue(now);
        assert_eq!(
            (n.status, n.channel, n.cursor.index),
            (Status::Queued, None, 1)
        );
        assert_eq!(n.attempts[1].outcome, Outcome::NoReceipt);
        n.fail();
        n.settle_after_no_receipt();
        assert_eq!((n.status, n.channel), (Status::Sent, Some(WA)));
        assert_eq!(n.queue_due(), None);
    }
}
