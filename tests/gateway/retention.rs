//! Retention (`[store.retention]`) and erasure, through the HTTP API and the store on disk.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

/// The providers' config with a purge pass every 200 ms.
fn config(providers: &Providers, dir: &std::path::Path) -> String {
    providers.config(dir, &Settings::default())
        + "\n[store.retention]\nnotifications = \"30d\"\nevery = \"200ms\"\n"
}

#[tokio::test]
async fn a_finished_notification_is_gone_after_its_retention_and_its_key_can_be_used_again() {
    let start = chrono::Utc::now();
    let gw = Rig::accepting()
        .await
        .start_at(&start.to_rfc3339(), config)
        .await;
    let clock = gw.clock();
    gw.on_whatsapp_and_telegram("ana").await;
    let body =
        json!({"contact_id": "ana", "text": "Your code is 1234", "idempotency_key": "code-1"});
    let id = gw.notify(body.clone()).await;
    assert_eq!(gw.wait_final(&id).await["status"], "sent");

    // 29 days on it is still there; 31 days on, the purge has taken it.
    std::fs::write(&clock, (start + chrono::Duration::days(29)).to_rfc3339()).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = gw.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    std::fs::write(&clock, (start + chrono::Duration::days(31)).to_rfc3339()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = gw.get(&format!("/v1/notifications/{id}")).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "still there after 10 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, list) = gw.get("/v1/notifications?contact_id=ana").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(!list.to_string().contains(&id), "{list}");

    // The key's window is long past: the same request makes a new notification.
    let again = gw.notify(body).await;
    assert_ne!(again, id);
    assert_eq!(gw.wait_final(&again).await["status"], "sent");
}

/// DELETE /v1/contacts/{id} must reach every record naming the contact, including the
/// guardrails' counters (marketing cap, WhatsApp tier ledger): the store on disk is scanned
/// (on PostgreSQL: everything in the database, as `pg_dump` prints it).
#[tokio::test]
async fn an_erasure_leaves_no_record_naming_the_contact_in_the_store() {
    let gw = Rig::accepting().await.start_on(config).await;
    let contact = "erase-me-42";
    gw.contact(contact)
        .whatsapp("+48600100200")
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;
    let id = gw
        .notify(json!({"contact_id": contact, "text": "Sale today", "category": "marketing"}))
        .await;
    assert_eq!(gw.wait_final(&id).await["status"], "sent");
    let (status, link) = gw
        .post(
            &format!("/v1/contacts/{contact}/optin-links"),
            json!({"scopes": ["marketing"]}),
        )
        .await;
    assert!(status.is_success(), "{status} {link}");

    let (status, body) = gw
        .send(
            Method::DELETE,
            &format!("/v1/contacts/{contact}"),
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, n) = gw.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(status, StatusCode::OK, "the id stays resolvable: {n}");
    let (_, _, rig) = gw.terminate().await;

    if let Some(db) = &rig.db {
        let dump = db.dump();
        let naming: Vec<&str> = dump
            .lines()
            .filter(|line| {
                [contact.as_bytes(), b"48600100200"].iter().any(|needle| {
                    line.contains(&*String::from_utf8_lossy(needle)) || line.contains(&hex(needle))
                })
            })
            .collect();
        assert_eq!(naming, Vec::<&str>::new());
        return;
    }
    let db = sled::open(rig.dir.path().join("lifeboat.sled")).unwrap();
    let tree = db.open_tree("lifeboat").unwrap();
    let mut naming = Vec::new();
    for item in tree.iter() {
        let (k, v) = item.unwrap();
        for needle in [contact.as_bytes(), b"48600100200"] {
            let has = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
            if has(&k) || has(&v) {
                naming.push(String::from_utf8_lossy(&k).into_owned());
            }
        }
    }
    assert_eq!(naming, Vec::<String>::new());
}
