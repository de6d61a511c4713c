//! The dispatcher's bounds: durations a request may ask for, and how long one notification
//! waits on a throttled channel that never says for how long (issue 20, points 2 and 3).

use lifeboat_email::sink::Stage;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

/// How many of `n`'s attempts are `channel:outcome`.
fn count(n: &Value, what: &str) -> usize {
    trail(n).iter().filter(|t| *t == what).count()
}

/// The admin table's `counts` for `channel`.
async fn counts(gw: &Gateway, channel: &str) -> (u64, u64) {
    let row = gw.channel_state(channel).await;
    (
        row["counts"]["sent_1h"].as_u64().expect("sent_1h"),
        row["counts"]["failed_1h"].as_u64().expect("failed_1h"),
    )
}

#[tokio::test]
async fn durations_past_thirty_days_are_refused_and_nothing_is_stored() {
    let gw = TestApp::accepting().await;
    gw.on_whatsapp_and_telegram("c-1").await;
    for (field, value) in [
        ("fallback_after", "300000y"),
        ("fallback_after", "31days"),
        ("expires_in", "300000y"),
    ] {
        let body = json!({"contact_id": "c-1", "text": "hi", field: value});
        let (status, answer) = gw.post("/v1/notifications", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(answer["error"]["code"], "validation_failed", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (_, page) = gw.get("/v1/notifications?contact_id=c-1").await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(0), "{page}");
    assert_eq!(gw.providers.sends("whatsapp").await, 0);

    // Thirty days is still fine, and the gateway keeps working.
    let n = gw
        .notify_and_wait(
            json!({"contact_id": "c-1", "text": "hi", "fallback_after": "30days",
                "expires_in": "30days"}),
        )
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    let (status, _) = gw.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn line_429_without_retry_after_falls_over_within_max_wait_and_counts_once() {
    let gw = TestApp::accepting().await;
    Mock::given(method("POST"))
        .and(path(LINE_PUSH_PATH))
        .respond_with(ResponseTemplate::new(429).set_body_json(
            json!({"message": "The API rate limit has been exceeded. Try again later."}),
        ))
        .with_priority(1)
        .mount(&gw.providers.line)
        .await;
    // max_wait = 2 s (Settings::default()); LINE names no wait, so each try waits 1 s.
    gw.contact("c-line")
        .line("U4af4980629a1b2c3d4e5f60718293a4b")
        .email("ana@example.com")
        .consents_to(&["transactional"])
        .put()
        .await;
    let n = gw
        .notify_and_wait(
            json!({"contact_id": "c-line", "text": "hi", "subject": "Hi",
                "channels": ["line", "email"]}),
        )
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(n["channel"], "email", "{n}");
    // 1 s waits within a 2 s budget: at most three tries on LINE, then email.
    let throttled = count(&n, "line:throttled");
    assert!((1..=3).contains(&throttled), "{n}");
    assert_eq!(trail(&n).last().map(String::as_str), Some("email:sent"));
    assert_eq!(gw.providers.sends("line").await, throttled);
    assert_eq!(gw.providers.smtp.received().len(), 1);
    // One notification failed on LINE, however many times LINE said 429.
    assert_eq!(counts(&gw, "line").await, (0, 1));
    assert_eq!(counts(&gw, "email").await, (1, 0));
    let metrics = gw
        .raw(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"lifeboat_channel_results_total{channel="line",result="failed"} 1"#,
        r#"lifeboat_channel_results_total{channel="email",result="sent"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn smtp_450_relay_limit_on_every_try_falls_over_and_counts_once() {
    let gw = TestApp::accepting().await;
    gw.providers.smtp.reply_at(
        Stage::MailFrom,
        "450 4.2.1 Peak SMTP relay limit exceeded for this customer.",
    );
    gw.contact("c-mail")
        .email("ana@example.com")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;
    let n = gw
        .notify_and_wait(
            json!({"contact_id": "c-mail", "text": "hi", "subject": "Hi",
                "channels": ["email", "telegram"]}),
        )
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(n["channel"], "telegram", "{n}");
    let throttled = count(&n, "email:throttled");
    assert!((1..=3).contains(&throttled), "{n}");
    assert!(gw.providers.smtp.received().is_empty());
    assert_eq!(counts(&gw, "email").await, (0, 1));
    assert_eq!(counts(&gw, "telegram").await, (1, 0));
}

#[tokio::test]
async fn a_retry_after_of_u64_max_seconds_falls_over_and_the_gateway_keeps_working() {
    let gw = TestApp::accepting().await;
    Mock::given(method("POST"))
        .and(path(LINE_PUSH_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", u64::MAX.to_string().as_str())
                .set_body_json(
                    json!({"message": "The API rate limit has been exceeded. Try again later."}),
                ),
        )
        .with_priority(1)
        .mount(&gw.providers.line)
        .await;
    gw.contact("c-line")
        .line("U4af4980629a1b2c3d4e5f60718293a4b")
        .email("ana@example.com")
        .consents_to(&["transactional"])
        .put()
        .await;
    let body = json!({"contact_id": "c-line", "text": "hi", "subject": "Hi", "channels": ["line", "email"]});
    let n = gw.wait_final(&gw.notify(body.clone()).await).await;
    assert_eq!(trail(&n), ["line:throttled", "email:sent"], "{n}");
    // LINE rests as long as a timestamp can say; the next notification goes around it.
    let line = gw.channel_state("line").await;
    assert_eq!(line["state"], "throttled", "{line}");
    assert_eq!(line["until"], "9999-12-31T23:59:59Z", "{line}");
    let n = gw.wait_final(&gw.notify(body).await).await;
    assert_eq!(trail(&n), ["line:throttled", "email:sent"], "{n}");
    assert_eq!(gw.providers.sends("line").await, 1);
}
