//! Two instances' channel states on one store (two `ChannelStates` with nothing in common but
//! the store, as two gateways on a shared database have).

use std::sync::Arc;
use std::time::Duration;

use lifeboat_channel::{Answer, ChannelKind, Class};

use super::{Availability, ChannelStates};
use crate::fleet::InstanceId;
use crate::model::{ChannelState, SkipReason, Timestamp};
use crate::store::{SledStore, Store};

const LINE: ChannelKind = ChannelKind::Line;
const COOLDOWN: Duration = Duration::from_secs(60);

async fn two_instances() -> (
    tempfile::TempDir,
    Arc<dyn Store>,
    Arc<ChannelStates>,
    Arc<ChannelStates>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
    let a = ChannelStates::load(store.clone())
        .await
        .unwrap()
        .with_instance(InstanceId::named("a"));
    let b = ChannelStates::load(store.clone())
        .await
        .unwrap()
        .with_instance(InstanceId::named("b"));
    (dir, store, Arc::new(a), Arc::new(b))
}

fn banned() -> Answer {
    Answer::failed(Class::ChannelBanned, "LINE-403", "account suspended")
}

fn restricted() -> Answer {
    Answer::failed(
        Class::ChannelRestricted { retry_after: None },
        "429",
        "restricted",
    )
}

fn now() -> Timestamp {
    chrono::Utc::now()
}

#[tokio::test]
async fn a_ban_recorded_by_one_instance_stops_the_others_sends_at_its_next_fresh_read() {
    let (_dir, _store, a, b) = two_instances().await;
    assert_eq!(b.availability(LINE, "u1", now()), Availability::Open);
    a.report(LINE, "u1", &banned(), false, COOLDOWN, now())
        .await
        .unwrap();
    // b's copy is older than the ban; the read the worker asks for before a send sees it.
    b.fresh(Duration::ZERO).await.unwrap();
    assert_eq!(
        b.availability(LINE, "u2", now()),
        Availability::Skip(SkipReason::ChannelBanned)
    );
    assert_eq!(b.current(LINE).state, ChannelState::Banned);
    let seen = b.history();
    assert_eq!(seen.len(), 1, "b shows the history a wrote");
    assert_eq!(
        (seen[0].to, seen[0].boot.as_str()),
        (ChannelState::Banned, "a")
    );
}

/// The periodic re-read (or an announcement on `changed`) brings another instance's admin
/// action to this one without any send asking for it.
#[tokio::test]
async fn the_watch_loop_brings_another_instances_change_without_a_send() {
    let (_dir, _store, a, b) = two_instances().await;
    let changed = Arc::new(tokio::sync::Notify::new());
    let watch = b.watch(changed.clone(), Duration::from_secs(3600));
    a.disable(LINE, "quota dispute").await.unwrap();
    changed.notify_one();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while b.current(LINE).state != ChannelState::Disabled {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    watch.abort();
    assert!(seen.is_ok(), "b never saw the disable");
    assert!(b.current(LINE).reason.unwrap().contains("quota dispute"));
}

/// A change made by an instance with a stale copy starts from the stored state: b's enable
/// after a's ban is recorded as banned -> active (not active -> active, lost), and neither
/// instance's history entry overwrites the other's.
#[tokio::test]
async fn a_change_starts_from_the_stored_state_and_history_entries_do_not_collide() {
    let (_dir, store, a, b) = two_instances().await;
    a.report(LINE, "u1", &banned(), false, COOLDOWN, now())
        .await
        .unwrap();
    b.enable(LINE).await.unwrap();
    let history = super::history::load(store.as_ref()).await.unwrap();
    let moves: Vec<_> = history
        .iter()
        .map(|c| (c.seq, c.from, c.to, c.boot.clone()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (
                0,
                ChannelState::Active,
                ChannelState::Banned,
                "a".to_string()
            ),
            (
                1,
                ChannelState::Banned,
                ChannelState::Active,
                "b".to_string()
            ),
        ]
    );
    a.fresh(Duration::ZERO).await.unwrap();
    assert_eq!(a.current(LINE).state, ChannelState::Active);
}

/// After the cooldown, one probe for the whole fleet: the instance holding the probe lease.
#[tokio::test]
async fn a_restricted_channel_is_probed_by_one_instance_only() {
    let (_dir, _store, a, b) = two_instances().await;
    let t0 = now();
    a.report(LINE, "u1", &restricted(), false, COOLDOWN, t0)
        .await
        .unwrap();
    b.fresh(Duration::ZERO).await.unwrap();
    let rested = t0 + chrono::Duration::seconds(61);
    assert_eq!(a.availability(LINE, "u2", rested), Availability::Probe);
    assert!(a.claim_probe(LINE, rested).await.unwrap());
    // b's own table would hand out a probe too; the lease says a is probing.
    assert_eq!(b.availability(LINE, "u3", rested), Availability::Probe);
    assert!(!b.claim_probe(LINE, rested).await.unwrap());
    assert_eq!(
        b.availability(LINE, "u3", rested),
        Availability::Probe,
        "b gave its local slot back"
    );
    assert!(!b.claim_probe(LINE, rested).await.unwrap());
    // a's probe succeeds: the channel is active for both, and the lease is given back.
    a.report(LINE, "u2", &Answer::sent("m-1"), true, COOLDOWN, rested)
        .await
        .unwrap();
    b.fresh(Duration::ZERO).await.unwrap();
    assert_eq!(b.availability(LINE, "u3", rested), Availability::Open);
    // Restricted again: after the rest, b may probe now that a let go.
    a.report(LINE, "u1", &restricted(), false, COOLDOWN, rested)
        .await
        .unwrap();
    b.fresh(Duration::ZERO).await.unwrap();
    let again = rested + chrono::Duration::seconds(200);
    assert_eq!(b.availability(LINE, "u3", again), Availability::Probe);
    assert!(b.claim_probe(LINE, again).await.unwrap());
}

/// A prober that dies keeps the lease only until it runs out.
#[tokio::test]
async fn a_dead_probers_lease_runs_out() {
    let (_dir, _store, a, b) = two_instances().await;
    let t0 = now();
    a.report(LINE, "u1", &restricted(), false, COOLDOWN, t0)
        .await
        .unwrap();
    b.fresh(Duration::ZERO).await.unwrap();
    let rested = t0 + chrono::Duration::seconds(61);
    assert_eq!(a.availability(LINE, "u2", rested), Availability::Probe);
    assert!(a.claim_probe(LINE, rested).await.unwrap());
    drop(a); // died mid-probe: no verdict, no release
    let b_try = |t| {
        let b = b.clone();
        async move {
            assert_eq!(b.availability(LINE, "u3", t), Availability::Probe);
            b.claim_probe(LINE, t).await.unwrap()
        }
    };
    assert!(!b_try(rested + chrono::Duration::seconds(60)).await);
    assert!(b_try(rested + chrono::Duration::seconds(121)).await);
}
