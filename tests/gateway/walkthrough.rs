//! The README walk-through, run for real: `lifeboat sandbox` is spawned on an ephemeral port
//! with its data in a temporary folder, and every request of the README's walk-through is made in
//! the same order, one to one (each step below carries the README's step number), asserting what a
//! person following the doc would see. If the doc changes, this test changes with it.
//!
//! The doc's `$LIFEBOAT` is the spawned sandbox's URL; "poll `GET /v1/notifications/$ID`" is
//! the doc's "a moment later". A second test covers the `/sandbox` controls' errors.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{trail, Gateway};

/// The sandbox's fixed demo keys, as printed at start and used in the doc.
const API_KEY: &str = "sandbox-api-key";
const ADMIN_TOKEN: &str = "sandbox-admin-token";

async fn app(gw: &Gateway, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    gw.send(method, path, Some(API_KEY), body).await
}

async fn admin(
    gw: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    gw.send(method, path, Some(ADMIN_TOKEN), body).await
}

/// `POST /v1/notifications` (202, queued), then `GET /v1/notifications/$ID` until it is no
/// longer queued or sending.
async fn send_and_look(gw: &Gateway, text: &str) -> Value {
    let (status, queued) = app(
        gw,
        Method::POST,
        "/v1/notifications",
        Some(json!({"contact_id": "ana", "text": text})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, n) = app(gw, Method::GET, &format!("/v1/notifications/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{n}");
        if !matches!(n["status"].as_str(), Some("queued" | "sending")) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after 20 s: {n}",
            n["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn received(gw: &Gateway, channel: &str) -> Vec<Value> {
    let (status, list) = admin(
        gw,
        Method::GET,
        &format!("/sandbox/providers/{channel}/received"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().expect("array").clone()
}

fn row<'a>(rows: &'a Value, channel: &str) -> &'a Value {
    rows.as_array()
        .expect("array")
        .iter()
        .find(|r| r["channel"] == channel)
        .expect("channel row")
}

#[tokio::test]
async fn the_readme_walkthrough_works_against_the_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_sandbox(dir.path()).await;

    // 1. A contact with three addresses.
    let (status, contact) = app(
        &gw,
        Method::PUT,
        "/v1/contacts/ana",
        Some(
            json!({"whatsapp": "+48600100200", "telegram": "5551234", "email": "ana@example.com"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{contact}");

    // 2. Ana agrees to WhatsApp and Telegram.
    for channel in ["whatsapp", "telegram"] {
        let (status, consent) = app(
            &gw,
            Method::PUT,
            &format!("/v1/contacts/ana/consents/{channel}"),
            Some(json!({"status": "granted", "scopes": ["transactional"], "source": "web_form", "evidence": "checkout page, order #1042"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{consent}");
    }
    // ... and the admin, who gets the alerts, on Telegram only.
    let (status, body) = app(
        &gw,
        Method::PUT,
        "/v1/contacts/admin",
        Some(json!({"telegram": "5550001"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app(
        &gw,
        Method::PUT,
        "/v1/contacts/admin/consents/telegram",
        Some(json!({"status": "granted", "scopes": ["transactional"], "source": "admin_setup"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // 3. Send a notification: it goes out on WhatsApp, and the simulated WhatsApp has it.
    let n = send_and_look(&gw, "Your order #1042 has shipped.").await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");
    let got = received(&gw, "whatsapp").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["to"], "+48600100200");
    assert_eq!(got[0]["text"], "Your order #1042 has shipped.");
    assert_eq!(
        n["attempts"][0]["provider_message_id"],
        got[0]["message_id"]
    );

    // 4. WhatsApp bans the business account.
    let (status, wa) = admin(
        &gw,
        Method::POST,
        "/sandbox/providers/whatsapp",
        Some(json!({"mode": "ban"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{wa}");
    assert_eq!(wa["mode"], "ban", "{wa}");

    // 5. Send again: it arrives on Telegram; the attempts tell the story.
    let n = send_and_look(&gw, "Your order #1043 has shipped.").await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(n["channel"], "telegram", "{n}");
    assert_eq!(
        trail(&n),
        ["whatsapp:channel_banned", "telegram:sent"],
        "{n}"
    );
    assert_eq!(n["attempts"][0]["provider_code"], "131031", "{n}");
    let got: Vec<Value> = received(&gw, "telegram")
        .await
        .into_iter()
        .filter(|m| m["to"] == "5551234")
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["text"], "Your order #1043 has shipped.");
    assert_eq!(received(&gw, "whatsapp").await.len(), 1);
    let failed_over_id = n["id"].clone();

    // 6. The app heard about it (the sandbox's own receiver, signatures verified), and the
    //    admin got one alert on Telegram.
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let (status, events) = admin(&gw, Method::GET, "/sandbox/events", None).await;
        assert_eq!(status, StatusCode::OK, "{events}");
        let events = events.as_array().expect("array").clone();
        let has = |t: &str| events.iter().any(|e| e["type"] == t);
        if has("channel.state_changed")
            && events.iter().any(|e| {
                e["type"] == "notification.failed_over"
                    && e["data"]["notification_id"] == failed_over_id
            })
        {
            break events;
        }
        assert!(Instant::now() < deadline, "events missing: {events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(events.iter().all(|e| e["verified"] == true), "{events:#?}");
    let changed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "channel.state_changed")
        .collect();
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(changed[0]["data"]["to"], "banned");
    let over = events
        .iter()
        .find(|e| {
            e["type"] == "notification.failed_over"
                && e["data"]["notification_id"] == failed_over_id
        })
        .unwrap();
    assert_eq!(over["data"]["from"], "whatsapp");
    assert_eq!(over["data"]["to"], "telegram");
    assert_eq!(over["data"]["reason"], "channel_banned");
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let got = received(&gw, "telegram").await;
        if let Some(m) = got.iter().find(|m| m["to"] == "5550001") {
            break m.clone();
        }
        assert!(Instant::now() < deadline, "no alert: {got:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.contains("whatsapp is BANNED") && text.contains("Enable"),
        "{text}"
    );

    // 7. The admin view: WhatsApp is banned.
    let (status, rows) = admin(&gw, Method::GET, "/v1/admin/channels", None).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(row(&rows, "whatsapp")["state"], "banned", "{rows}");
    assert_eq!(row(&rows, "telegram")["state"], "active", "{rows}");

    // 8. The ban is lifted: the simulated WhatsApp accepts again, and an admin enables it.
    let (status, wa) = admin(
        &gw,
        Method::POST,
        "/sandbox/providers/whatsapp",
        Some(json!({"mode": "accept"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{wa}");
    assert_eq!(wa["mode"], "accept", "{wa}");
    let (status, wa) = admin(
        &gw,
        Method::POST,
        "/v1/admin/channels/whatsapp/enable",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{wa}");
    assert_eq!(wa["state"], "active", "{wa}");

    // 9. Send again: WhatsApp carries it, and the simulated WhatsApp lists #1042 and #1044.
    let n = send_and_look(&gw, "Your order #1044 has shipped.").await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(n["channel"], "whatsapp", "{n}");
    assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");
    let got = received(&gw, "whatsapp").await;
    let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(
        texts,
        [
            "Your order #1042 has shipped.",
            "Your order #1044 has shipped."
        ]
    );

    let (status, logs) = gw.terminate().await;
    assert!(status.success(), "{logs}");
    for secret in [API_KEY, ADMIN_TOKEN] {
        assert!(!logs.contains(secret), "a key was logged:\n{logs}");
    }
}

#[tokio::test]
async fn sandbox_controls_answer_errors_in_the_api_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_sandbox(dir.path()).await;

    // No token, a wrong token: 401. The api key: 403 (the controls are an admin's).
    let (status, e) = gw.send(Method::GET, "/sandbox/providers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["error"]["code"], "unauthorized", "{e}");
    let (status, e) = gw
        .send(
            Method::POST,
            "/sandbox/providers/whatsapp",
            Some("not-the-token"),
            Some(json!({"mode": "ban"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["error"]["code"], "unauthorized", "{e}");
    let (status, e) = app(&gw, Method::GET, "/sandbox/providers", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["error"]["code"], "forbidden", "{e}");

    // An unknown channel: 404 naming it.
    let (status, e) = admin(
        &gw,
        Method::POST,
        "/sandbox/providers/sms",
        Some(json!({"mode": "ban"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["error"]["code"], "not_found", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("sms"),
        "{e}"
    );

    // A mode that doesn't exist, and reject_recipient without an address: 422 naming the field.
    let (status, e) = admin(
        &gw,
        Method::POST,
        "/sandbox/providers/line",
        Some(json!({"mode": "explode"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "mode", "{e}");
    let (status, e) = admin(
        &gw,
        Method::POST,
        "/sandbox/providers/email",
        Some(json!({"mode": "reject_recipient"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["field"], "address", "{e}");

    // Nothing changed: every provider still accepts, with nothing received.
    let (status, rows) = admin(&gw, Method::GET, "/sandbox/providers", None).await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    for channel in ["whatsapp", "telegram", "line", "email"] {
        let r = row(&rows, channel);
        assert_eq!(r["mode"], "accept", "{r}");
        assert_eq!(r["received"], 0, "{r}");
        assert!(r["url"].as_str().unwrap().contains("127.0.0.1"), "{r}");
    }
}

/// Beyond the walk-through: LINE's monthly limit and the mail server refusing one mailbox
/// reach the gateway as the real answers would (through the SMTP relay in front of the sink).
#[tokio::test]
async fn line_restriction_and_an_unknown_mailbox_fail_over_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_sandbox(dir.path()).await;
    let (status, c) = app(
        &gw,
        Method::PUT,
        "/v1/contacts/ana",
        Some(json!({"line": "U0123456789abcdef0123456789abcdef", "email": "ana@example.com"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    for channel in ["line", "email"] {
        let (status, c) = app(
            &gw,
            Method::PUT,
            &format!("/v1/contacts/ana/consents/{channel}"),
            Some(json!({"status": "granted"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{c}");
    }

    let (status, r) = admin(
        &gw,
        Method::POST,
        "/sandbox/providers/line",
        Some(json!({"mode": "restrict"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let n = send_and_look(&gw, "Your order #2001 has shipped.").await;
    assert_eq!(n["channel"], "email", "{n}");
    assert_eq!(
        trail(&n),
        [
            "whatsapp:skipped:no_address",
            "telegram:skipped:no_address",
            "line:channel_restricted",
            "email:sent"
        ],
        "{n}"
    );
    let mail = received(&gw, "email").await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["to"], "ana@example.com");
    assert!(mail[0]["text"]
        .as_str()
        .unwrap()
        .contains("Your order #2001 has shipped."));

    let (status, r) = admin(
        &gw,
        Method::POST,
        "/sandbox/providers/email",
        Some(json!({"mode": "reject_recipient", "address": "Ana@Example.com"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let n = send_and_look(&gw, "Your order #2002 has shipped.").await;
    assert_eq!(n["status"], "failed", "{n}");
    assert_eq!(
        trail(&n).last().map(String::as_str),
        Some("email:recipient_unreachable"),
        "{n}"
    );
    assert_eq!(received(&gw, "email").await.len(), 1);
    let (_, rows) = admin(&gw, Method::GET, "/v1/admin/channels", None).await;
    assert_eq!(row(&rows, "line")["state"], "restricted", "{rows}");
    assert_eq!(row(&rows, "email")["state"], "active", "{rows}");
}
