//! The `[policy]` section of the config, typed: [`PolicyConfig`] with its defaults
//! (docs/guardrails.md) and the one place that reads the raw TOML table, so a bad value is a
//! config error naming the key (`policy.telegram.rate must be ...`).

use std::collections::BTreeMap;

use lifeboat_channel::ChannelKind;

use super::quiet_hours::QuietHours;
use super::risk::RiskConfig;
use super::tier::Warmup;
use crate::config::unknown_key;

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

    pub(super) fn channel(&self, kind: ChannelKind) -> &ChannelPolicy {
        &self.channels[&kind]
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
                            warmup.per = crate::config::parse_duration(text)
                                .map_err(|e| format!("{name}: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyConfig, String> {
        let t: toml::Table = toml::from_str(text).unwrap();
        PolicyConfig::from_table(&t)
    }

    #[test]
    fn every_key_is_optional_and_the_defaults_are_guardrails_md() {
        let c = PolicyConfig::default();
        assert_eq!(c.marketing_per_day, 3);
        assert_eq!(c.quiet_hours, QuietHours::parse("21:00-08:00").ok());
        assert!(c.opt_out_footer);
        let wa = &c.channels[&ChannelKind::Whatsapp];
        assert_eq!(
            (wa.rate, wa.tier, wa.warmup.clone(), wa.service_window),
            (80.0, Some(1000), None, true)
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
            (wa.rate, wa.tier, wa.service_window),
            (40.0, Some(5), false)
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
