//! WhatsApp as it works in 2026 (issue 17), end to end with simulated WhatsApp answers and
//! signed webhooks: templates with a state (paused, disabled, approved again), the per-user
//! marketing limit (131049), +1 marketing, the portfolio's messaging limit, typed account
//! restrictions, and pricing.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::harness::*;

const ANA_WA_ID: &str = "48600100200";

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WA_APP_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts a signed WhatsApp webhook with one change and asserts the 200.
async fn post_change(gw: &Gateway, field: &str, value: Value) {
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "419561257915477", "time": 1_750_000_000,
            "changes": [{"field": field, "value": value}]}]
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

/// A status of one of our messages (spec `Statuses`), `failed` ones with an error code.
async fn post_status(gw: &Gateway, wamid: &str, status: &str, extra: Value) {
    let mut entry = json!({"id": wamid, "status": status, "timestamp": "1750000000",
        "recipient_id": ANA_WA_ID});
    for (k, v) in extra.as_object().unwrap() {
        entry[k] = v.clone();
    }
    post_change(
        gw,
        "messages",
        json!({"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": WA_PHONE_ID},
            "statuses": [entry]}),
    )
    .await;
}

fn template(name: &str) -> Value {
    json!({"name": name, "language": "en_US", "parameters": ["1042"]})
}

/// A notification to `contact` over WhatsApp then Telegram, waited for until final.
async fn send(gw: &Gateway, contact: &str, category: &str, extra: Value) -> Value {
    let mut body = json!({"contact_id": contact, "channels": ["whatsapp", "telegram"],
        "category": category, "text": "Your order #1042 has shipped."});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    gw.notify_and_wait(body).await
}

async fn whatsapp_row(gw: &Gateway) -> Value {
    gw.channel_state("whatsapp").await
}

fn template_row(row: &Value, name: &str) -> Value {
    row["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls until `done` holds, up to 10 s.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        if Instant::now() > deadline {
            panic!("never: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(gw: &Gateway) -> String {
    gw.raw(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_paused_template_costs_one_request_then_none_until_it_is_approved_again() {
    let gw = TestApp::accepting().await;
    gw.on_whatsapp_and_telegram("ana").await;
    whatsapp_fails(
        &gw.providers,
        1,
        400,
        132015,
        "(#132015) Cannot send message with a paused template",
        None,
    )
    .await;

    // Meta answers 132015: the notification falls over, the channel stays active.
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("order_shipped")}),
    )
    .await;
    assert_eq!(n["channel"], "telegram", "{n}");
    assert_eq!(trail(&n), ["whatsapp:rejected", "telegram:sent"], "{n}");
    assert_eq!(n["attempts"][0]["template"], "order_shipped/en_US", "{n}");
    assert_eq!(gw.providers.sends("whatsapp").await, 1);
    let row = whatsapp_row(&gw).await;
    assert_eq!(row["state"], "active", "{row}");
    let t = template_row(&row, "order_shipped");
    assert_eq!(t["state"], "paused", "{row}");
    assert!(t["paused_until"].is_string(), "{t}");
    assert_eq!(t["reason"], "132015", "{t}");

    // The next ones with that template don't ask Meta at all.
    for _ in 0..3 {
        let n = send(
            &gw,
            "ana",
            "transactional",
            json!({"whatsapp_template": template("order_shipped")}),
        )
        .await;
        assert_eq!(
            trail(&n),
            ["whatsapp:skipped:template_paused", "telegram:sent"],
            "{n}"
        );
        assert!(
            n["attempts"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("order_shipped/en_US"),
            "{n}"
        );
    }
    assert_eq!(
        gw.providers.sends("whatsapp").await,
        1,
        "no request while it is paused"
    );

    // Other templates and free-form text keep WhatsApp.
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("receipt")}),
    )
    .await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let n = send(&gw, "ana", "transactional", json!({})).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");

    // A notification naming an alternative goes out on WhatsApp with the alternative.
    let mut first = template("order_shipped");
    first["alternative"] = template("order_shipped_v2");
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": first}),
    )
    .await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(
        n["attempts"][0]["template"], "order_shipped_v2/en_US",
        "{n}"
    );
    let body = gw.providers.sent("whatsapp").await.pop().unwrap();
    assert_eq!(body["template"]["name"], "order_shipped_v2", "{body}");
    assert!(body["template"].get("alternative").is_none(), "{body}");

    // Meta approves it again: the next notification uses it on WhatsApp.
    post_change(
        &gw,
        "message_template_status_update",
        json!({"event": "APPROVED", "message_template_id": 1_234_567,
            "message_template_name": "order_shipped", "message_template_language": "en_US",
            "reason": "NONE"}),
    )
    .await;
    let t = template_row(&whatsapp_row(&gw).await, "order_shipped");
    assert_eq!(t["state"], "approved", "{t}");
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("order_shipped")}),
    )
    .await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let body = gw.providers.sent("whatsapp").await.pop().unwrap();
    assert_eq!(body["template"]["name"], "order_shipped", "{body}");

    let text = metrics(&gw).await;
    assert!(
        text.contains("lifeboat_whatsapp_template_changes_total{to=\"paused\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn template_webhooks_pause_disable_and_rate_templates_and_a_late_132016_disables() {
    let gw = TestApp::accepting().await;
    gw.on_whatsapp_and_telegram("ana").await;
    post_change(
        &gw,
        "message_template_status_update",
        json!({"event": "PAUSED", "message_template_id": 1,
            "message_template_name": "promo", "message_template_language": "en_US",
            "reason": "LOW_QUALITY"}),
    )
    .await;
    post_change(
        &gw,
        "message_template_quality_update",
        json!({"previous_quality_score": "YELLOW", "new_quality_score": "RED",
            "message_template_id": 1, "message_template_name": "promo",
            "message_template_language": "en_US"}),
    )
    .await;
    let t = template_row(&whatsapp_row(&gw).await, "promo");
    assert_eq!(
        (t["state"].as_str(), t["quality"].as_str()),
        (Some("paused"), Some("RED")),
        "{t}"
    );
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("promo")}),
    )
    .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:template_paused", "telegram:sent"],
        "{n}"
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 0);

    // Accepted, then reported failed with 132016: that template is disabled, the
    // notification falls over, and the next one with it skips WhatsApp.
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("welcome")}),
    )
    .await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let id = n["id"].as_str().unwrap().to_string();
    post_status(
        &gw,
        "wamid.TEST",
        "failed",
        json!({"errors": [{"code": 132016, "title": "Template is disabled",
            "message": "Template is disabled", "error_data": {"details": "disabled for low quality"}}]}),
    )
    .await;
    eventually("the late failure falls over", || async {
        let (_, n) = gw.get(&format!("/v1/notifications/{id}")).await;
        n["channel"] == "telegram"
    })
    .await;
    let t = template_row(&whatsapp_row(&gw).await, "welcome");
    assert_eq!(t["state"], "disabled", "{t}");
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("welcome")}),
    )
    .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:template_disabled", "telegram:sent"],
        "{n}"
    );
    assert_eq!(whatsapp_row(&gw).await["state"], "active");
}
