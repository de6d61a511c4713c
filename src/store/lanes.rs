//! The queue's lanes. A queued notification waits in the lane of the channel its plan tries
//! next (`Lane::Channel`); a receipt check, or anything else not bound for one channel, waits
//! in `Lane::Other`. A claim says how many it takes from each lane ([`ClaimLimits`]), so the
//! dispatcher takes from a paced channel's lane only what that channel can send now and leaves
//! the rest of its backlog untouched in the store (issue 19: a paced backlog costs no claim, no
//! decision and no save until its turn), while the other lanes go on at full speed.

use std::collections::BTreeMap;

use lifeboat_channel::ChannelKind;

use crate::model::{Notification, Status};

/// Where a queued notification waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Not bound for one channel: a receipt check, a plan at its end, and entries written
    /// before lanes existed.
    Other,
    /// Bound for this channel next.
    Channel(ChannelKind),
}

impl Lane {
    /// Every lane, in a fixed order.
    pub const ALL: [Lane; 5] = [
        Lane::Other,
        Lane::Channel(ChannelKind::Whatsapp),
        Lane::Channel(ChannelKind::Telegram),
        Lane::Channel(ChannelKind::Line),
        Lane::Channel(ChannelKind::Email),
    ];

    /// The lane `n` waits in while it is queued.
    pub fn of(n: &Notification) -> Lane {
        match n.status {
            Status::Queued => n
                .channels
                .get(n.cursor.index)
                .map_or(Lane::Other, |&kind| Lane::Channel(kind)),
            _ => Lane::Other,
        }
    }

    /// The lane's name in a SQL store (`''` for [`Lane::Other`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Other => "",
            Lane::Channel(kind) => kind.as_str(),
        }
    }
}

/// How many notifications one claim takes: at most `total`, and from a lane listed in `lanes`
/// at most that many (a lane not listed: up to `total`). The earliest due go first across
/// lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimLimits {
    pub total: usize,
    pub lanes: BTreeMap<Lane, usize>,
}

impl ClaimLimits {
    /// Up to `total`, from any lane.
    pub fn any(total: usize) -> ClaimLimits {
        ClaimLimits {
            total,
            lanes: BTreeMap::new(),
        }
    }

    /// How many lane `lane` may give.
    pub fn of(&self, lane: Lane) -> usize {
        self.lanes
            .get(&lane)
            .copied()
            .unwrap_or(self.total)
            .min(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_gives_at_most_its_own_limit_and_never_more_than_the_total() {
        let limits = ClaimLimits {
            total: 10,
            lanes: BTreeMap::from([
                (Lane::Channel(ChannelKind::Telegram), 3),
                (Lane::Channel(ChannelKind::Email), 50),
            ]),
        };
        assert_eq!(limits.of(Lane::Channel(ChannelKind::Telegram)), 3);
        assert_eq!(limits.of(Lane::Channel(ChannelKind::Email)), 10);
        assert_eq!(limits.of(Lane::Other), 10);
        assert_eq!(ClaimLimits::any(7).of(Lane::Channel(ChannelKind::Line)), 7);
    }
}
