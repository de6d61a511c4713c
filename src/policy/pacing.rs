//! Channel pacing: a token bucket per channel (and per chat where the provider has a per-chat
//! limit: Telegram's 1 message per second per chat), so a burst is spread at the provider's
//! pace instead of earning throttle answers, which on WhatsApp count against the number.
//! Work waits, nothing is dropped.
//!
//! The buckets are GCRA ("generic cell rate algorithm"): a bucket is one instant, the
//! theoretical arrival time of the next cell, which makes a *reservation* cheap. A send that
//! finds no token reserves the next free slot and its notification is put back on the queue
//! until then (a worker slot is never held for more than a few milliseconds); when it comes
//! back, the slot is its own. A provider's throttle answer halves the channel's rate for a
//! minute (down to 1/16), so the gateway backs off instead of hammering.
//!
//! In memory only: after a restart the buckets start full, as the providers' own do soon.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::Duration;
use lifeboat_channel::ChannelKind;

use crate::model::Timestamp;

/// A wait this short is slept in the worker instead of rescheduling.
pub const SLEEP_AT_MOST: Duration = Duration::milliseconds(10);
/// How long a throttle answer slows a channel down.
const SLOW_FOR: Duration = Duration::seconds(60);
const SLOWEST: f64 = 1.0 / 16.0;

/// A rate in messages per second; the burst is one second's worth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

impl Rate {
    fn interval_us(self, factor: f64) -> i64 {
        (1_000_000.0 / (self.0 * factor).max(1e-6)) as i64
    }
    fn burst(self) -> i64 {
        self.0.max(1.0).floor() as i64
    }
}

/// One GCRA bucket: the theoretical arrival time of the next send (epoch µs).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tat: i64,
}

impl Bucket {
    /// When the next send may go; `reserve` books it.
    fn slot(&mut self, rate: Rate, factor: f64, now: i64, reserve: bool) -> i64 {
        let interval = rate.interval_us(factor);
        let tolerance = interval * (rate.burst() - 1);
        let tat = self.tat.max(now);
        let allowed = (tat - tolerance).max(now);
        if reserve {
            self.tat = tat + interval;
        }
        allowed
    }

    /// Whether the bucket has refilled completely (it can be forgotten).
    fn idle(&self, now: i64) -> bool {
        self.tat <= now
    }
}

/// What pacing says about a send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Go (after sleeping this long, at most [`SLEEP_AT_MOST`]).
    Go(Duration),
    /// Come back then: the slot is reserved for this notification.
    WaitUntil(Timestamp),
}

#[derive(Default)]
struct State {
    channels: BTreeMap<ChannelKind, Bucket>,
    chats: HashMap<(ChannelKind, String), Bucket>,
    /// Slots booked by notifications that were put back on the queue.
    booked: HashMap<(String, ChannelKind), i64>,
    /// Throttle answers: (factor, until µs).
    slow: BTreeMap<ChannelKind, (f64, i64)>,
    calls: u64,
}

/// The buckets of every channel.
pub struct Pacer {
    rates: BTreeMap<ChannelKind, (Rate, Option<Rate>)>,
    state: Mutex<State>,
}

fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl Pacer {
    /// `rates`: per channel, the channel rate and the per-chat rate if any. A channel not
    /// listed is not paced.
    pub fn new(rates: BTreeMap<ChannelKind, (Rate, Option<Rate>)>) -> Pacer {
        Pacer {
            rates,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes (or books) a slot for notification `id` on `kind` to `chat`.
    pub fn take(&self, kind: ChannelKind, chat: &str, id: &str, now: Timestamp) -> Pace {
        self.pace(kind, chat, Some(id), now)
    }

    /// What [`Pacer::take`] would say, booking nothing (the policy preview).
    pub fn peek(&self, kind: ChannelKind, chat: &str, now: Timestamp) -> Pace {
        self.pace(kind, chat, None, now)
    }

    fn pace(&self, kind: ChannelKind, chat: &str, id: Option<&str>, now: Timestamp) -> Pace {
        let Some(&(rate, per_chat)) = self.rates.get(&kind) else {
            return Pace::Go(Duration::zero());
        };
        let now_us = micros(now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = id {
            if let Some(&slot) = state.booked.get(&(id.to_string(), kind)) {
                return if slot - now_us <= SLEEP_AT_MOST.num_microseconds().unwrap_or(0) {
                    state.booked.remove(&(id.to_string(), kind));
                    Pace::Go(Duration::microseconds((slot - now_us).max(0)))
                } else {
                    Pace::WaitUntil(from_micros(slot))
                };
            }
            state.calls += 1;
            if state.calls % 1024 == 0 {
                state.chats.retain(|_, b| !b.idle(now_us));
                state.booked.retain(|_, slot| *slot > now_us - 600_000_000);
            }
        }
        let factor = match state.slow.get(&kind) {
            Some(&(f, until)) if until > now_us => f,
            _ => 1.0,
        };
        let reserve = id.is_some();
        let mut slot = state
            .channels
            .entry(kind)
            .or_default()
            .slot(rate, factor, now_us, reserve);
        if let Some(per_chat) = per_chat {
            let key = (kind, chat.to_string());
            let chat_slot = if reserve {
                state
                    .chats
                    .entry(key)
                    .or_default()
                    .slot(per_chat, 1.0, now_us, true)
            } else {
                state
                    .chats
                    .get(&key)
                    .copied()
                    .unwrap_or_default()
                    .slot(per_chat, 1.0, now_us, false)
            };
            slot = slot.max(chat_slot);
        }
        let wait = slot - now_us;
        if wait <= SLEEP_AT_MOST.num_microseconds().unwrap_or(0) {
            Pace::Go(Duration::microseconds(wait.max(0)))
        } else {
            if let Some(id) = id {
                state.booked.insert((id.to_string(), kind), slot);
            }
            Pace::WaitUntil(from_micros(slot))
        }
    }

    /// How many sends `kind` can start now, and how long until the next one after those
    /// (`None`: not paced). What the dispatcher claims from the channel's lane of the queue: a
    /// backlog waiting on pacing stays in the store, untouched, until its slots come.
    pub fn available(&self, kind: ChannelKind, now: Timestamp) -> Option<(usize, Duration)> {
        let &(rate, _) = self.rates.get(&kind)?;
        let now_us = micros(now);
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let factor = match state.slow.get(&kind) {
            Some(&(f, until)) if until > now_us => f,
            _ => 1.0,
        };
        let interval = rate.interval_us(factor).max(1);
        let burst = rate.burst();
        let tat = state
            .channels
            .get(&kind)
            .map_or(now_us, |b| b.tat.max(now_us));
        // A send may go at `tat - tolerance`, the next one `interval` after, and so on.
        let first = tat - interval * (burst - 1);
        let (ready, next) = if first > now_us {
            (0, first - now_us)
        } else {
            let ready = ((now_us - first) / interval + 1).min(burst);
            (ready, interval - (now_us - first) % interval)
        };
        Some((ready as usize, Duration::microseconds(next)))
    }

    /// A provider asked the whole channel to slow down: halve its rate for a minute.
    pub fn slow_down(&self, kind: ChannelKind, now: Timestamp) {
        let now_us = micros(now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let factor = match state.slow.get(&kind) {
            Some(&(f, until)) if until > now_us => f,
            _ => 1.0,
        };
        let until = now_us + SLOW_FOR.num_microseconds().unwrap_or(0);
        state
            .slow
            .insert(kind, ((factor / 2.0).max(SLOWEST), until));
    }

    /// The rate in force on `kind` now (messages per second), for the preview.
    pub fn rate(&self, kind: ChannelKind, now: Timestamp) -> Option<f64> {
        let (rate, _) = self.rates.get(&kind)?;
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let factor = match state.slow.get(&kind) {
            Some(&(f, until)) if until > micros(now) => f,
            _ => 1.0,
        };
        Some(rate.0 * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2025-06-10T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    fn ms(n: i64) -> Duration {
        Duration::milliseconds(n)
    }

    fn pacer(rate: f64, per_chat: Option<f64>) -> Pacer {
        Pacer::new(BTreeMap::from([(
            ChannelKind::Telegram,
            (Rate(rate), per_chat.map(Rate)),
        )]))
    }

    const TG: ChannelKind = ChannelKind::Telegram;

    #[test]
    fn a_burst_goes_up_to_one_seconds_worth_then_books_slots_at_the_rate() {
        let p = pacer(20.0, None);
        let now = t0();
        let mut waits = Vec::new();
        for i in 0..60 {
            match p.take(TG, &format!("chat{i}"), &format!("n{i}"), now) {
                Pace::Go(_) => {}
                Pace::WaitUntil(at) => waits.push(at),
            }
        }
        assert_eq!(waits.len(), 40, "20 go at once, 40 wait");
        assert_eq!(waits[0], now + ms(50));
        assert_eq!(*waits.last().unwrap(), now + ms(2000));
        assert!(waits.windows(2).all(|w| w[1] - w[0] == ms(50)));
        // Each comes back to its own slot, and nobody else's.
        assert_eq!(
            p.take(TG, "chat59", "n59", now + ms(1000)),
            Pace::WaitUntil(now + ms(2000))
        );
        assert_eq!(p.take(TG, "chat20", "n20", now + ms(50)), Pace::Go(ms(0)));
        assert_eq!(
            p.take(TG, "chat99", "n99", now + ms(50)),
            Pace::WaitUntil(now + ms(2050)),
            "a newcomer queues behind the booked slots"
        );
    }

    #[test]
    fn the_bucket_refills_over_time() {
        let p = pacer(2.0, None);
        let now = t0();
        assert!(matches!(p.take(TG, "a", "1", now), Pace::Go(_)));
        assert!(matches!(p.take(TG, "b", "2", now), Pace::Go(_)));
        assert_eq!(p.take(TG, "c", "3", now), Pace::WaitUntil(now + ms(500)));
        let later = now + Duration::seconds(10);
        assert!(matches!(p.take(TG, "d", "4", later), Pace::Go(_)));
        assert!(matches!(p.take(TG, "e", "5", later), Pace::Go(_)));
    }

    #[test]
    fn one_chat_gets_one_message_a_second() {
        let p = pacer(30.0, Some(1.0));
        let now = t0();
        assert!(matches!(p.take(TG, "ana", "1", now), Pace::Go(_)));
        assert_eq!(p.take(TG, "ana", "2", now), Pace::WaitUntil(now + ms(1000)));
        assert!(
            matches!(p.take(TG, "bo", "3", now), Pace::Go(_)),
            "other chats go on"
        );
    }

    #[test]
    fn peeking_books_nothing() {
        let p = pacer(1.0, None);
        let now = t0();
        for _ in 0..5 {
            assert_eq!(p.peek(TG, "a", now), Pace::Go(ms(0)));
        }
        assert!(matches!(p.take(TG, "a", "1", now), Pace::Go(_)));
        assert_eq!(p.peek(TG, "a", now), Pace::WaitUntil(now + ms(1000)));
        assert_eq!(p.peek(TG, "a", now), Pace::WaitUntil(now + ms(1000)));
    }

    #[test]
    fn a_throttle_answer_halves_the_rate_for_a_minute() {
        let p = pacer(10.0, None);
        let now = t0();
        p.slow_down(TG, now);
        assert_eq!(p.rate(TG, now), Some(5.0));
        p.slow_down(TG, now);
        assert_eq!(p.rate(TG, now), Some(2.5));
        for i in 0..10 {
            assert!(matches!(
                p.take(TG, "x", &format!("a{i}"), now),
                Pace::Go(_)
            ));
        }
        // The burst stays one second of the configured rate; after it, one per 400 ms.
        assert_eq!(p.take(TG, "x", "b", now), Pace::WaitUntil(now + ms(400)));
        assert_eq!(p.take(TG, "x", "c", now), Pace::WaitUntil(now + ms(800)));
        assert_eq!(p.rate(TG, now + Duration::seconds(61)), Some(10.0));
    }

    #[test]
    fn what_is_available_follows_the_bucket() {
        let p = pacer(20.0, None);
        let now = t0();
        assert_eq!(
            p.available(TG, now),
            Some((20, ms(50))),
            "a full bucket: one second's worth"
        );
        for i in 0..15 {
            assert!(matches!(p.take(TG, "c", &i.to_string(), now), Pace::Go(_)));
        }
        assert_eq!(p.available(TG, now).unwrap().0, 5);
        for i in 15..20 {
            assert!(matches!(p.take(TG, "c", &i.to_string(), now), Pace::Go(_)));
        }
        assert_eq!(
            p.available(TG, now),
            Some((0, ms(50))),
            "spent: the next in 50 ms"
        );
        assert_eq!(p.available(TG, now + ms(120)).unwrap().0, 2);
        assert_eq!(p.available(TG, now + Duration::seconds(5)).unwrap().0, 20);
        // Booked slots count as taken.
        assert!(matches!(p.take(TG, "c", "late", now), Pace::WaitUntil(_)));
        assert_eq!(p.available(TG, now + ms(50)).unwrap().0, 0);
        assert_eq!(p.available(ChannelKind::Email, now), None, "not paced");
        p.slow_down(TG, now);
        assert_eq!(
            p.available(TG, now + Duration::seconds(5)),
            Some((20, ms(100)))
        );
    }

    #[test]
    fn unpaced_channels_always_go() {
        let p = pacer(1.0, None);
        for i in 0..100 {
            assert_eq!(
                p.take(ChannelKind::Email, "x", &i.to_string(), t0()),
                Pace::Go(ms(0))
            );
        }
    }
}

/// Pacing for several instances on one store: a per-channel budget of `rate × window` sends per
/// short window (1 s; longer below 1 message per second, so the budget is at least one), kept
/// in the store (`policy_pacing/<channel>`: the window and the slots taken). An instance takes
/// a *batch* of slots at a time (an eighth of the budget, at least one) through one
/// `kv_update`, and spends them locally, so the store sees a handful of writes per channel per
/// second rather than one per send; when the window's budget is spent, sends wait for the next
/// window. Together the instances never exceed the budget of a window. Slots an instance took
/// but did not use in its window are lost (the fleet may send a little below the rate, never
/// above). Chosen over a shared token bucket, which needs one store write per send.
/// The per-chat limits stay per instance.
pub struct SharedBudget {
    store: std::sync::Arc<dyn crate::store::Store>,
    rates: BTreeMap<ChannelKind, Rate>,
    local: Mutex<BTreeMap<ChannelKind, Granted>>,
    /// One refill from the store at a time: when a window turns, every worker finds its grant
    /// spent at once; without this each took its own `kv_update` of the same row (hundreds a
    /// second, each waiting for the previous one's row lock: 5 ms apiece on PostgreSQL).
    refill: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy)]
struct Granted {
    window: i64,
    granted: u32,
    used: u32,
    /// The store said this window's budget is spent: no further refill in this window.
    spent: bool,
}

/// What this instance's grant says before asking the store.
enum Local {
    Go,
    Spent,
    Ask,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Taken {
    window: i64,
    taken: u32,
}

const NAMESPACE_PACING: &str = crate::store::namespaces::POLICY_PACING;

impl Rate {
    /// The budget's window in ms, and the sends it allows.
    fn window(self) -> (i64, u32) {
        if self.0 >= 1.0 {
            (1000, self.0.floor() as u32)
        } else {
            ((1000.0 / self.0.max(1e-3)).ceil() as i64, 1)
        }
    }
}

impl SharedBudget {
    pub fn new(
        store: std::sync::Arc<dyn crate::store::Store>,
        rates: BTreeMap<ChannelKind, Rate>,
    ) -> SharedBudget {
        SharedBudget {
            store,
            rates,
            local: Mutex::new(BTreeMap::new()),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    /// When `kind`'s fleet budget is next worth asking for, if this instance already found
    /// the current window's budget spent.
    pub fn spent_until(&self, kind: ChannelKind, now: Timestamp) -> Option<Timestamp> {
        let &rate = self.rates.get(&kind)?;
        let (window_ms, _) = rate.window();
        let window = now.timestamp_millis().div_euclid(window_ms);
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        match local.get(&kind) {
            Some(g) if g.window == window && g.spent && g.used >= g.granted => {
                Some(from_micros((window + 1) * window_ms * 1000))
            }
            _ => None,
        }
    }

    /// Takes one send slot of `kind`'s fleet budget at `now`: `None` to go, or when the next
    /// window begins (wait until then).
    pub async fn take(
        &self,
        kind: ChannelKind,
        now: Timestamp,
    ) -> crate::store::StoreResult<Option<Timestamp>> {
        let Some(&rate) = self.rates.get(&kind) else {
            return Ok(None);
        };
        let (window_ms, budget) = rate.window();
        let window = now.timestamp_millis().div_euclid(window_ms);
        let next_window = || from_micros((window + 1) * window_ms * 1000);
        let from_grant = || {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            match local.get_mut(&kind) {
                Some(g) if g.window == window && g.used < g.granted => {
                    g.used += 1;
                    Local::Go
                }
                Some(g) if g.window == window && g.spent => Local::Spent,
                _ => Local::Ask,
            }
        };
        match from_grant() {
            Local::Go => return Ok(None),
            Local::Spent => return Ok(Some(next_window())),
            Local::Ask => {}
        }
        let _refilling = self.refill.lock().await;
        // Another worker may have refilled (or found the budget spent) while this one waited.
        match from_grant() {
            Local::Go => return Ok(None),
            Local::Spent => return Ok(Some(next_window())),
            Local::Ask => {}
        }
        let batch = (budget / 8).max(1);
        let grant = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let granted = grant.clone();
        let edit = Box::new(move |old: Option<&[u8]>| {
            let mut t: Taken = old
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            if t.window != window {
                if t.window > window {
                    // Another instance's clock is ahead: leave its window alone, take nothing.
                    granted.store(0, std::sync::atomic::Ordering::SeqCst);
                    return old.map(<[u8]>::to_vec);
                }
                t = Taken { window, taken: 0 };
            }
            let g = batch.min(budget.saturating_sub(t.taken));
            granted.store(g, std::sync::atomic::Ordering::SeqCst);
            t.taken += g;
            Some(serde_json::to_vec(&t).expect("a pacing record serializes"))
        });
        self.store
            .kv_update(
                NAMESPACE_PACING,
                kind.as_str(),
                edit,
                crate::store::Durability::Relaxed,
            )
            .await?;
        let grant = grant.load(std::sync::atomic::Ordering::SeqCst);
        self.local.lock().unwrap_or_else(|p| p.into_inner()).insert(
            kind,
            Granted {
                window,
                granted: grant,
                used: grant.min(1),
                spent: grant == 0,
            },
        );
        if grant == 0 {
            return Ok(Some(next_window()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use crate::store::{SledStore, Store};
    use std::sync::Arc;

    /// Two instances on one store, each asking for a slot every millisecond of (test) time for
    /// 5 s, far over the rate: together they send exactly the budget in every window, and each
    /// gets a share.
    #[tokio::test]
    async fn two_instances_together_never_exceed_the_channel_rate() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        let rates = BTreeMap::from([(ChannelKind::Telegram, Rate(20.0))]);
        let a = SharedBudget::new(store.clone(), rates.clone());
        let b = SharedBudget::new(store.clone(), rates);
        let t0 = chrono::DateTime::parse_from_rfc3339("2025-06-10T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut per_window = BTreeMap::<i64, (u32, u32)>::new();
        for ms in 0..5000 {
            let now = t0 + Duration::milliseconds(ms);
            for (i, budget) in [&a, &b].into_iter().enumerate() {
                if budget
                    .take(ChannelKind::Telegram, now)
                    .await
                    .unwrap()
                    .is_none()
                {
                    let w = per_window.entry(ms / 1000).or_default();
                    if i == 0 {
                        w.0 += 1
                    } else {
                        w.1 += 1
                    }
                }
            }
        }
        assert_eq!(per_window.len(), 5);
        for (window, (sa, sb)) in per_window {
            println!("window {window}: a sent {sa}, b sent {sb}");
            assert_eq!(
                sa + sb,
                20,
                "window {window}: the configured 20/s, together"
            );
            assert!(sa > 0 && sb > 0, "window {window}: both got slots");
        }
        // A wait ends at the next window.
        let spent = t0 + Duration::milliseconds(4999);
        let next = t0 + Duration::seconds(5);
        assert_eq!(
            a.take(ChannelKind::Telegram, spent).await.unwrap(),
            Some(next)
        );
    }

    /// When a window turns, every worker of an instance finds its grant spent at the same
    /// moment: one of them refills from the store and the others take from that refill, so
    /// the instance takes from the fleet's budget only what its workers use (and the store
    /// sees a few updates, not one per worker).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_finding_the_grant_spent_at_once_refill_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        // Budget 800 a window, refilled 100 at a time.
        let rates = BTreeMap::from([(ChannelKind::Whatsapp, Rate(800.0))]);
        let budget = Arc::new(SharedBudget::new(store.clone(), rates));
        let now = chrono::DateTime::parse_from_rfc3339("2025-06-10T12:00:00.500Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let workers: Vec<_> = (0..256)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move { budget.take(ChannelKind::Whatsapp, now).await.unwrap() })
            })
            .collect();
        for w in workers {
            assert_eq!(w.await.unwrap(), None, "every worker gets a slot");
        }
        let record: serde_json::Value = serde_json::from_slice(
            &store
                .kv_get(NAMESPACE_PACING, "whatsapp")
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        // 256 slots come from three refills of 100; a refill per worker would have taken the
        // whole budget of 800 for 256 sends, starving the fleet's other instances.
        assert_eq!(record["taken"], 300, "{record}");
    }

    #[test]
    fn slow_rates_get_a_longer_window_with_one_send() {
        assert_eq!(Rate(0.5).window(), (2000, 1));
        assert_eq!(Rate(80.0).window(), (1000, 80));
    }
}
