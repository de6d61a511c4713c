//! WhatsApp account signals (Meta's `account_update` and
//! `phone_number_quality_update` webhook fields): `account_update` changes the channel's
//! state exactly as a send error of the same meaning would, and `phone_number_quality_update`
//! records the messaging tier and quality event. A ban often shows here before any send fails,
//! so acting on it saves notifications from a useless WhatsApp try.
//!
//! | signal | channel state |
//! |---|---|
//! | `ban_info.waba_ban_state` `DISABLE` / `SCHEDULE_FOR_DISABLE` (event `DISABLED_UPDATE`) | `banned` until an admin (or `REINSTATE`) |
//! | `ban_info.waba_ban_state` `REINSTATE` | `active` (an admin's `disabled` stays) |
//! | `ACCOUNT_RESTRICTION` with `restriction_info[]` on business-initiated messaging | `restricted` until the latest `expiration` (the channel cooldown if none is given) |
//! | `PARTNER_REMOVED`, `ACCOUNT_DELETED`, `ACCOUNT_OFFBOARDED` | `banned` until an admin, the event as reason |
//! | `ACCOUNT_VIOLATION` | recorded as the last error and logged; no state change |
//! | `phone_number_quality_update` | kept beside the state (`quality` on the admin row); `FLAGGED`/`DOWNGRADE` read by the guardrails |
//! | anything else | stored in `webhook_events`, ignored |
//!
//! Restrictions on adding phone numbers, on customer-initiated messaging or on calling don't
//! stop our sends: they are recorded as a warning, not a restriction.

use chrono::{DateTime, Utc};
use lifeboat_channel::ChannelKind;
use serde::Deserialize;
use serde_json::Value;

use crate::model::{ChannelQuality, Timestamp};
use crate::policy::portfolio::{self, Restriction as Typed};
use crate::policy::templates::{Event, Quality};
use crate::states::Signal;
use crate::store::StoreResult;
use crate::web::AppState;

const WA: ChannelKind = ChannelKind::Whatsapp;

#[derive(Debug, Deserialize)]
struct AccountUpdate {
    #[serde(default)]
    event: String,
    #[serde(default)]
    ban_info: Option<BanInfo>,
    #[serde(default)]
    restriction_info: Vec<Restriction>,
    #[serde(default)]
    violation_info: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct BanInfo {
    #[serde(default)]
    waba_ban_state: String,
    #[serde(default)]
    waba_ban_date: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Restriction {
    #[serde(default)]
    restriction_type: Option<String>,
    #[serde(default)]
    expiration: Option<Value>,
}

/// Restriction types that stop business-initiated sends (an unnamed one is taken to, too).
/// An unnamed restriction restricts the whole channel; the typed ones that block one direction
/// of messaging are kept apart ([`typed_restrictions`]), the others only warn.
fn restricts_our_sends(kind: Option<&str>) -> bool {
    kind.is_none()
}

/// The `restriction_info` entries that block one direction of messaging, with their end
/// (Meta's `expiration`, else now + `cooldown`); ones already over are left out.
fn typed_restrictions(
    update: &AccountUpdate,
    now: Timestamp,
    cooldown: std::time::Duration,
) -> Vec<(Typed, Timestamp)> {
    if update.event != "ACCOUNT_RESTRICTION" {
        return Vec::new();
    }
    update
        .restriction_info
        .iter()
        .filter_map(|r| {
            let kind = Typed::parse(r.restriction_type.as_deref()?)?;
            let until = r
                .expiration
                .as_ref()
                .and_then(parse_time)
                .unwrap_or_else(|| crate::model::later(now, cooldown));
            (until > now).then_some((kind, until))
        })
        .collect()
}

/// Meta writes `2026-04-19T13:59:20+0000`; RFC 3339 and Unix seconds are accepted too.
fn parse_time(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%z"))
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| {
                s.parse::<i64>()
                    .ok()
                    .and_then(|n| DateTime::from_timestamp(n, 0))
            }),
        Value::Number(n) => n.as_i64().and_then(|n| DateTime::from_timestamp(n, 0)),
        _ => None,
    }
}

/// What an `account_update` means for the channel; `None` if it means nothing we act on.
fn signal_for(
    update: &AccountUpdate,
    now: Timestamp,
    cooldown: std::time::Duration,
) -> Option<(Signal, String)> {
    if let Some(ban) = &update.ban_info {
        let date = ban.waba_ban_date.as_deref().unwrap_or("no date");
        let detail = format!("waba_ban_state {} ({date})", ban.waba_ban_state);
        return match ban.waba_ban_state.as_str() {
            "DISABLE" | "SCHEDULE_FOR_DISABLE" => Some((Signal::Banned, detail)),
            "REINSTATE" => Some((Signal::Reinstated, detail)),
            _ => None,
        };
    }
    match update.event.as_str() {
        "ACCOUNT_RESTRICTION" => {
            let ours: Vec<&Restriction> = update
                .restriction_info
                .iter()
                .filter(|r| restricts_our_sends(r.restriction_type.as_deref()))
                .collect();
            let types = |rs: &[&Restriction]| {
                rs.iter()
                    .map(|r| r.restriction_type.as_deref().unwrap_or("unnamed"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if ours.is_empty() {
                let all: Vec<&Restriction> = update.restriction_info.iter().collect();
                return Some((Signal::Warning, format!("restriction: {}", types(&all))));
            }
            let fallback = crate::model::later(now, cooldown);
            let until = ours
                .iter()
                .map(|r| {
                    r.expiration
                        .as_ref()
                        .and_then(parse_time)
                        .unwrap_or(fallback)
                })
                .max()
                .unwrap_or(fallback);
            if until <= now {
                return Some((
                    Signal::Warning,
                    format!("expired restriction: {}", types(&ours)),
                ));
            }
            Some((
                Signal::RestrictedUntil(until),
                format!("{} until {}", types(&ours), until.to_rfc3339()),
            ))
        }
        "PARTNER_REMOVED" | "ACCOUNT_DELETED" | "ACCOUNT_OFFBOARDED" => Some((
            Signal::Banned,
            "the WhatsApp account is no longer connected".to_string(),
        )),
        "ACCOUNT_VIOLATION" => {
            let kind = update
                .violation_info
                .as_ref()
                .and_then(|v| v["violation_type"].as_str())
                .unwrap_or("unspecified");
            Some((Signal::Warning, format!("violation: {kind}")))
        }
        _ => None,
    }
}

/// `account_update`: a channel state change, a recorded warning, or a stored unknown event.
pub async fn handle_account_update(
    state: &AppState,
    value: &Value,
    now: Timestamp,
) -> StoreResult<()> {
    let store = state.store.as_ref();
    let Ok(update) = serde_json::from_value::<AccountUpdate>(value.clone()) else {
        return super::store_event(store, WA, "account_update", value, now).await;
    };
    let typed = typed_restrictions(&update, now, state.config.cooldown(WA));
    for (restriction, until) in &typed {
        portfolio::set_restriction(store, *restriction, *until, now).await?;
    }
    if !typed.is_empty()
        && !update
            .restriction_info
            .iter()
            .any(|r| r.restriction_type.is_none())
    {
        let detail = typed
            .iter()
            .map(|(r, until)| {
                format!(
                    "{} until {}: {}",
                    r.as_str(),
                    until.to_rfc3339(),
                    r.effect()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return state
            .states
            .apply_signal(WA, Signal::Warning, "ACCOUNT_RESTRICTION", &detail, now)
            .await;
    }
    match signal_for(&update, now, state.config.cooldown(WA)) {
        Some((signal, detail)) => {
            let code = if update.event.is_empty() {
                "account_update"
            } else {
                update.event.as_str()
            };
            state
                .states
                .apply_signal(WA, signal, code, &detail, now)
                .await?;
            if signal == Signal::Reinstated {
                state.wake.notify_one();
            }
            Ok(())
        }
        None => super::store_event(store, WA, "account_update", value, now).await,
    }
}

#[derive(Debug, Deserialize)]
struct QualityUpdate {
    event: String,
    #[serde(default)]
    current_limit: Option<Value>,
    #[serde(default)]
    old_limit: Option<Value>,
    #[serde(default)]
    max_daily_conversations_per_business: Option<Value>,
}

fn text(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// `phone_number_quality_update`: the tier and quality event, kept beside the channel state.
pub async fn handle_quality_update(
    state: &AppState,
    value: &Value,
    now: Timestamp,
) -> StoreResult<()> {
    let Ok(update) = serde_json::from_value::<QualityUpdate>(value.clone()) else {
        return super::store_event(
            state.store.as_ref(),
            WA,
            "phone_number_quality_update",
            value,
            now,
        )
        .await;
    };
    if let Some(limit) = update
        .current_limit
        .as_ref()
        .and_then(crate::policy::portfolio::parse_limit)
    {
        let raw = text(&update.current_limit).unwrap_or_default();
        crate::policy::portfolio::set_limit(
            state.store.as_ref(),
            limit,
            "phone_number_quality_update",
            &raw,
            now,
        )
        .await?;
    }
    let quality = ChannelQuality {
        event: update.event,
        current_limit: text(&update.current_limit),
        old_limit: text(&update.old_limit),
        max_daily_conversations_per_business: text(&update.max_daily_conversations_per_business),
        at: now,
    };
    state.states.set_quality(WA, quality).await
}

/// `business_capability_update`: the portfolio's messaging limit
/// (`max_daily_conversations_per_business`; older payloads name it per phone number,
/// `max_daily_conversation_per_phone`, which since October 2025 is the portfolio's too).
pub async fn handle_capability_update(
    state: &AppState,
    value: &Value,
    now: Timestamp,
) -> StoreResult<()> {
    let store = state.store.as_ref();
    let field = "business_capability_update";
    let raw = [
        "max_daily_conversations_per_business",
        "max_daily_conversation_per_phone",
    ]
    .iter()
    .map(|k| &value[*k])
    .find(|v| !v.is_null());
    match raw.and_then(|v| crate::policy::portfolio::parse_limit(v).map(|l| (l, v))) {
        Some((limit, v)) => {
            let raw = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            crate::policy::portfolio::set_limit(store, limit, field, &raw, now).await?;
            super::store_event(store, WA, field, value, now).await
        }
        None => super::store_event(store, WA, field, value, now).await,
    }
}

/// `message_template_status_update` / `message_template_quality_update`: which template.
#[derive(Debug, Deserialize)]
struct TemplateUpdate {
    #[serde(default)]
    event: String,
    message_template_name: String,
    message_template_language: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    new_quality_score: Option<String>,
}

/// The template event a status webhook's `event` means, if it moves the template's state.
fn template_event(event: &str) -> Option<Event> {
    match event.to_ascii_uppercase().as_str() {
        "APPROVED" | "REINSTATED" | "UNPAUSED" | "UNARCHIVED" | "UNLOCKED" => Some(Event::Approved),
        "PAUSED" => Some(Event::Paused { until: None }),
        "DISABLED" | "REJECTED" | "DELETED" | "ARCHIVED" | "PENDING_DELETION" | "LOCKED" => {
            Some(Event::Disabled)
        }
        _ => None,
    }
}

/// `message_template_status_update`: PAUSED pauses the template (3 h, then 6 h, the third
/// time it is disabled), DISABLED/REJECTED/... take it out, APPROVED/REINSTATED/UNPAUSED bring
/// it back for the notifications that come next. Other events are stored.
pub async fn handle_template_status(
    state: &AppState,
    value: &Value,
    now: Timestamp,
) -> StoreResult<()> {
    let store = state.store.as_ref();
    let field = "message_template_status_update";
    let Ok(update) = serde_json::from_value::<TemplateUpdate>(value.clone()) else {
        return super::store_event(store, WA, field, value, now).await;
    };
    let Some(event) = template_event(&update.event) else {
        return super::store_event(store, WA, field, value, now).await;
    };
    let reason = match update
        .reason
        .as_deref()
        .filter(|r| !r.is_empty() && *r != "NONE")
    {
        Some(why) => format!("{} ({why})", update.event),
        None => update.event.clone(),
    };
    crate::policy::template_event(
        store,
        &state.metrics,
        &update.message_template_name,
        &update.message_template_language,
        event,
        &reason,
        now,
    )
    .await?;
    if event == Event::Approved {
        state.wake.notify_one();
    }
    Ok(())
}

/// `message_template_quality_update`: the template's new quality rating.
pub async fn handle_template_quality(
    state: &AppState,
    value: &Value,
    now: Timestamp,
) -> StoreResult<()> {
    let store = state.store.as_ref();
    let field = "message_template_quality_update";
    let Some(update) = serde_json::from_value::<TemplateUpdate>(value.clone())
        .ok()
        .filter(|u| u.new_quality_score.is_some())
    else {
        return super::store_event(store, WA, field, value, now).await;
    };
    let quality = Quality::parse(update.new_quality_score.as_deref().unwrap_or_default());
    crate::policy::template_event(
        store,
        &state.metrics,
        &update.message_template_name,
        &update.message_template_language,
        Event::Quality(quality),
        field,
        now,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn update(value: Value) -> AccountUpdate {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn metas_times_parse() {
        let t = parse_time(&Value::from("2026-04-19T13:59:20+0000")).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-04-19T13:59:20+00:00");
        assert_eq!(parse_time(&Value::from("2026-04-19T13:59:20Z")), Some(t));
        assert_eq!(parse_time(&Value::from(t.timestamp())), Some(t));
        assert_eq!(parse_time(&Value::from("soon")), None);
    }

    #[test]
    fn account_updates_map_to_signals() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        let ban = update(serde_json::json!({"event": "DISABLED_UPDATE",
            "ban_info": {"waba_ban_state": "SCHEDULE_FOR_DISABLE", "waba_ban_date": "October 9, 2023"}}));
        assert_eq!(signal_for(&ban, now, hour).unwrap().0, Signal::Banned);
        let back = update(
            serde_json::json!({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE"}}),
        );
        assert_eq!(signal_for(&back, now, hour).unwrap().0, Signal::Reinstated);
        let later = now + chrono::Duration::days(2);
        let restriction = update(
            serde_json::json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": "2099-01-01T00:00:00+0000"},
            {"expiration": later.format("%Y-%m-%dT%H:%M:%S+0000").to_string()}]}),
        );
        let (signal, _) = signal_for(&restriction, now, hour).unwrap();
        let Signal::RestrictedUntil(until) = signal else {
            panic!("{signal:?}")
        };
        assert_eq!(until.timestamp(), later.timestamp());
        let other = update(
            serde_json::json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": "RESTRICTED_CUSTOMER_INITIATED_MESSAGING", "expiration": "2099-01-01T00:00:00+0000"}]}),
        );
        assert_eq!(signal_for(&other, now, hour).unwrap().0, Signal::Warning);
        let typed = typed_restrictions(&other, now, hour);
        assert_eq!(typed.len(), 1);
        assert_eq!(typed[0].0, Typed::CustomerInitiated);
        let biz = update(
            serde_json::json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
            {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": later.format("%Y-%m-%dT%H:%M:%S+0000").to_string()},
            {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": "2099-01-01T00:00:00+0000"}]}),
        );
        let typed = typed_restrictions(&biz, now, hour);
        assert_eq!(typed.len(), 1);
        assert_eq!(
            (typed[0].0, typed[0].1.timestamp()),
            (Typed::BizInitiated, later.timestamp())
        );
        assert_eq!(
            signal_for(&biz, now, hour).unwrap().0,
            Signal::Warning,
            "a typed restriction doesn't restrict the whole channel"
        );
        let gone = update(serde_json::json!({"event": "PARTNER_REMOVED"}));
        assert_eq!(signal_for(&gone, now, hour).unwrap().0, Signal::Banned);
        let violation = update(
            serde_json::json!({"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SCAM"}}),
        );
        let (signal, detail) = signal_for(&violation, now, hour).unwrap();
        assert_eq!(signal, Signal::Warning);
        assert!(detail.contains("SCAM"));
        assert!(signal_for(
            &update(serde_json::json!({"event": "VERIFIED_ACCOUNT"})),
            now,
            hour
        )
        .is_none());
    }
}
