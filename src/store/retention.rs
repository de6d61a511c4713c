//! Retention: what the store forgets, and when.
//!
//! Without it every finished notification (with its attempts and its `m/` message-id index
//! entries), every idempotency key, stored webhook event and guardrail counter stays forever:
//! a gateway sending 100,000 a day fills its disk. `[store.retention]` says how long each kind
//! of record is kept once it is no longer needed (docs/retention.md), and a [`Purger`] (its own
//! thread, owned by a guard that stops it at shutdown) deletes what is older, in small batches
//! with pauses between them, with relaxed (unflushed) single-key writes so that it never waits
//! on the disk nor holds a lock for long. A deletion that a crash undoes is simply done again
//! by the next pass.
//!
//! Every kind of record is one row of [`rules`]: a key prefix, how long to keep it, and how to
//! read from a record when its age starts. A new kind of record (a new `v/` namespace) needs
//! one row. Finished notifications are the one special row: their index entries go with them
//! (see `sled/purge.rs`).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::retention::DAY;
use crate::model::Timestamp;

use super::sled::{key, IdemRecord};
use super::{RetentionConfig, SledStore, StoreError};

/// When a record's age starts, read from its key (after the rule's prefix) and value; `None`
/// keeps it (a record this version cannot read is never deleted).
pub(super) type AgeFrom = fn(&[u8], &[u8]) -> Option<Timestamp>;

/// What a rule deletes.
pub(super) enum Kind {
    /// Finished notifications with their index entries.
    Notifications,
    /// Single records.
    Records(AgeFrom),
}

/// One kind of record: what it is (for logs), its keys' prefix, and how long it is kept.
pub(super) struct Rule {
    pub what: &'static str,
    pub prefix: Vec<u8>,
    pub keep: Duration,
    pub kind: Kind,
}

/// The prefix of a `v/` namespace (see `SledStore::kv_*`).
fn namespace(ns: &str) -> Vec<u8> {
    key("v/", &[ns.as_bytes(), b""])
}

/// Every kind of record the purge deletes, and when.
pub(super) fn rules(cfg: &RetentionConfig) -> Vec<Rule> {
    let day = Duration::from_secs(DAY);
    vec![
        Rule {
            what: "notifications",
            prefix: b"n/".to_vec(),
            keep: cfg.notifications,
            kind: Kind::Notifications,
        },
        Rule {
            what: "idempotency_keys",
            prefix: b"k/".to_vec(),
            keep: cfg.idempotency,
            kind: Kind::Records(|_, v| serde_json::from_slice::<IdemRecord>(v).ok().map(|r| r.at)),
        },
        Rule {
            what: "webhook_events",
            prefix: namespace(super::namespaces::WEBHOOK_EVENTS),
            keep: cfg.webhook_events,
            kind: Kind::Records(|_, v| {
                let record: serde_json::Value = serde_json::from_slice(v).ok()?;
                serde_json::from_value(record.get("received_at")?.clone()).ok()
            }),
        },
        Rule {
            what: "webhook_seen",
            prefix: namespace(super::namespaces::WEBHOOK_SEEN),
            keep: cfg.webhook_events,
            kind: Kind::Records(|_, v| {
                let text = std::str::from_utf8(v).ok()?;
                chrono::DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|t| t.with_timezone(&chrono::Utc))
            }),
        },
        // Events for the app's endpoints: kept like webhook events once every delivery
        // ended (delivered or failed: `settled_at`); never while one is pending.
        Rule {
            what: "events",
            prefix: namespace(super::namespaces::EVENTS),
            keep: cfg.webhook_events,
            kind: Kind::Records(|_, v| {
                let record: serde_json::Value = serde_json::from_slice(v).ok()?;
                serde_json::from_value(record.get("settled_at")?.clone()).ok()
            }),
        },
        // Due entries no worker reaches (an endpoint removed from the config; the workers
        // delete the others): by their due time, at least 30 days late, so that a gateway
        // stopped for days still finds its pending deliveries when it starts.
        Rule {
            what: "event_due",
            prefix: namespace(super::namespaces::EVENT_DUE),
            keep: cfg.webhook_events.max(day * 30),
            kind: Kind::Records(|k, _| {
                let ms: i64 = std::str::from_utf8(k)
                    .ok()?
                    .split('/')
                    .nth(1)?
                    .parse()
                    .ok()?;
                chrono::DateTime::from_timestamp_millis(ms)
            }),
        },
        Rule {
            what: "optin_tokens",
            prefix: namespace(super::namespaces::OPTIN),
            keep: cfg.optin_tokens,
            kind: Kind::Records(|_, v| {
                serde_json::from_slice::<crate::model::OptinToken>(v)
                    .ok()
                    .map(|t| t.expires_at)
            }),
        },
        // The guardrails' 24 h counters: the tier ledger deletes its own buckets as they roll
        // off, but not those of a process that stopped, nor those an erasure anonymised.
        Rule {
            what: "tier_ledger",
            prefix: namespace(super::namespaces::POLICY_TIER),
            keep: day,
            kind: Kind::Records(|k, v| {
                // Its age starts when its hour ends: `whatsapp/reached/<contact>` (the hour in
                // the value), `whatsapp/count/<hour>`, and an earlier version's
                // `whatsapp/<hour>/<contact>` or `whatsapp/<hour>` (`whatsapp/first_send` has no
                // hour and stays).
                let rest = std::str::from_utf8(k).ok()?.strip_prefix("whatsapp/")?;
                let hour: i64 = if rest.starts_with("reached/") {
                    serde_json::from_slice::<serde_json::Value>(v).ok()?["hour"].as_i64()?
                } else {
                    let rest = rest.strip_prefix("count/").unwrap_or(rest);
                    rest.split('/').next()?.parse().ok()?
                };
                chrono::DateTime::from_timestamp((hour + 1) * 3600, 0)
            }),
        },
        // WhatsApp 2026 (policy::holds, portfolio, templates): a 131049 hold once it ended; a
        // typed account restriction once it expired (the portfolio's `limit` stays); a
        // template unused and unchanged for as long as finished notifications are kept (one
        // used again comes back `approved`; one Meta still pauses is not old).
        Rule {
            what: "whatsapp_marketing_holds",
            prefix: namespace(super::namespaces::WHATSAPP_MARKETING_HOLDS),
            keep: Duration::ZERO,
            kind: Kind::Records(|_, v| until(v)),
        },
        Rule {
            what: "whatsapp_restrictions",
            prefix: namespace(super::namespaces::WHATSAPP_PORTFOLIO),
            keep: Duration::ZERO,
            kind: Kind::Records(|k, v| k.starts_with(b"restriction/").then(|| until(v)).flatten()),
        },
        Rule {
            what: "whatsapp_templates",
            prefix: namespace(super::namespaces::WHATSAPP_TEMPLATES),
            keep: cfg.notifications,
            kind: Kind::Records(|_, v| {
                let record: serde_json::Value = serde_json::from_slice(v).ok()?;
                ["since", "last_used", "paused_until"]
                    .into_iter()
                    .filter_map(|field| {
                        serde_json::from_value::<Timestamp>(record.get(field)?.clone()).ok()
                    })
                    .max()
                    // A record without `since` is not one this version wrote: kept.
                    .filter(|_| record.get("since").is_some())
            }),
        },
        Rule {
            what: "marketing_caps",
            prefix: namespace(super::namespaces::POLICY_MARKETING_SENDS),
            keep: day,
            kind: Kind::Records(|_, v| {
                // Each send is its time (epoch ms), or [time, notification id] since the
                // cap's places are fleet-wide (`policy::caps`).
                let sends: Vec<serde_json::Value> = serde_json::from_slice(v).ok()?;
                let last = sends
                    .iter()
                    .filter_map(|s| s.as_i64().or_else(|| s.get(0)?.as_i64()))
                    .max()?;
                chrono::DateTime::from_timestamp_millis(last)
            }),
        },
    ]
}

/// A record's `until` (a hold's or a restriction's end).
fn until(value: &[u8]) -> Option<Timestamp> {
    let record: serde_json::Value = serde_json::from_slice(value).ok()?;
    serde_json::from_value(record.get("until")?.clone()).ok()
}

/// Records examined per batch; the purge pauses [`PAUSE`] after each.
pub(super) const BATCH: usize = 256;
const PAUSE: Duration = Duration::from_millis(10);

/// What one pass deleted, per rule.
pub type Purged = Vec<(&'static str, usize)>;

impl SledStore {
    /// Runs one whole purge pass at `now` (in batches, pausing `pause` between them; stops
    /// early, returning `None`, if `stop` says so). For the purge thread and tests.
    pub fn purge_pass(
        &self,
        cfg: &RetentionConfig,
        now: Timestamp,
        mut pause: impl FnMut() -> bool,
    ) -> Result<Option<Purged>, StoreError> {
        let mut purged = Vec::new();
        for rule in rules(cfg) {
            let mut from = rule.prefix.clone();
            let mut count = 0;
            loop {
                let (deleted, next) = self.purge_batch(&rule, &from, now, BATCH)?;
                count += deleted;
                let Some(next) = next else { break };
                from = next;
                if !pause() {
                    return Ok(None);
                }
            }
            purged.push((rule.what, count));
        }
        Ok(Some(purged))
    }
}

/// The purge thread; stops (and is waited for) when dropped.
pub struct Purger {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Purger {
    /// Starts purging `store` every `cfg.every` by `clock`.
    pub fn start(
        store: Arc<SledStore>,
        cfg: RetentionConfig,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Purger> {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lifeboat-purge".into())
            .spawn(move || {
                // A message or a dropped guard: stop.
                let go_on = |wait: Duration| matches!(rx.recv_timeout(wait), Err(RecvTimeoutError::Timeout));
                // The first pass waits a little: a starting gateway has better things to do.
                if !go_on(Duration::from_secs(1).min(cfg.every)) {
                    return;
                }
                loop {
                    let now = clock.now();
                    match store.purge_pass(&cfg, now, || go_on(PAUSE)) {
                        Ok(None) => return,
                        Ok(Some(purged)) => {
                            let total: usize = purged.iter().map(|(_, n)| n).sum();
                            if total > 0 {
                                let detail: Vec<String> = purged
                                    .iter()
                                    .filter(|(_, n)| *n > 0)
                                    .map(|(what, n)| format!("{what}={n}"))
                                    .collect();
                                tracing::info!(total, purged = %detail.join(" "), "retention: purged expired records");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "retention: the purge pass failed; trying again at the next"),
                    }
                    if !go_on(cfg.every) {
                        return;
                    }
                }
            })?;
        Ok(Purger {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn retention_config_defaults_parse_and_too_short_an_idempotency_key_is_refused() {
        let cfg: RetentionConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, RetentionConfig::default());
        assert_eq!(cfg.notifications, Duration::from_secs(30 * DAY));
        let cfg: RetentionConfig =
            toml::from_str("notifications = \"90d\"\nwebhook_events = \"2d\"\nevery = \"1m\"")
                .unwrap();
        assert_eq!(cfg.notifications, Duration::from_secs(90 * DAY));
        assert!(cfg.validate().is_ok());

        let short: RetentionConfig = toml::from_str("idempotency = \"1h\"").unwrap();
        let e = short.validate().unwrap_err();
        assert!(
            e.contains("store.retention.idempotency must be at least 24h"),
            "{e}"
        );
        let e = toml::from_str::<RetentionConfig>("notification = \"1d\"").unwrap_err();
        assert!(
            e.to_string().contains("unknown field `notification`"),
            "{e}"
        );
        let e = toml::from_str::<RetentionConfig>("notifications = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("is not a duration"), "{e}");
    }

    /// The WhatsApp 2026 records (holds, typed restrictions, templates) are purged when they
    /// end, for each backend's test: `purge` runs one pass at the given time.
    pub(in crate::store) async fn whatsapp_records_go_when_they_end<F, Fut>(
        store: &dyn crate::store::Store,
        purge: F,
    ) where
        F: Fn(Timestamp) -> Fut,
        Fut: std::future::Future<Output = Purged>,
    {
        use crate::policy::{holds, portfolio, templates};
        use chrono::Duration as D;
        let count = |purged: &Purged, what: &str| {
            purged
                .iter()
                .find(|(w, _)| *w == what)
                .map(|(_, n)| *n)
                .unwrap_or_else(|| panic!("no rule {what}: {purged:?}"))
        };
        let t0 = chrono::Utc::now();
        let template = |name: &str| lifeboat_channel::WhatsappTemplate {
            name: name.into(),
            language: "en".into(),
            parameters: Vec::new(),
            alternative: None,
        };
        holds::hold(store, "+48600100200", "131049", t0)
            .await
            .unwrap();
        portfolio::set_restriction(
            store,
            portfolio::Restriction::BizInitiated,
            t0 + D::hours(2),
            t0,
        )
        .await
        .unwrap();
        portfolio::set_limit(
            store,
            portfolio::PortfolioLimit::Count(2000),
            "test",
            "TIER_2K",
            t0,
        )
        .await
        .unwrap();
        for name in ["promo", "old"] {
            templates::note_used(store, &template(name), t0)
                .await
                .unwrap();
        }
        templates::apply(
            store,
            "paused",
            "en",
            templates::Event::Paused {
                until: Some(t0 + D::days(40)),
            },
            "PAUSED",
            t0,
        )
        .await
        .unwrap();

        let purged = purge(t0 + D::hours(1)).await;
        for what in [
            "whatsapp_marketing_holds",
            "whatsapp_restrictions",
            "whatsapp_templates",
        ] {
            assert_eq!(count(&purged, what), 0, "{what}: {purged:?}");
        }
        // The hold (24 h) and the restriction (2 h) ended; the portfolio's limit stays.
        let purged = purge(t0 + D::hours(25)).await;
        assert_eq!(count(&purged, "whatsapp_marketing_holds"), 1, "{purged:?}");
        assert_eq!(count(&purged, "whatsapp_restrictions"), 1, "{purged:?}");
        assert_eq!(count(&purged, "whatsapp_templates"), 0, "{purged:?}");
        let left = store
            .kv_scan(super::super::namespaces::WHATSAPP_PORTFOLIO, "")
            .await
            .unwrap();
        assert_eq!(
            left.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["limit"]
        );
        assert!(store
            .kv_scan(super::super::namespaces::WHATSAPP_MARKETING_HOLDS, "")
            .await
            .unwrap()
            .is_empty());

        // `promo` is used again after 20 days; `old` never: after the 30 days finished
        // notifications are kept, `old` goes; `promo` and the still paused one stay.
        templates::note_used(store, &template("promo"), t0 + D::days(20))
            .await
            .unwrap();
        let purged = purge(t0 + D::days(31)).await;
        assert_eq!(count(&purged, "whatsapp_templates"), 1, "{purged:?}");
        let names: Vec<String> = templates::list(store)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["paused", "promo"]);
    }
}
