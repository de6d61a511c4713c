//! Quiet hours: no marketing at night in the contact's own time zone (docs/guardrails.md: people
//! who are woken by a promotion block and report). A marketing notification that falls inside
//! the quiet hours is not dropped: it waits for the moment they end.
//!
//! Pure functions over explicit instants, so every rule is tested without a clock.

use chrono::{NaiveTime, TimeZone};
use chrono_tz::Tz;

use crate::model::{Contact, Timestamp};

pub use crate::config::policy::QuietHours;

impl QuietHours {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            t >= self.start && t < self.end
        } else if self.start > self.end {
            t >= self.start || t < self.end
        } else {
            false
        }
    }

    /// If `now` falls inside the quiet hours in `tz`, the instant they end (marketing may go
    /// then); `None` when marketing may go now.
    pub fn opens_at(&self, tz: Tz, now: Timestamp) -> Option<Timestamp> {
        let local = now.with_timezone(&tz);
        let t = local.time();
        if !self.contains(t) {
            return None;
        }
        let mut date = local.date_naive();
        if self.start > self.end && t >= self.start {
            date = date.succ_opt()?;
        }
        let end = date.and_time(self.end);
        let resolved = tz
            .from_local_datetime(&end)
            .earliest()
            // The end falls in a DST gap: the first instant after it.
            .or_else(|| {
                tz.from_local_datetime(&end.checked_add_signed(chrono::Duration::hours(1))?)
                    .earliest()
            })?;
        Some(resolved.with_timezone(&chrono::Utc))
    }
}

/// The contact's time zone (validated when it was set); UTC when absent or unknown.
pub fn contact_tz(contact: &Contact) -> Tz {
    contact
        .timezone
        .as_deref()
        .and_then(|name| name.parse::<Tz>().ok())
        .unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::at;

    fn night() -> QuietHours {
        QuietHours::parse("21:00-08:00").unwrap()
    }

    #[test]
    fn parses_windows_and_names_bad_ones() {
        assert_eq!(
            night(),
            QuietHours {
                start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(8, 0, 0).unwrap()
            }
        );
        for bad in ["21-8", "25:00-08:00", "night", ""] {
            assert!(QuietHours::parse(bad).unwrap_err().contains(bad));
        }
    }

    #[test]
    fn late_evening_in_warsaw_waits_for_eight_the_next_morning() {
        let tz: Tz = "Europe/Warsaw".parse().unwrap();
        // 23:00 in Warsaw (CEST, UTC+2) is 21:00 UTC; 08:00 the next day is 06:00 UTC.
        assert_eq!(
            night().opens_at(tz, at("2025-06-10T21:00:00Z")),
            Some(at("2025-06-11T06:00:00Z"))
        );
        // 03:00 local: the same morning.
        assert_eq!(
            night().opens_at(tz, at("2025-06-11T01:00:00Z")),
            Some(at("2025-06-11T06:00:00Z"))
        );
        // 08:00 local sharp and 20:59 local: open.
        assert_eq!(night().opens_at(tz, at("2025-06-11T06:00:00Z")), None);
        assert_eq!(night().opens_at(tz, at("2025-06-11T18:59:00Z")), None);
        // 21:00 local sharp: closed.
        assert!(night().opens_at(tz, at("2025-06-11T19:00:00Z")).is_some());
        // In winter Warsaw is UTC+1.
        assert_eq!(
            night().opens_at(tz, at("2025-01-10T22:00:00Z")),
            Some(at("2025-01-11T07:00:00Z"))
        );
    }

    #[test]
    fn the_same_instant_is_day_in_one_zone_and_night_in_another() {
        let now = at("2025-06-10T21:00:00Z");
        assert!(night().opens_at(Tz::UTC, now).is_some());
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(night().opens_at(ny, now), None, "17:00 in New York");
    }

    #[test]
    fn a_window_that_does_not_wrap_and_an_empty_one() {
        let lunch = QuietHours::parse("12:00-13:30").unwrap();
        assert_eq!(
            lunch.opens_at(Tz::UTC, at("2025-06-10T12:10:00Z")),
            Some(at("2025-06-10T13:30:00Z"))
        );
        assert_eq!(lunch.opens_at(Tz::UTC, at("2025-06-10T13:30:00Z")), None);
        let never = QuietHours::parse("08:00-08:00").unwrap();
        assert_eq!(never.opens_at(Tz::UTC, at("2025-06-10T08:00:00Z")), None);
    }

    #[test]
    fn an_end_inside_a_dst_gap_moves_past_it() {
        // Europe/Warsaw skips 02:00-03:00 on 2025-03-30.
        let tz: Tz = "Europe/Warsaw".parse().unwrap();
        let q = QuietHours::parse("01:00-02:30").unwrap();
        // 01:30 CET = 00:30 UTC; 02:30 doesn't exist, 03:30 CEST = 01:30 UTC.
        assert_eq!(
            q.opens_at(tz, at("2025-03-30T00:30:00Z")),
            Some(at("2025-03-30T01:30:00Z"))
        );
    }

    #[test]
    fn unknown_or_missing_zones_are_utc() {
        let mut c = Contact::new("c", at("2025-06-10T00:00:00Z"));
        assert_eq!(contact_tz(&c), Tz::UTC);
        c.timezone = Some("Asia/Jakarta".into());
        assert_eq!(contact_tz(&c), chrono_tz::Asia::Jakarta);
        c.timezone = Some("Mars/Olympus".into());
        assert_eq!(contact_tz(&c), Tz::UTC);
    }
}
