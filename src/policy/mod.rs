//! The guardrails (docs/guardrails.md): the rules that keep the business's accounts from being
//! restricted in the first place, where failover only saves a message after the damage.
//!
//! - [`caps`]: at most `marketing_per_day` marketing messages per contact per rolling 24 h;
//! - [`quiet_hours`]: no marketing at night in the contact's time zone (it waits);
//! - [`pacing`]: a token bucket per channel and per chat (work waits, nothing is dropped);
//! - [`tier`]: WhatsApp's unique business-initiated recipients per 24 h, with warm-up;
//! - [`window`]: WhatsApp's 24 h service window (free-form text, template, or skip);
//! - [`risk`]: blocks and opt-outs per marketing send; over the threshold marketing pauses;
//! - [`templates`]: the WhatsApp templates' state at Meta (paused, disabled, approved);
//! - [`holds`]: Meta's per-user marketing limit (131049) and +1 marketing;
//! - [`portfolio`]: Meta's messaging limit per business portfolio (new people per 24 h).
//!
//! [`Policy::decide`] is the one function that says what happens to a notification on a
//! channel, in this order: `not_configured` → `no_address` → `no_consent` → channel state →
//! marketing pause (risk) → quiet hours (marketing; waits) → WhatsApp window/template →
//! WhatsApp restriction types ([`portfolio::Restriction`]) → WhatsApp marketing to +1
//! numbers and held marketing ([`holds`], 131049) →
//! WhatsApp template state ([`templates`]: paused or disabled → the alternative, or skip) →
//! frequency cap (marketing) → WhatsApp portfolio limit ([`portfolio`], any category) and
//! tier (marketing) → pacing (waits). The worker calls it
//! live; `GET /v1/admin/policy/preview` calls it as a dry run (nothing booked, no counter
//! moved, no probe slot taken), so the preview and the real plan cannot disagree.
//!
//! Config: `[policy]`, every key optional (defaults in docs/guardrails.md and
//! `config/lifeboat.toml`); a bad value is a config error naming the key.

pub mod caps;
pub mod coalesce;
#[cfg(test)]
mod fleet_tests;
pub mod holds;
pub mod pacing;
pub mod places;
pub mod portfolio;
pub mod pricing;
pub mod quiet_hours;
pub mod risk;
pub mod templates;
pub mod tier;
pub mod window;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lifeboat_channel::{
    Answer, Category, ChannelKind, Class, Signal, ThrottleScope, WhatsappTemplate,
};

use crate::channels::Registry;
use crate::model::{Contact, SkipReason, Timestamp};
use crate::states::{Availability, ChannelStates};
use crate::store::{Store, StoreResult};
use pacing::{Pace, Pacer, Rate};
use tier::TierLedger;
use window::Form;

pub use crate::config::policy::{ChannelPolicy, PolicyConfig};

impl PolicyConfig {
    fn channel(&self, kind: ChannelKind) -> &ChannelPolicy {
        &self.channels[&kind]
    }
}

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
    /// The WhatsApp template (with its alternative) when the caller knows it (the preview
    /// only says whether there is one).
    pub template: Option<&'a WhatsappTemplate>,
    pub kind: ChannelKind,
    pub contact: Option<&'a Contact>,
}

/// What happens to a notification on a channel now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Pass the channel over (go on with the next one).
    Skip {
        reason: SkipReason,
        detail: Option<String>,
    },
    /// Come back to this channel then: `throttled` (the channel's state; the worker applies
    /// `routing.max_wait`), `quiet_hours` or `paced`.
    Wait {
        until: Timestamp,
        reason: WaitReason,
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

/// Why a channel is waited for rather than tried now (`reason` of a `wait` in the policy
/// preview).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// The channel's state (the worker applies `routing.max_wait`).
    Throttled,
    /// Marketing outside the contact's daytime.
    QuietHours,
    /// The channel's or the chat's send rate.
    Paced,
}

fn skip(reason: SkipReason) -> Decision {
    Decision::Skip {
        reason,
        detail: None,
    }
}

/// Sends in flight that hold a place under a cap (notification id → contact id): `cap`, this
/// instance's places under the marketing cap (the places themselves are in the store,
/// [`places`]; this is what to give back); `tier`, new WhatsApp people this instance is
/// reaching right now (per instance, see docs/fleet.md).
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
    /// The fleet's per-channel budget (a shared store only; see [`pacing::SharedBudget`]).
    shared_pacing: Option<pacing::SharedBudget>,
    tier: TierLedger,
    holds: tokio::sync::Mutex<Holds>,
    /// Announces marketing pauses to the admins (none until [`Policy::with_events`]).
    events: Option<Arc<crate::events::Events>>,
    /// The pauses this process announced already (channel, pause key): the store's
    /// idempotency makes an announcement once per pause across restarts; this saves the
    /// lookups on every marketing send while a pause lasts.
    announced: std::sync::Mutex<HashSet<(ChannelKind, i64)>>,
    /// Priced messages (status webhooks), written every quarter second.
    pricing: pricing::Tally,
    /// Marketing sends for the risk monitor, written every quarter second.
    risk_sends: coalesce::Coalesced<risk::Sends>,
    /// The WhatsApp portfolio's restriction and limit records, re-read at most every second.
    portfolio: portfolio::Cache,
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
            shared_pacing: None,
            tier: TierLedger::new(store.clone()),
            holds: tokio::sync::Mutex::new(Holds::default()),
            pricing: pricing::Tally::new(store.clone(), pricing::NAMESPACE),
            risk_sends: coalesce::Coalesced::new(store.clone(), risk::NAMESPACE),
            portfolio: portfolio::Cache::default(),
            store,
            config,
            events: None,
            announced: Default::default(),
        }
    }

    /// Counts a priced message (a status webhook's `pricing`); stored within a quarter second.
    pub fn count_priced(&self, kind: ChannelKind, priced: crate::model::Pricing) {
        self.pricing
            .add(pricing::key(kind, priced), pricing::Counts::one(priced));
    }

    /// Writes the counted figures still in memory (a clean stop; tests that read them).
    pub async fn flush_figures(&self) {
        self.pricing.flush().await;
        self.risk_sends.flush().await;
    }

    /// Alerts the admins (`[alerts] contacts`) when the risk monitor pauses marketing.
    pub fn with_events(mut self, events: Arc<crate::events::Events>) -> Self {
        self.events = Some(events);
        self
    }

    /// Sends the alert of a marketing pause once.
    async fn announce_pause(&self, kind: ChannelKind, status: &risk::Status, now: Timestamp) {
        let Some(events) = &self.events else { return };
        let first = self
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind, status.pause_key));
        if first {
            events
                .alerts()
                .send(crate::events::alerts::Alert::MarketingPaused {
                    channel: kind,
                    reason: status.reason.clone().unwrap_or_default(),
                    pause: status.pause_key,
                    at: now,
                })
                .await;
        }
    }

    /// Paces for the fleet as well: sends also take slots of a per-channel budget in the store
    /// shared by every instance (for a store several instances share).
    pub fn with_shared_pacing(mut self) -> Policy {
        let rates = (self.config.channels.iter())
            .map(|(k, c)| (*k, Rate(c.rate)))
            .collect();
        self.shared_pacing = Some(pacing::SharedBudget::new(self.store.clone(), rates));
        self
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
            return Ok(skip(SkipReason::NotConfigured));
        }
        let Some((contact, address)) = c.contact.and_then(|ct| Some((ct, ct.address(kind)?)))
        else {
            return Ok(skip(SkipReason::NoAddress));
        };
        if !contact.consents_to(kind, c.category) {
            return Ok(skip(SkipReason::NoConsent));
        }
        let availability = match mode {
            Mode::Live => states.availability(kind, address, now),
            Mode::DryRun => states.peek_availability(kind, address, now),
        };
        let probe = match availability {
            Availability::Open => false,
            Availability::Probe if mode == Mode::Live => {
                // One probe for the whole fleet: the instance holding the probe lease.
                if !states.claim_probe(kind, now).await? {
                    return Ok(Decision::Skip {
                        reason: SkipReason::ChannelRestricted,
                        detail: Some(format!("another instance is probing {kind}")),
                    });
                }
                true
            }
            Availability::Probe => true,
            Availability::Skip(reason) => return Ok(skip(reason)),
            Availability::WaitUntil(until) => {
                return Ok(Decision::Wait {
                    until,
                    reason: WaitReason::Throttled,
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
            if status.paused && mode == Mode::Live {
                self.announce_pause(kind, &status, now).await;
            }
            if status.paused {
                return Ok(Decision::Skip {
                    reason: SkipReason::ChannelRestricted,
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
                        reason: WaitReason::QuietHours,
                        detail: Some(format!(
                            "marketing waits for {} in {tz}",
                            q.end.format("%H:%M")
                        )),
                    });
                }
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
            // Typed account restrictions: one direction of messaging is blocked until Meta's
            // expiration; the channel stays in rotation for the other.
            let business_initiated = tier::business_initiated(contact, now);
            let portfolio = self.portfolio.get(self.store.as_ref()).await?;
            for r in portfolio.restrictions_at(now) {
                let blocked = match r.restriction_type {
                    portfolio::Restriction::BizInitiated => business_initiated,
                    portfolio::Restriction::CustomerInitiated => !business_initiated,
                };
                if blocked {
                    return Ok(Decision::Skip {
                        reason: SkipReason::ChannelRestricted,
                        detail: Some(format!(
                            "{} until {}: {}",
                            r.restriction_type.as_str(),
                            r.until.to_rfc3339(),
                            r.restriction_type.effect()
                        )),
                    });
                }
            }
            let uses_template = c.has_template && form != Some(Form::FreeText);
            if marketing {
                if policy.skip_us_marketing && uses_template && holds::is_us_number(address) {
                    return Ok(Decision::Skip {
                        reason: SkipReason::UsMarketing,
                        detail: Some(
                            "Meta does not deliver marketing templates to US (+1) numbers \
                             (policy.whatsapp.skip_us_marketing)"
                                .into(),
                        ),
                    });
                }
                if let Some(hold) = holds::held(self.store.as_ref(), address, now).await? {
                    return Ok(Decision::Skip {
                        reason: SkipReason::MarketingHeld,
                        detail: Some(format!(
                            "Meta holds marketing to this number until {} ({}); other messages are not affected",
                            hold.until.to_rfc3339(),
                            hold.code
                        )),
                    });
                }
            }
            if uses_template {
                if let Some(t) = c.template {
                    let store = self.store.as_ref();
                    if let Some((reason, detail)) = templates::blocked(store, t, now).await? {
                        match t.alternative.as_deref() {
                            Some(alt) if templates::blocked(store, alt, now).await?.is_none() => {
                                form = Some(Form::Alternative)
                            }
                            _ => {
                                return Ok(Decision::Skip {
                                    reason,
                                    detail: Some(detail),
                                })
                            }
                        }
                    }
                }
            }
        }

        // The place under the cap is taken first (in the store, for the fleet), then the
        // sends are read: see [`places`].
        let capped = marketing && self.config.marketing_per_day > 0;
        if capped {
            let store = self.store.as_ref();
            let before = match mode {
                Mode::Live => {
                    self.holds
                        .lock()
                        .await
                        .cap
                        .insert(c.notification_id.to_string(), contact.id.clone());
                    places::take(store, &contact.id, c.notification_id, now).await?
                }
                Mode::DryRun => places::others(store, &contact.id, c.notification_id, now).await?,
            };
            let (sent, sent_ids) = caps::sent_with_ids(store, &contact.id, now).await?;
            // A place whose send is recorded already is counted once, as a send.
            let in_flight = before.iter().filter(|id| !sent_ids.contains(*id)).count();
            if !caps::allows(self.config.marketing_per_day, sent, in_flight) {
                if mode == Mode::Live {
                    self.give_back_place(c.notification_id).await?;
                }
                return Ok(Decision::Skip {
                    reason: SkipReason::CapReached,
                    detail: Some(format!(
                        "{sent} marketing messages in the last 24 h (policy.marketing_per_day = {})",
                        self.config.marketing_per_day
                    )),
                });
            }
        }

        if let Some(skip) = self.tier_check(c, contact, now, mode).await? {
            if capped && mode == Mode::Live {
                self.give_back_place(c.notification_id).await?;
            }
            return Ok(skip);
        }

        let pace = match mode {
            Mode::Live => self.pacer.take(kind, address, c.notification_id, now),
            Mode::DryRun => self.pacer.peek(kind, address, now),
        };
        if let (Pace::Go(_), Some(shared), Mode::Live) = (pace, &self.shared_pacing, mode) {
            if let Some(until) = shared.take(kind, now).await? {
                return Ok(Decision::Wait {
                    until,
                    reason: WaitReason::Paced,
                    detail: Some(format!(
                        "{kind}'s send budget for the fleet is spent until then"
                    )),
                });
            }
        }
        Ok(match pace {
            Pace::Go(sleep) => Decision::Go {
                probe: false,
                form,
                sleep,
            },
            Pace::WaitUntil(until) => Decision::Wait {
                until,
                reason: WaitReason::Paced,
                detail: None,
            },
        })
    }

    /// WhatsApp's portfolio limit and tier for a business-initiated send: a skip, or `None`
    /// (and, live, the person held as pending until the send's answer).
    async fn tier_check(
        &self,
        c: &Candidate<'_>,
        contact: &Contact,
        now: Timestamp,
        mode: Mode,
    ) -> StoreResult<Option<Decision>> {
        let kind = c.kind;
        let marketing = c.category == Category::Marketing;
        let policy = self.config.channel(kind);
        let mut holds = self.holds.lock().await;
        if kind == ChannelKind::Whatsapp && tier::business_initiated(contact, now) {
            // Meta's portfolio limit holds every category back; the tier (with its warm-up)
            // is the gateway's own, stricter guardrail for marketing.
            let limit = self
                .portfolio
                .get(self.store.as_ref())
                .await?
                .limit_in_force(policy.portfolio_limit)
                .and_then(|(l, source)| Some((l.count()?, source)));
            let tier_size = policy.tier.filter(|_| marketing);
            if limit.is_some() || tier_size.is_some() {
                let snap = self.tier.snapshot(&contact.id, now).await?;
                let pending: HashSet<&String> = holds
                    .tier
                    .iter()
                    .filter(|(id, _)| *id != c.notification_id)
                    .map(|(_, who)| who)
                    .collect();
                let reached = snap.count + pending.len();
                let new_person = !(snap.counted || pending.contains(&contact.id));
                if new_person {
                    if let Some((limit, source)) = &limit {
                        if reached >= *limit as usize {
                            return Ok(Some(Decision::Skip {
                                reason: SkipReason::PortfolioLimit,
                                detail: Some(format!(
                                    "{reached} new people reached outside their service window in 24 h: the business portfolio's WhatsApp messaging limit is {limit} ({source})"
                                )),
                            }));
                        }
                    }
                    if let Some(tier_size) = tier_size {
                        let cap =
                            tier::cap(tier_size, policy.warmup.as_ref(), snap.first_send, now);
                        if reached >= cap as usize {
                            return Ok(Some(Decision::Skip {
                                reason: SkipReason::CapReached,
                                detail: Some(format!(
                                    "{reached} unique business-initiated WhatsApp recipients in 24 h (cap {cap})"
                                )),
                            }));
                        }
                    }
                }
                if mode == Mode::Live {
                    holds
                        .tier
                        .insert(c.notification_id.to_string(), contact.id.clone());
                }
            }
        }
        Ok(None)
    }

    /// Gives back this instance's place under a cap for `notification_id`, if it holds one.
    async fn give_back_place(&self, notification_id: &str) -> StoreResult<()> {
        let held = self.holds.lock().await.cap.remove(notification_id);
        if let Some(contact_id) = held {
            places::give_back(self.store.as_ref(), &contact_id, notification_id).await?;
        }
        Ok(())
    }

    /// Counts what a send's answer means for the guardrails: a sent marketing message against
    /// the cap and in the risk figures, a business-initiated WhatsApp send in the tier, a
    /// channel-wide throttle answer in the pace.
    pub async fn after_send(
        &self,
        c: &Candidate<'_>,
        answer: &Answer,
        template: Option<&WhatsappTemplate>,
        now: Timestamp,
    ) -> StoreResult<()> {
        if let Some(t) = template {
            if answer.class == Class::Sent {
                templates::note_used(self.store.as_ref(), t, now).await?;
            }
        }
        if answer.signal == Some(Signal::RecipientMarketingHeld) {
            if let Some(address) = c.contact.and_then(|ct| ct.address(c.kind)) {
                self.hold_marketing(address, answer, now).await?;
            }
        }
        match &answer.class {
            Class::Sent => {
                let Some(contact) = c.contact else {
                    return Ok(());
                };
                if c.category == Category::Marketing {
                    // Recorded before the place is given back: never counted in neither.
                    caps::record_sent(
                        self.store.as_ref(),
                        &contact.id,
                        now,
                        Some(c.notification_id),
                    )
                    .await?;
                    self.give_back_place(c.notification_id).await?;
                    self.risk_sends.add(
                        c.kind.as_str().to_string(),
                        risk::Sends {
                            at: vec![now.timestamp_millis()],
                            window: self.config.risk.window,
                        },
                    );
                }
                if c.kind == ChannelKind::Whatsapp && tier::business_initiated(contact, now) {
                    let mut holds = self.holds.lock().await;
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

    /// What a WhatsApp answer (a send's, or a failed status webhook's) says about the template
    /// it used: 132015 pauses it, 132016/132001 disable it. A change is logged once and counted.
    pub async fn template_answer(
        &self,
        metrics: &crate::metrics::Metrics,
        template: &str,
        answer: &Answer,
        now: Timestamp,
    ) -> StoreResult<()> {
        let event = match answer.signal {
            Some(Signal::TemplatePaused) => templates::Event::Paused { until: None },
            Some(Signal::TemplateDisabled) => templates::Event::Disabled,
            _ => return Ok(()),
        };
        let Some((name, language)) = template.split_once('/') else {
            return Ok(());
        };
        let code = answer.code.as_deref().unwrap_or("answer");
        template_event(
            self.store.as_ref(),
            metrics,
            name,
            language,
            event,
            code,
            now,
        )
        .await?;
        Ok(())
    }

    /// Meta holds marketing to `address` (131049, a send's answer or a failed status).
    pub async fn hold_marketing(
        &self,
        address: &str,
        answer: &Answer,
        now: Timestamp,
    ) -> StoreResult<()> {
        let code = answer.code.as_deref().unwrap_or("131049");
        let hold = holds::hold(self.store.as_ref(), address, code, now).await?;
        tracing::info!(until = %hold.until.to_rfc3339(), code, "WhatsApp marketing to one person held by Meta; their marketing goes to other channels meanwhile");
        Ok(())
    }

    /// Gives up the places a notification held under the caps (end of its turn). A place in
    /// the store that cannot be given back now frees itself after [`places::TTL`].
    pub async fn release(&self, notification_id: &str) {
        if let Err(e) = self.give_back_place(notification_id).await {
            tracing::warn!(error = %e, "could not give back a place under the marketing cap; it frees itself in 2 minutes");
        }
        self.holds.lock().await.tier.remove(notification_id);
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

    /// The WhatsApp portfolio's messaging limit in force, where it comes from, and how many
    /// new people were reached in the last 24 h (the admin table).
    pub async fn portfolio_status(&self, now: Timestamp) -> StoreResult<serde_json::Value> {
        let policy = self.config.channel(ChannelKind::Whatsapp);
        let limit = portfolio::limit_in_force(self.store.as_ref(), policy.portfolio_limit).await?;
        let reached = self.tier.snapshot("", now).await?.count;
        let (limit_value, left, source) = match &limit {
            Some((portfolio::PortfolioLimit::Count(n), source)) => (
                serde_json::json!(n),
                serde_json::json!((*n as usize).saturating_sub(reached)),
                serde_json::json!(source),
            ),
            Some((portfolio::PortfolioLimit::Unlimited, source)) => (
                serde_json::json!("unlimited"),
                serde_json::Value::Null,
                serde_json::json!(source),
            ),
            None => (
                serde_json::Value::Null,
                serde_json::Value::Null,
                serde_json::Value::Null,
            ),
        };
        Ok(serde_json::json!({
            "limit": limit_value,
            "source": source,
            "reached_24h": reached,
            "left": left,
        }))
    }

    /// The pacing rate in force on a channel (slowed after a throttle answer).
    /// How many notifications to claim from `kind`'s lane of the queue now, and when more
    /// may be claimable (`None`: not paced, claim freely): the sends the channel's pacing
    /// allows now, none while this instance found the fleet's budget for the window spent.
    pub fn claimable(
        &self,
        kind: ChannelKind,
        now: Timestamp,
    ) -> Option<(usize, chrono::Duration)> {
        let (ready, next) = self.pacer.available(kind, now)?;
        if let Some(until) = self
            .shared_pacing
            .as_ref()
            .and_then(|s| s.spent_until(kind, now))
        {
            return Some((0, (until - now).max(next)));
        }
        Some((ready, next))
    }

    pub fn rate(&self, kind: ChannelKind, now: Timestamp) -> Option<f64> {
        self.pacer.rate(kind, now)
    }
}

/// Applies `event` to a template and, when its state changed, logs one line and counts it.
pub async fn template_event(
    store: &dyn Store,
    metrics: &crate::metrics::Metrics,
    name: &str,
    language: &str,
    event: templates::Event,
    reason: &str,
    now: Timestamp,
) -> StoreResult<templates::TemplateRecord> {
    let (before, after) = templates::apply(store, name, language, event, reason, now).await?;
    let state = after.state_at(now);
    if before != Some(state) && (before.is_some() || state != templates::TemplateState::Approved) {
        metrics.template_changed(state.as_str());
        match state {
            templates::TemplateState::Approved => tracing::info!(
                template = %format!("{name}/{language}"), reason, "WhatsApp template approved again; notifications use it"
            ),
            _ => tracing::warn!(
                template = %format!("{name}/{language}"),
                state = state.as_str(),
                until = ?after.paused_until,
                reason,
                "WhatsApp template taken out by Meta; notifications using it go to their alternative or the next channel"
            ),
        }
    }
    Ok(after)
}

/// Opens a store again after a test dropped it (the committer task lets go of it shortly).
/// A test's time from RFC 3339 text.
#[cfg(test)]
pub(crate) fn at(text: &str) -> crate::model::Timestamp {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

#[cfg(test)]
pub(crate) async fn reopen(path: &std::path::Path) -> crate::store::SledStore {
    loop {
        match crate::store::SledStore::open(path, 8) {
            Ok(store) => return store,
            Err(crate::store::StoreError::Locked { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiet_hours::QuietHours;
    use risk::RiskConfig;
    use tier::Warmup;

    /// Reads `[policy]` the way `Config::load` does: an error names the key, then says why.
    fn parse(text: &str) -> Result<PolicyConfig, String> {
        let t: toml::Value = toml::from_str(text).unwrap();
        serde_path_to_error::deserialize::<_, PolicyConfig>(t).map_err(|e| {
            let (key, message) = crate::config::explain_unknown_field(
                &format!("policy.{}", e.path()),
                e.inner().message(),
                &[],
            );
            format!("{key}: {message}")
        })
    }

    #[test]
    fn every_key_is_optional_and_the_defaults_are_guardrails_md() {
        let c = PolicyConfig::default();
        assert_eq!(c.marketing_per_day, 3);
        assert_eq!(c.quiet_hours, QuietHours::parse("21:00-08:00").ok());
        assert!(c.opt_out_footer);
        let wa = &c.channels[&ChannelKind::Whatsapp];
        assert_eq!(
            (
                wa.rate,
                wa.tier,
                wa.warmup.clone(),
                wa.service_window,
                wa.skip_us_marketing
            ),
            (80.0, Some(1000), None, true, true)
        );
        let tg = &c.channels[&ChannelKind::Telegram];
        assert_eq!((tg.rate, tg.per_chat_rate), (30.0, Some(1.0)));
        assert_eq!(c.channels[&ChannelKind::Line].rate, 2000.0);
        assert_eq!(c.channels[&ChannelKind::Email].rate, 20.0);
        assert_eq!(
            c.risk,
            RiskConfig {
                window: 500,
                threshold: 0.02,
                min_sample: 50
            }
        );
    }

    #[test]
    fn reads_every_key() {
        let c = parse(
            r#"
marketing_per_day = 2
quiet_hours = "22:30-07:00"
opt_out_footer = false
[whatsapp]
rate = 40
tier = 5
warmup = { start = 10, growth = 2, per = "12h" }
service_window = false
skip_us_marketing = false
portfolio_limit = "unlimited"
[telegram]
rate = 20.5
per_chat_rate = 0.5
[risk]
window = 20
threshold = 0.1
min_sample = 5
"#,
        )
        .unwrap();
        assert_eq!(c.marketing_per_day, 2);
        assert_eq!(c.quiet_hours, QuietHours::parse("22:30-07:00").ok());
        assert!(!c.opt_out_footer);
        let wa = &c.channels[&ChannelKind::Whatsapp];
        assert_eq!(
            (
                wa.rate,
                wa.tier,
                wa.service_window,
                wa.skip_us_marketing,
                wa.portfolio_limit
            ),
            (
                40.0,
                Some(5),
                false,
                false,
                Some(portfolio::PortfolioLimit::Unlimited)
            )
        );
        assert_eq!(
            wa.warmup,
            Some(Warmup {
                start: 10,
                growth: 2.0,
                per: std::time::Duration::from_secs(43_200)
            })
        );
        assert_eq!(c.channels[&ChannelKind::Telegram].per_chat_rate, Some(0.5));
        assert_eq!(
            c.risk,
            RiskConfig {
                window: 20,
                threshold: 0.1,
                min_sample: 5
            }
        );
        assert_eq!(parse("quiet_hours = \"off\"").unwrap().quiet_hours, None);
    }

    #[test]
    fn config_load_reads_policy_once_with_the_channel_defaults_under_what_is_set() {
        let text =
            "[server]\napi_keys = [\"key-0123456789\"]\nadmin_token = \"admin-0123456789\"\n\
                    [policy]\nmarketing_per_day = 1\n[policy.telegram]\nrate = 5\n";
        let path = std::path::Path::new("t.toml");
        let config = crate::config::Config::from_toml(text, path, &|_| None).unwrap();
        assert_eq!(config.policy.marketing_per_day, 1);
        let tg = &config.policy.channels[&ChannelKind::Telegram];
        assert_eq!((tg.rate, tg.per_chat_rate), (5.0, Some(1.0)));
        assert_eq!(
            config.policy.channels[&ChannelKind::Whatsapp].tier,
            Some(1000)
        );
        let bad = text.replace("rate = 5", "rate = 0");
        let err = crate::config::Config::from_toml(&bad, path, &|_| None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.toml:7: policy.telegram.rate: must be a number above 0"
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (text, key) in [
            ("marketing_per_day = -1", "policy.marketing_per_day"),
            ("marketing_per_day = \"3\"", "policy.marketing_per_day"),
            ("quiet_hours = \"late\"", "policy.quiet_hours"),
            ("quiet_hours = 21", "policy.quiet_hours"),
            ("frequency = 3", "policy.frequency"),
            ("[telegram]\nrate = 0", "policy.telegram.rate"),
            (
                "[telegram]\nper_chat_rate = \"1\"",
                "policy.telegram.per_chat_rate",
            ),
            ("[telegram]\ntier = 5", "policy.telegram.tier"),
            ("[email]\nburst = 5", "policy.email.burst"),
            ("[whatsapp]\ntier = 0", "policy.whatsapp.tier"),
            (
                "[whatsapp]\nportfolio_limit = 0",
                "policy.whatsapp.portfolio_limit",
            ),
            (
                "[whatsapp]\nportfolio_limit = \"lots\"",
                "policy.whatsapp.portfolio_limit",
            ),
            (
                "[whatsapp]\nskip_us_marketing = \"yes\"",
                "policy.whatsapp.skip_us_marketing",
            ),
            (
                "[whatsapp]\nwarmup = { start = 50, growth = 0.5 }",
                "policy.whatsapp.warmup.growth",
            ),
            (
                "[whatsapp]\nwarmup = { per = \"daily\" }",
                "policy.whatsapp.warmup.per",
            ),
            (
                "[whatsapp]\nwarmup = { speed = 1 }",
                "policy.whatsapp.warmup.speed",
            ),
            ("[risk]\nthreshold = 2", "policy.risk.threshold"),
            ("[risk]\nwindow = 0", "policy.risk.window"),
            ("[risk]\nsample = 5", "policy.risk.sample"),
            ("risk = 5", "policy.risk"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
