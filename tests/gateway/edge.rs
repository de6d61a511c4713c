//! The HTTP edge: slow and stuck clients (idle connections, a header sent a byte a second,
//! half-sent requests at shutdown), bodies that are not one JSON object, the error shape of
//! answers made outside the handlers (405, 431, a bad path), and start-up on a busy port.
//! Slow clients are raw TCP streams on 127.0.0.1; every loop is bounded in count and time.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// The harness's config with `[server]` keys replaced or added (`key = value` lines).
fn with_server(config: String, keys: &[(&str, &str)]) -> String {
    let mut config = config;
    for (key, value) in keys {
        let line = format!("{key} = {value}");
        match config.lines().find(|l| l.starts_with(&format!("{key} ="))) {
            Some(old) => config = config.replacen(old, &line, 1),
            None => config = config.replacen("[server]\n", &format!("[server]\n{line}\n"), 1),
        }
    }
    config
}

fn host_port(gw: &Gateway) -> String {
    gw.base.trim_start_matches("http://").to_string()
}

/// `GET /healthz` on a fresh connection, retried for up to `within`: true once it answers 200.
async fn healthz_answers(gw: &Gateway, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        if let Ok(r) = client.get(gw.url("/healthz")).send().await {
            if r.status() == StatusCode::OK {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn idle_and_trickling_clients_neither_starve_health_checks_nor_stay_forever() {
    // 256 open files: without a connection cap, 400 idle clients use them all up.
    let gw = Rig::new()
        .await
        .start_with_fd_limit(256, |providers, dir| {
            with_server(
                providers.config(dir, &Settings::default()),
                &[("max_connections", "64"), ("header_timeout", "\"4s\"")],
            )
        })
        .await;
    let addr = host_port(&gw);

    // A client sending its header a byte a second, connected first (it gets a slot).
    let trickler = TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = trickler.into_split();
    let connected = Instant::now();
    tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter().take(20) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let closed_after = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        // Ends on the gateway closing the connection (after its answer, if any).
        let ended = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        ended.ok().map(|()| connected.elapsed())
    });

    // 400 clients that connect and send nothing.
    let mut idle = Vec::new();
    for _ in 0..400 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await
        {
            idle.push(s);
        }
    }
    assert!(
        healthz_answers(&gw, Duration::from_secs(3)).await,
        "GET /healthz did not answer while {} idle connections were open",
        idle.len()
    );

    let closed = closed_after.await.unwrap();
    let closed = closed.expect("the trickling client was still connected after 15 s");
    assert!(
        closed < Duration::from_secs(4 + 3),
        "the trickling client was disconnected only after {closed:?} (header_timeout is 4s)"
    );
    drop(idle);
    assert!(healthz_answers(&gw, Duration::from_secs(3)).await);
    let (status, logs, _rig) = gw.terminate().await;
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("Too many open files"), "{logs}");
}

#[tokio::test]
async fn sigterm_completes_within_the_grace_while_clients_hold_half_sent_requests() {
    let gw = Rig::new()
        .await
        .start_on(|providers, dir| {
            with_server(
                providers.config(dir, &Settings::default()),
                &[("shutdown_grace", "\"2s\"")],
            )
        })
        .await;
    let addr = host_port(&gw);

    // Headers without their end.
    let mut partial_head = TcpStream::connect(&addr).await.unwrap();
    partial_head
        .write_all(b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .unwrap();
    // A body shorter than its Content-Length.
    let mut short_body = TcpStream::connect(&addr).await.unwrap();
    short_body
        .write_all(
            format!(
                "POST /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"contact_id\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The gateway has taken both (it answers another request after them).
    assert!(healthz_answers(&gw, Duration::from_secs(3)).await);

    let asked = Instant::now();
    let (status, logs, _) = gw.terminate().await;
    let took = asked.elapsed();
    assert!(status.success(), "{logs}");
    assert!(
        took < Duration::from_secs(2 + 3),
        "shutdown took {took:?} with a 2 s grace\n{logs}"
    );
    // Log lines carry no colour codes when stderr is not a terminal.
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
    assert!(logs.contains("store flushed"), "{logs}");
    drop((partial_head, short_body));
}

#[tokio::test]
async fn bodies_that_are_not_one_json_object_are_refused_and_nothing_is_stored() {
    let gw = TestApp::accepting().await;
    gw.contact("ana")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;
    let raw = |method: Method, path: &str, body: &str| {
        gw.raw(method, path)
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let answer = |resp: reqwest::Response| async move {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    };

    let one = r#"{"contact_id": "ana", "text": "hi"}"#;
    for body in [
        format!("{one} trailing"),
        format!("{one}{one}"),
        format!("{one}]]]"),
        r#"["ana", null, null, "hi"]"#.to_string(),
    ] {
        let (status, err) =
            answer(raw(Method::POST, "/v1/notifications", &body).await.unwrap()).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json")),
            "{body}: {err}"
        );
    }
    for text in ["\u{0}", "\u{0}\u{1}\u{7f}\n\t", " \u{0} "] {
        let (status, err) = gw
            .post(
                "/v1/notifications",
                json!({"contact_id": "ana", "text": text}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text:?}: {err}");
        assert_eq!(err["error"]["field"], "text", "{err}");
    }
    let (status, page) = gw.get("/v1/notifications?limit=100").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().unwrap().len(), 0, "{page}");

    // Consents: data after the object, and a number where `granted`/`revoked` is expected.
    let consent = "/v1/contacts/ana/consents/whatsapp";
    let (status, err) = answer(
        raw(Method::PUT, consent, r#"{"status":"granted"}]]]"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "invalid_json", "{err}");
    let (status, err) = gw.put(consent, json!({"status": 5})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "validation_failed", "{err}");
    assert_eq!(err["error"]["field"], "status", "{err}");
    let (status, history) = gw.get(&format!("{consent}/history")).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert!(
        !history.to_string().contains("granted"),
        "a refused consent was stored: {history}"
    );
}

#[tokio::test]
async fn errors_made_outside_the_handlers_have_the_json_shape_and_a_code() {
    let gw = TestApp::bare().await;
    let shape = |resp: reqwest::Response| async move {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{status}: {body}"
        );
        (
            status,
            body["error"]["code"].as_str().map(String::from),
            headers,
        )
    };

    let (status, code, headers) =
        shape(gw.raw(Method::DELETE, "/healthz").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code.as_deref(), Some("method_not_allowed"));
    assert!(headers.contains_key("allow"));

    let (status, code, _) = shape(
        gw.raw(Method::GET, "/v1/contacts/%FF%FE")
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code.as_deref(), Some("invalid_path"));

    // Past server.max_header_bytes (16 KiB by default), below hyper's own limit.
    let (status, code, _) = shape(
        gw.raw(Method::GET, "/healthz")
            .header("x-padding", "a".repeat(20 * 1024))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(code.as_deref(), Some("headers_too_large"));
    // A head just under the limit is served.
    let resp = gw
        .raw(Method::GET, "/healthz")
        .header("x-padding", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_busy_port_is_one_line_naming_the_setting_to_change() {
    let gw = TestApp::bare().await;
    let addr = host_port(&gw);

    let other = tempfile::tempdir().unwrap();
    let config = gw
        .providers
        .config(other.path(), &Settings::default())
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{addr}\""),
            1,
        );
    let config_path = other.path().join("lifeboat.toml");
    std::fs::write(&config_path, config).unwrap();
    let out = tokio::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("lifeboat: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(line.contains(&addr), "{line}");
    assert!(line.contains("`listen` under [server]"), "{line}");

    let out = tokio::process::Command::new(binary())
        .args(["sandbox", "--listen", &addr, "--data"])
        .arg(other.path().join("sandbox"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
