//! `lifeboat store copy`: a gateway's store, populated over HTTP, copied with the gateway
//! stopped into another store, on which a new gateway serves the same contacts, consents and
//! notifications, sends what was queued, and knows the idempotency keys: sled to sled, and
//! sled to PostgreSQL and back (a throw-away database on 127.0.0.1:5432, user postgres).

use std::path::{Path, PathBuf};
use std::process::Output;

use reqwest::StatusCode;
use serde_json::{json, Value};

use std::time::{Duration, Instant};

use crate::harness::{binary, trail, Gateway, Providers, Rig, Settings, TestApp};

/// `lifeboat store copy` from one config to another.
async fn store_copy(from: &Path, to: &Path, merge: bool) -> Output {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(["store", "copy", "--from-config"])
        .arg(from)
        .arg("--to-config")
        .arg(to);
    if merge {
        command.arg("--merge");
    }
    command.output().await.expect("run lifeboat store copy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `config` with its `[store]` section naming `store` instead (a `path = ...` or `url = ...`
/// line).
fn with_store(config: &str, store: &str) -> String {
    let mut out = String::new();
    let mut in_store = false;
    for line in config.lines() {
        if line.starts_with('[') {
            in_store = line.trim() == "[store]";
        }
        if in_store && line.starts_with("path = ") {
            out.push_str(store);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Writes the gateway's config with its store at `store` into `file`.
fn config_file(source_config: &str, store: &str, file: PathBuf) -> PathBuf {
    std::fs::write(&file, with_store(source_config, store)).expect("write config");
    file
}

/// 23:00 in Warsaw: marketing waits for the morning (quiet hours).
const EVENING: &str = "2025-06-10T21:00:00Z";
/// 08:00 and a second in Warsaw.
const MORNING: &str = "2025-06-11T06:00:01Z";

/// The harness's policy with quiet hours on (the default: 21:00 to 08:00 in the contact's
/// zone).
fn settings() -> Settings {
    Settings {
        policy: "[policy]\n[policy.whatsapp]\nservice_window = false\n\
                 [policy.telegram]\nrate = 1000\nper_chat_rate = 1000\n"
            .into(),
        ..Settings::default()
    }
}

/// A marketing notification to ana on Telegram, with an idempotency key.
fn keyed_request() -> Value {
    json!({"contact_id": "ana", "category": "marketing", "channels": ["telegram"],
           "text": "Summer sale: 20% off", "idempotency_key": "summer-sale-ana"})
}

/// What a gateway shows of the populated store: ana, her WhatsApp consent history, the
/// notifications by id, the channels' states.
async fn snapshot(gw: &Gateway, ids: &[String; 3]) -> Value {
    let (status, contact) = gw.get("/v1/contacts/ana").await;
    assert_eq!(status, StatusCode::OK, "{contact}");
    let (status, history) = gw.get("/v1/contacts/ana/consents/whatsapp/history").await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let mut notifications = Vec::new();
    for id in ids {
        let (status, n) = gw.get(&format!("/v1/notifications/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{n}");
        notifications.push(n);
    }
    let line = gw.channel_state("line").await;
    json!({"contact": contact, "history": history, "notifications": notifications,
           "line": {"state": line["state"], "reason": line["reason"]}})
}

/// The populated gateway (at [`EVENING`]): ana with addresses and a consent history on
/// WhatsApp (granted, revoked, granted), two notifications sent on WhatsApp, LINE disabled,
/// and a marketing notification accepted with an idempotency key and waiting on the queue for
/// the morning. Returns the ids (sent, sent, queued).
async fn populate(gw: &TestApp) -> [String; 3] {
    gw.contact("ana")
        .whatsapp("+48600100200")
        .telegram("5551234")
        .timezone("Europe/Warsaw")
        .consents_to(&["transactional", "marketing"])
        .put()
        .await;
    for status in ["revoked", "granted"] {
        let (code, body) = gw
            .put(
                "/v1/contacts/ana/consents/whatsapp",
                json!({"status": status, "scopes": ["transactional", "marketing"], "source": "api"}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    let mut sent = Vec::new();
    for text in ["Your order is confirmed", "Your order has shipped"] {
        let n = gw
            .notify_and_wait(json!({"contact_id": "ana", "text": text}))
            .await;
        assert_eq!(n["status"], "sent", "{n}");
        assert_eq!(n["channel"], "whatsapp", "{n}");
        sent.push(n["id"].as_str().unwrap().to_string());
    }
    let (status, body) = gw.disable_channel("line", "no LINE account yet").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let queued = gw.notify(keyed_request()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        let (_, n) = gw.get(&format!("/v1/notifications/{queued}")).await;
        if !n["attempts"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(n["status"], "queued", "{n}");
    assert_eq!(trail(&n), ["telegram:deferred:quiet_hours"], "{n}");
    [sent[0].clone(), sent[1].clone(), queued]
}

/// A gateway started on the config at `config` (the copy) serves what the source did, and
/// carries on: the idempotency key answers with the first id, and the queued notification
/// goes out on Telegram in the morning.
async fn assert_the_copy_carries_on(
    config: &Path,
    providers: &Providers,
    before: &Value,
    ids: &[String; 3],
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "2025-06-10T21:05:00Z").unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    let gw = Gateway::start_with_clock(dir.path(), &text, &clock).await;

    let after = snapshot(&gw, ids).await;
    assert_eq!(after["contact"], before["contact"]);
    assert_eq!(after["history"], before["history"]);
    let statuses: Vec<&Value> = after["history"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|c| &c["status"])
        .collect();
    assert_eq!(statuses, ["granted", "revoked", "granted"]);
    assert_eq!(after["notifications"], before["notifications"]);
    assert_eq!(after["line"], before["line"]);
    assert_eq!(after["line"]["state"], "disabled");

    let (status, again) = gw.post("/v1/notifications", keyed_request()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], ids[2].as_str());

    let sends_before = providers.sends("telegram").await;
    std::fs::write(&clock, MORNING).unwrap();
    let n = gw.wait_final(&ids[2]).await;
    assert_eq!(n["status"], "sent", "{n}");
    assert_eq!(
        trail(&n),
        ["telegram:deferred:quiet_hours", "telegram:sent"],
        "{n}"
    );
    assert_eq!(providers.sends("telegram").await, sends_before + 1);
    let (status, _) = gw.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn a_stopped_gateways_store_is_copied_and_a_gateway_on_the_copy_carries_on() {
    if crate::harness::sled_only(
        "copies from an embedded store (its lock refuses a running gateway) and makes its own PostgreSQL database for the sled -> PostgreSQL -> sled leg",
    ) {
        return;
    }
    let gw = Rig::accepting()
        .await
        .start_at(EVENING, |providers, dir| providers.config(dir, &settings()))
        .await;
    let ids = populate(&gw).await;
    let before = snapshot(&gw, &ids).await;
    let source = gw.dir.path().join("lifeboat.toml");
    let source_config = std::fs::read_to_string(&source).unwrap();
    let copy_dir = tempfile::tempdir().unwrap();
    let target = config_file(
        &source_config,
        &format!("path = \"{}\"", copy_dir.path().join("copy.sled").display()),
        copy_dir.path().join("copy.toml"),
    );

    // The gateway still runs: its data folder is locked.
    let refused = store_copy(&source, &target, false).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("in use by another Lifeboat process")
            && stderr.contains("stop the gateway"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (status, _, rig) = gw.terminate().await;
    assert!(status.success());

    let copied = store_copy(&source, &target, false).await;
    let stdout = text(&copied.stdout);
    assert!(copied.status.success(), "{copied:?}");
    for line in [
        "contacts: 1 of 1 (1 written, 0 already there)",
        "notifications: 3 of 3 (3 written, 0 already there)",
        "idempotency keys: 1 of 1 (1 written, 0 already there)",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }

    // Again: a target holding records is refused without --merge, and with it nothing is
    // written.
    let again = store_copy(&source, &target, false).await;
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    let stderr = text(&again.stderr);
    assert!(stderr.contains("--merge"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let merged = store_copy(&source, &target, true).await;
    let stdout = text(&merged.stdout);
    assert!(merged.status.success(), "{merged:?}");
    assert!(stdout.contains("copied: 0 records written"), "{stdout}");

    // The same folder on both sides is refused.
    let same = store_copy(&source, &source, true).await;
    assert_eq!(same.status.code(), Some(2), "{same:?}");
    assert!(text(&same.stderr).contains("the same store"), "{same:?}");
    // A source folder that does not exist is refused, not created and copied empty.
    let missing = config_file(
        &source_config,
        &format!("path = \"{}\"", copy_dir.path().join("typo.sled").display()),
        copy_dir.path().join("typo.toml"),
    );
    let refused = store_copy(&missing, &target, true).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("does not exist"),
        "{refused:?}"
    );
    assert!(!copy_dir.path().join("typo.sled").exists());

    assert_the_copy_carries_on(&target, &rig.providers, &before, &ids).await;

    postgres_round_trip(&source, &source_config, &before, &ids, &rig.providers).await;
}

/// A throw-away PostgreSQL database, dropped with it.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Database {
        let name = format!(
            "lifeboat_copy_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        psql(&format!("CREATE DATABASE {name}"));
        Database { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn psql(sql: &str) {
    let status = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-qc",
            sql,
        ])
        .status()
        .expect("run psql");
    assert!(status.success(), "psql: {sql}");
}

/// sled → PostgreSQL → sled, when this build has the PostgreSQL store: a gateway on the
/// PostgreSQL copy and one on the copy back both carry on.
async fn postgres_round_trip(
    source: &Path,
    source_config: &str,
    before: &Value,
    ids: &[String; 3],
    providers: &Providers,
) {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::create();
    let pg = config_file(
        source_config,
        &format!("url = \"{}\"", database.url()),
        dir.path().join("pg.toml"),
    );
    let to_pg = store_copy(source, &pg, false).await;
    assert!(to_pg.status.success(), "{to_pg:?}");
    let back = config_file(
        source_config,
        &format!("path = \"{}\"", dir.path().join("back.sled").display()),
        dir.path().join("back.toml"),
    );
    let to_sled = store_copy(&pg, &back, false).await;
    assert!(to_sled.status.success(), "{to_sled:?}");
    assert!(
        text(&to_sled.stdout).contains("notifications: 3 of 3 (3 written"),
        "{to_sled:?}"
    );

    assert_the_copy_carries_on(&pg, providers, before, ids).await;
    assert_the_copy_carries_on(&back, providers, before, ids).await;
}
