//! What messages cost: WhatsApp's status webhooks carry `pricing` (`billable`, `category`:
//! marketing, utility, authentication, service, ...). The gateway keeps it on the attempt that
//! sent the message and counts each priced message once, per channel and category, billable or
//! free, so an admin sees what went out at a price and what falling over to free channels
//! saved (`GET /v1/admin/channels`: `pricing`; `/metrics`: `lifeboat_priced_messages_total`).
//!
//! One record per channel and category in namespace `pricing`, key `<channel>/<category>`,
//! counted with [`crate::store::Store::kv_update`]: one at a time by [`count`], or gathered
//! for a quarter second by [`Tally`] (what the webhooks use: one row update per status would
//! serialise them on a shared database).

use std::collections::BTreeMap;

use lifeboat_channel::ChannelKind;
use serde::{Deserialize, Serialize};

use crate::model::Pricing;
use crate::store::{Durability, Store, StoreResult};

pub(crate) const NAMESPACE: &str = crate::store::namespaces::PRICING;

/// Priced messages of one category on one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub billable: u64,
    pub free: u64,
}

/// Counts one priced message (at once; the webhooks use a [`Tally`]).
pub async fn count(store: &dyn Store, kind: ChannelKind, pricing: Pricing) -> StoreResult<()> {
    use super::coalesce::Delta;
    let one = Counts::one(pricing);
    let edit = Box::new(move |old: Option<&[u8]>| Some(one.apply(old)));
    store
        .kv_update(NAMESPACE, &key(kind, pricing), edit, Durability::Relaxed)
        .await?;
    Ok(())
}

/// Priced messages counted in memory and written every [`super::coalesce::EVERY`].
pub type Tally = super::coalesce::Coalesced<Counts>;

/// The key of `kind`'s record for `pricing`'s category.
pub fn key(kind: ChannelKind, pricing: Pricing) -> String {
    format!("{kind}/{}", pricing.category.as_str())
}

impl Counts {
    /// One priced message.
    pub fn one(pricing: Pricing) -> Counts {
        if pricing.billable {
            Counts {
                billable: 1,
                free: 0,
            }
        } else {
            Counts {
                billable: 0,
                free: 1,
            }
        }
    }
}

impl super::coalesce::Delta for Counts {
    fn merge(&mut self, next: Self) {
        self.billable += next.billable;
        self.free += next.free;
    }

    fn apply(&self, old: Option<&[u8]>) -> Vec<u8> {
        let mut counts: Counts = old
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        counts.merge(*self);
        serde_json::to_vec(&counts).expect("counts serialize")
    }
}

/// A channel's priced messages by category.
pub async fn counts(store: &dyn Store, kind: ChannelKind) -> StoreResult<BTreeMap<String, Counts>> {
    let prefix = format!("{kind}/");
    Ok(store
        .kv_scan(NAMESPACE, &prefix)
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            let category = k.strip_prefix(&prefix)?.to_string();
            Some((category, serde_json::from_slice(&v).ok()?))
        })
        .collect())
}
