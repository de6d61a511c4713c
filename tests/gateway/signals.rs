//! Provider signals end to end: WhatsApp delivery statuses (receipts, late failures that fall
//! over), `account_update` and `phone_number_quality_update` changing the channel's state, and
//! receipt-based fallback (`fallback_after`). Bodies use Meta's documented shapes
//! (Meta's webhook payloads) and are signed like Meta signs them.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::harness::*;

/// The wamid the harness's WhatsApp mock answers every send with.
const WAMID: &str = "wamid.TEST";
const ANA_WA_ID: &str = "48600100200";

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WA_APP_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts a signed WhatsApp webhook with these `changes` and asserts the 200.
async fn post_changes(gw: &Gateway, changes: Value) {
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "419561257915477", "time": 1_750_000_000, "changes": changes}]
    }))
    .unwrap();
    let resp = gw
        .raw(Method::POST, "/webhooks/whatsapp")
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(status, StatusCode::OK, "{}", resp.text().await.unwrap());
}

/// One `statuses` entry (spec `Statuses`), with `errors` for a `failed` one.
fn status(wamid: &str, status: &str, error_code: Option<i64>) -> Value {
    let mut s = json!({
        "id": wamid, "status": status, "timestamp": "1750000000", "recipient_id": ANA_WA_ID,
        "conversation": {"id": "c1", "origin": {"type": "utility"}},
        "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}
    });
    if let Some(code) = error_code {
        s["errors"] = json!([{
            "code": code, "title": "Message undeliverable", "message": "Message undeliverable",
            "error_data": {"details": "Message failed to send."},
            "href": "/documentation/business-messaging/whatsapp/support/error-codes"
        }]);
    }
    s
}

async fn post_status(gw: &Gateway, entry: Value) {
    post_changes(
        gw,
        json!([{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [entry]
        }}]),
    )
    .await;
}

async fn post_account_update(gw: &Gateway, value: Value) {
    post_changes(gw, json!([{"field": "account_update", "value": value}])).await;
}

/// Polls a notification until `done` holds, up to 10 s.
async fn wait_for(gw: &Gateway, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, n) = gw.get(&format!("/v1/notifications/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{n}");
        if done(&n) {
            return n;
        }
        if Instant::now() > deadline {
            panic!("notification {id} never became {what}: {n}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(rig: Rig) -> TestApp {
    rig.start_on(|providers, dir| {
        providers.config(dir, &Settings::default()).replace(
            "[server]\n",
            "[server]\npublic_url = \"https://lifeboat.test/\"\nbusiness_name = \"Acme\"\n",
        )
    })
    .await
}

/// Ana, reachable on WhatsApp and Telegram, consenting to `scopes` on both.
async fn ana(gw: &Gateway, scopes: &[&str]) {
    gw.contact("ana")
        .whatsapp("+48600100200")
        .telegram("5551234")
        .consents_to(scopes)
        .put()
        .await;
}

/// A notification to Ana over WhatsApp then Telegram, waited for until WhatsApp took it.
async fn sent_on_whatsapp(gw: &Gateway, extra: Value) -> String {
    let mut body = json!({"contact_id": "ana", "channels": ["whatsapp", "telegram"],
        "text": "Your order #1042 has shipped."});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let id = gw.notify(body).await;
    let n = wait_for(gw, &id, "sent", |n| n["status"] == "sent").await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(n["attempts"][0]["provider_message_id"], WAMID, "{n}");
    id
}

async fn notification(gw: &Gateway, id: &str) -> Value {
    let (status, n) = gw.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{n}");
    n
}

#[tokio::test]
async fn receipts_move_a_notification_to_delivered_then_read_and_never_back() {
    let gw = start(Rig::accepting().await).await;
    ana(&gw, &["transactional"]).await;
    let id = sent_on_whatsapp(&gw, json!({})).await;

    // A receipt for another message changes nothing.
    post_status(&gw, status("wamid.SOMEONE.ELSE", "delivered", None)).await;
    assert_eq!(notification(&gw, &id).await["status"], "sent");

    post_status(&gw, status(WAMID, "delivered", None)).await;
    let n = wait_for(&gw, &id, "delivered", |n| n["status"] == "delivered").await;
    assert_eq!(trail(&n), ["whatsapp:delivered"]);
    post_status(&gw, status(WAMID, "read", None)).await;
    wait_for(&gw, &id, "read", |n| n["status"] == "read").await;

    // Meta's statuses can come out of order: a late `sent` or `delivered` doesn't move it back.
    post_status(&gw, status(WAMID, "sent", None)).await;
    post_status(&gw, status(WAMID, "delivered", None)).await;
    let n = notification(&gw, &id).await;
    assert_eq!(n["status"], "read", "{n}");
    assert_eq!(trail(&n), ["whatsapp:read"]);
    assert_eq!(gw.providers.sends("telegram").await, 0);
}

#[tokio::test]
async fn a_failed_status_after_a_200_send_falls_over_to_the_next_channel() {
    let gw = start(Rig::accepting().await).await;
    ana(&gw, &["transactional"]).await;
    let id = sent_on_whatsapp(&gw, json!({})).await;
    assert_eq!(gw.providers.sends("telegram").await, 0);

    post_status(&gw, status(WAMID, "failed", Some(131026))).await;
    let n = wait_for(&gw, &id, "sent on telegram", |n| {
        n["status"] == "sent" && n["channel"] == "telegram"
    })
    .await;
    assert_eq!(
        trail(&n),
        [
            "whatsapp:sent",
            "whatsapp:recipient_unreachable",
            "telegram:sent"
        ]
    );
    assert_eq!(n["attempts"][1]["provider_code"], "131026", "{n}");
    assert_eq!(n["attempts"][1]["provider_message_id"], WAMID, "{n}");
    let sent = gw.providers.sent("telegram").await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["text"], "Your order #1042 has shipped.");

    // Redelivered, or followed by a late receipt: the notification stays where it is.
    post_status(&gw, status(WAMID, "failed", Some(131026))).await;
    post_status(&gw, status(WAMID, "delivered", None)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = notification(&gw, &id).await;
    assert_eq!(trail(&again), trail(&n));
    assert_eq!(again["status"], "sent");
    assert_eq!(gw.providers.sends("telegram").await, 1);
    // A recipient-level failure leaves the channel in rotation.
    assert_eq!(gw.channel_state("whatsapp").await["state"], "active");
}

#[tokio::test]
async fn a_failed_131050_status_revokes_whatsapp_marketing_only() {
    let gw = start(Rig::accepting().await).await;
    ana(&gw, &["transactional", "marketing"]).await;
    let id = sent_on_whatsapp(&gw, json!({"category": "marketing"})).await;

    post_status(&gw, status(WAMID, "failed", Some(131050))).await;
    let n = wait_for(&gw, &id, "sent on telegram", |n| n["channel"] == "telegram").await;
    assert_eq!(
        trail(&n),
        [
            "whatsapp:sent",
            "whatsapp:recipient_unreachable",
            "telegram:sent"
        ]
    );
    let (_, c) = gw.get("/v1/contacts/ana").await;
    assert_eq!(c["consents"]["whatsapp"]["status"], "granted", "{c}");
    assert_eq!(
        c["consents"]["whatsapp"]["scopes"],
        json!(["transactional"]),
        "{c}"
    );
    assert_eq!(
        c["consents"]["whatsapp"]["source"],
        "whatsapp_stopped_marketing"
    );
    assert_eq!(
        c["consents"]["telegram"]["scopes"],
        json!(["marketing", "transactional"])
    );
}

#[tokio::test]
async fn account_updates_ban_reinstate_and_restrict_whatsapp() {
    let gw = start(Rig::accepting().await).await;
    ana(&gw, &["transactional"]).await;

    post_account_update(
        &gw,
        json!({"event": "DISABLED_UPDATE",
            "ban_info": {"waba_ban_state": "DISABLE", "waba_ban_date": "October 9, 2023"}}),
    )
    .await;
    let row = gw.channel_state("whatsapp").await;
    assert_eq!(row["state"], "banned", "{row}");
    assert_eq!(row["until"], Value::Null);
    assert!(
        row["reason"].as_str().unwrap().contains("DISABLED_UPDATE"),
        "{row}"
    );
    let n = gw
        .notify_and_wait(
            json!({"contact_id": "ana", "channels": ["whatsapp", "telegram"], "text": "Hi"}),
        )
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:channel_banned", "telegram:sent"]
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 0);

    post_account_update(
        &gw,
        json!({"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": "REINSTATE", "waba_ban_date": "October 10, 2023"}}),
    )
    .await;
    assert_eq!(gw.channel_state("whatsapp").await["state"], "active");

    // A violation is recorded but changes nothing.
    post_account_update(
        &gw,
        json!({"phone_number": "15550783881", "event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SCAM"}}),
    )
    .await;
    let row = gw.channel_state("whatsapp").await;
    assert_eq!(row["state"], "active", "{row}");
    assert_eq!(row["last_error"]["code"], "ACCOUNT_VIOLATION", "{row}");

    // A restriction without a type: the whole channel is restricted until Meta's expiration,
    // written the way Meta writes it. (Typed restrictions block one direction only:
    // tests/gateway/whatsapp_2026.rs.)
    let expiration = chrono::Utc::now() + chrono::Duration::days(3);
    let meta_time = expiration.format("%Y-%m-%dT%H:%M:%S+0000").to_string();
    post_account_update(
        &gw,
        json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [{"expiration": meta_time}]}),
    )
    .await;
    let row = gw.channel_state("whatsapp").await;
    assert_eq!(row["state"], "restricted", "{row}");
    let until = chrono::DateTime::parse_from_rfc3339(row["until"].as_str().unwrap()).unwrap();
    assert_eq!(until.timestamp(), expiration.timestamp(), "{row}");

    // The partner removed: banned until an admin, whatever the restriction said.
    post_account_update(&gw, json!({"event": "PARTNER_REMOVED"})).await;
    let row = gw.channel_state("whatsapp").await;
    assert_eq!(row["state"], "banned", "{row}");
    assert!(
        row["reason"].as_str().unwrap().contains("PARTNER_REMOVED"),
        "{row}"
    );
}

#[tokio::test]
async fn quality_updates_show_on_the_channel_row_and_unknown_events_are_stored() {
    let rig = Rig::new().await;
    let gw = start(rig).await;
    assert_eq!(gw.channel_state("whatsapp").await["quality"], Value::Null);

    post_changes(
        &gw,
        json!([{"field": "phone_number_quality_update", "value": {
            "display_phone_number": "15550783881", "event": "FLAGGED",
            "current_limit": "TIER_1K", "max_daily_conversations_per_business": "1000"}}]),
    )
    .await;
    let row = gw.channel_state("whatsapp").await;
    assert_eq!(row["quality"]["event"], "FLAGGED", "{row}");
    assert_eq!(row["quality"]["current_limit"], "TIER_1K", "{row}");
    assert!(row["quality"]["at"].is_string(), "{row}");
    assert_eq!(row["state"], "active", "a flag alone doesn't stop sends");

    // A field Meta adds tomorrow, an account event we don't act on: 200, stored, ignored.
    post_changes(
        &gw,
        json!([
            {"field": "brand_new_field", "value": {"secret_sauce": 42}},
            {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}
        ]),
    )
    .await;
    assert_eq!(gw.channel_state("whatsapp").await["state"], "active");

    let (status, logs, rig) = gw.terminate().await;
    assert!(status.success(), "{logs}");
    // The quality survives a restart; the unknown events are in the store with their values.
    if let Some(db) = &rig.db {
        let dump = db.dump();
        for stored in ["brand_new_field", "secret_sauce", "VERIFIED_ACCOUNT"] {
            assert!(
                dump.contains(stored) || dump.contains(&hex(stored.as_bytes())),
                "{stored} is not in the database"
            );
        }
        let gw = start(rig).await;
        assert_eq!(
            gw.channel_state("whatsapp").await["quality"]["event"],
            "FLAGGED"
        );
        return;
    }
    let db = sled::open(rig.dir.path().join("lifeboat.sled")).unwrap();
    let tree = db.open_tree("lifeboat").unwrap();
    let events: Vec<Value> = tree
        .scan_prefix(b"v/webhook_events\0")
        .map(|item| serde_json::from_slice(&item.unwrap().1).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["field"], "brand_new_field");
    assert_eq!(events[0]["value"]["secret_sauce"], 42);
    assert_eq!(events[1]["field"], "account_update");
    assert_eq!(events[1]["value"]["event"], "VERIFIED_ACCOUNT");
    drop(tree);
    drop(db);
    let gw = start(rig).await;
    assert_eq!(
        gw.channel_state("whatsapp").await["quality"]["event"],
        "FLAGGED"
    );
}

#[tokio::test]
async fn without_a_receipt_within_fallback_after_the_next_channel_is_tried() {
    let gw = start(Rig::accepting().await).await;
    ana(&gw, &["transactional"]).await;
    let id = sent_on_whatsapp(&gw, json!({"fallback_after": "1s"})).await;

    let n = wait_for(&gw, &id, "sent on telegram", |n| n["channel"] == "telegram").await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(
        trail(&n),
        ["whatsapp:sent", "whatsapp:no_receipt", "telegram:sent"]
    );
    assert_eq!(gw.providers.sends("telegram").await, 1);
    assert_eq!(gw.providers.sends("whatsapp").await, 1);
}

#[tokio::test]
async fn a_receipt_within_fallback_after_cancels_the_fallback() {
    let gw = start(Rig::accepting().await).await;
    ana(&gw, &["transactional"]).await;
    let id = sent_on_whatsapp(&gw, json!({"fallback_after": "2s"})).await;

    post_status(&gw, status(WAMID, "delivered", None)).await;
    wait_for(&gw, &id, "delivered", |n| n["status"] == "delivered").await;
    // Well past the receipt check: nothing more happens.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let n = notification(&gw, &id).await;
    assert_eq!(n["status"], "delivered", "{n}");
    assert_eq!(trail(&n), ["whatsapp:delivered"]);
    assert_eq!(gw.providers.sends("telegram").await, 0);
}
