//! The guardrails of two instances on one store (docs/fleet.md): two [`Policy`]s (or two
//! ledgers) on one store in one process stand for two gateways, on the embedded store and on
//! PostgreSQL (a throw-away database on `LIFEBOAT_TEST_DATABASE_URL`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use lifeboat_channel::{Answer, Category, Channel, ChannelKind, Health, OutboundMessage};

use super::tier::TierLedger;
use super::{Candidate, Decision, Mode, Policy, PolicyConfig};
use crate::channels::Registry;
use crate::model::{Consent, ConsentStatus, Contact, SkipReason};
use crate::states::ChannelStates;
use crate::store::Store;

crate::store::on_both_stores!(
    a_person_reached_by_one_instance_counts_on_the_other_at_once,
    the_same_new_people_reached_by_two_instances_at_once_count_once,
    the_last_place_under_the_cap_goes_to_one_instance_only,
);

/// A reaches ana; B sees her counted (a repeat to her costs B nothing) before any refresh;
/// B reaches bo, and A's count is 2 at once. The portfolio figure is the same on both.
async fn a_person_reached_by_one_instance_counts_on_the_other_at_once(store: Arc<dyn Store>) {
    let a = TierLedger::new(store.clone());
    let b = TierLedger::new(store.clone());
    let now = Utc::now();
    // Both have read the ledger before anyone was reached.
    assert_eq!(b.snapshot("ana", now).await.unwrap().count, 0);
    assert_eq!(a.snapshot("ana", now).await.unwrap().count, 0);

    a.record("ana", now).await.unwrap();
    let seen = b.snapshot("ana", now).await.unwrap();
    assert_eq!((seen.count, seen.counted), (1, true), "B sees A's person");
    assert_eq!(seen.first_send, Some(now));
    b.record("ana", now).await.unwrap();
    assert_eq!(a.snapshot("ana", now).await.unwrap().count, 1, "a repeat");

    b.record("bo", now).await.unwrap();
    let seen = a.snapshot("bo", now).await.unwrap();
    assert_eq!((seen.count, seen.counted), (2, true), "A sees B's person");

    let pa = Policy::new(PolicyConfig::default(), store.clone());
    let pb = Policy::new(PolicyConfig::default(), store.clone());
    pa.tier.record("cy", now).await.unwrap();
    let (fa, fb) = (
        pa.portfolio_status(now).await.unwrap(),
        pb.portfolio_status(now).await.unwrap(),
    );
    assert_eq!(fa["reached_24h"], 3);
    assert_eq!(fa, fb, "the admin table's portfolio figure is the fleet's");
}

/// Two instances reaching the same 40 new people at the same moment count 40, not 80.
async fn the_same_new_people_reached_by_two_instances_at_once_count_once(store: Arc<dyn Store>) {
    let now = Utc::now();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let ledger = TierLedger::new(store.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    ledger.record(&format!("p{i}"), now).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let fresh = TierLedger::new(store.clone());
    assert_eq!(fresh.snapshot("p7", now).await.unwrap().count, 40);
}

/// An email channel that is never called (the decisions are what is tested).
struct Email;

#[async_trait]
impl Channel for Email {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }
    async fn send(&self, _message: &OutboundMessage) -> Answer {
        Answer::sent("m-1")
    }
    async fn health(&self) -> Health {
        Health::Ok("fake".into())
    }
}

fn ana() -> Contact {
    let now = Utc::now();
    let mut c = Contact::new("ana", now);
    c.email = Some("ana@example.com".into());
    c.consents.insert(
        ChannelKind::Email,
        Consent {
            status: ConsentStatus::Granted,
            scopes: vec![Category::Marketing, Category::Transactional],
            source: "test".into(),
            evidence: None,
            at: now,
        },
    );
    c
}

fn marketing<'a>(id: &'a str, contact: &'a Contact) -> Candidate<'a> {
    Candidate {
        notification_id: id,
        category: Category::Marketing,
        has_template: false,
        template: None,
        kind: ChannelKind::Email,
        contact: Some(contact),
    }
}

/// `marketing_per_day = 1`: A admits ana's marketing (in flight, not answered yet); B must not
/// admit another one for her meanwhile. Once A's send is recorded, B still may not (the cap is
/// spent); had A's send failed instead, B could.
async fn the_last_place_under_the_cap_goes_to_one_instance_only(store: Arc<dyn Store>) {
    let config = PolicyConfig {
        marketing_per_day: 1,
        quiet_hours: None,
        ..PolicyConfig::default()
    };
    let a = Policy::new(config.clone(), store.clone());
    let b = Policy::new(config, store.clone());
    let registry = Registry::from_channels(vec![Arc::new(Email) as Arc<dyn Channel>]);
    let states = ChannelStates::load(store.clone()).await.unwrap();
    let contact = ana();
    let now = Utc::now();
    let decide = |p: &'static str| {
        let (a, b, registry, states, contact) = (&a, &b, &registry, &states, &contact);
        async move {
            let policy = if p.starts_with('a') { a } else { b };
            policy
                .decide(registry, states, &marketing(p, contact), now, Mode::Live)
                .await
                .unwrap()
        }
    };
    let is_go = |d: &Decision| matches!(d, Decision::Go { .. });
    let is_cap = |d: &Decision| {
        matches!(
            d,
            Decision::Skip {
                reason: SkipReason::CapReached,
                ..
            }
        )
    };

    let first = decide("a-1").await;
    assert!(is_go(&first), "{first:?}");
    let second = decide("b-1").await;
    assert!(is_cap(&second), "B while A's send is in flight: {second:?}");
    // The preview on either instance sees the place taken too.
    let preview = b
        .decide(
            &registry,
            &states,
            &marketing("b-2", &contact),
            now,
            Mode::DryRun,
        )
        .await
        .unwrap();
    assert!(is_cap(&preview), "{preview:?}");

    // A's send fails (no answer counted): its place is given back, and B may go.
    a.release("a-1").await;
    let third = decide("b-3").await;
    assert!(is_go(&third), "after A gave its place back: {third:?}");
    // B's send is answered: recorded, then its place given back; the cap is spent for A.
    b.after_send(&marketing("b-3", &contact), &Answer::sent("m-2"), None, now)
        .await
        .unwrap();
    b.release("b-3").await;
    let fourth = decide("a-4").await;
    assert!(is_cap(&fourth), "one sent today: {fourth:?}");
}
