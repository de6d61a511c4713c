//! Inbound signals about an address, not about one contact: an opt-out (WhatsApp STOP, LINE
//! unfollow, Telegram `/stop`, blocking the bot, the Bot API's "bot was blocked" answer)
//! revokes every contact holding the address. And provider events apply once: a replayed
//! WhatsApp message does not reopen the 24 h window (which runs from Meta's `timestamp`), a
//! replayed Telegram update or LINE event does not revoke again after a re-grant.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;
use crate::telegram_bot as tg;
use crate::webhooks::*;

/// Two contacts (`<prefix>-home`, `<prefix>-work`) holding the same `address` on `channel`,
/// both consenting to transactional and marketing messages there.
async fn sharing(gw: &Gateway, prefix: &str, channel: &str, address: &str) -> [String; 2] {
    let ids = [format!("{prefix}-home"), format!("{prefix}-work")];
    for id in &ids {
        gw.contact(id)
            .address(channel, address)
            .consents_to(&["transactional", "marketing"])
            .put()
            .await;
    }
    ids
}

/// Asserts `id`'s consent on `channel` is revoked, with its last history entry from `source`.
async fn assert_revoked(gw: &Gateway, id: &str, channel: &str, source: &str) {
    let c = contact(gw, id).await;
    assert_eq!(c["consents"][channel]["status"], "revoked", "{id}: {c}");
    let h = history(gw, id, channel).await;
    assert_eq!(h.last().unwrap()["source"], source, "{id}: {h:?}");
}

async fn regrant(gw: &Gateway, id: &str, channel: &str) {
    let (status, body) = gw
        .put(
            &format!("/v1/contacts/{id}/consents/{channel}"),
            json!({"status": "granted", "scopes": ["transactional"], "source": "web_form", "evidence": "asked again"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_whatsapp_stop_revokes_every_contact_holding_the_number() {
    let gw = start(Rig::accepting().await, &Settings::default()).await;
    let [home, work] = sharing(&gw, "ana", "whatsapp", "+48600100200").await;

    let stop = wa_text("48600100200", "wamid.STOP-SHARED", "STOP");
    let (status, _) = post_wa(&gw, &stop, Some(wa_signature(&stop))).await;
    assert_eq!(status, StatusCode::OK);
    for id in [&home, &work] {
        assert_revoked(&gw, id, "whatsapp", "whatsapp_stop").await;
    }
    // One confirmation to the number, and nothing more reaches it on WhatsApp.
    wa_sends_settle_at(&gw.providers, 1).await;
    let id = gw
        .notify(
            json!({"contact_id": work, "channels": ["whatsapp"], "text": "Your order shipped."}),
        )
        .await;
    let n = gw.wait_final(&id).await;
    assert_eq!(trail(&n), ["whatsapp:skipped:no_consent"], "{n}");
    wa_sends_settle_at(&gw.providers, 1).await;
}

#[tokio::test]
async fn a_line_unfollow_revokes_every_contact_holding_the_user() {
    let gw = start(Rig::new().await, &Settings::default()).await;
    let [home, work] = sharing(&gw, "ken", "line", LINE_USER).await;

    let unfollow = line_events(json!([line_event(
        "unfollow",
        "01HUNFSHARED000000000000A",
        json!({})
    )]));
    let (status, _) = post_line(&gw, &unfollow, Some(line_signature(&unfollow))).await;
    assert_eq!(status, StatusCode::OK);
    for id in [&home, &work] {
        assert_revoked(&gw, id, "line", "line_unfollow").await;
    }
}

#[tokio::test]
async fn telegram_stop_and_blocking_revoke_every_contact_holding_the_chat() {
    let (gw, fake) = tg::polling_bot().await;
    let stopping = sharing(&gw, "bo", "telegram", "777").await;
    let blocking = sharing(&gw, "cy", "telegram", "778").await;

    fake.push(tg::text_update(950, 777, "/stop"));
    fake.push(tg::blocked_update(951, 778, "kicked"));
    // Updates are handled in order: once this one is answered, the two before it are done.
    fake.push(tg::text_update(952, 4242, "/status"));
    tg::wait_reply(&gw.providers.telegram, 4242, "aren't subscribed").await;
    for id in &stopping {
        assert_revoked(&gw, id, "telegram", "telegram_stop").await;
    }
    for id in &blocking {
        assert_revoked(&gw, id, "telegram", "telegram_blocked").await;
    }
    // One answer to the /stop, none to the block.
    assert_eq!(tg::replies_to(&gw.providers.telegram, 777).await.len(), 1);
    assert!(tg::replies_to(&gw.providers.telegram, 778).await.is_empty());
}

#[tokio::test]
async fn a_bot_blocked_answer_revokes_every_contact_holding_the_chat() {
    let rig = Rig::new().await;
    Mock::given(method("POST"))
        .and(path(TG_SEND_PATH))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"
        })))
        .with_priority(1)
        .mount(&rig.providers.telegram)
        .await;
    rig.providers.accept_all().await;
    let gw = start(rig, &Settings::default()).await;
    let [home, work] = sharing(&gw, "di", "telegram", "5551234").await;

    let id = gw
        .notify(
            json!({"contact_id": home, "channels": ["telegram"], "text": "Your order shipped."}),
        )
        .await;
    let n = gw.wait_final(&id).await;
    assert_eq!(trail(&n), ["telegram:recipient_unreachable"], "{n}");
    for id in [&home, &work] {
        assert_revoked(&gw, id, "telegram", "telegram_blocked").await;
    }
    // The other contact's notification is not sent to the chat that blocked the bot.
    let id = gw
        .notify(
            json!({"contact_id": work, "channels": ["telegram"], "text": "Your order shipped."}),
        )
        .await;
    let n = gw.wait_final(&id).await;
    assert_eq!(trail(&n), ["telegram:skipped:no_consent"], "{n}");
    assert_eq!(gw.providers.sends("telegram").await, 1);
}

/// The gateway with the service window on and its clock read from `dir/clock`, set to `at`.
async fn start_at(rig: Rig, at: &str) -> TestApp {
    let settings = Settings {
        policy: "[policy]\nquiet_hours = \"off\"\n".into(),
        ..Settings::default()
    };
    rig.start_at(at, |providers, dir| providers.config(dir, &settings))
        .await
}

fn unix(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp()
}

/// Where a free-form WhatsApp text to `contact` goes now (the window open or not).
async fn free_text_trail(gw: &Gateway, contact: &str) -> Vec<String> {
    let id = gw
        .notify(
            json!({"contact_id": contact, "channels": ["whatsapp"], "text": "Your order shipped."}),
        )
        .await;
    trail(&gw.wait_final(&id).await)
}

#[tokio::test]
async fn a_replayed_whatsapp_message_does_not_reopen_the_service_window() {
    let gw = start_at(Rig::accepting().await, "2026-06-10T12:00:00Z").await;
    gw.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;

    // Ana wrote at 11:00; Meta delivers it at 12:00: the window runs from 11:00.
    let hello = wa_text_at(
        "48600100200",
        "wamid.HELLO-1",
        "hi",
        unix("2026-06-10T11:00:00Z"),
    );
    let (status, _) = post_wa(&gw, &hello, Some(wa_signature(&hello))).await;
    assert_eq!(status, StatusCode::OK);
    let c = contact(&gw, "ana").await;
    assert_eq!(c["last_inbound"]["whatsapp"], "2026-06-10T11:00:00Z", "{c}");
    assert_eq!(free_text_trail(&gw, "ana").await, ["whatsapp:sent"]);

    // A day later the window is closed, and the same signed message posted again (a replay)
    // does not open it.
    gw.move_clock("2026-06-11T11:30:00Z").await;
    assert_eq!(
        free_text_trail(&gw, "ana").await,
        ["whatsapp:skipped:outside_window"]
    );
    let (status, _) = post_wa(&gw, &hello, Some(wa_signature(&hello))).await;
    assert_eq!(status, StatusCode::OK);
    let c = contact(&gw, "ana").await;
    assert_eq!(c["last_inbound"]["whatsapp"], "2026-06-10T11:00:00Z", "{c}");
    assert_eq!(
        free_text_trail(&gw, "ana").await,
        ["whatsapp:skipped:outside_window"]
    );

    // A new message written 25 h ago (delivered late) opens nothing either.
    let late = wa_text_at(
        "48600100200",
        "wamid.LATE-1",
        "hi?",
        unix("2026-06-10T10:30:00Z"),
    );
    let (status, _) = post_wa(&gw, &late, Some(wa_signature(&late))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        free_text_trail(&gw, "ana").await,
        ["whatsapp:skipped:outside_window"]
    );
    assert_eq!(gw.providers.sends("whatsapp").await, 1);
}

#[tokio::test]
async fn a_replayed_telegram_stop_after_a_regrant_does_not_revoke() {
    let rig = Rig::new().await;
    tg::mount_bot_api(&rig.providers).await;
    let gw = rig
        .start_on(|providers, dir| {
            tg::config(
                providers,
                dir,
                "mode = \"webhook\"\nsecret_token = \"hook-secret-1\"",
            )
        })
        .await;
    gw.contact("eve")
        .telegram("8080")
        .consents_to(&["transactional"])
        .put()
        .await;
    let post = |update: Value| {
        gw.raw(reqwest::Method::POST, "/webhooks/telegram")
            .header("X-Telegram-Bot-Api-Secret-Token", "hook-secret-1")
            .json(&update)
            .send()
    };

    let stop = tg::text_update(60, 8080, "/stop");
    assert_eq!(post(stop.clone()).await.unwrap().status(), StatusCode::OK);
    assert_revoked(&gw, "eve", "telegram", "telegram_stop").await;
    regrant(&gw, "eve", "telegram").await;

    assert_eq!(post(stop).await.unwrap().status(), StatusCode::OK);
    let c = contact(&gw, "eve").await;
    assert_eq!(c["consents"]["telegram"]["status"], "granted", "{c}");
    assert_eq!(history(&gw, "eve", "telegram").await.len(), 3);
    // The replay got no second answer either.
    tg::wait_reply(&gw.providers.telegram, 8080, "won't send you").await;
    assert_eq!(tg::replies_to(&gw.providers.telegram, 8080).await.len(), 1);
}

#[tokio::test]
async fn a_replayed_line_unfollow_after_a_regrant_does_not_revoke() {
    let gw = start(Rig::new().await, &Settings::default()).await;
    gw.contact("ken")
        .line(LINE_USER)
        .consents_to(&["transactional"])
        .put()
        .await;

    let unfollow = line_events(json!([line_event(
        "unfollow",
        "01HUNFREPLAY00000000000A",
        json!({})
    )]));
    let (status, _) = post_line(&gw, &unfollow, Some(line_signature(&unfollow))).await;
    assert_eq!(status, StatusCode::OK);
    assert_revoked(&gw, "ken", "line", "line_unfollow").await;
    regrant(&gw, "ken", "line").await;

    let (status, _) = post_line(&gw, &unfollow, Some(line_signature(&unfollow))).await;
    assert_eq!(status, StatusCode::OK);
    let c = contact(&gw, "ken").await;
    assert_eq!(c["consents"]["line"]["status"], "granted", "{c}");
    assert_eq!(history(&gw, "ken", "line").await.len(), 3);
}

#[tokio::test]
async fn an_email_unsubscribe_removes_marketing_for_every_contact_with_the_address() {
    let gw = start(Rig::new().await, &Settings::default()).await;
    let [home, work] = sharing(&gw, "fay", "email", "fay@example.com").await;
    let marketing = |id: &str| {
        json!({"contact_id": id, "category": "marketing", "channels": ["email"],
            "subject": "Sale", "text": "Everything half price."})
    };
    let n = gw.wait_final(&gw.notify(marketing(&home)).await).await;
    assert_eq!(n["status"], "sent", "{n}");
    let header = gw.providers.smtp.received()[0]
        .header("List-Unsubscribe")
        .expect("List-Unsubscribe");
    let url = header
        .trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap();
    let path = url
        .strip_prefix("https://lifeboat.test")
        .expect(url)
        .to_string();

    let resp = gw
        .raw(reqwest::Method::POST, &path)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for id in [&home, &work] {
        let c = contact(&gw, id).await;
        assert_eq!(
            c["consents"]["email"]["scopes"],
            json!(["transactional"]),
            "{id}: {c}"
        );
        let h = history(&gw, id, "email").await;
        assert_eq!(
            h.last().unwrap()["source"],
            "email_unsubscribe",
            "{id}: {h:?}"
        );
    }
    // Marketing to the other contact no longer goes to that address.
    let n = gw.wait_final(&gw.notify(marketing(&work)).await).await;
    assert_eq!(trail(&n), ["email:skipped:no_consent"], "{n}");
    assert_eq!(gw.providers.smtp.received().len(), 1);
}
