//! The Telegram bot inside the gateway, against a fake Bot API: opt-in links, `/start <token>`,
//! `/stop`, `/status`, blocking the bot, the saved update offset across a restart, 409
//! conflicts, webhook mode with its secret, and `POST /v1/contacts/{id}/optin-links`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::{
    bodies, Gateway, Providers, Rig, Settings, TestApp, API_KEY, TG_SEND_PATH, TG_TOKEN,
};

const GET_UPDATES: &str = "/bot123456:TEST-token/GetUpdates";
const CONFLICT: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";

/// Answers `GetUpdates` like Telegram: the queued updates whose id is at least the request's
/// `offset` (all of them without one).
#[derive(Clone, Default)]
pub(crate) struct FakeUpdates(Arc<Mutex<Vec<Value>>>);

impl FakeUpdates {
    pub(crate) fn push(&self, update: Value) {
        self.0.lock().unwrap().push(update);
    }
}

impl Respond for FakeUpdates {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let offset = body["offset"].as_i64().unwrap_or(i64::MIN);
        let result: Vec<Value> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
            .cloned()
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": result}))
    }
}

/// The Bot API methods the bot calls besides `GetUpdates`.
pub(crate) async fn mount_bot_api(providers: &Providers) {
    providers.accept_all().await;
    for (method_name, result) in [
        ("SetMyCommands", json!(true)),
        ("DeleteWebhook", json!(true)),
        (
            "GetMe",
            json!({"id": 123456, "is_bot": true, "first_name": "Acme", "username": "acme_test_bot"}),
        ),
    ] {
        Mock::given(method("POST"))
            .and(path(format!("/bot{TG_TOKEN}/{method_name}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": result})),
            )
            .mount(&providers.telegram)
            .await;
    }
}

pub(crate) async fn mount_updates(providers: &Providers) -> FakeUpdates {
    let fake = FakeUpdates::default();
    Mock::given(method("POST"))
        .and(path(GET_UPDATES))
        .respond_with(fake.clone())
        .with_priority(5)
        .mount(&providers.telegram)
        .await;
    fake
}

/// The harness config with a business name, a short long-poll and `telegram` extra keys.
pub(crate) fn config(providers: &Providers, dir: &std::path::Path, telegram_extra: &str) -> String {
    providers
        .config(dir, &Settings::default())
        .replace("[server]\n", "[server]\nbusiness_name = \"Acme\"\n")
        .replace(
            "[channels.telegram]\n",
            &format!("[channels.telegram]\npoll_timeout = \"1s\"\n{telegram_extra}\n"),
        )
}

/// The bot API mounted, a fake `getUpdates` feed, and a gateway long-polling it.
pub(crate) async fn polling_bot() -> (TestApp, FakeUpdates) {
    let rig = Rig::new().await;
    mount_bot_api(&rig.providers).await;
    let fake = mount_updates(&rig.providers).await;
    let gw = rig
        .start_on(|providers, dir| config(providers, dir, ""))
        .await;
    (gw, fake)
}

pub(crate) fn text_update(update_id: i64, chat_id: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id, "date": 1_700_000_000,
            "chat": {"id": chat_id, "type": "private", "first_name": "Ana", "username": "ana"},
            "from": {"id": chat_id, "is_bot": false, "first_name": "Ana", "username": "ana"},
            "text": text,
            "entities": [{"offset": 0, "length": text.split(' ').next().unwrap().len(), "type": "bot_command"}]
        }
    })
}

pub(crate) fn blocked_update(update_id: i64, chat_id: i64, status: &str) -> Value {
    let bot =
        json!({"id": 123456, "is_bot": true, "first_name": "Acme", "username": "acme_test_bot"});
    json!({
        "update_id": update_id,
        "my_chat_member": {
            "chat": {"id": chat_id, "type": "private", "first_name": "Bo"},
            "from": {"id": chat_id, "is_bot": false, "first_name": "Bo"},
            "date": 1_700_000_100,
            "old_chat_member": {"user": bot, "status": "member"},
            "new_chat_member": {"user": bot, "status": status, "until_date": 0}
        }
    })
}

/// Polls `check` every 20 ms for up to 10 s.
pub(crate) async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn replies_to(server: &MockServer, chat_id: i64) -> Vec<String> {
    bodies(server, TG_SEND_PATH)
        .await
        .into_iter()
        .filter(|b| b["chat_id"].as_i64() == Some(chat_id))
        .map(|b| b["text"].as_str().unwrap_or("").to_string())
        .collect()
}

pub(crate) async fn wait_reply(server: &MockServer, chat_id: i64, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let replies = replies_to(server, chat_id).await;
        if let Some(t) = replies.into_iter().find(|t| t.contains(needle)) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no reply to {chat_id} containing {needle:?}: {:?}",
            replies_to(server, chat_id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn optin_token(gw: &Gateway, contact_id: &str, scopes: Value) -> String {
    let (status, body) = gw
        .put(&format!("/v1/contacts/{contact_id}"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = gw
        .post(
            &format!("/v1/contacts/{contact_id}/optin-links"),
            json!({"scopes": scopes}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().expect("token").to_string()
}

pub(crate) async fn history(gw: &Gateway, contact_id: &str) -> Vec<Value> {
    let (status, body) = gw
        .get(&format!(
            "/v1/contacts/{contact_id}/consents/telegram/history"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["history"].as_array().cloned().unwrap_or_default()
}

pub(crate) async fn telegram_consent(gw: &Gateway, contact_id: &str) -> Value {
    let (status, body) = gw.get(&format!("/v1/contacts/{contact_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn start_with_a_link_token_opts_in_then_status_and_stop() {
    let (gw, fake) = polling_bot().await;
    let token = optin_token(&gw, "c-1", json!(["transactional", "marketing"])).await;

    fake.push(text_update(812, 5551234, &format!("/start {token}")));
    until("the opt-in", || async {
        let c = telegram_consent(&gw, "c-1").await;
        c["telegram"] == "5551234" && c["consents"]["telegram"]["status"] == "granted"
    })
    .await;
    let c = telegram_consent(&gw, "c-1").await;
    assert_eq!(
        c["consents"]["telegram"]["scopes"],
        json!(["marketing", "transactional"])
    );
    let h = history(&gw, "c-1").await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["source"], "telegram_start");
    assert_eq!(h[0]["evidence"], "update 812 from @ana");
    let reply = wait_reply(&gw.providers.telegram, 5551234, "Acme").await;
    assert!(
        reply.contains("/stop") && reply.contains("marketing"),
        "{reply}"
    );

    fake.push(text_update(813, 5551234, "/status"));
    let reply = wait_reply(
        &gw.providers.telegram,
        5551234,
        "You're subscribed to Acme here",
    )
    .await;
    assert!(reply.contains("transactional"), "{reply}");

    fake.push(text_update(814, 5551234, "/stop"));
    until("the opt-out", || async {
        telegram_consent(&gw, "c-1").await["consents"]["telegram"]["status"] == "revoked"
    })
    .await;
    let h = history(&gw, "c-1").await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1]["source"], "telegram_stop");
    assert_eq!(h[1]["scopes"], json!([]));
    assert_eq!(h[1]["evidence"], "update 814");
    wait_reply(&gw.providers.telegram, 5551234, "won't send you messages").await;

    // The commands were registered at start.
    let commands = bodies(
        &gw.providers.telegram,
        &format!("/bot{TG_TOKEN}/SetMyCommands"),
    )
    .await;
    let names: Vec<&str> = commands[0]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["start", "stop", "status"]);

    let (status, logs, _) = gw.terminate().await;
    assert!(status.success(), "{logs}");
    assert!(
        !logs.contains("TEST-token"),
        "the bot token leaked into the logs"
    );
}

#[tokio::test]
async fn blocking_the_bot_revokes_without_a_reply() {
    let (gw, fake) = polling_bot().await;
    gw.contact("c-2")
        .telegram("777")
        .consents_to(&["transactional"])
        .put()
        .await;

    fake.push(blocked_update(900, 777, "kicked"));
    until("the revocation", || async {
        telegram_consent(&gw, "c-2").await["consents"]["telegram"]["status"] == "revoked"
    })
    .await;
    let h = history(&gw, "c-2").await;
    assert_eq!(h.last().unwrap()["source"], "telegram_blocked");
    // Unblocking grants nothing.
    fake.push(blocked_update(901, 777, "member"));
    // Updates are handled in order: once this one is answered, the two before it are done.
    fake.push(text_update(902, 4242, "/status"));
    wait_reply(&gw.providers.telegram, 4242, "aren't subscribed").await;
    assert!(replies_to(&gw.providers.telegram, 777).await.is_empty());
    assert_eq!(history(&gw, "c-2").await.len(), 2);
    assert_eq!(
        telegram_consent(&gw, "c-2").await["consents"]["telegram"]["status"],
        "revoked"
    );
}

#[tokio::test]
async fn unknown_or_missing_tokens_get_help_and_change_nothing() {
    let (gw, fake) = polling_bot().await;
    let _token = optin_token(&gw, "c-3", json!(["transactional"])).await;

    fake.push(text_update(
        10,
        4343,
        "/start AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ));
    fake.push(text_update(11, 4343, "/start not-a-token!"));
    fake.push(text_update(12, 4343, "/start"));
    fake.push(text_update(13, 4343, "/stop"));
    wait_reply(&gw.providers.telegram, 4343, "nothing to stop").await;
    let replies = replies_to(&gw.providers.telegram, 4343).await;
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(
        replies[0].contains("isn't valid") && replies[0].contains("Acme"),
        "{replies:?}"
    );
    assert!(replies[1].contains("isn't valid"), "{replies:?}");
    assert!(replies[2].contains("personal link"), "{replies:?}");
    let c = telegram_consent(&gw, "c-3").await;
    assert!(c.get("telegram").is_none(), "{c}");
    assert_eq!(c["consents"], json!({}), "{c}");
}

#[tokio::test]
async fn the_offset_is_saved_and_a_restart_asks_for_the_next_update() {
    let (gw, fake) = polling_bot().await;
    let token = optin_token(&gw, "c-4", json!(["transactional"])).await;
    fake.push(text_update(500, 6000, &format!("/start {token}")));
    fake.push(text_update(501, 6000, "/status"));
    wait_reply(
        &gw.providers.telegram,
        6000,
        "You're subscribed to Acme here",
    )
    .await;
    // The offset is saved after the reply; the next poll asks for 502 once it is.
    until("a poll with offset 502", || async {
        bodies(&gw.providers.telegram, GET_UPDATES)
            .await
            .iter()
            .any(|b| b["offset"] == 502)
    })
    .await;
    let (status, logs, rig) = gw.terminate().await;
    assert!(status.success(), "{logs}");
    let before = bodies(&rig.providers.telegram, GET_UPDATES).await.len();

    let gw = rig.restart().await;
    until("a poll after the restart", || async {
        bodies(&gw.providers.telegram, GET_UPDATES).await.len() > before
    })
    .await;
    let first = &bodies(&gw.providers.telegram, GET_UPDATES).await[before];
    assert_eq!(first["offset"], 502, "{first}");
    assert_eq!(first["timeout"], 1, "{first}");
    assert_eq!(history(&gw, "c-4").await.len(), 1);
}

#[tokio::test]
async fn a_conflict_is_retried_and_the_gateway_keeps_serving() {
    let rig = Rig::new().await;
    mount_bot_api(&rig.providers).await;
    let fake = mount_updates(&rig.providers).await;
    Mock::given(method("POST"))
        .and(path(GET_UPDATES))
        .respond_with(
            ResponseTemplate::new(409)
                .set_body_json(json!({"ok": false, "error_code": 409, "description": CONFLICT})),
        )
        .with_priority(1)
        .up_to_n_times(2)
        .mount(&rig.providers.telegram)
        .await;
    let gw = rig
        .start_on(|providers, dir| config(providers, dir, ""))
        .await;
    until("two conflicts and a retry", || async {
        bodies(&gw.providers.telegram, GET_UPDATES).await.len() >= 3
    })
    .await;
    let (status, _) = gw.get_public("/healthz").await;
    assert_eq!(status, StatusCode::OK);

    // Polling works again once the other poller is gone.
    let token = optin_token(&gw, "c-5", json!(["transactional"])).await;
    fake.push(text_update(70, 7070, &format!("/start {token}")));
    wait_reply(&gw.providers.telegram, 7070, "You're subscribed").await;

    let (status, logs, _) = gw.terminate().await;
    assert!(status.success(), "{logs}");
    assert_eq!(
        logs.matches("another process polls").count(),
        1,
        "a conflict is logged once per kind:\n{logs}"
    );
    assert!(
        !logs.contains("TEST-token"),
        "the bot token leaked into the logs"
    );
}

#[tokio::test]
async fn webhook_mode_checks_the_secret() {
    let rig = Rig::new().await;
    mount_bot_api(&rig.providers).await;
    let gw = rig
        .start_on(|providers, dir| {
            config(
                providers,
                dir,
                "mode = \"webhook\"\nsecret_token = \"hook-secret-1\"",
            )
        })
        .await;
    let token = optin_token(&gw, "c-6", json!(["transactional"])).await;
    let update = text_update(30, 8080, &format!("/start {token}"));

    for secret in [None, Some("hook-secret-2"), Some("")] {
        let mut req = gw
            .raw(reqwest::Method::POST, "/webhooks/telegram")
            .json(&update);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{secret:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let c = telegram_consent(&gw, "c-6").await;
    assert_eq!(c["consents"], json!({}), "{c}");

    let resp = gw
        .raw(reqwest::Method::POST, "/webhooks/telegram")
        .header("X-Telegram-Bot-Api-Secret-Token", "hook-secret-1")
        .header("Content-Type", "application/json")
        .body("{\"update_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp = gw
        .raw(reqwest::Method::POST, "/webhooks/telegram")
        .header("X-Telegram-Bot-Api-Secret-Token", "hook-secret-1")
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let c = telegram_consent(&gw, "c-6").await;
    assert_eq!(c["telegram"], "8080", "{c}");
    assert_eq!(c["consents"]["telegram"]["source"], "telegram_start", "{c}");
    wait_reply(&gw.providers.telegram, 8080, "Acme").await;
    // Telegram retries a webhook: the same update changes nothing twice.
    let resp = gw
        .raw(reqwest::Method::POST, "/webhooks/telegram")
        .header("X-Telegram-Bot-Api-Secret-Token", "hook-secret-1")
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(history(&gw, "c-6").await.len(), 1);
    // No polling in webhook mode.
    assert!(bodies(&gw.providers.telegram, GET_UPDATES).await.is_empty());
}

#[tokio::test]
async fn optin_links_endpoint() {
    let rig = Rig::new().await;
    mount_bot_api(&rig.providers).await;
    // The harness gives WhatsApp a `business_number` and LINE no `basic_id`.
    let gw = rig
        .start_on(|providers, dir| config(providers, dir, ""))
        .await;
    let (status, _) = gw.put("/v1/contacts/c-7", json!({})).await;
    assert_eq!(status, StatusCode::OK);

    // No body: transactional only. LINE has no basic_id here, so no LINE link.
    let resp = gw
        .raw(reqwest::Method::POST, "/v1/contacts/c-7/optin-links")
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(
        (16..=64).contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{token}"
    );
    assert_eq!(
        body["telegram"],
        format!("https://t.me/acme_test_bot?start={token}")
    );
    assert_eq!(
        body["whatsapp"],
        format!("https://wa.me/15550001111?text=START%20{token}")
    );
    assert!(body.get("line").is_none(), "{body}");
    assert_eq!(body["scopes"], json!(["transactional"]));
    let expires: chrono::DateTime<chrono::Utc> =
        body["expires_at"].as_str().unwrap().parse().unwrap();
    let days = (expires - chrono::Utc::now()).num_hours();
    assert!((167..=168).contains(&days), "{body}");

    let (status, body) = gw
        .post(
            "/v1/contacts/c-7/optin-links",
            json!({"scopes": ["marketing", "transactional"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["scopes"], json!(["marketing", "transactional"]));

    for (bad, field) in [
        (json!({"scopes": []}), "scopes"),
        (json!({"scopes": ["spam"]}), "scopes[0]"),
        (json!({"scopes": "marketing"}), "scopes"),
        (json!({"colour": 1}), ""),
    ] {
        let (status, body) = gw.post("/v1/contacts/c-7/optin-links", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad} → {body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{body}");
        if !field.is_empty() {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
    let (status, body) = gw.post("/v1/contacts/nobody/optin-links", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = gw
        .send(
            reqwest::Method::POST,
            "/v1/contacts/c-7/optin-links",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = gw
        .raw(reqwest::Method::POST, "/v1/contacts/c-7/optin-links")
        .bearer_auth(API_KEY)
        .header("Content-Type", "text/plain")
        .body("scopes=marketing")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // With a LINE basic id, the LINE add-friend link appears too.
    let (_, _, rig) = gw.terminate().await;
    let gw = rig
        .start_on(|providers, dir| {
            config(providers, dir, "").replace(
                "[channels.line]\n",
                "[channels.line]\nbasic_id = \"@acme\"\n",
            )
        })
        .await;
    let (status, body) = gw.post("/v1/contacts/c-7/optin-links", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["line"], "https://line.me/R/ti/p/%40acme");
}
