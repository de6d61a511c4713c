//! WhatsApp's messaging limit, per business portfolio: since October 2025 Meta limits the
//! unique people a business reaches *outside* a customer-service window per rolling 24 h
//! (250 → 2,000 → 10,000 → 100,000 → unlimited) at the level of the business portfolio, shared
//! by every phone number in it. Past it, Meta simply does not deliver (no error code), so the
//! gateway counts and stops first: a new person outside their window is not tried on WhatsApp
//! once the limit is reached (`skipped`, `portfolio_limit`, any category), while people already
//! reached in the last 24 h and replies inside an open window still go.
//!
//! The count is the tier ledger ([`super::tier`]): one ledger for all the WhatsApp numbers the
//! gateway sends from, keyed by person and hour, never by number, so a second number of the
//! portfolio added later shares it. The limit in force is Meta's latest word (the
//! `business_capability_update` / `phone_number_quality_update` webhooks), else
//! `[policy.whatsapp] portfolio_limit`, else none (not enforced until Meta names one).
//!
//! Meta's word is one record in namespace `whatsapp_portfolio`, key `limit`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Timestamp;
use crate::store::{Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::WHATSAPP_PORTFOLIO;
const LIMIT_KEY: &str = "limit";

pub use crate::config::policy::PortfolioLimit;

/// Meta's latest word on the portfolio's limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitRecord {
    pub limit: PortfolioLimit,
    /// The webhook field that named it.
    pub source: String,
    /// Meta's own words (`TIER_2K`, `10000`, ...).
    pub raw: String,
    pub at: Timestamp,
}

/// Reads one of Meta's ways to write a limit: `TIER_250`, `TIER_2K`, `TIER_10K`,
/// `TIER_100K`, `TIER_UNLIMITED`, `UNLIMITED`, or a number. `None` for `TIER_NOT_SET` and
/// anything else.
pub fn parse_limit(value: &Value) -> Option<PortfolioLimit> {
    let text = match value {
        Value::Number(n) => {
            return n
                .as_u64()
                .map(|n| PortfolioLimit::Count(n.min(u32::MAX as u64) as u32))
        }
        Value::String(s) => s.trim().to_ascii_uppercase(),
        _ => return None,
    };
    let text = text.strip_prefix("TIER_").unwrap_or(&text);
    if text == "UNLIMITED" {
        return Some(PortfolioLimit::Unlimited);
    }
    let (digits, factor) = match text.strip_suffix('K') {
        Some(d) => (d, 1000),
        None => (text, 1),
    };
    digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .map(PortfolioLimit::Count)
}

/// Stores Meta's latest word on the limit.
pub async fn set_limit(
    store: &dyn Store,
    limit: PortfolioLimit,
    source: &str,
    raw: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let record = LimitRecord {
        limit,
        source: source.to_string(),
        raw: raw.to_string(),
        at: now,
    };
    let bytes = serde_json::to_vec(&record).expect("a limit serializes");
    // Meta's latest word wins; an older webhook delivered late does not undo a newer one.
    let edit = Box::new(move |old: Option<&[u8]>| {
        let old: Option<LimitRecord> = old.and_then(|b| serde_json::from_slice(b).ok());
        match old {
            Some(o) if o.at > now => serde_json::to_vec(&o).ok(),
            _ => Some(bytes.clone()),
        }
    });
    store
        .kv_update_announced(NAMESPACE, LIMIT_KEY, edit)
        .await?;
    tracing::info!(limit = ?limit, source, "WhatsApp portfolio messaging limit updated by Meta");
    Ok(())
}

/// Meta's latest word on the limit, if it said one.
pub async fn stored_limit(store: &dyn Store) -> StoreResult<Option<LimitRecord>> {
    Ok(store
        .kv_get(NAMESPACE, LIMIT_KEY)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// The limit in force and where it comes from: Meta's latest word, else the config.
pub async fn limit_in_force(
    store: &dyn Store,
    configured: Option<PortfolioLimit>,
) -> StoreResult<Option<(PortfolioLimit, String)>> {
    Ok(match stored_limit(store).await? {
        Some(r) => Some((r.limit, r.source)),
        None => configured.map(|l| (l, "policy.whatsapp.portfolio_limit".to_string())),
    })
}

/// What a send's decision reads of the portfolio: the restriction and limit records as stored
/// (filter restrictions by `until` at use).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub restrictions: Vec<RestrictionRecord>,
    pub limit: Option<LimitRecord>,
}

impl Snapshot {
    /// The restrictions in force at `now`.
    pub fn restrictions_at(&self, now: Timestamp) -> impl Iterator<Item = &RestrictionRecord> {
        self.restrictions.iter().filter(move |r| r.until > now)
    }

    /// The limit in force and where it comes from: Meta's latest word, else the config.
    pub fn limit_in_force(
        &self,
        configured: Option<PortfolioLimit>,
    ) -> Option<(PortfolioLimit, String)> {
        match &self.limit {
            Some(r) => Some((r.limit, r.source.clone())),
            None => configured.map(|l| (l, "policy.whatsapp.portfolio_limit".to_string())),
        }
    }
}

/// The portfolio records for the send path, read from the store at most every
/// [`Cache::FRESH`], and at once after an announced record changed
/// ([`Store::records_changed`]: [`set_limit`] and [`set_restriction`] write with
/// [`Store::kv_update_announced`], so this instance's writes and, on a shared store, every
/// other instance's announcement make the next use read again). Two store reads per WhatsApp
/// send (a scan and a get) were a third of a send's database round trips. [`Cache::FRESH`] is
/// the backstop for a lost announcement.
#[derive(Default)]
pub struct Cache {
    held: tokio::sync::Mutex<Option<(std::time::Instant, u64, std::sync::Arc<Snapshot>)>>,
}

impl Cache {
    pub const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

    pub async fn get(&self, store: &dyn Store) -> StoreResult<std::sync::Arc<Snapshot>> {
        let mut held = self.held.lock().await;
        // Read before the records: a change announced during the read makes the next use
        // read again.
        let generation = store.records_changed();
        if let Some((at, g, snap)) = held.as_ref() {
            if *g == generation && at.elapsed() < Self::FRESH {
                return Ok(snap.clone());
            }
        }
        let mut restrictions = Vec::new();
        for (_, value) in store.kv_scan(NAMESPACE, "restriction/").await? {
            if let Ok(r) = serde_json::from_slice::<RestrictionRecord>(&value) {
                restrictions.push(r);
            }
        }
        let snap = std::sync::Arc::new(Snapshot {
            restrictions,
            limit: stored_limit(store).await?,
        });
        *held = Some((std::time::Instant::now(), generation, snap.clone()));
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metas_ways_to_write_a_limit() {
        use PortfolioLimit::*;
        for (value, want) in [
            (json!("TIER_250"), Some(Count(250))),
            (json!("TIER_2K"), Some(Count(2000))),
            (json!("TIER_1K"), Some(Count(1000))),
            (json!("TIER_10K"), Some(Count(10_000))),
            (json!("TIER_100K"), Some(Count(100_000))),
            (json!("TIER_UNLIMITED"), Some(Unlimited)),
            (json!("UNLIMITED"), Some(Unlimited)),
            (json!(2000), Some(Count(2000))),
            (json!("2000"), Some(Count(2000))),
            (json!("TIER_NOT_SET"), None),
            (json!(null), None),
        ] {
            assert_eq!(parse_limit(&value), want, "{value}");
        }
    }
}

/// A typed restriction of the WhatsApp account (`account_update`, `ACCOUNT_RESTRICTION`):
/// one direction of messaging is blocked until its expiration, the other goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Restriction {
    /// `RESTRICTED_BIZ_INITIATED_MESSAGING`: no business-initiated messages (outside a
    /// service window); replies inside an open window still go.
    #[serde(rename = "RESTRICTED_BIZ_INITIATED_MESSAGING")]
    BizInitiated,
    /// `RESTRICTED_CUSTOMER_INITIATED_MESSAGING`: no replies inside service windows;
    /// business-initiated messages still go.
    #[serde(rename = "RESTRICTED_CUSTOMER_INITIATED_MESSAGING")]
    CustomerInitiated,
}

impl Restriction {
    pub const ALL: [Restriction; 2] = [Restriction::BizInitiated, Restriction::CustomerInitiated];

    /// Meta's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Restriction::BizInitiated => "RESTRICTED_BIZ_INITIATED_MESSAGING",
            Restriction::CustomerInitiated => "RESTRICTED_CUSTOMER_INITIATED_MESSAGING",
        }
    }

    pub fn parse(text: &str) -> Option<Restriction> {
        Restriction::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// What it means for the gateway's traffic, for the admin page and skip details.
    pub fn effect(self) -> &'static str {
        match self {
            Restriction::BizInitiated => {
                "business-initiated messages go to other channels; replies inside an open 24 h window still go on WhatsApp"
            }
            Restriction::CustomerInitiated => {
                "replies inside an open 24 h window go to other channels; business-initiated messages still go on WhatsApp"
            }
        }
    }

    fn key(self) -> String {
        format!("restriction/{}", self.as_str())
    }
}

/// A restriction in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestrictionRecord {
    pub restriction_type: Restriction,
    pub until: Timestamp,
    /// When Meta said so.
    pub at: Timestamp,
}

/// Records `restriction` until `until` (Meta's `expiration`; a later word replaces it).
pub async fn set_restriction(
    store: &dyn Store,
    restriction: Restriction,
    until: Timestamp,
    now: Timestamp,
) -> StoreResult<()> {
    let record = RestrictionRecord {
        restriction_type: restriction,
        until,
        at: now,
    };
    let bytes = serde_json::to_vec(&record).expect("a restriction serializes");
    store
        .kv_update_announced(
            NAMESPACE,
            &restriction.key(),
            Box::new(move |_| Some(bytes.clone())),
        )
        .await?;
    tracing::warn!(restriction = restriction.as_str(), until = %until.to_rfc3339(), "WhatsApp account restricted by Meta: {}", restriction.effect());
    Ok(())
}

/// The restrictions in force at `now` (an expired one ends by itself and is deleted).
pub async fn restrictions(
    store: &dyn Store,
    now: Timestamp,
) -> StoreResult<Vec<RestrictionRecord>> {
    let mut out = Vec::new();
    for (key, value) in store.kv_scan(NAMESPACE, "restriction/").await? {
        match serde_json::from_slice::<RestrictionRecord>(&value) {
            Ok(r) if r.until > now => out.push(r),
            Ok(_) => store.kv_delete_relaxed(NAMESPACE, &key).await?,
            Err(_) => {}
        }
    }
    Ok(out)
}
