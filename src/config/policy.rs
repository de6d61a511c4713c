//! `[policy]` (docs/guardrails.md): parsed here, with the rest of the config; `crate::policy`
//! applies it. The policy's value types that the section names (quiet hours, warm-up, risk
//! monitor) are defined here too, and their behaviour lives with the guardrail that uses them.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveTime;
use lifeboat_channel::ChannelKind;

use super::{parse_duration, unknown_key};

/// A daily window `start`–`end` in local time; `start > end` wraps past midnight
/// (`21:00-08:00`). `start == end` never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// Parses `"21:00-08:00"`.
    pub fn parse(text: &str) -> Result<QuietHours, String> {
        let bad = || format!("`{text}` is not a window like \"21:00-08:00\" (or \"off\")");
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let time = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| bad());
        Ok(QuietHours {
            start: time(a)?,
            end: time(b)?,
        })
    }
}

/// `[policy.risk]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskConfig {
    /// The last N marketing sends per channel.
    pub window: usize,
    /// Signals over sends above which marketing pauses.
    pub threshold: f64,
    /// No pause on fewer sends than this.
    pub min_sample: usize,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            window: 500,
            threshold: 0.02,
            min_sample: 50,
        }
    }
}

/// `warmup = { start, growth, per }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    pub start: u32,
    pub growth: f64,
    pub per: Duration,
}

/// `[policy.<channel>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPolicy {
    /// Messages per second on the channel.
    pub rate: f64,
    /// Messages per second to one chat (Telegram: 1).
    pub per_chat_rate: Option<f64>,
    /// WhatsApp: unique business-initiated recipients per rolling 24 h.
    pub tier: Option<u32>,
    /// WhatsApp: a new number's growing daily cap.
    pub warmup: Option<Warmup>,
    /// WhatsApp: enforce the 24 h service window (on; off only for tests against fakes).
    pub service_window: bool,
}

impl ChannelPolicy {
    fn default_for(kind: ChannelKind) -> ChannelPolicy {
        let (rate, per_chat_rate, tier) = match kind {
            ChannelKind::Whatsapp => (80.0, None, Some(1000)),
            ChannelKind::Telegram => (30.0, Some(1.0), None),
            ChannelKind::Line => (2000.0, None, None),
            ChannelKind::Email => (20.0, None, None),
        };
        ChannelPolicy {
            rate,
            per_chat_rate,
            tier,
            warmup: None,
            service_window: kind == ChannelKind::Whatsapp,
        }
    }
}

/// The typed `[policy]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Marketing messages per contact per rolling 24 h over all channels; 0 = no cap.
    pub marketing_per_day: u32,
    /// `None` when `quiet_hours = "off"`.
    pub quiet_hours: Option<QuietHours>,
    pub opt_out_footer: bool,
    pub channels: BTreeMap<ChannelKind, ChannelPolicy>,
    pub risk: RiskConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig::from_table(&toml::Table::new()).expect("the defaults are valid")
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn positive(v: &toml::Value, key: &str) -> Result<f64, String> {
    number(v)
        .filter(|n| n.is_finite() && *n > 0.0)
        .ok_or_else(|| format!("{key} must be a number above 0"))
}

fn count(v: &toml::Value, key: &str, min: i64) -> Result<u32, String> {
    v.as_integer()
        .filter(|n| *n >= min && *n <= u32::MAX as i64)
        .map(|n| n as u32)
        .ok_or_else(|| format!("{key} must be a whole number of at least {min}"))
}

fn table<'a>(v: &'a toml::Value, key: &str) -> Result<&'a toml::Table, String> {
    v.as_table().ok_or_else(|| format!("{key} must be a table"))
}

fn boolean(v: &toml::Value, key: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{key} must be true or false"))
}

impl PolicyConfig {
    /// Reads the raw `[policy]` table; errors name the key (`policy.telegram.rate ...`).
    pub fn from_table(t: &toml::Table) -> Result<PolicyConfig, String> {
        let mut config = PolicyConfig {
            marketing_per_day: 3,
            quiet_hours: Some(QuietHours::parse("21:00-08:00").expect("static window")),
            opt_out_footer: true,
            channels: ChannelKind::ALL
                .iter()
                .map(|k| (*k, ChannelPolicy::default_for(*k)))
                .collect(),
            risk: RiskConfig::default(),
        };
        for (key, value) in t {
            let name = format!("policy.{key}");
            match key.as_str() {
                "marketing_per_day" => config.marketing_per_day = count(value, &name, 0)?,
                "quiet_hours" => {
                    let text = value
                        .as_str()
                        .ok_or_else(|| format!("{name} must be a string like \"21:00-08:00\""))?;
                    config.quiet_hours = if text.trim() == "off" {
                        None
                    } else {
                        Some(QuietHours::parse(text).map_err(|e| format!("{name}: {e}"))?)
                    };
                }
                "opt_out_footer" => config.opt_out_footer = boolean(value, &name)?,
                "risk" => config.risk = risk_config(table(value, &name)?)?,
                other => {
                    let Ok(kind) = other.parse::<ChannelKind>() else {
                        return Err(format!(
                            "{name}: {}",
                            unknown_key(
                                other,
                                &[
                                    "marketing_per_day",
                                    "quiet_hours",
                                    "opt_out_footer",
                                    "risk",
                                    "whatsapp",
                                    "telegram",
                                    "line",
                                    "email",
                                ]
                            )
                        ));
                    };
                    let entry = config.channels.get_mut(&kind).expect("every channel");
                    channel_policy(kind, table(value, &name)?, entry)?;
                }
            }
        }
        Ok(config)
    }
}

fn channel_policy(
    kind: ChannelKind,
    t: &toml::Table,
    out: &mut ChannelPolicy,
) -> Result<(), String> {
    for (key, value) in t {
        let name = format!("policy.{kind}.{key}");
        let whatsapp_only = || format!("{name}: only [policy.whatsapp] has this key");
        match key.as_str() {
            "rate" => out.rate = positive(value, &name)?,
            "per_chat_rate" => out.per_chat_rate = Some(positive(value, &name)?),
            "tier" if kind == ChannelKind::Whatsapp => out.tier = Some(count(value, &name, 1)?),
            "service_window" if kind == ChannelKind::Whatsapp => {
                out.service_window = boolean(value, &name)?
            }
            "warmup" if kind == ChannelKind::Whatsapp => {
                let w = table(value, &name)?;
                let mut warmup = Warmup {
                    start: 50,
                    growth: 1.5,
                    per: std::time::Duration::from_secs(86_400),
                };
                for (k, v) in w {
                    let name = format!("{name}.{k}");
                    match k.as_str() {
                        "start" => warmup.start = count(v, &name, 1)?,
                        "growth" => {
                            warmup.growth = number(v)
                                .filter(|g| g.is_finite() && *g >= 1.0)
                                .ok_or_else(|| format!("{name} must be a number of at least 1"))?
                        }
                        "per" => {
                            let text = v
                                .as_str()
                                .ok_or_else(|| format!("{name} must be a duration like \"1d\""))?;
                            warmup.per =
                                parse_duration(text).map_err(|e| format!("{name}: {e}"))?;
                            if warmup.per.is_zero() {
                                return Err(format!("{name} must be longer than 0"));
                            }
                        }
                        _ => {
                            return Err(format!(
                                "{name}: {}",
                                unknown_key(k, &["start", "growth", "per"])
                            ))
                        }
                    }
                }
                out.warmup = Some(warmup);
            }
            "tier" | "warmup" | "service_window" => return Err(whatsapp_only()),
            _ => {
                let known: &[&str] = if kind == ChannelKind::Whatsapp {
                    &["rate", "per_chat_rate", "tier", "warmup", "service_window"]
                } else {
                    &["rate", "per_chat_rate"]
                };
                return Err(format!("{name}: {}", unknown_key(key, known)));
            }
        }
    }
    Ok(())
}

fn risk_config(t: &toml::Table) -> Result<RiskConfig, String> {
    let mut out = RiskConfig::default();
    for (key, value) in t {
        let name = format!("policy.risk.{key}");
        match key.as_str() {
            "window" => out.window = count(value, &name, 1)? as usize,
            "min_sample" => out.min_sample = count(value, &name, 1)? as usize,
            "threshold" => {
                out.threshold = number(value)
                    .filter(|n| (0.0..1.0).contains(n))
                    .ok_or_else(|| {
                        format!("{name} must be a fraction from 0 up to 1 (0.02 = 2 %)")
                    })?
            }
            _ => {
                return Err(format!(
                    "{name}: {}",
                    unknown_key(key, &["window", "threshold", "min_sample"])
                ))
            }
        }
    }
    Ok(out)
}
