//! Routing and failover, end to end: the plan, each answer class, channel states, admin
//! switches and consent, as docs/failover.md describes them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

#[tokio::test]
async fn goes_out_on_the_first_consented_channel_and_shows_the_attempts() {
    let gw = TestApp::accepting().await;
    gw.contact("c-1")
        .whatsapp("+48600100200")
        .telegram("5551234")
        .consent("telegram", &["transactional"])
        .put()
        .await;

    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "Your order #1042 has shipped."}))
        .await;

    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(n["channel"], "telegram");
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:no_consent", "telegram:sent"],
        "{n}"
    );
    assert_eq!(n["attempts"][1]["provider_message_id"], "812");
    assert_eq!(gw.providers.sends("whatsapp").await, 0);
    let sent = gw.providers.sent("telegram").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["chat_id"], 5551234);
    assert_eq!(sent[0]["text"], "Your order #1042 has shipped.");
}

#[tokio::test]
async fn a_whatsapp_ban_moves_this_and_every_later_notification_to_telegram() {
    let gw = TestApp::accepting().await;
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(whatsapp_error(131031, "(#131031) Business Account locked")),
        )
        .with_priority(1)
        .expect(1)
        .mount(&gw.providers.whatsapp)
        .await;
    gw.on_whatsapp_and_telegram("c-1").await;

    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "one"}))
        .await;
    assert_eq!(n["status"], "sent");
    assert_eq!(n["channel"], "telegram");
    assert_eq!(trail(&n), ["whatsapp:channel_banned", "telegram:sent"]);
    assert_eq!(n["attempts"][0]["provider_code"], "131031");

    let row = gw.channel_state("whatsapp").await;
    assert_eq!(row["state"], "banned", "{row}");

    let mut later = Vec::new();
    for i in 0..5 {
        later.push(
            gw.notify(json!({"contact_id": "c-1", "text": format!("later {i}")}))
                .await,
        );
    }
    for id in later {
        let n = gw.wait_final(&id).await;
        assert_eq!(n["channel"], "telegram");
        assert_eq!(
            trail(&n),
            ["whatsapp:skipped:channel_banned", "telegram:sent"]
        );
    }
    // The ban answer was the only request WhatsApp ever got.
    assert_eq!(gw.providers.sends("whatsapp").await, 1);
    assert_eq!(gw.providers.sends("telegram").await, 6);
}

#[tokio::test]
async fn a_restriction_rests_for_its_cooldown_then_one_probe_brings_it_back() {
    let gw = TestApp::with(Settings {
        whatsapp_cooldown: "1s",
        ..Settings::default()
    })
    .await;
    whatsapp_fails(
        &gw.providers,
        1,
        400,
        368,
        "(#368) Temporarily blocked for policies violations",
        None,
    )
    .await;
    gw.on_whatsapp_and_telegram("c-1").await;

    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "one"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:channel_restricted", "telegram:sent"]);
    let row = gw.channel_state("whatsapp").await;
    assert_eq!(row["state"], "restricted", "{row}");
    assert!(row["until"].is_string(), "{row}");

    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "two"}))
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:channel_restricted", "telegram:sent"]
    );

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "three"}))
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:sent"],
        "the probe is a real send: {n}"
    );
    assert_eq!(gw.channel_state("whatsapp").await["state"], "active");
    assert_eq!(gw.providers.sends("whatsapp").await, 2);
}

#[tokio::test]
async fn a_blocked_bot_moves_only_that_notification_and_revokes_consent() {
    let gw = TestApp::accepting().await;
    Mock::given(method("POST"))
        .and(path(TG_SEND_PATH))
        .and(wiremock::matchers::body_partial_json(
            json!({"chat_id": 666}),
        ))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"
        })))
        .with_priority(1)
        .mount(&gw.providers.telegram)
        .await;
    gw.contact("blocker")
        .telegram("666")
        .email("blocker@example.com")
        .consents_to(&["transactional"])
        .put()
        .await;
    gw.contact("friend")
        .telegram("777")
        .consents_to(&["transactional"])
        .put()
        .await;

    let n = gw
        .notify_and_wait(json!({"contact_id": "blocker", "text": "hello", "subject": "Hi"}))
        .await;
    assert_eq!(n["channel"], "email", "{n}");
    assert_eq!(
        trail(&n),
        [
            "whatsapp:skipped:no_address",
            "telegram:recipient_unreachable",
            "line:skipped:no_address",
            "email:sent"
        ]
    );
    let mail = gw.providers.smtp.received();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].rcpt_to, ["blocker@example.com"]);

    // The channel stays healthy for everyone else.
    assert_eq!(gw.channel_state("telegram").await["state"], "active");
    let n = gw
        .notify_and_wait(json!({"contact_id": "friend", "text": "hello"}))
        .await;
    assert_eq!(n["channel"], "telegram");

    // The block revoked the blocker's Telegram consent, with the provider as source.
    let (_, history) = gw
        .get("/v1/contacts/blocker/consents/telegram/history")
        .await;
    let last = history["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["status"], "revoked", "{history}");
    assert_eq!(last["source"], "telegram_blocked");
    let n = gw
        .notify_and_wait(json!({"contact_id": "blocker", "text": "again"}))
        .await;
    assert_eq!(trail(&n)[1], "telegram:skipped:no_consent");
}

#[tokio::test]
async fn a_transient_error_is_retried_on_the_same_channel() {
    let gw = TestApp::accepting().await;
    whatsapp_fails(&gw.providers, 1, 500, 131000, "Something went wrong", None).await;
    gw.on_whatsapp_and_telegram("c-1").await;
    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "one"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:retry", "whatsapp:sent"], "{n}");
    assert_eq!(n["channel"], "whatsapp");
    assert_eq!(gw.providers.sends("telegram").await, 0);
}

#[tokio::test]
async fn transient_errors_past_the_retry_budget_fall_over() {
    let gw = TestApp::accepting().await;
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream down"))
        .with_priority(1)
        .mount(&gw.providers.whatsapp)
        .await;
    gw.on_whatsapp_and_telegram("c-1").await;
    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "one"}))
        .await;
    assert_eq!(
        trail(&n),
        [
            "whatsapp:retry",
            "whatsapp:retry",
            "whatsapp:retry",
            "telegram:sent"
        ],
        "routing.retry.attempts = 3: {n}"
    );
}

#[tokio::test]
async fn a_short_throttle_waits_and_a_long_one_falls_over() {
    let gw = TestApp::accepting().await;
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .and(wiremock::matchers::body_partial_json(
            json!({"to": "+48600100200"}),
        ))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(whatsapp_error(130429, "(#130429) Rate limit hit")),
        )
        .with_priority(1)
        .up_to_n_times(1)
        .mount(&gw.providers.whatsapp)
        .await;
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .and(wiremock::matchers::body_partial_json(
            json!({"to": "+48600999999"}),
        ))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "60")
                .set_body_json(whatsapp_error(
                    131056,
                    "(#131056) (Business Account, Consumer Account) pair rate limit hit",
                )),
        )
        .with_priority(1)
        .mount(&gw.providers.whatsapp)
        .await;
    gw.on_whatsapp_and_telegram("short").await;
    gw.contact("long")
        .whatsapp("+48600999999")
        .telegram("5559999")
        .consents_to(&["transactional"])
        .put()
        .await;

    // 1 s is within max_wait (2 s): the notification waits and goes on WhatsApp.
    let n = gw
        .notify_and_wait(json!({"contact_id": "short", "text": "one"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:throttled", "whatsapp:sent"], "{n}");

    // 60 s is past max_wait: this one falls over to Telegram at once.
    let n = gw
        .notify_and_wait(json!({"contact_id": "long", "text": "two"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:throttled", "telegram:sent"], "{n}");
    // The pair limit concerns one recipient: WhatsApp stays in rotation for others.
    assert_ne!(gw.channel_state("whatsapp").await["state"], "banned");
    let n = gw
        .notify_and_wait(json!({"contact_id": "short", "text": "three"}))
        .await;
    assert_eq!(n["channel"], "whatsapp", "{n}");
}

#[tokio::test]
async fn admin_disable_and_enable_reroute_at_once() {
    let gw = TestApp::accepting().await;
    gw.on_whatsapp_and_telegram("c-1").await;

    let (status, row) = gw
        .disable_channel("whatsapp", "ban appeal in progress")
        .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["state"], "disabled");
    assert!(row["reason"]
        .as_str()
        .unwrap()
        .contains("ban appeal in progress"));

    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "one"}))
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:channel_disabled", "telegram:sent"]
    );

    let (status, row) = gw.enable_channel("whatsapp").await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["state"], "active");
    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "two"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:sent"]);

    // An app's api key cannot use the admin API, and the admin token is not an api key.
    let (status, body) = gw
        .send(
            reqwest::Method::GET,
            "/v1/admin/channels",
            Some(API_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = gw
        .send(
            reqwest::Method::POST,
            "/v1/admin/channels/telegram/disable",
            Some(API_KEY),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(gw.channel_state("telegram").await["state"], "active");
}

#[tokio::test]
async fn no_consent_or_no_marketing_scope_is_skipped_without_a_provider_call() {
    let gw = TestApp::accepting().await;
    gw.contact("nobody")
        .whatsapp("+48600100200")
        .telegram("5551234")
        .put()
        .await;
    gw.contact("tx-only")
        .whatsapp("+48600100201")
        .telegram("5551235")
        .consents_to(&["transactional"])
        .put()
        .await;

    let n = gw
        .notify_and_wait(json!({"contact_id": "nobody", "text": "hi"}))
        .await;
    assert_eq!(n["status"], "failed");
    assert_eq!(
        trail(&n),
        [
            "whatsapp:skipped:no_consent",
            "telegram:skipped:no_consent",
            "line:skipped:no_address",
            "email:skipped:no_address"
        ]
    );
    let n = gw
        .notify_and_wait(
            json!({"contact_id": "tx-only", "text": "Sale!", "category": "marketing",
                "channels": ["whatsapp", "telegram"]}),
        )
        .await;
    assert_eq!(n["status"], "failed");
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:no_consent", "telegram:skipped:no_consent"]
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 0);
    assert_eq!(gw.providers.sends("telegram").await, 0);
}

#[tokio::test]
async fn line_retries_reuse_the_retry_key() {
    let gw = TestApp::accepting().await;
    Mock::given(method("POST"))
        .and(path(LINE_PUSH_PATH))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"message": "An error occurred in the server"})),
        )
        .with_priority(1)
        .up_to_n_times(1)
        .mount(&gw.providers.line)
        .await;
    gw.contact("c-1")
        .line("U4af4980629a1b2c3d4e5f60718293a4b")
        .consents_to(&["transactional"])
        .put()
        .await;
    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "hi"}))
        .await;
    assert_eq!(n["channel"], "line", "{n}");
    let requests = gw.providers.line.received_requests().await.unwrap();
    let keys: Vec<_> = requests
        .iter()
        .map(|r| {
            r.headers
                .get("x-line-retry-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "a retried push must reuse its key");
}
