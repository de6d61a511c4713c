//! The guardrails (docs/guardrails.md) end to end: the marketing frequency cap, quiet hours in the
//! contact's time zone (the gateway's clock moved through `LIFEBOAT_TEST_CLOCK_FILE`), pacing,
//! WhatsApp's business-initiated tier and 24 h service window, the risk monitor's marketing
//! pause, and the policy preview. Each test writes its own `[policy]`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::harness::*;

fn settings(policy: &str) -> Settings {
    Settings {
        policy: format!("[policy]\n{policy}"),
        ..Settings::default()
    }
}

async fn start(rig: Rig, policy: &str) -> TestApp {
    rig.start_on(|providers, dir| providers.config(dir, &settings(policy)))
        .await
}

fn marketing(contact: &str, channels: &[&str]) -> Value {
    json!({"contact_id": contact, "category": "marketing", "text": "Summer sale: 20% off",
        "channels": channels})
}

/// Accepts and returns the final state of every notification, in order.
async fn all_final(gw: &Gateway, bodies: Vec<Value>) -> Vec<Value> {
    let mut ids = Vec::new();
    for b in bodies {
        ids.push(gw.notify(b).await);
    }
    let mut out = Vec::new();
    for id in ids {
        out.push(gw.wait_final(&id).await);
    }
    out
}

#[tokio::test]
async fn the_fourth_marketing_message_in_a_day_is_skipped_but_transactional_goes() {
    let rig = Rig::accepting().await;
    let gw = start(
        rig,
        "quiet_hours = \"off\"\n[policy.telegram]\nper_chat_rate = 100\n",
    )
    .await;
    gw.contact("ana")
        .telegram("5551234")
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;
    // All four at once: sends in flight hold their place under the cap.
    let done = all_final(
        &gw,
        (0..4).map(|_| marketing("ana", &["telegram"])).collect(),
    )
    .await;
    let sent = done.iter().filter(|n| n["status"] == "sent").count();
    assert_eq!(sent, 3, "{done:?}");
    let capped: Vec<&Value> = done.iter().filter(|n| n["status"] == "failed").collect();
    assert_eq!(capped.len(), 1, "{done:?}");
    assert_eq!(trail(capped[0]), ["telegram:skipped:cap_reached"]);

    let n = gw
        .notify_and_wait(
            json!({"contact_id": "ana", "text": "Your order has shipped.",
            "channels": ["telegram"]}),
        )
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(gw.providers.sends("telegram").await, 4);
}

#[tokio::test]
async fn marketing_at_23_in_warsaw_waits_until_8_there_then_goes() {
    // 23:00 in Warsaw (CEST, UTC+2).
    let gw = Rig::accepting()
        .await
        .start_at("2025-06-10T21:00:00Z", |providers, dir| {
            providers.config(dir, &settings(""))
        })
        .await;
    gw.contact("ana")
        .telegram("5551234")
        .timezone("Europe/Warsaw")
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;

    let id = gw.notify(marketing("ana", &["telegram"])).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        let (_, n) = gw.get(&format!("/v1/notifications/{id}")).await;
        if !n["attempts"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(n["status"], "queued", "{n}");
    assert_eq!(trail(&n), ["telegram:deferred:quiet_hours"], "{n}");
    let next: chrono::DateTime<chrono::Utc> =
        n["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        next.to_rfc3339(),
        "2025-06-11T06:00:00+00:00",
        "08:00 in Warsaw"
    );

    // Transactional is not held by quiet hours.
    let t = gw
        .notify(json!({"contact_id": "ana", "text": "Your code is 1234", "channels": ["telegram"]}))
        .await;
    assert_eq!(gw.wait_final(&t).await["status"], "sent");
    assert_eq!(gw.providers.sends("telegram").await, 1);

    gw.move_clock("2025-06-11T06:00:01Z").await;
    let n = gw.wait_final(&id).await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(
        trail(&n),
        ["telegram:deferred:quiet_hours", "telegram:sent"]
    );
    assert_eq!(gw.providers.sends("telegram").await, 2);
}

/// Answers like `accept_all` and notes when each request arrived.
struct Stamped(Arc<Mutex<Vec<Instant>>>);

impl Respond for Stamped {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "result": {"message_id": 812, "date": 1_700_000_000,
                "chat": {"id": 5551234, "type": "private", "first_name": "Ana"}, "text": "x"}
        }))
    }
}

#[tokio::test]
async fn pacing_spreads_a_burst_at_the_configured_rate() {
    let rig = Rig::new().await;
    let times = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path(TG_SEND_PATH))
        .respond_with(Stamped(times.clone()))
        .mount(&rig.providers.telegram)
        .await;
    let gw = start(rig, "[policy.telegram]\nrate = 20\n").await;
    let mut bodies = Vec::new();
    for i in 0..60 {
        let id = format!("c{i}");
        gw.contact(&id)
            .telegram(format!("{}", 5_550_000 + i))
            .consents_to(&["transactional"])
            .put()
            .await;
        bodies.push(
            json!({"contact_id": id, "text": "Your order has shipped.", "channels": ["telegram"]}),
        );
    }
    let done = all_final(&gw, bodies).await;
    assert!(
        done.iter().all(|n| n["status"] == "sent"),
        "nothing is dropped"
    );
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 60);
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    // 20 go at once (one second's worth), the other 40 at 20/s: 2 s. Only a lower bound.
    assert!(spread >= Duration::from_millis(1800), "spread {spread:?}");
}

fn template() -> Value {
    json!({"name": "summer_sale", "language": "en"})
}

#[tokio::test]
async fn past_the_whatsapp_tier_marketing_falls_over_to_the_next_channel() {
    let rig = Rig::accepting().await;
    let gw = start(rig, "quiet_hours = \"off\"\n[policy.whatsapp]\ntier = 5\n").await;
    let mut bodies = Vec::new();
    for i in 0..6 {
        let id = format!("p{i}");
        gw.contact(&id)
            .whatsapp(format!("+4860010020{i}"))
            .telegram(format!("{}", 5_551_000 + i))
            .consents_to(&["marketing"])
            .put()
            .await;
        let mut b = marketing(&id, &["whatsapp", "telegram"]);
        b["whatsapp_template"] = template();
        bodies.push(b);
    }
    let done = all_final(&gw, bodies).await;
    let on = |c: &str| done.iter().filter(|n| n["channel"] == c).count();
    assert_eq!((on("whatsapp"), on("telegram")), (5, 1), "{done:?}");
    let over = done.iter().find(|n| n["channel"] == "telegram").unwrap();
    assert_eq!(
        trail(over),
        ["whatsapp:skipped:cap_reached", "telegram:sent"]
    );
    // Outside the service window, WhatsApp got the template.
    let sent = bodies_of(&gw.providers).await;
    assert!(sent.iter().all(|b| b["type"] == "template"), "{sent:?}");
}

async fn bodies_of(providers: &Providers) -> Vec<Value> {
    providers.sent("whatsapp").await
}

/// Meta's inbound text message from `wa_id`, signed.
async fn wa_inbound(gw: &Gateway, wa_id: &str) {
    let body = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "419561257915477", "changes": [{
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": WA_PHONE_ID},
                "contacts": [{"profile": {"name": "Ana"}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": "wamid.IN1", "timestamp": chrono::Utc::now().timestamp().to_string(),
                    "type": "text", "text": {"body": "hi, is my order ready?"}}]
            },
            "field": "messages"
        }]}]
    }))
    .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(WA_APP_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let resp = gw
        .raw(Method::POST, "/webhooks/whatsapp")
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_service_window_picks_free_text_the_template_or_skips() {
    let rig = Rig::accepting().await;
    let gw = start(rig, "quiet_hours = \"off\"\n").await;
    gw.contact("ana")
        .whatsapp("+48600100200")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;
    let order = |tpl: bool| {
        let mut b = json!({"contact_id": "ana", "text": "Your order has shipped.",
            "channels": ["whatsapp", "telegram"]});
        if tpl {
            b["whatsapp_template"] = template();
        }
        b
    };
    // Ana never wrote: no free-form text, never a 131047.
    let n = gw.wait_final(&gw.notify(order(false)).await).await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:outside_window", "telegram:sent"],
        "{n}"
    );
    let n = gw.wait_final(&gw.notify(order(true)).await).await;
    assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");
    assert_eq!(bodies_of(&gw.providers).await[0]["type"], "template");

    // Ana writes: within 24 h free-form text goes, the template is dropped.
    wa_inbound(&gw, "48600100200").await;
    let n = gw.wait_final(&gw.notify(order(true)).await).await;
    assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");
    let sent = bodies_of(&gw.providers).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["type"], "text", "{sent:?}");
    assert_eq!(sent[1]["text"]["body"], "Your order has shipped.");
}

#[tokio::test]
async fn blocks_pause_a_channels_marketing_and_transactional_goes_on() {
    let rig = Rig::accepting().await;
    for chat in [5_552_000, 5_552_001, 5_552_002] {
        Mock::given(method("POST"))
            .and(path(TG_SEND_PATH))
            .and(body_partial_json(json!({"chat_id": chat})))
            .respond_with(ResponseTemplate::new(403).set_body_json(json!({
                "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"
            })))
            .with_priority(1)
            .mount(&rig.providers.telegram)
            .await;
    }
    let gw = start(
        rig,
        "quiet_hours = \"off\"\n[policy.risk]\nwindow = 20\nmin_sample = 5\nthreshold = 0.4\n",
    )
    .await;
    let mut bodies = Vec::new();
    for i in 0..11 {
        let id = format!("r{i}");
        gw.contact(&id)
            .telegram(format!("{}", 5_552_000 + i))
            .consents_to(&["transactional", "marketing"])
            .put()
            .await;
        bodies.push(marketing(&id, &["telegram"]));
    }
    // r10 is kept for after the pause. Seven clean sends first, then three blocks: 3/7 is
    // over 0.4, 2/7 is not, so the pause comes with the last block.
    let last = bodies.pop().unwrap();
    let blocked = bodies.drain(..3).collect();
    let done = all_final(&gw, bodies).await;
    assert!(done.iter().all(|n| n["status"] == "sent"), "{done:?}");
    let done = all_final(&gw, blocked).await;
    assert!(done.iter().all(|n| n["status"] == "failed"), "{done:?}");
    assert!(
        done.iter()
            .all(|n| trail(n) == ["telegram:recipient_unreachable"]),
        "{done:?}"
    );

    // Marketing sends reach the monitor's record within a quarter second (gathered, not one
    // row update per send).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let row = loop {
        let row = gw.channel_state("telegram").await;
        if row["marketing"]["figures"]["sends"] == 7 || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(row["marketing"]["paused"], true, "{row}");
    assert_eq!(row["marketing"]["figures"]["sends"], 7, "{row}");
    assert_eq!(row["marketing"]["figures"]["signals"], 3, "{row}");
    assert!(
        row["marketing"]["reason"]
            .as_str()
            .unwrap()
            .contains("blocks"),
        "{row}"
    );
    assert_eq!(
        row["state"], "active",
        "transactional keeps the channel: {row}"
    );

    let n = gw.wait_final(&gw.notify(last).await).await;
    assert_eq!(trail(&n), ["telegram:skipped:channel_restricted"], "{n}");
    let t = gw
        .notify(json!({"contact_id": "r10", "text": "Your order has shipped.", "channels": ["telegram"]}))
        .await;
    assert_eq!(gw.wait_final(&t).await["status"], "sent");

    // The admin lifts it.
    let (status, row) = gw
        .admin_post("/v1/admin/channels/telegram/marketing/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["marketing"]["paused"], false, "{row}");
    let n = gw
        .wait_final(&gw.notify(marketing("r10", &["telegram"])).await)
        .await;
    assert_eq!(n["status"], "sent", "{n}");
}

#[tokio::test]
async fn the_preview_shows_the_plan_with_reasons_and_sends_nothing() {
    let rig = Rig::accepting().await;
    let gw = start(rig, "quiet_hours = \"off\"\nmarketing_per_day = 1\n").await;
    gw.contact("ana")
        .whatsapp("+48600100200")
        .telegram("5551234")
        .email("ana@example.com")
        .consent("whatsapp", &["marketing"])
        .consent("telegram", &["marketing"])
        .put()
        .await;
    let preview = |category: &'static str| {
        let gw = &gw;
        async move {
            let (status, body) = gw
                .admin_get(&format!(
                    "/v1/admin/policy/preview?contact_id=ana&category={category}"
                ))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    for _ in 0..3 {
        let p = preview("marketing").await;
        let plan: Vec<String> = p["plan"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}",
                    r["channel"].as_str().unwrap(),
                    r["decision"].as_str().unwrap(),
                    r["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            plan,
            [
                "whatsapp:skip:outside_window",
                "telegram:send:",
                "line:skip:no_address",
                "email:skip:no_consent"
            ],
            "{p}"
        );
        assert_eq!(
            p["outcome"],
            json!({"action": "send", "channel": "telegram"})
        );
    }
    assert_eq!(gw.providers.sends("telegram").await, 0);
    assert_eq!(gw.providers.sends("whatsapp").await, 0);

    // The real thing agrees, and its send counts against the cap (the previews did not).
    let n = gw
        .notify_and_wait(json!({"contact_id": "ana", "category": "marketing", "text": "Sale"}))
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:outside_window", "telegram:sent"],
        "{n}"
    );
    let p = preview("marketing").await;
    assert_eq!(p["plan"][1]["reason"], "cap_reached", "{p}");
    assert_eq!(p["outcome"]["action"], "fail", "{p}");
    let p = preview("transactional").await;
    assert_eq!(p["plan"][1]["reason"], "no_consent", "{p}");

    // Admin only; unknown contacts are 404.
    let (status, _) = gw
        .send(
            Method::GET,
            "/v1/admin/policy/preview?contact_id=ana",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = gw
        .admin_get("/v1/admin/policy/preview?contact_id=nobody")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
