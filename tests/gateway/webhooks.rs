//! Consent from the people themselves, end to end: WhatsApp and LINE webhooks (signatures,
//! opt-in tokens, STOP, unfollow), email one-click unsubscribe (RFC 8058), the opt-out line in
//! marketing messages, and erasure.

use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

pub(crate) const LINE_USER: &str = "U4af4980629aaaaaaaaaaaaaaaaaaaaaa";

fn hmac(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Meta's documented inbound text message ("Text Message" example), from `wa_id`, sent now.
pub(crate) fn wa_text(wa_id: &str, message_id: &str, text: &str) -> Vec<u8> {
    wa_text_at(wa_id, message_id, text, chrono::Utc::now().timestamp())
}

/// [`wa_text`] with Meta's `timestamp` (Unix seconds): when the person sent it.
pub(crate) fn wa_text_at(wa_id: &str, message_id: &str, text: &str, sent: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "419561257915477", "changes": [{
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": message_id, "timestamp": sent.to_string(),
                    "type": "text", "text": {"body": text}}]
            },
            "field": "messages"
        }]}]
    }))
    .unwrap()
}

/// Posts a WhatsApp webhook; `signature` None sends no header.
pub(crate) async fn post_wa(
    gw: &Gateway,
    body: &[u8],
    signature: Option<String>,
) -> (StatusCode, Value) {
    let mut req = gw
        .raw(Method::POST, "/webhooks/whatsapp")
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("X-Hub-Signature-256", s);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) fn wa_signature(body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(WA_APP_SECRET, body)))
}

pub(crate) async fn post_line(
    gw: &Gateway,
    body: &[u8],
    signature: Option<String>,
) -> (StatusCode, Value) {
    let mut req = gw
        .raw(Method::POST, "/webhooks/line")
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("X-Line-Signature", s);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) fn line_signature(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac(LINE_CHANNEL_SECRET, body))
}

pub(crate) fn line_events(events: Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"destination": "U0123456789abcdef0123456789abcdef", "events": events}),
    )
    .unwrap()
}

pub(crate) fn line_event(kind: &str, event_id: &str, extra: Value) -> Value {
    let mut event = json!({
        "type": kind, "mode": "active", "timestamp": 1_700_000_000_000_i64,
        "source": {"type": "user", "userId": LINE_USER},
        "webhookEventId": event_id,
        "deliveryContext": {"isRedelivery": false}
    });
    for (k, v) in extra.as_object().unwrap() {
        event[k] = v.clone();
    }
    event
}

/// An opt-in token for `contact` through the API.
async fn optin_token(gw: &Gateway, contact: &str, scopes: Value) -> String {
    let (status, body) = gw
        .post(
            &format!("/v1/contacts/{contact}/optin-links"),
            json!({ "scopes": scopes }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_string()
}

pub(crate) async fn contact(gw: &Gateway, id: &str) -> Value {
    let (status, c) = gw.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    c
}

pub(crate) async fn history(gw: &Gateway, id: &str, channel: &str) -> Vec<Value> {
    let (status, h) = gw
        .get(&format!("/v1/contacts/{id}/consents/{channel}/history"))
        .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    h["history"].as_array().unwrap().clone()
}

/// Waits until the WhatsApp mock got `n` sends, then a little longer to see no more come.
pub(crate) async fn wa_sends_settle_at(providers: &Providers, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while providers.sends("whatsapp").await < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = providers.sent("whatsapp").await;
    assert_eq!(sent.len(), n, "{sent:?}");
    sent
}

pub(crate) async fn start(rig: Rig, settings: &Settings) -> TestApp {
    rig.start_on(|providers, dir| {
        providers.config(dir, settings).replace(
            "[server]\n",
            "[server]\npublic_url = \"https://lifeboat.test/\"\nbusiness_name = \"Tom & Jerry <Shop>\"\n",
        )
    })
    .await
}

#[tokio::test]
async fn whatsapp_handshake_echoes_the_challenge_only_for_the_verify_token() {
    let gw = start(Rig::new().await, &Settings::default()).await;

    let resp = gw
        .raw(
            Method::GET,
            &format!("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={WA_VERIFY_TOKEN}&hub.challenge=1158201444"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(resp.text().await.unwrap(), "1158201444");

    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong-token&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=wa-verify-token-1&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        "",
    ] {
        let (status, body) = gw
            .send(
                Method::GET,
                &format!("/webhooks/whatsapp?{query}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{query}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
    }
}

#[tokio::test]
async fn whatsapp_start_binds_the_number_and_grants_consent_only_when_signed() {
    let gw = start(Rig::new().await, &Settings::default()).await;
    gw.contact("ana").email("ana@example.com").put().await;
    let token = optin_token(&gw, "ana", json!(["transactional", "marketing"])).await;
    let body = wa_text("16505551234", "wamid.START1", &format!("start {token}"));

    // Unsigned, wrongly signed, signed with another secret, signed over other bytes: refused.
    let mut other_secret = Hmac::<Sha256>::new_from_slice(b"not-the-app-secret").unwrap();
    other_secret.update(&body);
    for signature in [
        None,
        Some("sha256=00".to_string()),
        Some(format!(
            "sha256={}",
            hex::encode(other_secret.finalize().into_bytes())
        )),
        Some(wa_signature(b"{}")),
        Some(wa_signature(&body).replace("sha256=", "")),
    ] {
        let (status, answer) = post_wa(&gw, &body, signature.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let c = contact(&gw, "ana").await;
    assert!(c.get("whatsapp").is_none(), "{c}");
    assert!(c["consents"].get("whatsapp").is_none(), "{c}");
    assert!(history(&gw, "ana", "whatsapp").await.is_empty());

    let (status, answer) = post_wa(&gw, &body, Some(wa_signature(&body))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let c = contact(&gw, "ana").await;
    assert_eq!(c["whatsapp"], "+16505551234", "{c}");
    assert_eq!(c["consents"]["whatsapp"]["status"], "granted", "{c}");
    assert_eq!(
        c["consents"]["whatsapp"]["scopes"],
        json!(["marketing", "transactional"])
    );
    assert!(c["last_inbound"]["whatsapp"].is_string(), "{c}");
    let h = history(&gw, "ana", "whatsapp").await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["source"], "whatsapp_start");
    assert_eq!(h[0]["evidence"], "wamid.START1");

    // Meta redelivers: nothing is applied twice.
    let (status, _) = post_wa(&gw, &body, Some(wa_signature(&body))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history(&gw, "ana", "whatsapp").await.len(), 1);

    // A signed body that is not a webhook payload: 400, and its content is not logged.
    let junk = br#"{"entry": "+16505551234 private words"}"#;
    let (status, answer) = post_wa(&gw, junk, Some(wa_signature(junk))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json");

    // An ACCOUNT_VIOLATION (recorded, no state change) and a status for a message Lifeboat
    // never sent: both answered 200, and WhatsApp stays in rotation.
    let other = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "account_update", "value": {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SCAM"}}},
        {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [
            {"id": "wamid.X", "status": "delivered", "timestamp": "1750000000", "recipient_id": "16505551234"}]}}
    ]}]}))
    .unwrap();
    let (status, _) = post_wa(&gw, &other, Some(wa_signature(&other))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gw.channel_state("whatsapp").await["state"], "active");

    let (_, logs, _) = gw.terminate().await;
    assert!(!logs.contains("private words"), "{logs}");
    assert!(!logs.contains(WA_APP_SECRET), "{logs}");
}

#[tokio::test]
async fn whatsapp_stop_words_revoke_and_confirm_once() {
    let gw = start(Rig::accepting().await, &Settings::default()).await;
    gw.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;
    gw.contact("budi")
        .whatsapp("+6281234567890")
        .consents_to(&["transactional"])
        .put()
        .await;

    // An ordinary message only records the time.
    let hello = wa_text(
        "48600100200",
        "wamid.HELLO",
        "Does it come in another color?",
    );
    let (status, _) = post_wa(&gw, &hello, Some(wa_signature(&hello))).await;
    assert_eq!(status, StatusCode::OK);
    let c = contact(&gw, "ana").await;
    assert!(c["last_inbound"]["whatsapp"].is_string(), "{c}");
    assert_eq!(c["consents"]["whatsapp"]["status"], "granted");

    let stop = wa_text("48600100200", "wamid.STOP1", " STOP ");
    let (status, _) = post_wa(&gw, &stop, Some(wa_signature(&stop))).await;
    assert_eq!(status, StatusCode::OK);
    let c = contact(&gw, "ana").await;
    assert_eq!(c["consents"]["whatsapp"]["status"], "revoked", "{c}");
    assert_eq!(c["consents"]["whatsapp"]["scopes"], json!([]));
    let h = history(&gw, "ana", "whatsapp").await;
    assert_eq!(h.last().unwrap()["source"], "whatsapp_stop");
    assert_eq!(h.last().unwrap()["evidence"], "wamid.STOP1");

    // Exactly one confirmation, also when Meta redelivers the same message.
    let (status, _) = post_wa(&gw, &stop, Some(wa_signature(&stop))).await;
    assert_eq!(status, StatusCode::OK);
    let sent = wa_sends_settle_at(&gw.providers, 1).await;
    assert_eq!(sent[0]["to"], "+48600100200", "{}", sent[0]);
    assert_eq!(sent[0]["type"], "text");
    let reply = sent[0]["text"]["body"].as_str().unwrap();
    assert!(reply.contains("unsubscribed"), "{reply}");
    assert_eq!(history(&gw, "ana", "whatsapp").await.len(), h.len());

    // Indonesian, any case.
    let berhenti = wa_text("6281234567890", "wamid.STOP2", "Berhenti");
    let (status, _) = post_wa(&gw, &berhenti, Some(wa_signature(&berhenti))).await;
    assert_eq!(status, StatusCode::OK);
    let c = contact(&gw, "budi").await;
    assert_eq!(c["consents"]["whatsapp"]["status"], "revoked", "{c}");
    assert!(c["last_inbound"]["whatsapp"].is_string(), "{c}");
    let sent = wa_sends_settle_at(&gw.providers, 2).await;
    assert_eq!(sent[1]["to"], "+6281234567890");

    // A STOP from a number nobody has changes nothing and gets no reply.
    let stranger = wa_text("15550009999", "wamid.STOP3", "stop");
    let (status, _) = post_wa(&gw, &stranger, Some(wa_signature(&stranger))).await;
    assert_eq!(status, StatusCode::OK);
    wa_sends_settle_at(&gw.providers, 2).await;
}

#[tokio::test]
async fn line_token_grants_unfollow_revokes_and_signatures_are_checked() {
    let gw = start(Rig::new().await, &Settings::default()).await;
    gw.contact("ken").email("ken@example.com").put().await;
    let token = optin_token(&gw, "ken", json!(["transactional"])).await;
    let message = line_events(json!([line_event(
        "message",
        "01HMSG0000000000000000000A",
        json!({"replyToken": "r1", "message": {"id": "1", "type": "text", "quoteToken": "q", "text": format!("Hi, my code is {token}.")}})
    )]));

    for signature in [
        None,
        Some(line_signature(b"{}")),
        Some("bm90IGl0".to_string()),
    ] {
        let (status, answer) = post_line(&gw, &message, signature.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let c = contact(&gw, "ken").await;
    assert!(
        c.get("line").is_none() && c["consents"].get("line").is_none(),
        "{c}"
    );

    let (status, answer) = post_line(&gw, &message, Some(line_signature(&message))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let c = contact(&gw, "ken").await;
    assert_eq!(c["line"], LINE_USER, "{c}");
    assert_eq!(c["consents"]["line"]["status"], "granted", "{c}");
    assert!(c["last_inbound"]["line"].is_string(), "{c}");
    let h = history(&gw, "ken", "line").await;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["source"], "line_optin");
    assert_eq!(h[0]["evidence"], "01HMSG0000000000000000000A");

    // A follow is not consent; it changes nothing.
    let follow = line_events(json!([line_event(
        "follow",
        "01HFOL0000000000000000000A",
        json!({"replyToken": "r2", "follow": {"isUnblocked": true}})
    )]));
    let (status, _) = post_line(&gw, &follow, Some(line_signature(&follow))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history(&gw, "ken", "line").await.len(), 1);

    let unfollow = line_events(json!([line_event(
        "unfollow",
        "01HUNF0000000000000000000A",
        json!({})
    )]));
    let (status, _) = post_line(&gw, &unfollow, Some(line_signature(&unfollow))).await;
    assert_eq!(status, StatusCode::OK);
    let c = contact(&gw, "ken").await;
    assert_eq!(c["consents"]["line"]["status"], "revoked", "{c}");
    let h = history(&gw, "ken", "line").await;
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["source"], "line_unfollow");
    assert_eq!(h[1]["evidence"], "01HUNF0000000000000000000A");
    // A redelivery is recognised by its webhookEventId.
    let (status, _) = post_line(&gw, &unfollow, Some(line_signature(&unfollow))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history(&gw, "ken", "line").await.len(), 2);

    // LINE's verify call, and a body that doesn't parse.
    let empty = line_events(json!([]));
    let (status, _) = post_line(&gw, &empty, Some(line_signature(&empty))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post_line(&gw, &empty, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let junk = b"{\"destination\": \"U0\", \"events\": ";
    let (status, answer) = post_line(&gw, junk, Some(line_signature(junk))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json");

    let (_, logs, _) = gw.terminate().await;
    assert!(!logs.contains(LINE_CHANNEL_SECRET), "{logs}");
}

#[tokio::test]
async fn one_click_unsubscribe_removes_marketing_and_keeps_transactional() {
    let gw = start(Rig::new().await, &Settings::default()).await;
    gw.contact("eve")
        .email("eve@example.com")
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;

    let n = gw
        .notify_and_wait(
            json!({"contact_id": "eve", "category": "marketing", "channels": ["email"],
                "subject": "Sale", "text": "Everything half price.",
                "html": "<html><body><p>Everything half price.</p></body></html>"}),
        )
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    let mails = gw.providers.smtp.received();
    assert_eq!(mails.len(), 1);
    let header = mails[0]
        .header("List-Unsubscribe")
        .expect("List-Unsubscribe");
    assert_eq!(
        mails[0].header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let url = header
        .trim()
        .strip_prefix('<')
        .and_then(|h| h.split('>').next())
        .expect("an <https://...> URL")
        .to_string();
    let path = url
        .strip_prefix("https://lifeboat.test")
        .unwrap_or_else(|| panic!("{url} is not under public_url"));
    assert!(path.starts_with("/unsubscribe/"), "{url}");
    assert!(
        mails[0].data.contains("Unsubscribe from these emails"),
        "{}",
        mails[0].data
    );

    // The page: one button that posts back; the business name escaped.
    let resp = gw.raw(Method::GET, path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("set-cookie").is_none());
    let page = resp.text().await.unwrap();
    assert!(
        page.contains(&format!("<form method=\"post\" action=\"{path}\">")),
        "{page}"
    );
    assert!(page.contains("Tom &amp; Jerry &lt;Shop&gt;"), "{page}");
    assert!(!page.contains("<Shop>"), "{page}");
    // Looking at the page changes nothing.
    assert_eq!(
        contact(&gw, "eve").await["consents"]["email"]["scopes"],
        json!(["marketing", "transactional"])
    );

    // RFC 8058: the mailbox provider's POST.
    let resp = gw
        .raw(Method::POST, path)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("location").is_none());
    let c = contact(&gw, "eve").await;
    assert_eq!(c["consents"]["email"]["status"], "granted", "{c}");
    assert_eq!(
        c["consents"]["email"]["scopes"],
        json!(["transactional"]),
        "{c}"
    );
    let h = history(&gw, "eve", "email").await;
    assert_eq!(h.last().unwrap()["source"], "email_unsubscribe");
    assert_eq!(h.last().unwrap()["evidence"], "one-click");
    // A second click is fine and adds nothing.
    let resp = gw
        .raw(Method::POST, path)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("from=page")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(history(&gw, "eve", "email").await.len(), h.len());

    let n = gw
        .notify_and_wait(json!({"contact_id": "eve", "category": "marketing",
            "channels": ["email"], "text": "More sales."}))
        .await;
    assert_eq!(trail(&n), ["email:skipped:no_consent"], "{n}");

    // Transactional mail still goes, without List-Unsubscribe or a link.
    let n = gw
        .notify_and_wait(
            json!({"contact_id": "eve", "channels": ["email"], "text": "Your receipt."}),
        )
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    let mails = gw.providers.smtp.received();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].header("List-Unsubscribe"), None);
    assert!(!mails[1].data.contains("/unsubscribe/"));

    // Bad tokens: 404, nothing changes.
    let (_, token) = path.rsplit_once('/').unwrap();
    let (id_part, mac_part) = token.split_once('.').unwrap();
    let forged = format!(
        "/unsubscribe/{}.{mac_part}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("ana")
    );
    let cut = format!("/unsubscribe/{id_part}.{}", &mac_part[1..]);
    for bad in ["/unsubscribe/nonsense", forged.as_str(), cut.as_str()] {
        let resp = gw.raw(Method::GET, bad).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{bad}");
        let resp = gw
            .raw(Method::POST, bad)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn marketing_chat_messages_carry_the_opt_out_line_and_transactional_do_not() {
    let gw = start(Rig::accepting().await, &Settings::default()).await;
    gw.contact("tia")
        .telegram("5551234")
        .whatsapp("+48600100200")
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;
    for (channel, category) in [
        ("telegram", "marketing"),
        ("telegram", "transactional"),
        ("whatsapp", "marketing"),
    ] {
        let n = gw
            .notify_and_wait(json!({"contact_id": "tia", "category": category,
                    "channels": [channel], "text": "Weekend sale!"}))
            .await;
        assert_eq!(n["status"], "sent", "{n}");
    }
    let sent = gw.providers.sent("telegram").await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["text"], "Weekend sale!\n\n/stop to unsubscribe");
    assert_eq!(sent[1]["text"], "Weekend sale!");
    let sent = gw.providers.sent("whatsapp").await;
    assert_eq!(
        sent[0]["text"]["body"],
        "Weekend sale!\n\nReply STOP to unsubscribe."
    );
}

#[tokio::test]
async fn erasing_a_contact_forgets_it_its_history_its_queue_and_its_number() {
    let rig = Rig::accepting().await;
    // Telegram asks to wait 5 minutes: the notification stays queued.
    Mock::given(method("POST"))
        .and(path(TG_SEND_PATH))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "ok": false, "error_code": 429,
            "description": "Too Many Requests: retry after 300",
            "parameters": {"retry_after": 300}
        })))
        .with_priority(1)
        .mount(&rig.providers.telegram)
        .await;
    let settings = Settings {
        max_wait: "1h",
        ..Settings::default()
    };
    let gw = start(rig, &settings).await;
    gw.contact("del")
        .whatsapp("+48600100999")
        .telegram("5550999")
        .consents_to(&["transactional"])
        .put()
        .await;
    let id = gw
        .notify(json!({"contact_id": "del", "channels": ["telegram"], "text": "Your code is 1234"}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, n) = gw.get(&format!("/v1/notifications/{id}")).await;
        if !n["attempts"].as_array().unwrap().is_empty() {
            assert_eq!(n["status"], "queued", "{n}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt yet: {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, _) = gw
        .send(Method::DELETE, "/v1/contacts/del", Some(API_KEY), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = gw.get("/v1/contacts/del").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw.get("/v1/contacts/del/consents/whatsapp/history").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, n) = gw.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(n["status"], "cancelled", "{n}");

    // The old number is no longer tied to anyone: a STOP from it changes nothing, no reply.
    let stop = wa_text("48600100999", "wamid.ERASED", "STOP");
    let (status, _) = post_wa(&gw, &stop, Some(wa_signature(&stop))).await;
    assert_eq!(status, StatusCode::OK);
    wa_sends_settle_at(&gw.providers, 0).await;
    let (status, _) = gw.get("/v1/contacts/del").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A new contact under the same id starts with no history.
    gw.contact("del").put().await;
    assert!(history(&gw, "del", "whatsapp").await.is_empty());
    assert!(contact(&gw, "del").await.get("last_inbound").is_none());
}
