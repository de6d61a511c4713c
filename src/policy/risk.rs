//! The risk monitor: the signals that precede a restriction (blocks, opt-outs, spam reports, a
//! quality downgrade) watched per channel, so marketing stops *before* the provider stops the
//! account. Over `threshold` signals per marketing send among the last `window` marketing sends
//! (with at least `min_sample` sends, so three early blocks don't pause a channel), or on a
//! WhatsApp quality `FLAGGED`/`DOWNGRADE`, the channel's marketing is paused
//! (`channel_restricted` for marketing only); transactional messages go on. The pause lasts
//! until an admin lifts it (`POST /v1/admin/channels/{channel}/enable` or
//! `.../marketing/resume`), which also starts the figures afresh.
//!
//! Signals are the consent revocations a person or a provider causes, by their history
//! `source`: `<channel>_blocked`, `<channel>_stopped_marketing` (WhatsApp 131050), `whatsapp_stop`,
//! `telegram_stop`, `line_unfollow`, `email_unsubscribe`. The places that record those call
//! [`signal`] (one line each) with the store they already hold, which is why the figures live
//! in the store (namespace `policy_risk`, key = channel) rather than in an object to pass
//! around. They survive a restart.

use std::collections::VecDeque;

use lifeboat_channel::ChannelKind;
use serde::{Deserialize, Serialize};

use crate::model::{ChannelQuality, Timestamp};
use crate::store::{Durability, Store, StoreResult};

pub(crate) const NAMESPACE: &str = "policy_risk";
/// Signals kept at most (when no sends come to roll them out).
pub use crate::config::policy::RiskConfig;

const MAX_SIGNALS: usize = 100_000;

/// Whether a consent change with this history `source` is a risk signal.
pub fn is_signal(source: &str) -> bool {
    source.ends_with("_blocked")
        || source.ends_with("_stopped_marketing")
        || matches!(
            source,
            "whatsapp_stop" | "telegram_stop" | "line_unfollow" | "email_unsubscribe"
        )
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Record {
    /// The last marketing sends (epoch ms), oldest first.
    sends: VecDeque<i64>,
    /// Signals (epoch ms) since the oldest of those sends.
    signals: VecDeque<i64>,
    /// When an admin last lifted a pause (older quality signals no longer count).
    #[serde(default)]
    resumed_at: Option<Timestamp>,
}

/// The monitor's figures for a channel, as `GET /v1/admin/channels` shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figures {
    pub sends: usize,
    pub signals: usize,
    pub rate: f64,
}

/// A channel's marketing status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub figures: Figures,
    /// Identifies a pause: the admin's last resume before it (epoch ms; 0 if never). One
    /// alert per pause (`events::alerts`).
    #[serde(skip)]
    pub pause_key: i64,
}

impl Record {
    /// The instant the window starts once it is full (older signals belong to sends that
    /// left it); `None` while fewer than `window` sends were made: every signal counts.
    fn window_start(&self, window: usize) -> Option<i64> {
        let window = window.max(1);
        (self.sends.len() >= window).then(|| self.sends[self.sends.len() - window])
    }

    fn trim(&mut self, window: usize) {
        while self.sends.len() > window.max(1) {
            self.sends.pop_front();
        }
        if let Some(start) = self.window_start(window) {
            while self.signals.front().is_some_and(|s| *s < start) {
                self.signals.pop_front();
            }
        }
        while self.signals.len() > MAX_SIGNALS {
            self.signals.pop_front();
        }
    }

    fn figures(&self, window: usize) -> Figures {
        let sends = self.sends.len().min(window);
        let signals = match self.window_start(window) {
            Some(start) => self.signals.iter().filter(|s| **s >= start).count(),
            None => self.signals.len(),
        };
        let rate = if sends == 0 {
            0.0
        } else {
            signals as f64 / sends as f64
        };
        Figures {
            sends,
            signals,
            rate: (rate * 10_000.0).round() / 10_000.0,
        }
    }

    fn assess(&self, config: &RiskConfig, quality: Option<&ChannelQuality>) -> Status {
        let figures = self.figures(config.window);
        let quality = quality
            .filter(|q| q.is_flagged() && self.resumed_at.is_none_or(|resumed| q.at > resumed));
        let reason = if let Some(q) = quality {
            Some(format!(
                "provider quality signal {}{}",
                q.event,
                q.current_limit
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            ))
        } else if figures.sends >= config.min_sample.max(1) && figures.rate > config.threshold {
            Some(format!(
                "{} blocks/opt-outs in the last {} marketing sends ({:.1}%, over {:.1}%)",
                figures.signals,
                figures.sends,
                figures.rate * 100.0,
                config.threshold * 100.0
            ))
        } else {
            None
        };
        Status {
            paused: reason.is_some(),
            reason,
            figures,
            pause_key: self.resumed_at.map_or(0, |t| t.timestamp_millis()),
        }
    }
}

/// A stored record (an unreadable one counts as empty).
fn parse(bytes: Option<&[u8]>) -> Record {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

async fn load(store: &dyn Store, kind: ChannelKind) -> StoreResult<Record> {
    Ok(parse(
        store.kv_get(NAMESPACE, kind.as_str()).await?.as_deref(),
    ))
}

/// Applies `f` to `kind`'s record as one atomic update of the store, so concurrent signals and
/// sends (other workers, other instances on a shared store) are all counted. `f` may run more
/// than once (the store retries when another writer got in between).
async fn edit(
    store: &dyn Store,
    kind: ChannelKind,
    f: impl Fn(&mut Record) + Send + 'static,
) -> StoreResult<()> {
    let edit = Box::new(move |old: Option<&[u8]>| {
        let mut record = parse(old);
        f(&mut record);
        Some(serde_json::to_vec(&record).expect("a risk record serializes"))
    });
    // Relaxed: figures, not records; a flush per marketing send would cap the send rate.
    store
        .kv_update(NAMESPACE, kind.as_str(), edit, Durability::Relaxed)
        .await?;
    Ok(())
}

/// Counts a consent revocation with history `source` on `kind` (ignored unless it is a risk
/// signal). Call it wherever a person's or a provider's revocation is recorded.
pub async fn signal(
    store: &dyn Store,
    kind: ChannelKind,
    source: &str,
    now: Timestamp,
) -> StoreResult<()> {
    if !is_signal(source) {
        return Ok(());
    }
    tracing::info!(channel = %kind, source, "risk signal");
    edit(store, kind, move |r| {
        r.signals.push_back(now.timestamp_millis());
        while r.signals.len() > MAX_SIGNALS {
            r.signals.pop_front();
        }
    })
    .await
}

/// Counts a marketing message sent on `kind`.
pub async fn record_send(
    store: &dyn Store,
    kind: ChannelKind,
    window: usize,
    now: Timestamp,
) -> StoreResult<()> {
    edit(store, kind, move |r| {
        r.sends.push_back(now.timestamp_millis());
        r.trim(window);
    })
    .await
}

/// Marketing sends waiting to be added to a channel's record (see [`super::coalesce`]): the
/// policy counts sends this way; [`record_send`] is the one-at-a-time form.
pub struct Sends {
    /// Epoch ms, in the order they were counted.
    pub at: Vec<i64>,
    pub window: usize,
}

impl super::coalesce::Delta for Sends {
    fn merge(&mut self, next: Self) {
        self.at.extend(next.at);
        self.window = next.window;
    }

    fn apply(&self, old: Option<&[u8]>) -> Vec<u8> {
        let mut record = parse(old);
        record.sends.extend(self.at.iter().copied());
        record.trim(self.window);
        serde_json::to_vec(&record).expect("a risk record serializes")
    }
}
/// Whether `kind`'s marketing is paused, why, and the figures. `quality` is the channel's
/// last quality signal (WhatsApp).
pub async fn status(
    store: &dyn Store,
    kind: ChannelKind,
    config: &RiskConfig,
    quality: Option<&ChannelQuality>,
) -> StoreResult<Status> {
    Ok(load(store, kind).await?.assess(config, quality))
}

/// An admin lifts the pause: the figures start afresh, earlier quality signals are forgiven.
pub async fn resume(store: &dyn Store, kind: ChannelKind, now: Timestamp) -> StoreResult<()> {
    tracing::info!(channel = %kind, "marketing resumed by admin; risk figures reset");
    edit(store, kind, move |r| {
        *r = Record {
            resumed_at: Some(now),
            ..Record::default()
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    fn config(window: usize, min_sample: usize) -> RiskConfig {
        RiskConfig {
            window,
            threshold: 0.02,
            min_sample,
        }
    }

    const TG: ChannelKind = ChannelKind::Telegram;

    #[test]
    fn which_sources_are_signals() {
        for s in [
            "telegram_blocked",
            "telegram_stop",
            "line_unfollow",
            "whatsapp_stop",
            "whatsapp_stopped_marketing",
            "whatsapp_blocked",
            "email_unsubscribe",
        ] {
            assert!(is_signal(s), "{s}");
        }
        for s in ["api", "web_form", "telegram_start", "admin"] {
            assert!(!is_signal(s), "{s}");
        }
    }

    #[tokio::test]
    async fn pauses_over_the_threshold_of_the_last_n_sends_with_a_minimum_sample() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
        let cfg = config(100, 50);
        for i in 0..40 {
            record_send(&store, TG, cfg.window, at(i)).await.unwrap();
        }
        for i in 0..3 {
            signal(&store, TG, "telegram_blocked", at(40 + i))
                .await
                .unwrap();
        }
        signal(&store, TG, "api", at(45)).await.unwrap();
        let s = status(&store, TG, &cfg, None).await.unwrap();
        assert!(!s.paused, "40 sends is below the minimum sample: {s:?}");
        assert_eq!((s.figures.sends, s.figures.signals), (40, 3));

        for i in 50..100 {
            record_send(&store, TG, cfg.window, at(i)).await.unwrap();
        }
        let s = status(&store, TG, &cfg, None).await.unwrap();
        assert_eq!(
            s.figures,
            Figures {
                sends: 90,
                signals: 3,
                rate: 0.0333
            }
        );
        assert!(s.paused);
        assert!(s
            .reason
            .unwrap()
            .contains("3 blocks/opt-outs in the last 90"));

        // 100 more clean sends push the signals out of the window.
        for i in 200..300 {
            record_send(&store, TG, cfg.window, at(i)).await.unwrap();
        }
        let s = status(&store, TG, &cfg, None).await.unwrap();
        assert_eq!(
            (s.figures.sends, s.figures.signals, s.paused),
            (100, 0, false)
        );

        // Other channels are unaffected.
        let s = status(&store, ChannelKind::Line, &cfg, None).await.unwrap();
        assert_eq!((s.figures.sends, s.paused), (0, false));
    }

    #[tokio::test]
    async fn a_quality_downgrade_pauses_until_an_admin_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
        let cfg = config(500, 50);
        let wa = ChannelKind::Whatsapp;
        let quality = |event: &str, t: i64| ChannelQuality {
            event: event.into(),
            current_limit: Some("TIER_1K".into()),
            old_limit: None,
            max_daily_conversations_per_business: None,
            at: at(t),
        };
        let s = status(&store, wa, &cfg, Some(&quality("FLAGGED", 10)))
            .await
            .unwrap();
        assert!(s.paused);
        assert!(s.reason.unwrap().contains("FLAGGED (TIER_1K)"));
        assert!(
            !status(&store, wa, &cfg, Some(&quality("UNFLAGGED", 10)))
                .await
                .unwrap()
                .paused
        );

        resume(&store, wa, at(20)).await.unwrap();
        let s = status(&store, wa, &cfg, Some(&quality("FLAGGED", 10)))
            .await
            .unwrap();
        assert!(!s.paused, "the admin saw that one");
        let s = status(&store, wa, &cfg, Some(&quality("DOWNGRADE", 30)))
            .await
            .unwrap();
        assert!(s.paused, "a new downgrade pauses again");
    }

    #[tokio::test]
    async fn resuming_starts_the_figures_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 8).unwrap();
        let cfg = config(20, 5);
        // Blocks can come before the window's first sends: they count.
        signal(&store, TG, "telegram_blocked", at(0)).await.unwrap();
        for i in 1..10 {
            record_send(&store, TG, cfg.window, at(i)).await.unwrap();
        }
        signal(&store, TG, "telegram_stop", at(11)).await.unwrap();
        assert!(status(&store, TG, &cfg, None).await.unwrap().paused);
        resume(&store, TG, at(12)).await.unwrap();
        let s = status(&store, TG, &cfg, None).await.unwrap();
        assert_eq!(
            (s.paused, s.figures.sends, s.figures.signals),
            (false, 0, 0)
        );
    }
}
