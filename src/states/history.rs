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

/// What [`append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written under `change.seq`.
    New,
    /// Another instance on the same store recorded this very change first (it read the same
    /// stored state and made the same move at the same moment): nothing written, and `change`
    /// is now that record (its sequence number and time), so both instances name the change
    /// alike (the admins' alert is keyed by its sequence number).
    Same,
}

/// Writes `change` durably under its sequence number, or the next free one if another
/// instance on the same store took it meanwhile (`change.seq` is updated), and deletes what
/// falls out of the bound. If the channel's latest stored change, written at or after the
/// number this instance tried, is the same move (`from` → `to`), it is this change recorded by
/// another instance: [`Appended::Same`]. (Two different changes of one channel are never the
/// same move one after the other: the move back lies between them.)
pub async fn append(store: &dyn Store, change: &mut StateChange) -> StoreResult<Appended> {
    loop {
        let bytes = serde_json::to_vec(&*change).expect("a state change always serializes");
        if store
            .kv_insert_new(NAMESPACE, &key(change.seq), &bytes)
            .await?
        {
            break;
        }
        let stored = load(store).await?;
        if let Some(last) = stored.iter().rev().find(|c| c.channel == change.channel) {
            if last.seq >= change.seq && last.from == change.from && last.to == change.to {
                *change = last.clone();
                return Ok(Appended::Same);
            }
        }
        change.seq = stored.back().map_or(change.seq, |c| c.seq.max(change.seq)) + 1;
    }
    if let Some(old) = change.seq.checked_sub(HISTORY_LIMIT as u64) {
        store.kv_delete_relaxed(NAMESPACE, &key(old)).await?;
    }
    Ok(Appended::New)
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

    fn change(seq: u64, channel: ChannelKind, to: ChannelState, boot: &str) -> StateChange {
        StateChange {
            seq,
            at: chrono::Utc::now(),
            channel,
            from: ChannelState::Active,
            to,
            reason: Some(format!("seen by {boot}")),
            until: None,
            sent_totals: BTreeMap::new(),
            boot: boot.into(),
        }
    }

    /// Two instances on one store make the same move of one channel from the same stored
    /// state (each read it before the other saved): the second finds the first's record and
    /// takes its sequence number and time, writing nothing; another channel's change at the
    /// same number goes on after it.
    #[tokio::test]
    async fn the_same_change_recorded_by_two_instances_is_one_entry_with_one_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(&dir.path().join("db"), 8).unwrap();
        let wa = ChannelKind::Whatsapp;
        let mut a = change(0, wa, ChannelState::Banned, "a");
        assert_eq!(append(&store, &mut a).await.unwrap(), Appended::New);
        let mut b = change(0, wa, ChannelState::Banned, "b");
        b.at = a.at + chrono::Duration::seconds(3);
        assert_eq!(append(&store, &mut b).await.unwrap(), Appended::Same);
        assert_eq!(b, a, "b now names a's record");

        // Not the same move: written after it.
        let mut line = change(0, ChannelKind::Line, ChannelState::Banned, "b");
        assert_eq!(append(&store, &mut line).await.unwrap(), Appended::New);
        assert_eq!(line.seq, 1);
        let stored = load(&store).await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|c| (c.seq, c.channel, c.boot.as_str()))
                .collect::<Vec<_>>(),
            [(0, wa, "a"), (1, ChannelKind::Line, "b")]
        );

        // WhatsApp comes back and is banned again: a new change, not the first one again.
        let mut back = change(2, wa, ChannelState::Active, "a");
        back.from = ChannelState::Banned;
        assert_eq!(append(&store, &mut back).await.unwrap(), Appended::New);
        let mut again = change(1, wa, ChannelState::Banned, "b");
        assert_eq!(append(&store, &mut again).await.unwrap(), Appended::New);
        assert_eq!(again.seq, 3);
    }

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
