//! The guardrails (docs/guardrails.md): the rules that keep the business's accounts from being
//! restricted in the first place, where failover only saves a message after the damage.
//!
//! - [`caps`]: at most `marketing_per_day` marketing messages per contact per rolling 24 h;
//! - [`quiet_hours`]: no marketing at night in the contact's time zone (it waits);
//! - [`pacing`]: a token bucket per channel and per chat (work waits, nothing is dropped);
//! - [`tier`]: WhatsApp's unique business-initiated recipients per 24 h, with warm-up;
//! - [`window`]: WhatsApp's 24 h service window (free-form text, template, or skip);
//! - [`risk`]: blocks and opt-outs per marketing send; over the threshold marketing pauses.
//!
//! [`Policy::decide`] is the one function that says what happens to a notification on a
//! channel, in this order: `not_configured` → `no_address` → `no_consent` → channel state →
//! marketing pause (risk) → quiet hours (marketing; waits) → frequency cap (marketing) →
//! WhatsApp window/template → WhatsApp tier (marketing) → pacing (waits). The worker calls it
//! live; `GET /v1/admin/policy/preview` calls it as a dry run (nothing booked, no counter
//! moved, no probe slot taken), so the preview and the real plan cannot disagree.
//!
//! Config: `[policy]`, every key optional (defaults in docs/guardrails.md and
//! `config/lifeboat.toml`); a bad value is a config error naming the key.
//!
//! Here: the submodules and re-exports. `config.rs` reads `[policy]` into [`PolicyConfig`];
//! `decide.rs` is the decision engine ([`Policy`]).

pub mod caps;
mod config;
mod decide;
pub mod pacing;
pub mod quiet_hours;
pub mod risk;
pub mod tier;
pub mod window;

pub use config::{ChannelPolicy, PolicyConfig};
pub use decide::{Candidate, Decision, Mode, Policy};

/// Opens a store again after a test dropped it (the committer task lets go of it shortly).
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

/// A test's time from RFC 3339 text.
#[cfg(test)]
pub(crate) fn at(text: &str) -> crate::model::Timestamp {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}
