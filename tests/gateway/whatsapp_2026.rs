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

/// The default test policy without the marketing cap (these tests send marketing repeatedly).
fn settings_without_cap() -> Settings {
    Settings {
        policy: "[policy]\nquiet_hours = \"off\"\nmarketing_per_day = 0\n\
                 [policy.whatsapp]\nservice_window = false\n\
                 [policy.telegram]\nrate = 1000\nper_chat_rate = 1000\n"
            .into(),
        ..Settings::default()
    }
}

async fn person(gw: &Gateway, id: &str, number: &str, chat: &str) {
    gw.contact(id)
        .whatsapp(number)
        .telegram(chat)
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;
}

#[tokio::test]
async fn a_131049_holds_one_persons_whatsapp_marketing_for_a_day_and_nothing_else() {
    let settings = settings_without_cap();
    let gw = Rig::accepting()
        .await
        .start_at("2026-03-01T10:00:00Z", |p, dir| p.config(dir, &settings))
        .await;
    person(&gw, "ana", "+48600100200", "5551234").await;
    person(&gw, "bob", "+48600100300", "5551235").await;
    whatsapp_fails(
        &gw.providers,
        1,
        400,
        131049,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        None,
    )
    .await;
    let promo = json!({"whatsapp_template": template("spring_sale")});

    let n = send(&gw, "ana", "marketing", promo.clone()).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:recipient_unreachable", "telegram:sent"],
        "{n}"
    );
    assert_eq!(n["attempts"][0]["provider_code"], "131049", "{n}");
    assert_eq!(gw.providers.sends("whatsapp").await, 1);

    // Ana's marketing: no request to Meta for a day, Telegram carries it.
    let n = send(&gw, "ana", "marketing", promo.clone()).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:marketing_held", "telegram:sent"],
        "{n}"
    );
    assert!(
        n["attempts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("2026-03-02T10:00:00"),
        "{n}"
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 1);
    // Her transactional messages and Bob's marketing keep WhatsApp.
    let n = send(&gw, "ana", "transactional", promo.clone()).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let n = send(&gw, "bob", "marketing", promo.clone()).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(gw.providers.sends("whatsapp").await, 3);
    // Consent is untouched (131049 is not an opt-out).
    let (_, contact) = gw.get("/v1/contacts/ana").await;
    assert_eq!(
        contact["consents"]["whatsapp"]["status"], "granted",
        "{contact}"
    );

    // A day later WhatsApp is asked again.
    gw.move_clock("2026-03-02T10:00:01Z").await;
    let n = send(&gw, "ana", "marketing", promo).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
}

#[tokio::test]
async fn a_131049_in_a_failed_status_holds_that_persons_marketing() {
    let gw = TestApp::with(settings_without_cap()).await;
    person(&gw, "ana", "+48600100200", "5551234").await;
    let promo = json!({"whatsapp_template": template("spring_sale")});
    let n = send(&gw, "ana", "marketing", promo.clone()).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let id = n["id"].as_str().unwrap().to_string();
    post_status(
        &gw,
        "wamid.TEST",
        "failed",
        json!({"errors": [{"code": 131049, "title": "This message was not delivered to maintain healthy ecosystem engagement.",
            "message": "This message was not delivered to maintain healthy ecosystem engagement."}]}),
    )
    .await;
    eventually("the late 131049 falls over", || async {
        let (_, n) = gw.get(&format!("/v1/notifications/{id}")).await;
        n["channel"] == "telegram"
    })
    .await;
    let n = send(&gw, "ana", "marketing", promo).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:marketing_held", "telegram:sent"],
        "{n}"
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 1);
}

#[tokio::test]
async fn marketing_templates_to_us_numbers_skip_whatsapp_unless_switched_off() {
    let gw = TestApp::with(settings_without_cap()).await;
    person(&gw, "carl", "+16505551234", "5551236").await;
    let promo = json!({"whatsapp_template": template("spring_sale")});
    let n = send(&gw, "carl", "marketing", promo.clone()).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:us_marketing", "telegram:sent"],
        "{n}"
    );
    assert!(
        n["attempts"][0]["detail"].as_str().unwrap().contains("+1"),
        "{n}"
    );
    let n = send(&gw, "carl", "transactional", promo.clone()).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(gw.providers.sends("whatsapp").await, 1);

    let mut settings = settings_without_cap();
    settings.policy = settings.policy.replace(
        "service_window = false\n",
        "service_window = false\nskip_us_marketing = false\n",
    );
    let gw = TestApp::with(settings).await;
    person(&gw, "carl", "+16505551234", "5551236").await;
    let n = send(&gw, "carl", "marketing", promo).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
}

/// A text from `wa_id` to the business (opens that person's 24 h service window).
async fn post_inbound(gw: &Gateway, wa_id: &str, message_id: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    post_change(
        gw,
        "messages",
        json!({"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": WA_PHONE_ID},
            "contacts": [{"profile": {"name": "Someone"}, "wa_id": wa_id}],
            "messages": [{"from": wa_id, "id": message_id, "timestamp": now.to_string(),
                "type": "text", "text": {"body": "Where is my order?"}}]}),
    )
    .await;
}

#[tokio::test]
async fn the_portfolio_limit_skips_new_people_once_reached_while_window_replies_still_go() {
    let gw = TestApp::with(Settings {
        policy: "[policy]\nquiet_hours = \"off\"\nmarketing_per_day = 0\n\
                 [policy.whatsapp]\nportfolio_limit = 2\n\
                 [policy.telegram]\nrate = 1000\nper_chat_rate = 1000\n"
            .into(),
        ..Settings::default()
    })
    .await;
    for (i, id) in ["p1", "p2", "p3", "p4"].iter().enumerate() {
        person(&gw, id, &format!("+4860010040{i}"), &format!("555200{i}")).await;
    }
    let row = whatsapp_row(&gw).await;
    assert_eq!(row["portfolio"]["limit"], 2, "{row}");
    assert_eq!(
        row["portfolio"]["source"], "policy.whatsapp.portfolio_limit",
        "{row}"
    );
    let shipped = json!({"whatsapp_template": template("order_shipped")});

    // Two new people outside their window use up the limit of 2.
    for id in ["p1", "p2"] {
        let n = send(&gw, id, "transactional", shipped.clone()).await;
        assert_eq!(n["channel"], "whatsapp", "{n}");
    }
    assert_eq!(whatsapp_row(&gw).await["portfolio"]["left"], 0);
    // A third new person is not tried on WhatsApp, whatever the category.
    let n = send(&gw, "p3", "transactional", shipped.clone()).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:portfolio_limit", "telegram:sent"],
        "{n}"
    );
    assert!(
        n["attempts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("limit is 2"),
        "{n}"
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 2);
    // Someone already reached today still gets WhatsApp.
    let n = send(&gw, "p1", "transactional", shipped.clone()).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    // A reply inside an open service window is not business-initiated: it still goes.
    post_inbound(&gw, "48600100403", "wamid.IN.p4").await;
    let n = send(&gw, "p4", "transactional", json!({})).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let body = gw.providers.sent("whatsapp").await.pop().unwrap();
    assert_eq!(body["type"], "text", "{body}");
    assert_eq!(whatsapp_row(&gw).await["portfolio"]["left"], 0);

    // Meta raises the portfolio's limit: p3 is tried on WhatsApp again.
    post_change(
        &gw,
        "business_capability_update",
        json!({"max_daily_conversations_per_business": "TIER_2K", "max_phone_numbers_per_business": 2}),
    )
    .await;
    let row = whatsapp_row(&gw).await;
    assert_eq!(
        (
            row["portfolio"]["limit"].as_u64(),
            row["portfolio"]["left"].as_u64()
        ),
        (Some(2000), Some(1998)),
        "{row}"
    );
    assert_eq!(
        row["portfolio"]["source"], "business_capability_update",
        "{row}"
    );
    let n = send(&gw, "p3", "transactional", shipped).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
}

fn restriction(kind: &str, expiration: &str) -> Value {
    json!({"event": "ACCOUNT_RESTRICTION", "restriction_info": [
        {"restriction_type": kind, "expiration": expiration}]})
}

#[tokio::test]
async fn a_biz_initiated_restriction_lets_window_replies_through_and_ends_at_its_expiration() {
    let settings = settings_without_cap();
    let settings = Settings {
        policy: settings.policy.replace("service_window = false\n", ""),
        ..settings
    };
    let gw = Rig::accepting()
        .await
        .start_at("2026-03-01T10:00:00Z", |p, dir| p.config(dir, &settings))
        .await;
    person(&gw, "ana", "+48600100200", "5551234").await;
    person(&gw, "dave", "+48600100403", "5551237").await;
    post_inbound(&gw, "48600100403", "wamid.IN.dave").await;
    post_change(
        &gw,
        "account_update",
        restriction(
            "RESTRICTED_BIZ_INITIATED_MESSAGING",
            "2026-03-01T12:00:00+0000",
        ),
    )
    .await;
    let row = whatsapp_row(&gw).await;
    assert_eq!(
        row["state"], "active",
        "the channel stays in rotation: {row}"
    );
    assert_eq!(
        row["restrictions"][0]["restriction_type"], "RESTRICTED_BIZ_INITIATED_MESSAGING",
        "{row}"
    );
    assert_eq!(
        row["restrictions"][0]["until"], "2026-03-01T12:00:00Z",
        "{row}"
    );

    // Business-initiated (Ana wrote nothing): around WhatsApp, no request.
    let shipped = json!({"whatsapp_template": template("order_shipped")});
    let n = send(&gw, "ana", "transactional", shipped.clone()).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:channel_restricted", "telegram:sent"],
        "{n}"
    );
    assert!(
        n["attempts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("RESTRICTED_BIZ_INITIATED_MESSAGING until 2026-03-01T12:00:00"),
        "{n}"
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 0);
    // A reply inside Dave's open window still goes on WhatsApp.
    let n = send(&gw, "dave", "transactional", json!({})).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(gw.providers.sends("whatsapp").await, 1);

    // At the expiration it ends by itself: no probe, no admin.
    gw.move_clock("2026-03-01T12:00:01Z").await;
    let n = send(&gw, "ana", "transactional", shipped.clone()).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let row = whatsapp_row(&gw).await;
    assert_eq!(row["restrictions"], json!([]), "{row}");

    // The reverse restriction: window replies go around WhatsApp, business-initiated goes.
    post_change(
        &gw,
        "account_update",
        restriction(
            "RESTRICTED_CUSTOMER_INITIATED_MESSAGING",
            "2026-03-02T12:00:00+0000",
        ),
    )
    .await;
    let n = send(&gw, "dave", "transactional", json!({})).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:channel_restricted", "telegram:sent"],
        "{n}"
    );
    let n = send(&gw, "ana", "transactional", shipped).await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(whatsapp_row(&gw).await["state"], "active");
}

#[tokio::test]
async fn pricing_from_status_webhooks_is_kept_on_the_attempt_and_counted_once_per_message() {
    let gw = TestApp::accepting().await;
    gw.on_whatsapp_and_telegram("ana").await;
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("receipt")}),
    )
    .await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    let id = n["id"].as_str().unwrap().to_string();
    let pricing = json!({"pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"},
        "conversation": {"id": "c1", "origin": {"type": "utility"}}});
    // Meta sends the pricing with every status of the message: it counts once.
    for status in ["sent", "delivered", "read"] {
        post_status(&gw, "wamid.TEST", status, pricing.clone()).await;
    }
    eventually("the receipt and the pricing land", || async {
        let (_, n) = gw.get(&format!("/v1/notifications/{id}")).await;
        n["status"] == "read" && n["attempts"][0]["pricing"].is_object()
    })
    .await;
    let (_, n) = gw.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(
        n["attempts"][0]["pricing"],
        json!({"billable": true, "category": "utility"}),
        "{n}"
    );
    // The counts are written a quarter second after the status (gathered, not one row update
    // per webhook); wait for them, then a little longer: three statuses still count one.
    eventually("the priced message is counted", || async {
        whatsapp_row(&gw).await["pricing"] != json!({})
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let row = whatsapp_row(&gw).await;
    assert_eq!(
        row["pricing"],
        json!({"utility": {"billable": 1, "free": 0}}),
        "{row}"
    );
    assert_eq!(gw.channel_state("telegram").await["pricing"], json!({}));
    let text = metrics(&gw).await;
    assert!(
        text.contains("lifeboat_priced_messages_total{channel=\"whatsapp\",category=\"utility\",billable=\"true\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn in_the_sandbox_a_paused_template_is_routed_around_and_comes_back_when_approved() {
    const KEY: &str = "sandbox-api-key";
    const ADMIN: &str = "sandbox-admin-token";
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_sandbox(dir.path()).await;
    let put = |path: String, body: Value| {
        let gw = &gw;
        async move {
            let (status, answer) = gw.send(Method::PUT, &path, Some(KEY), Some(body)).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
    };
    put(
        "/v1/contacts/ana".into(),
        json!({"whatsapp": "+48600100200", "telegram": "5551234"}),
    )
    .await;
    for channel in ["whatsapp", "telegram"] {
        put(
            format!("/v1/contacts/ana/consents/{channel}"),
            json!({"status": "granted", "scopes": ["transactional"], "source": "web_form", "evidence": "test"}),
        )
        .await;
    }
    let template_state = |state: &'static str| {
        let gw = &gw;
        async move {
            let (status, row) = gw
                .send(
                    Method::POST,
                    "/sandbox/providers/whatsapp/templates/order_shipped",
                    Some(ADMIN),
                    Some(json!({"state": state})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{row}");
            row
        }
    };
    let notify = || {
        let gw = &gw;
        async move {
            let (status, queued) = gw
                .send(
                    Method::POST,
                    "/v1/notifications",
                    Some(KEY),
                    Some(json!({"contact_id": "ana", "text": "Shipped.",
                        "whatsapp_template": template("order_shipped")})),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
            let id = queued["id"].as_str().unwrap().to_string();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (_, n) = gw
                    .send(
                        Method::GET,
                        &format!("/v1/notifications/{id}"),
                        Some(KEY),
                        None,
                    )
                    .await;
                if !matches!(n["status"].as_str(), Some("queued" | "sending")) {
                    return n;
                }
                assert!(Instant::now() < deadline, "{n}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let row = template_state("paused").await;
    assert_eq!(row["paused_templates"], json!(["order_shipped"]), "{row}");
    let n = notify().await;
    assert_eq!(trail(&n), ["whatsapp:rejected", "telegram:sent"], "{n}");
    assert_eq!(n["attempts"][0]["provider_code"], "132015", "{n}");
    let n = notify().await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:template_paused", "telegram:sent"],
        "{n}"
    );
    let (_, rows) = gw
        .send(Method::GET, "/v1/admin/channels", Some(ADMIN), None)
        .await;
    let wa = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "whatsapp")
        .unwrap();
    assert_eq!(wa["state"], "active", "{wa}");
    assert_eq!(template_row(wa, "order_shipped")["state"], "paused", "{wa}");

    // Approved again: the simulated WhatsApp tells the gateway with Meta's signed webhook.
    template_state("approved").await;
    let n = notify().await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
}

/// The admin page's WhatsApp section, rendered by the real server after a signed-in admin
/// asks for it: each template with its state and pause end, the typed restriction with its
/// end, what is left of the portfolio's limit, and the billable counts.
#[tokio::test]
async fn the_admin_page_shows_templates_restrictions_the_portfolio_left_and_billable_counts() {
    use crate::admin_page::{page, sign_in};
    let gw = Rig::accepting()
        .await
        .start_at("2026-03-01T10:00:00Z", |p, dir| {
            p.config(dir, &settings_without_cap())
        })
        .await;
    person(&gw, "ana", "+48600100200", "5551234").await;
    let (_, cookie) = sign_in(&gw).await;
    let (_, html) = page(&gw, &cookie).await;
    assert!(html.contains("id=\"templates-empty\""), "{html}");

    // Ana gets a utility template (one new person of the portfolio's 2,000), which Meta prices.
    let n = send(
        &gw,
        "ana",
        "transactional",
        json!({"whatsapp_template": template("receipt")}),
    )
    .await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
    post_status(
        &gw,
        "wamid.TEST",
        "delivered",
        json!({"pricing": {"billable": true, "pricing_model": "PMP", "category": "utility"}}),
    )
    .await;
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
        "business_capability_update",
        json!({"max_daily_conversations_per_business": "TIER_2K"}),
    )
    .await;
    post_change(
        &gw,
        "account_update",
        restriction(
            "RESTRICTED_BIZ_INITIATED_MESSAGING",
            "2026-03-01T12:00:00+0000",
        ),
    )
    .await;
    eventually("the pricing is counted", || async {
        whatsapp_row(&gw).await["pricing"]["utility"]["billable"] == 1
    })
    .await;

    let (status, html) = page(&gw, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let section = &html[html.find("<h2>WhatsApp</h2>").expect("a WhatsApp section")..];
    let row = |name: &str| -> &str {
        let at = section
            .find(&format!("<td>{name}</td>"))
            .unwrap_or_else(|| panic!("no row for {name}: {section}"));
        let start = section[..at].rfind("<tr").unwrap();
        &section[start..at + section[at..].find("</tr>").unwrap()]
    };
    let promo = row("promo/en_US");
    assert!(promo.contains("data-state=\"paused\""), "{promo}");
    // Meta's pause, named without an end: the first is 3 h.
    assert!(
        promo.contains("paused until <time datetime=\"2026-03-01T13:00"),
        "{promo}"
    );
    assert!(
        promo.contains("LOW_QUALITY") || promo.contains("PAUSED"),
        "{promo}"
    );
    let receipt = row("receipt/en_US");
    assert!(receipt.contains("data-state=\"approved\""), "{receipt}");
    assert!(
        section.contains(
            "<li class=\"restriction\" data-type=\"RESTRICTED_BIZ_INITIATED_MESSAGING\">"
        ),
        "{section}"
    );
    let restriction = &section[section.find("class=\"restriction\"").unwrap()..];
    let restriction = &restriction[..restriction.find("</li>").unwrap()];
    assert!(
        restriction.contains("until <time datetime=\"2026-03-01T12:00:00Z\">"),
        "{restriction}"
    );
    assert!(
        restriction.contains("replies inside an open 24 h window still go"),
        "{restriction}"
    );
    assert!(
        section.contains("1 of 2000 new people reached in the last 24 h"),
        "{section}"
    );
    assert!(
        section.contains("<b id=\"portfolio-left\">1999 left</b>"),
        "{section}"
    );
    assert!(section.contains("utility: 1 billable, 0 free"), "{section}");
}
