//! The decision engine: [`Policy::decide`] says what happens to a notification on one channel
//! (skip, wait, or go), live for the workers or as a dry run for the preview, and
//! [`Policy::after_send`] / [`Policy::release`] book what a send's answer means for the caps,
//! the tier, the risk figures and the pace.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lifeboat_channel::{Answer, Category, ChannelKind, Class, ThrottleScope};

use super::config::PolicyConfig;
use super::pacing::{Pace, Pacer, Rate};
use super::window::Form;
use super::{caps, quiet_hours, risk, tier, window};
use crate::channels::Registry;
use crate::dispatch::states::{Availability, ChannelStates};
use crate::model::{Contact, Timestamp};
use crate::store::{Store, StoreResult};
use tier::TierLedger;

/// Whether a decision books (the worker) or only looks (the preview).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    DryRun,
}

/// A notification about to be tried on one channel.
pub struct Candidate<'a> {
    pub notification_id: &'a str,
    pub category: Category,
    pub has_template: bool,
    pub kind: ChannelKind,
    pub contact: Option<&'a Contact>,
}

/// What happens to a notification on a channel now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Pass the channel over (go on with the next one).
    Skip {
        reason: &'static str,
        detail: Option<String>,
    },
    /// Come back to this channel then: `throttled` (the channel's state; the worker applies
    /// `routing.max_wait`), `quiet_hours` or `paced`.
    Wait {
        until: Timestamp,
        reason: &'static str,
        detail: Option<String>,
    },
    /// Send (after `sleep`, a few ms at most). `probe`: this send is the restricted channel's
    /// probe. `form`: WhatsApp free-form text or template.
    Go {
        probe: bool,
        form: Option<Form>,
        sleep: chrono::Duration,
    },
}

fn skip(reason: &'static str) -> Decision {
    Decision::Skip {
        reason,
        detail: None,
    }
}

/// Sends in flight that hold a place under a cap (notification id → contact id).
#[derive(Default)]
struct Holds {
    cap: HashMap<String, String>,
    tier: HashMap<String, String>,
}

/// The guardrails, shared by the workers and the API.
pub struct Policy {
    pub config: PolicyConfig,
    store: Arc<dyn Store>,
    pacer: Pacer,
    tier: TierLedger,
    holds: tokio::sync::Mutex<Holds>,
}

impl Policy {
    pub fn new(config: PolicyConfig, store: Arc<dyn Store>) -> Policy {
        let rates = config
            .channels
            .iter()
            .map(|(k, c)| (*k, (Rate(c.rate), c.per_chat_rate.map(Rate))))
            .collect();
        Policy {
            pacer: Pacer::new(rates),
            tier: TierLedger::new(store.clone()),
            holds: tokio::sync::Mutex::new(Holds::default()),
            store,
            config,
        }
    }

    /// The one decision for a notification on a channel (see the module docs for the order).
    pub async fn decide(
        &self,
        registry: &Registry,
        states: &ChannelStates,
        c: &Candidate<'_>,
        now: Timestamp,
        mode: Mode,
    ) -> StoreResult<Decision> {
        let kind = c.kind;
        if registry.get(kind).is_none() {
            return Ok(skip("not_configured"));
        }
        let Some((contact, address)) = c.contact.and_then(|ct| Some((ct, ct.address(kind)?)))
        else {
            return Ok(skip("no_address"));
        };
        if !contact.consents_to(kind, c.category) {
            return Ok(skip("no_consent"));
        }
        let availability = match mode {
            Mode::Live => states.availability(kind, address, now),
            Mode::DryRun => states.peek_availability(kind, address, now),
        };
        let probe = match availability {
            Availability::Open => false,
            Availability::Probe => true,
            Availability::Skip(reason) => return Ok(skip(reason)),
            Availability::WaitUntil(until) => {
                return Ok(Decision::Wait {
                    until,
                    reason: "throttled",
                    detail: None,
                })
            }
        };
        let decision = self
            .guardrails(states, c, contact, address, now, mode)
            .await;
        if probe && mode == Mode::Live && !matches!(decision, Ok(Decision::Go { .. })) {
            states.release_probe(kind);
        }
        Ok(match decision? {
            Decision::Go { form, sleep, .. } => Decision::Go { probe, form, sleep },
            other => other,
        })
    }

    async fn guardrails(
        &self,
        states: &ChannelStates,
        c: &Candidate<'_>,
        contact: &Contact,
        address: &str,
        now: Timestamp,
        mode: Mode,
    ) -> StoreResult<Decision> {
        let kind = c.kind;
        let marketing = c.category == Category::Marketing;
        let policy = self.config.channel(kind);

        if marketing {
            let status = self.marketing_status(states, kind).await?;
            if status.paused {
                return Ok(Decision::Skip {
                    reason: "channel_restricted",
                    detail: Some(format!(
                        "{kind} marketing is paused by the risk monitor: {}",
                        status.reason.unwrap_or_default()
                    )),
                });
            }
            if let Some(q) = &self.config.quiet_hours {
                let tz = quiet_hours::contact_tz(contact);
                if let Some(until) = q.opens_at(tz, now) {
                    return Ok(Decision::Wait {
                        until,
                        reason: "quiet_hours",
                        detail: Some(format!(
                            "marketing waits for {} in {tz}",
                            q.end.format("%H:%M")
                        )),
                    });
                }
            }
        }

        let mut holds = self.holds.lock().await;
        if marketing {
            let sent = caps::sent_in_window(self.store.as_ref(), &contact.id, now).await?;
            let in_flight = holds
                .cap
                .iter()
                .filter(|(id, who)| *who == &contact.id && *id != c.notification_id)
                .count();
            if !caps::allows(self.config.marketing_per_day, sent, in_flight) {
                return Ok(Decision::Skip {
                    reason: "cap_reached",
                    detail: Some(format!(
                        "{sent} marketing messages in the last 24 h (policy.marketing_per_day = {})",
                        self.config.marketing_per_day
                    )),
                });
            }
        }

        let mut form = None;
        if kind == ChannelKind::Whatsapp {
            if policy.service_window {
                match window::choose(contact, c.has_template, now) {
                    Ok(f) => form = Some(f),
                    Err(reason) => {
                        return Ok(Decision::Skip {
                            reason,
                            detail: Some(
                                "no WhatsApp message from the contact in the last 24 h and no whatsapp_template".into(),
                            ),
                        })
                    }
                }
            }
            if marketing && tier::business_initiated(contact, now) {
                if let Some(tier_size) = policy.tier {
                    let snap = self.tier.snapshot(&contact.id, now).await?;
                    let pending: HashSet<&String> = holds
                        .tier
                        .iter()
                        .filter(|(id, _)| *id != c.notification_id)
                        .map(|(_, who)| who)
                        .collect();
                    let cap = tier::cap(tier_size, policy.warmup.as_ref(), snap.first_send, now);
                    let admitted = snap.counted
                        || pending.contains(&contact.id)
                        || snap.count + pending.len() < cap as usize;
                    if !admitted {
                        return Ok(Decision::Skip {
                            reason: "cap_reached",
                            detail: Some(format!(
                                "{} unique business-initiated WhatsApp recipients in 24 h (cap {cap})",
                                snap.count + pending.len()
                            )),
                        });
                    }
                    if mode == Mode::Live {
                        holds
                            .tier
                            .insert(c.notification_id.to_string(), contact.id.clone());
                    }
                }
            }
        }
        if marketing && mode == Mode::Live {
            holds
                .cap
                .insert(c.notification_id.to_string(), contact.id.clone());
        }
        drop(holds);

        let pace = match mode {
            Mode::Live => self.pacer.take(kind, address, c.notification_id, now),
            Mode::DryRun => self.pacer.peek(kind, address, now),
        };
        Ok(match pace {
            Pace::Go(sleep) => Decision::Go {
                probe: false,
                form,
                sleep,
            },
            Pace::WaitUntil(until) => Decision::Wait {
                until,
                reason: "paced",
                detail: None,
            },
        })
    }

    /// Counts what a send's answer means for the guardrails: a sent marketing message against
    /// the cap and in the risk figures, a business-initiated WhatsApp send in the tier, a
    /// channel-wide throttle answer in the pace.
    pub async fn after_send(
        &self,
        c: &Candidate<'_>,
        answer: &Answer,
        now: Timestamp,
    ) -> StoreResult<()> {
        match &answer.class {
            Class::Sent => {
                let Some(contact) = c.contact else {
                    return Ok(());
                };
                let mut holds = self.holds.lock().await;
                if c.category == Category::Marketing {
                    caps::record(self.store.as_ref(), &contact.id, now).await?;
                    holds.cap.remove(c.notification_id);
                    risk::record_send(self.store.as_ref(), c.kind, self.config.risk.window, now)
                        .await?;
                }
                if c.kind == ChannelKind::Whatsapp && tier::business_initiated(contact, now) {
                    self.tier.record(&contact.id, now).await?;
                    holds.tier.remove(c.notification_id);
                }
            }
            Class::Throttled {
                scope: ThrottleScope::Channel,
                ..
            } => self.pacer.slow_down(c.kind, now),
            _ => {}
        }
        Ok(())
    }

    /// Gives up the places a notification held under the caps (end of its turn).
    pub async fn release(&self, notification_id: &str) {
        let mut holds = self.holds.lock().await;
        holds.cap.remove(notification_id);
        holds.tier.remove(notification_id);
    }

    /// A channel's marketing status and risk figures (the admin channel table).
    pub async fn marketing_status(
        &self,
        states: &ChannelStates,
        kind: ChannelKind,
    ) -> StoreResult<risk::Status> {
        let quality = states.quality(kind);
        risk::status(
            self.store.as_ref(),
            kind,
            &self.config.risk,
            quality.as_ref(),
        )
        .await
    }

    /// The pacing rate in force on a channel (slowed after a throttle answer).
    pub fn rate(&self, kind: ChannelKind, now: Timestamp) -> Option<f64> {
        self.pacer.rate(kind, now)
    }
}
