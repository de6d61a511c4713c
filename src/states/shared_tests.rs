//! Recipient pauses, the admin table's counts and the quality signal of two instances on one
//! store ([`super::shared`], docs/fleet.md): two [`ChannelStates`] on one store in one process
//! stand for two gateways, on the embedded store and on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lifeboat_channel::{Answer, ChannelKind, Class, ThrottleScope};

use super::{Availability, ChannelStates};
use crate::model::ChannelQuality;
use crate::store::Store;

crate::store::on_both_stores!(
    a_recipient_paused_by_one_instance_waits_on_the_other,
    both_instances_show_the_fleets_counts_and_quality,
);

const NUMBER: &str = "+48600100200";

/// WhatsApp's pair rate limit answered to A pauses that recipient on B too (after B's read
/// of the states, which the worker makes before every send), and no one else.
async fn a_recipient_paused_by_one_instance_waits_on_the_other(store: Arc<dyn Store>) {
    let a = ChannelStates::load(store.clone()).await.unwrap();
    let b = ChannelStates::load(store.clone()).await.unwrap();
    let wa = ChannelKind::Whatsapp;
    let now = Utc::now();
    let pair_limit = Answer::failed(
        Class::Throttled {
            retry_after: Some(Duration::from_secs(60)),
            scope: ThrottleScope::Recipient,
        },
        "131056",
        "pair rate limit hit",
    );
    a.report(wa, NUMBER, &pair_limit, false, Duration::from_secs(60), now)
        .await
        .unwrap();
    let until = match a.availability(wa, NUMBER, now) {
        Availability::WaitUntil(until) => until,
        other => panic!("A: {other:?}"),
    };
    b.fresh(Duration::ZERO).await.unwrap();
    assert_eq!(
        b.availability(wa, NUMBER, now),
        Availability::WaitUntil(until)
    );
    assert_eq!(b.availability(wa, "+48600100201", now), Availability::Open);
    assert_eq!(
        b.availability(wa, NUMBER, until),
        Availability::Open,
        "the pause ends"
    );
    // A third instance started later sees it at its first read.
    let c = ChannelStates::load(store.clone()).await.unwrap();
    c.refresh().await.unwrap();
    assert_eq!(
        c.availability(wa, NUMBER, now),
        Availability::WaitUntil(until)
    );
}

/// A sends 3 and fails 1 on LINE, B sends 2: both show 5 sent and 1 failed in the last hour
/// (`sent_1h` / `failed_1h`) and the same per-minute chart; a quality signal recorded by A is
/// what B's admin table shows.
async fn both_instances_show_the_fleets_counts_and_quality(store: Arc<dyn Store>) {
    let a = ChannelStates::load(store.clone()).await.unwrap();
    let b = ChannelStates::load(store.clone()).await.unwrap();
    let line = ChannelKind::Line;
    let now = Utc::now();
    for sent in [true, true, true, false] {
        a.count_result(line, sent, now);
    }
    b.count_result(line, true, now);
    b.count_result(line, true, now - chrono::Duration::minutes(5));
    // A's results reach the store with its periodic flush (B flushes its own when it reads).
    a.flush_counts(now).await.unwrap();
    assert_eq!(b.counts(line, now).await.unwrap(), (5, 1));
    assert_eq!(a.counts(line, now).await.unwrap(), (5, 1));
    let (ca, cb) = (
        a.per_minute(line, now).await.unwrap(),
        b.per_minute(line, now).await.unwrap(),
    );
    assert_eq!(ca, cb);
    assert_eq!((ca[59], ca[54]), ((4, 1), (1, 0)));
    assert_eq!(b.counts(ChannelKind::Email, now).await.unwrap(), (0, 0));
    // An hour later the 5-minute-old send is out of the hour, the others too.
    let later = now + chrono::Duration::minutes(56);
    assert_eq!(b.counts(line, later).await.unwrap(), (4, 1));

    let quality = ChannelQuality {
        event: "FLAGGED".into(),
        current_limit: Some("TIER_1K".into()),
        old_limit: None,
        max_daily_conversations_per_business: None,
        at: now,
    };
    a.set_quality(ChannelKind::Whatsapp, quality.clone())
        .await
        .unwrap();
    assert_eq!(
        b.stored_quality(ChannelKind::Whatsapp).await.unwrap(),
        Some(quality)
    );
}
