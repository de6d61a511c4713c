//! The WhatsApp templates the gateway has used and their state at Meta: `approved`, `paused`
//! (until when) or `disabled`, with Meta's quality rating (GREEN/YELLOW/RED).
//!
//! Meta pauses a template whose quality drops (3 h the first time, 6 h the second) and disables
//! it the third time. A send with a paused template earns 132015, with a disabled or missing one
//! 132016 / 132001; the `message_template_status_update` webhook says the same (and
//! APPROVED/REINSTATED/UNPAUSED brings it back), `message_template_quality_update` moves the
//! rating. Each of these lands here, and the policy ([`super::Policy::decide`]) reads the state
//! before a send: a notification whose template is paused or disabled is not tried on WhatsApp
//! (its `alternative` is, if that one is usable), so a paused template costs one request, not
//! one per notification. Other templates and free-form text keep WhatsApp; the channel's state
//! is not touched.
//!
//! One record per template in namespace `whatsapp_templates`, key `<name>/<language>`, changed
//! only by [`crate::store::Store::kv_update`] (several instances may share the store).

use chrono::Duration;
use lifeboat_channel::WhatsappTemplate;
use serde::{Deserialize, Serialize};

use crate::model::{SkipReason, Timestamp};
use crate::store::{Durability, Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::WHATSAPP_TEMPLATES;

/// How long Meta pauses a template the first time; each later pause is twice as long, and the
/// pause after [`PAUSES_BEFORE_DISABLE`] pauses is a disable.
pub const FIRST_PAUSE: Duration = Duration::hours(3);
/// Meta disables a template at its third pause.
pub const PAUSES_BEFORE_DISABLE: u32 = 2;

/// A template's state at Meta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateState {
    Approved,
    Paused,
    Disabled,
}

impl TemplateState {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateState::Approved => "approved",
            TemplateState::Paused => "paused",
            TemplateState::Disabled => "disabled",
        }
    }
}

/// Meta's quality rating of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Quality {
    Green,
    Yellow,
    Red,
    Unknown,
}

impl Quality {
    /// Meta's words (`GREEN`, `YELLOW`, `RED`, `UNKNOWN`, also `HIGH`/`MEDIUM`/`LOW`).
    pub fn parse(text: &str) -> Quality {
        match text.trim().to_ascii_uppercase().as_str() {
            "GREEN" | "HIGH" => Quality::Green,
            "YELLOW" | "MEDIUM" => Quality::Yellow,
            "RED" | "LOW" => Quality::Red,
            _ => Quality::Unknown,
        }
    }
}

/// One template's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub name: String,
    pub language: String,
    pub state: TemplateState,
    /// While `paused`: when Meta's pause ends (Meta lifts it by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<Timestamp>,
    /// Pauses so far (the next one is longer; the third is a disable).
    #[serde(default)]
    pub pauses: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// What moved it last: a send answer's code or a webhook event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it entered its state.
    pub since: Timestamp,
    /// When the gateway last sent it, to a day ([`note_used`]): the retention purge forgets a
    /// template unused and unchanged for `[store.retention] notifications`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Timestamp>,
}

impl TemplateRecord {
    fn new(name: &str, language: &str, now: Timestamp) -> Self {
        TemplateRecord {
            name: name.to_string(),
            language: language.to_string(),
            state: TemplateState::Approved,
            paused_until: None,
            pauses: 0,
            quality: None,
            reason: None,
            since: now,
            last_used: None,
        }
    }

    /// The state at `now`: a pause whose end has passed is over.
    pub fn state_at(&self, now: Timestamp) -> TemplateState {
        match (self.state, self.paused_until) {
            (TemplateState::Paused, Some(until)) if until <= now => TemplateState::Approved,
            (state, _) => state,
        }
    }
}

/// What Meta said about a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Paused (132015, a `PAUSED` webhook); `until` when Meta named it.
    Paused { until: Option<Timestamp> },
    /// Disabled or gone (132016, 132001, `DISABLED`/`REJECTED`/`DELETED`/...).
    Disabled,
    /// Approved again (`APPROVED`, `REINSTATED`, `UNPAUSED`, ...).
    Approved,
    /// A new quality rating.
    Quality(Quality),
}

fn key(name: &str, language: &str) -> String {
    format!("{name}/{language}")
}

fn decode(bytes: Option<&[u8]>) -> Option<TemplateRecord> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

/// The record after `event` at `now` (`old`: what was stored).
pub fn next(
    old: Option<TemplateRecord>,
    name: &str,
    language: &str,
    event: Event,
    reason: &str,
    now: Timestamp,
) -> TemplateRecord {
    let mut r = old.unwrap_or_else(|| TemplateRecord::new(name, language, now));
    let before = r.state_at(now);
    match event {
        Event::Paused { until } => {
            // A second 132015 from a send that was in flight already is the same pause.
            if before != TemplateState::Approved {
                return r;
            }
            if r.pauses >= PAUSES_BEFORE_DISABLE {
                r.state = TemplateState::Disabled;
                r.paused_until = None;
            } else {
                let guess = now + FIRST_PAUSE * 2i32.pow(r.pauses);
                r.state = TemplateState::Paused;
                r.paused_until = Some(until.filter(|u| *u > now).unwrap_or(guess));
            }
            r.pauses += 1;
        }
        Event::Disabled => {
            if before == TemplateState::Disabled {
                return r;
            }
            r.state = TemplateState::Disabled;
            r.paused_until = None;
        }
        Event::Approved => {
            r.state = TemplateState::Approved;
            r.paused_until = None;
        }
        Event::Quality(q) => {
            r.quality = Some(q);
            return r;
        }
    }
    r.reason = Some(reason.to_string());
    r.since = now;
    r
}

/// Applies `event` to a template; returns its state at `now` before and after.
pub async fn apply(
    store: &dyn Store,
    name: &str,
    language: &str,
    event: Event,
    reason: &str,
    now: Timestamp,
) -> StoreResult<(Option<TemplateState>, TemplateRecord)> {
    let before = decode(
        store
            .kv_get(NAMESPACE, &key(name, language))
            .await?
            .as_deref(),
    )
    .map(|r| r.state_at(now));
    let (n, l, why) = (name.to_string(), language.to_string(), reason.to_string());
    let edit = Box::new(move |old: Option<&[u8]>| {
        let r = next(decode(old), &n, &l, event, &why, now);
        Some(serde_json::to_vec(&r).expect("a template record serializes"))
    });
    let after = store
        .kv_update(NAMESPACE, &key(name, language), edit, Durability::Durable)
        .await?;
    let after =
        decode(after.as_deref()).unwrap_or_else(|| TemplateRecord::new(name, language, now));
    Ok((before, after))
}

/// How often [`note_used`] writes down that a template is still used.
const USE_NOTED_EVERY: Duration = Duration::days(1);

/// Puts a template the gateway just sent in the registry (`approved`), if it is not there, and
/// notes its use at most once a day (one relaxed write per template and day: the retention
/// purge forgets templates no longer used).
pub async fn note_used(store: &dyn Store, t: &WhatsappTemplate, now: Timestamp) -> StoreResult<()> {
    let k = key(&t.name, &t.language);
    match decode(store.kv_get(NAMESPACE, &k).await?.as_deref()) {
        None => {
            let mut r = TemplateRecord::new(&t.name, &t.language, now);
            r.last_used = Some(now);
            let bytes = serde_json::to_vec(&r).expect("a template record serializes");
            store.kv_insert_new(NAMESPACE, &k, &bytes).await?;
        }
        Some(r) if r.last_used.unwrap_or(r.since) + USE_NOTED_EVERY <= now => {
            let edit = Box::new(move |old: Option<&[u8]>| {
                let old = old?;
                let Some(mut r) = decode(Some(old)) else {
                    return Some(old.to_vec());
                };
                r.last_used = Some(r.last_used.map_or(now, |u| u.max(now)));
                Some(serde_json::to_vec(&r).expect("a template record serializes"))
            });
            store
                .kv_update(NAMESPACE, &k, edit, Durability::Relaxed)
                .await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Why `t` can't be sent now (`template_paused` / `template_disabled`, with words), or `None`.
pub async fn blocked(
    store: &dyn Store,
    t: &WhatsappTemplate,
    now: Timestamp,
) -> StoreResult<Option<(SkipReason, String)>> {
    let Some(r) = decode(
        store
            .kv_get(NAMESPACE, &key(&t.name, &t.language))
            .await?
            .as_deref(),
    ) else {
        return Ok(None);
    };
    Ok(match r.state_at(now) {
        TemplateState::Approved => None,
        TemplateState::Paused => Some((
            SkipReason::TemplatePaused,
            format!(
                "WhatsApp template {}/{} is paused by Meta until {} ({})",
                r.name,
                r.language,
                r.paused_until.map(|t| t.to_rfc3339()).unwrap_or_default(),
                r.reason.as_deref().unwrap_or("-")
            ),
        )),
        TemplateState::Disabled => Some((
            SkipReason::TemplateDisabled,
            format!(
                "WhatsApp template {}/{} is disabled by Meta or does not exist ({})",
                r.name,
                r.language,
                r.reason.as_deref().unwrap_or("-")
            ),
        )),
    })
}

/// Every template in the registry, by name and language.
pub async fn list(store: &dyn Store) -> StoreResult<Vec<TemplateRecord>> {
    Ok(store
        .kv_scan(NAMESPACE, "")
        .await?
        .into_iter()
        .filter_map(|(_, v)| decode(Some(&v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::at;

    #[test]
    fn pauses_grow_then_disable_and_approval_brings_it_back() {
        let t0 = at("2026-03-01T10:00:00Z");
        let paused = Event::Paused { until: None };
        let r = next(None, "promo", "en_US", paused, "132015", t0);
        assert_eq!(r.state_at(t0), TemplateState::Paused);
        assert_eq!(r.paused_until, Some(at("2026-03-01T13:00:00Z")));
        // A second answer during the same pause changes nothing.
        let same = next(Some(r.clone()), "promo", "en_US", paused, "132015", t0);
        assert_eq!(same, r);
        // The pause ends by itself; the next one is 6 h; the third disables it.
        let t1 = at("2026-03-01T13:00:00Z");
        assert_eq!(r.state_at(t1), TemplateState::Approved);
        let r = next(Some(r), "promo", "en_US", paused, "PAUSED", t1);
        assert_eq!(r.paused_until, Some(at("2026-03-01T19:00:00Z")));
        let t2 = at("2026-03-02T00:00:00Z");
        let r = next(Some(r), "promo", "en_US", paused, "132015", t2);
        assert_eq!(r.state_at(t2), TemplateState::Disabled);
        let r = next(Some(r), "promo", "en_US", Event::Approved, "REINSTATED", t2);
        assert_eq!(r.state_at(t2), TemplateState::Approved);
        let r = next(
            Some(r),
            "promo",
            "en_US",
            Event::Quality(Quality::Red),
            "q",
            t2,
        );
        assert_eq!(
            (r.state, r.quality),
            (TemplateState::Approved, Some(Quality::Red))
        );
    }
}
