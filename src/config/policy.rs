//! `[policy]` (docs/guardrails.md): parsed here by serde, once, with the rest of the config in
//! `Config::load`; `crate::policy` applies it. The policy's value types that the section names (quiet hours, warm-up, risk
//! monitor) are defined here too, and their behaviour lives with the guardrail that uses them.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveTime;
use lifeboat_channel::ChannelKind;
use serde::Deserialize;

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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct RiskConfig {
    /// The last N marketing sends per channel.
    #[serde(deserialize_with = "keys::size_from_1")]
    pub window: usize,
    /// Signals over sends above which marketing pauses.
    #[serde(deserialize_with = "keys::fraction")]
    pub threshold: f64,
    /// No pause on fewer sends than this.
    #[serde(deserialize_with = "keys::size_from_1")]
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

/// `warmup = { start, growth, per }`; every key optional (50, 1.5, 1d).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct Warmup {
    #[serde(
        default = "Warmup::default_start",
        deserialize_with = "keys::count_from_1"
    )]
    pub start: u32,
    #[serde(default = "Warmup::default_growth", deserialize_with = "keys::growth")]
    pub growth: f64,
    #[serde(default = "Warmup::default_per", deserialize_with = "keys::period")]
    pub per: Duration,
}

impl Warmup {
    fn default_start() -> u32 {
        50
    }
    fn default_growth() -> f64 {
        1.5
    }
    fn default_per() -> Duration {
        Duration::from_secs(86_400)
    }
}

/// WhatsApp's messaging limit of a business portfolio: new people reached outside a
/// customer-service window per rolling 24 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortfolioLimit {
    Count(u32),
    Unlimited,
}

impl PortfolioLimit {
    /// The count, `None` when unlimited.
    pub fn count(self) -> Option<u32> {
        match self {
            PortfolioLimit::Count(n) => Some(n),
            PortfolioLimit::Unlimited => None,
        }
    }
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
    /// WhatsApp: skip marketing templates to US (+1) numbers, which Meta does not deliver
    /// (on by default).
    pub skip_us_marketing: bool,
    /// WhatsApp: the portfolio's messaging limit until Meta names one (`None`: not enforced
    /// until then).
    pub portfolio_limit: Option<PortfolioLimit>,
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
            skip_us_marketing: kind == ChannelKind::Whatsapp,
            portfolio_limit: None,
        }
    }
}

/// The typed `[policy]` section, read by serde (through [`PolicyKeys`]) with the rest of the
/// config in `Config::load`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "PolicyKeys")]
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
        PolicyConfig::from(PolicyKeys::default())
    }
}

/// `[policy]` as written: every key optional and checked as it is read, so a bad value is a
/// config error at its key (`policy.telegram.rate`); [`PolicyConfig`] fills in the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct PolicyKeys {
    #[serde(default, deserialize_with = "keys::opt_count_from_0")]
    marketing_per_day: Option<u32>,
    /// `Some(None)`: `quiet_hours = "off"`.
    #[serde(default, deserialize_with = "keys::opt_quiet_hours")]
    quiet_hours: Option<Option<QuietHours>>,
    #[serde(default, deserialize_with = "keys::opt_boolean")]
    opt_out_footer: Option<bool>,
    #[serde(default)]
    risk: RiskConfig,
    #[serde(default)]
    whatsapp: WhatsappKeys,
    #[serde(default)]
    telegram: ChannelKeys,
    #[serde(default)]
    line: ChannelKeys,
    #[serde(default)]
    email: ChannelKeys,
}

/// `[policy.telegram]`, `[policy.line]`, `[policy.email]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct ChannelKeys {
    #[serde(default, deserialize_with = "keys::opt_positive")]
    rate: Option<f64>,
    #[serde(default, deserialize_with = "keys::opt_positive")]
    per_chat_rate: Option<f64>,
}

/// `[policy.whatsapp]`: the common keys and WhatsApp's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct WhatsappKeys {
    #[serde(default, deserialize_with = "keys::opt_positive")]
    rate: Option<f64>,
    #[serde(default, deserialize_with = "keys::opt_positive")]
    per_chat_rate: Option<f64>,
    #[serde(default, deserialize_with = "keys::opt_count_from_1")]
    tier: Option<u32>,
    #[serde(default)]
    warmup: Option<Warmup>,
    #[serde(default, deserialize_with = "keys::opt_boolean")]
    service_window: Option<bool>,
    #[serde(default, deserialize_with = "keys::opt_boolean")]
    skip_us_marketing: Option<bool>,
    #[serde(default, deserialize_with = "keys::opt_portfolio_limit")]
    portfolio_limit: Option<PortfolioLimit>,
}

impl ChannelKeys {
    /// These keys over `out` (the channel's defaults).
    fn over(self, mut out: ChannelPolicy) -> ChannelPolicy {
        out.rate = self.rate.unwrap_or(out.rate);
        out.per_chat_rate = self.per_chat_rate.or(out.per_chat_rate);
        out
    }
}

impl From<PolicyKeys> for PolicyConfig {
    fn from(keys: PolicyKeys) -> PolicyConfig {
        let default = ChannelPolicy::default_for;
        let wa = keys.whatsapp;
        let mut whatsapp = ChannelKeys {
            rate: wa.rate,
            per_chat_rate: wa.per_chat_rate,
        }
        .over(default(ChannelKind::Whatsapp));
        whatsapp.tier = wa.tier.or(whatsapp.tier);
        whatsapp.warmup = wa.warmup;
        whatsapp.service_window = wa.service_window.unwrap_or(whatsapp.service_window);
        whatsapp.skip_us_marketing = wa.skip_us_marketing.unwrap_or(whatsapp.skip_us_marketing);
        whatsapp.portfolio_limit = wa.portfolio_limit;
        let channels = [
            (ChannelKind::Whatsapp, whatsapp),
            (
                ChannelKind::Telegram,
                keys.telegram.over(default(ChannelKind::Telegram)),
            ),
            (
                ChannelKind::Line,
                keys.line.over(default(ChannelKind::Line)),
            ),
            (
                ChannelKind::Email,
                keys.email.over(default(ChannelKind::Email)),
            ),
        ];
        PolicyConfig {
            marketing_per_day: keys.marketing_per_day.unwrap_or(3),
            quiet_hours: keys
                .quiet_hours
                .unwrap_or_else(|| Some(QuietHours::parse("21:00-08:00").expect("static window"))),
            opt_out_footer: keys.opt_out_footer.unwrap_or(true),
            channels: channels.into_iter().collect(),
            risk: keys.risk,
        }
    }
}

/// Readers of one `[policy]` value for `deserialize_with`: each takes what TOML holds and
/// answers with the message the config error shows after the key.
mod keys {
    use std::time::Duration;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    use super::QuietHours;

    fn value<'de, D: Deserializer<'de>>(d: D) -> Result<toml::Value, D::Error> {
        toml::Value::deserialize(d)
    }

    fn number(v: &toml::Value) -> Option<f64> {
        match v {
            toml::Value::Integer(i) => Some(*i as f64),
            toml::Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn count<E: Error>(v: &toml::Value, min: i64) -> Result<u32, E> {
        v.as_integer()
            .filter(|n| *n >= min && *n <= u32::MAX as i64)
            .map(|n| n as u32)
            .ok_or_else(|| E::custom(format!("must be a whole number of at least {min}")))
    }

    pub(super) fn opt_count_from_0<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u32>, D::Error> {
        count(&value(d)?, 0).map(Some)
    }

    pub(super) fn opt_count_from_1<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u32>, D::Error> {
        count(&value(d)?, 1).map(Some)
    }

    pub(super) fn count_from_1<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        count(&value(d)?, 1)
    }

    pub(super) fn size_from_1<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        count(&value(d)?, 1).map(|n| n as usize)
    }

    pub(super) fn opt_positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        number(&value(d)?)
            .filter(|n| n.is_finite() && *n > 0.0)
            .map(Some)
            .ok_or_else(|| D::Error::custom("must be a number above 0"))
    }

    /// A whole number of at least 1, or `"unlimited"`.
    pub(super) fn opt_portfolio_limit<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<super::PortfolioLimit>, D::Error> {
        let v = value(d)?;
        if v.as_str() == Some("unlimited") {
            return Ok(Some(super::PortfolioLimit::Unlimited));
        }
        count::<D::Error>(&v, 1)
            .map(|n| Some(super::PortfolioLimit::Count(n)))
            .map_err(|_| D::Error::custom("must be a whole number of at least 1, or \"unlimited\""))
    }

    pub(super) fn opt_boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        value(d)?
            .as_bool()
            .map(Some)
            .ok_or_else(|| D::Error::custom("must be true or false"))
    }

    pub(super) fn opt_quiet_hours<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<QuietHours>>, D::Error> {
        let v = value(d)?;
        let text = v
            .as_str()
            .ok_or_else(|| D::Error::custom("must be a string like \"21:00-08:00\""))?;
        if text.trim() == "off" {
            return Ok(Some(None));
        }
        QuietHours::parse(text)
            .map(|q| Some(Some(q)))
            .map_err(D::Error::custom)
    }

    /// The warm-up's growth factor: at least 1.
    pub(super) fn growth<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        number(&value(d)?)
            .filter(|g| g.is_finite() && *g >= 1.0)
            .ok_or_else(|| D::Error::custom("must be a number of at least 1"))
    }

    /// A duration like `"1d"`, longer than zero.
    pub(super) fn period<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = value(d)?;
        let text = v
            .as_str()
            .ok_or_else(|| D::Error::custom("must be a duration like \"1d\""))?;
        let per = crate::config::parse_duration(text).map_err(D::Error::custom)?;
        if per.is_zero() {
            return Err(D::Error::custom("must be longer than 0"));
        }
        Ok(per)
    }

    /// A fraction from 0 up to (not including) 1.
    pub(super) fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        number(&value(d)?)
            .filter(|n| (0.0..1.0).contains(n))
            .ok_or_else(|| D::Error::custom("must be a fraction from 0 up to 1 (0.02 = 2 %)"))
    }
}
