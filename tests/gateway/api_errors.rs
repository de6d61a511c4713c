//! Bad input: every error answers its status and stable code (and `field` for 422), and
//! nothing invalid is stored.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

async fn started() -> TestApp {
    let gw = TestApp::accepting().await;
    gw.contact("c-1")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;
    gw
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn nothing_stored(gw: &Gateway) {
    let (status, page) = gw.get("/v1/notifications?limit=100").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 0, "{page}");
}

#[tokio::test]
async fn notification_bodies_that_are_wrong_get_their_error_and_store_nothing() {
    let gw = started().await;
    let post_raw = |body: &'static str, content_type: &'static str| {
        gw.raw(Method::POST, "/v1/notifications")
            .bearer_auth(API_KEY)
            .header("content-type", content_type)
            .body(body)
    };

    let (status, body) = error_of(
        post_raw("{\"contact_id\": ", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json")),
        "{body}"
    );

    let (status, body) = error_of(
        post_raw(r#"{"contact_id":"c-1","text":"hi"}"#, "text/plain")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    let big = format!(
        r#"{{"contact_id":"c-1","text":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, body) = error_of(
        gw.raw(Method::POST, "/v1/notifications")
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");

    let cases: Vec<(Value, &str)> = vec![
        (json!({"text": "hi"}), "contact_id"),
        (json!({"contact_id": "c-1"}), "text"),
        (json!({"contact_id": "c 1", "text": "hi"}), "contact_id"),
        (
            json!({"contact_id": "x".repeat(129), "text": "hi"}),
            "contact_id",
        ),
        (json!({"contact_id": "c-1", "text": "   "}), "text"),
        (
            json!({"contact_id": "c-1", "text": "hi", "channels": ["sms"]}),
            "channels[0]",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "channels": []}),
            "channels",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "category": "promo"}),
            "category",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "to": {"whatsapp": "600100200"}}),
            "to.whatsapp",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "to": {"email": "not-an-email"}}),
            "to.email",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "to": {"line": "bob"}}),
            "to.line",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "to": {"telegram": "ana"}}),
            "to.telegram",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "to": {"timezone": "Europe/Warsaw"}}),
            "to",
        ),
        (json!({"contact_id": "bad id", "text": "hi"}), "contact_id"),
        (
            json!({"contact_id": "c-1", "text": "hi", "expires_in": "soon"}),
            "expires_in",
        ),
        (
            json!({"contact_id": "unknown-contact", "text": "hi", "expires_in": "31d"}),
            "expires_in",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "fallback_after": "0s"}),
            "fallback_after",
        ),
        (
            json!({"contact_id": "c-1", "text": "hi", "colour": "red"}),
            "colour",
        ),
        (
            json!({"contact_id": "unknown-contact", "text": "hi"}),
            "contact_id",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = gw.post("/v1/notifications", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(
            answer["error"]["code"], "validation_failed",
            "{body} → {answer}"
        );
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    nothing_stored(&gw).await;
    // `to` with a bad address did not touch the contact either.
    let (_, contact) = gw.get("/v1/contacts/c-1").await;
    assert!(contact.get("whatsapp").is_none(), "{contact}");
    let (status, _) = gw.get("/v1/contacts/unknown-contact").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn contacts_and_consents_reject_bad_values() {
    let gw = started().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/v1/contacts/c-2", json!({"whatsapp": "+0123"}), "whatsapp"),
        ("/v1/contacts/c-2", json!({"email": "ana@"}), "email"),
        (
            "/v1/contacts/c-2",
            json!({"timezone": "Mars/Olympus"}),
            "timezone",
        ),
        ("/v1/contacts/c-2", json!({"telegram": "ana"}), "telegram"),
        ("/v1/contacts/c-2", json!({"line": "U4AF"}), "line"),
        ("/v1/contacts/c-2", json!({"locale": "pl PL"}), "locale"),
        ("/v1/contacts/bad%20id", json!({}), "contact_id"),
        (
            "/v1/contacts/c-1/consents/telegram",
            json!({"status": "maybe"}),
            "status",
        ),
        (
            "/v1/contacts/c-1/consents/telegram",
            json!({"status": "granted", "scopes": ["spam"]}),
            "scopes[0]",
        ),
        (
            "/v1/contacts/c-1/consents/telegram",
            json!({"status": "granted", "scopes": []}),
            "scopes",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = gw.put(path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body} → {answer}"
        );
        assert_eq!(answer["error"]["field"], field, "{path} {body} → {answer}");
    }
    let (status, _) = gw.get("/v1/contacts/c-2").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a rejected contact is not created"
    );
    let (_, history) = gw.get("/v1/contacts/c-1/consents/telegram/history").await;
    assert_eq!(history["history"].as_array().unwrap().len(), 1, "{history}");

    let (status, answer) = gw
        .put(
            "/v1/contacts/c-1/consents/sms",
            json!({"status": "granted"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "not_found");
    let (status, _) = gw
        .put(
            "/v1/contacts/nobody/consents/email",
            json!({"status": "granted"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn auth_is_required_and_keys_are_not_interchangeable() {
    let gw = started().await;
    let (status, body) = gw.send(Method::GET, "/v1/contacts/c-1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = gw
        .send(Method::GET, "/v1/contacts/c-1", Some("wrong-key-123"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = gw
        .send(
            Method::POST,
            "/v1/notifications",
            Some(ADMIN_TOKEN),
            Some(json!({"contact_id": "c-1", "text": "hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = gw.send(Method::GET, "/v1/admin/channels", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    nothing_stored(&gw).await;
}

#[tokio::test]
async fn lookups_with_bad_or_unknown_ids() {
    let gw = started().await;
    let (status, body) = gw.get("/v1/notifications/not%20an%20id").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "id");
    let (status, body) = gw
        .get("/v1/notifications/0190a2b4-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = gw.get("/v1/notifications?status=lost").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "status");
    let (status, body) = gw.get("/v1/notifications?limit=1000").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "limit");
    let (status, body) = gw.disable_channel("sms", "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = gw.disable_channel("email", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(gw.channel_state("email").await["state"], "active");
}

#[tokio::test]
async fn the_same_idempotency_key_sends_once_and_a_different_body_conflicts() {
    let gw = started().await;
    let body = json!({"contact_id": "c-1", "text": "Order shipped", "idempotency_key": "order-1042-shipped"});
    let (status, first) = gw.post("/v1/notifications", body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    gw.wait_final(&id).await;

    let (status, again) = gw.post("/v1/notifications", body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id.as_str());

    // The key may come as a header too: same key, same body → same notification.
    let resp = gw
        .raw(Method::POST, "/v1/notifications")
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", "order-1042-shipped")
        .json(&json!({"contact_id": "c-1", "text": "Order shipped"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let header_answer: Value = resp.json().await.unwrap();
    assert_eq!(header_answer["id"], id.as_str());

    let (status, conflict) = gw
        .post(
            "/v1/notifications",
            json!({"contact_id": "c-1", "text": "Order cancelled", "idempotency_key": "order-1042-shipped"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["error"]["code"], "idempotency_conflict");

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gw.providers.sends("telegram").await, 1, "sent once");
    let (_, page) = gw.get("/v1/notifications?contact_id=c-1").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn contacts_consents_history_and_listing_work_together() {
    let gw = started().await;
    let (status, contact) = gw
        .put(
            "/v1/contacts/ana",
            json!({"whatsapp": "+48600100200", "email": "ana@example.com", "timezone": "Europe/Warsaw", "locale": "pl-PL"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(contact["timezone"], "Europe/Warsaw");
    for (status_word, scopes) in [
        ("granted", json!(["transactional", "marketing"])),
        ("revoked", json!([])),
    ] {
        let (status, rec) = gw
            .put(
                "/v1/contacts/ana/consents/whatsapp",
                json!({"status": status_word, "scopes": scopes, "source": "web_form", "evidence": "form #7"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{rec}");
    }
    let (_, contact) = gw.get("/v1/contacts/ana").await;
    assert_eq!(
        contact["consents"]["whatsapp"]["status"], "revoked",
        "{contact}"
    );
    let (_, history) = gw.get("/v1/contacts/ana/consents/whatsapp/history").await;
    let history = history["history"].as_array().unwrap().clone();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["status"], "granted");
    assert_eq!(history[0]["evidence"], "form #7");
    assert_eq!(history[1]["status"], "revoked");

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            gw.notify(json!({"contact_id": "c-1", "text": format!("n{i}")}))
                .await,
        );
    }
    let (_, page) = gw.get("/v1/notifications?contact_id=c-1&limit=2").await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], ids[2].as_str(), "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = gw
        .get(&format!(
            "/v1/notifications?contact_id=c-1&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["id"], ids[0].as_str());
    assert!(page["next_cursor"].is_null());

    let (status, _) = gw
        .send(Method::DELETE, "/v1/contacts/ana", Some(API_KEY), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = gw.get("/v1/contacts/ana").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn idempotency_keys_are_per_api_key() {
    let gw = started().await;
    let key = "order-7-shipped";
    let (status, a) = gw
        .post(
            "/v1/notifications",
            json!({"contact_id": "c-1", "text": "A's text", "idempotency_key": key}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a}");

    // App B, same key, same body: a notification of its own, not A's id.
    let (status, b_same) = gw
        .post_as(
            API_KEY_2,
            "/v1/notifications",
            json!({"contact_id": "c-1", "text": "A's text", "idempotency_key": key}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b_same}");
    assert_ne!(b_same["id"], a["id"]);

    // App B, same key, another body: B's own conflict, which does not name A's notification.
    let (status, b_other) = gw
        .post_as(
            API_KEY_2,
            "/v1/notifications",
            json!({"contact_id": "c-1", "text": "B's text", "idempotency_key": key}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{b_other}");
    let message = b_other["error"]["message"].as_str().unwrap();
    assert!(!message.contains(a["id"].as_str().unwrap()), "{message}");

    // Each app's repeat still finds its own notification.
    let (status, a_again) = gw
        .post(
            "/v1/notifications",
            json!({"contact_id": "c-1", "text": "A's text", "idempotency_key": key}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a_again}");
    assert_eq!(a_again["id"], a["id"]);
    let (status, b_again) = gw
        .post_as(
            API_KEY_2,
            "/v1/notifications",
            json!({"contact_id": "c-1", "text": "A's text", "idempotency_key": key}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b_again}");
    assert_eq!(b_again["id"], b_same["id"]);
}

#[tokio::test]
async fn a_bogus_cursor_is_a_validation_error_not_page_one() {
    let gw = started().await;
    gw.notify(json!({"contact_id": "c-1", "text": "n0"})).await;
    for query in [
        "cursor=zzz",
        "cursor=not-a-cursor",
        "contact_id=c-1&cursor=zzz",
    ] {
        let (status, body) = gw.get(&format!("/v1/notifications?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{body}");
        assert_eq!(body["error"]["field"], "cursor", "{body}");
    }
}

/// A record the store cannot read is the gateway's failure, not the client's, and nothing a
/// retry fixes: 500 `internal_error`, not 503. The body says nothing of the cause (the key,
/// the parser's words) but carries a reference that the log repeats next to the cause.
#[tokio::test]
async fn a_corrupt_stored_record_is_a_500_with_an_opaque_body_and_the_cause_in_the_log() {
    if sled_only("damages a record in the sled files on disk") {
        return;
    }
    let (dir, providers) = setup().await;
    let id = "0190a2b4-0000-7000-8000-00000000dead";
    {
        // What a damaged disk could leave: a notification record that is not JSON.
        let db = sled::open(dir.path().join("lifeboat.sled")).unwrap();
        let tree = db.open_tree("lifeboat").unwrap();
        tree.insert(format!("n/{id}"), &b"{not json"[..]).unwrap();
        db.flush().unwrap();
    }
    let config = providers.config(dir.path(), &Settings::default());
    let gw = Gateway::start(dir.path(), &config).await;

    let (status, body) = gw.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["code"], "internal_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("see the gateway's log"), "{message}");
    assert!(
        !message.contains(id) && !message.contains("line 1"),
        "{message}"
    );
    let reference = message
        .split("reference ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("a reference in the message");

    let (_, logs) = gw.terminate().await;
    let line = logs
        .lines()
        .find(|l| l.contains(reference))
        .unwrap_or_else(|| panic!("reference {reference} not in the log:\n{logs}"));
    assert!(line.contains(&format!("n/{id}")), "{line}");
}

/// Real overload is the one 503: a gateway serving all the connections it may answers the next
/// request `overloaded` with `Retry-After`, and serves again once a connection frees up.
#[tokio::test]
async fn a_gateway_at_its_connection_cap_answers_503_overloaded_with_retry_after() {
    let gw = Rig::new()
        .await
        .start_on(|providers, dir| {
            providers.config(dir, &Settings::default()).replacen(
                "[server]\n",
                "[server]\nmax_connections = 1\n",
                1,
            )
        })
        .await;
    // One idle connection takes the only slot.
    let holder = tokio::net::TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let response = gw
        .raw(Method::GET, "/v1/notifications?limit=1")
        .send()
        .await
        .unwrap();
    let retry_after = response.headers().get("retry-after").cloned();
    let (status, body) = error_of(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(retry_after.unwrap(), "1");

    drop(holder);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, body) = gw.get("/v1/notifications?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
