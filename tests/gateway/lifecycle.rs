//! Crashes, restarts and shutdown: accepted means durable; a second process on the same data
//! folder is refused; SIGTERM drains and exits 0.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

#[tokio::test]
async fn a_gateway_killed_under_load_sends_every_accepted_notification_after_restart() {
    let rig = Rig::new().await;
    // Telegram answers slowly, so that sends are in flight when the process dies.
    Mock::given(method("POST"))
        .and(path(TG_SEND_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(30))
                .set_body_json(json!({"ok": true, "result": {"message_id": 1, "date": 0,
                    "chat": {"id": 5551234, "type": "private", "first_name": "Ana"}, "text": "x"}})),
        )
        .mount(&rig.providers.telegram)
        .await;
    // A short lease: on PostgreSQL the restarted process is a new owner, which takes over the
    // dead one's claims once their lease has run out (on sled claims die with the process).
    let gw = rig
        .start_on(|providers, dir| {
            providers.config(dir, &Settings::default()).replacen(
                "[store]\n",
                "[store]\nlease = \"2s\"\n",
                1,
            )
        })
        .await;
    gw.contact("c-1")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;

    let accepted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let client = reqwest::Client::new();
    let url = gw.url("/v1/notifications");
    let mut senders = Vec::new();
    for worker in 0..16 {
        let (client, url, accepted) = (client.clone(), url.clone(), accepted.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let text = format!("load {worker}-{i}");
                let resp = client
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"contact_id": "c-1", "text": text}))
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                if resp.status() != StatusCode::ACCEPTED {
                    return;
                }
                let Ok(body) = resp.json::<Value>().await else {
                    return;
                };
                accepted
                    .lock()
                    .unwrap()
                    .push((body["id"].as_str().unwrap().to_string(), text));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rig = gw.kill9().await;
    for s in senders {
        let _ = s.await;
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 50,
        "the load should have been accepted in numbers, got {}",
        accepted.len()
    );

    let gw = rig.restart().await;
    for (id, _) in &accepted {
        let n = gw.wait_final(id).await;
        assert_eq!(n["status"], "sent", "{n}");
    }
    let delivered: HashSet<String> = gw
        .providers
        .sent("telegram")
        .await
        .iter()
        .filter_map(|b| b["text"].as_str().map(str::to_string))
        .collect();
    for (id, text) in &accepted {
        assert!(
            delivered.contains(text),
            "accepted notification {id} ({text}) never reached Telegram"
        );
    }
}

#[tokio::test]
async fn a_second_instance_on_the_same_data_folder_fails_clearly() {
    if sled_only("the embedded store's folder lock; on PostgreSQL a second instance is fleet mode")
    {
        return;
    }
    let first = TestApp::bare().await;
    let output = tokio::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(first.dir.path().join("lifeboat.toml"))
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("already in use by another Lifeboat process"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_second_sandbox_on_the_same_data_folder_fails_before_its_banner() {
    let dir = tempfile::tempdir().unwrap();
    let first = Gateway::start_sandbox(dir.path()).await;
    let output = tokio::process::Command::new(binary())
        .args(["sandbox", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("already in use by another Lifeboat process"),
        "{stderr}"
    );
    // Nothing that looks like a ready sandbox: no banner, no keys, no listening line.
    assert!(
        stdout.trim().is_empty(),
        "printed before failing:\n{stdout}"
    );
    drop(first);
}

#[tokio::test]
async fn sigterm_stops_taking_requests_flushes_and_exits_zero() {
    let gw = TestApp::accepting().await;
    gw.contact("c-1")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;
    let id = gw
        .notify(json!({"contact_id": "c-1", "text": "before stop"}))
        .await;
    gw.wait_final(&id).await;
    let (status, logs, rig) = gw.terminate().await;
    assert!(status.success(), "exit status {status:?}\n{logs}");
    assert!(logs.contains("store flushed"), "{logs}");

    // Everything is still there after a restart.
    let gw = rig.restart().await;
    let (status, n) = gw.get(&format!("/v1/notifications/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(n["status"], "sent");
}

#[tokio::test]
async fn a_channel_state_survives_a_restart() {
    let gw = TestApp::accepting().await;
    let (status, _) = gw.disable_channel("line", "quota dispute").await;
    assert_eq!(status, StatusCode::OK);
    let gw = gw.kill9().await.restart().await;
    let row = gw.channel_state("line").await;
    assert_eq!(row["state"], "disabled", "{row}");
    assert!(row["reason"].as_str().unwrap().contains("quota dispute"));
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = TestApp::bare().await;
    let (status, body) = gw.get_public("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = gw.get_public("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    // Which instance answered: the host name and a random part, the one its start line names.
    let instance = body["instance"]
        .as_str()
        .expect("an instance id")
        .to_string();
    let (_, random) = instance.rsplit_once('-').expect("host-random");
    assert_eq!(random.len(), 6, "{instance}");
    let (_, logs, _) = gw.terminate().await;
    let started = logs
        .lines()
        .find(|l| l.contains("lifeboat started"))
        .expect("a start line");
    assert!(
        started.contains(&format!("instance={instance}")),
        "{started}"
    );
}
