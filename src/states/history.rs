//! The history of channel state changes: when WhatsApp went banned, why, what the other
//! channels carried meanwhile, and when it came back. The admin page draws its timeline from
//! it and `GET /v1/admin/channels/history` answers it.
//!
//! Append-only and bounded: the newest [`HISTORY_LIMIT`] changes are kept in the store
//! (namespace `channel_history`, keyed by a zero-padded sequence number so a scan reads them in
//! order) and survive a restart; older ones are deleted as new ones come. A change is written
//! just before the channel's new state, whose durable save makes both durable.
//!
//! Moves between `active` and `throttled` are not recorded: a provider's "slow down" lasts
//! seconds and would push the bans out of the history.

use std::collections::{BTreeMap, VecDeque};

use lifeboat_channel::ChannelKind;
use serde::{Deserialize, Serialize};

use crate::model::{ChannelState, Timestamp};
use crate::store::{Store, StoreResult};

/// How many changes the history keeps.
pub const HISTORY_LIMIT: usize = 200;
const NAMESPACE: &str = "channel_history";

/// One change of a channel's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateChange {
    /// Increases by one per change, across restarts.
    pub seq: u64,
    pub at: Timestamp,
    pub channel: ChannelKind,
    pub from: ChannelState,
    pub to: ChannelState,
    /// Why: the provider's words, the admin's reason, `enabled by admin`, `probe succeeded`.
    pub reason: Option<String>,
    pub until: Option<Timestamp>,
    /// Sends counted per channel by the running process at the change, and that process's
    /// id: what the other channels carried during an outage is the difference of two of these
    /// taken by the same process.
    pub sent_totals: BTreeMap<ChannelKind, u64>,
    pub boot: String,
}

/// Whether a change between these states goes into the history.
pub fn recorded(from: ChannelState, to: ChannelState) -> bool {
    let quiet = |s| matches!(s, ChannelState::Active | ChannelState::Throttled);
    from != to && !(quiet(from) && quiet(to))
}

fn key(seq: u64) -> String {
    format!("{seq:020}")
}

/// The stored history, oldest first.
pub async fn load(store: &dyn Store) -> StoreResult<VecDeque<StateChange>> {
    let mut changes: VecDeque<StateChange> = store
        .kv_scan(NAMESPACE, "")
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    while changes.len() > HISTORY_LIMIT {
        changes.pop_front();
    }
    Ok(changes)
}

/// Writes `change` durably under its sequence number, or the next free one if another
/// instance on the same store took it meanwhile (`change.seq` is updated), and deletes what
/// falls out of the bound.
pub async fn append(store: &dyn Store, change: &mut StateChange) -> StoreResult<()> {
    loop {
        let bytes = serde_json::to_vec(&*change).expect("a state change always serializes");
        if store
            .kv_insert_new(NAMESPACE, &key(change.seq), &bytes)
            .await?
        {
            break;
        }
        change.seq += 1;
    }
    if let Some(old) = change.seq.checked_sub(HISTORY_LIMIT as u64) {
        store.kv_delete_relaxed(NAMESPACE, &key(old)).await?;
    }
    Ok(())
}

/// What the other channels sent between `change` and `end` (the change that ended the outage,
/// or now), per channel; `None` when a restart came in between (the counts are per process).
pub fn carried(
    change: &StateChange,
    end_totals: &BTreeMap<ChannelKind, u64>,
    end_boot: &str,
) -> Option<BTreeMap<ChannelKind, u64>> {
    if change.boot != end_boot {
        return None;
    }
    Some(
        ChannelKind::ALL
            .iter()
            .filter(|k| **k != change.channel)
            .map(|k| {
                let before = change.sent_totals.get(k).copied().unwrap_or(0);
                let after = end_totals.get(k).copied().unwrap_or(0);
                (*k, after.saturating_sub(before))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_are_not_recorded() {
        use ChannelState::*;
        assert!(!recorded(Active, Throttled));
        assert!(!recorded(Throttled, Active));
        assert!(!recorded(Banned, Banned));
        assert!(recorded(Active, Banned));
        assert!(recorded(Throttled, Restricted));
        assert!(recorded(Disabled, Active));
    }
}
