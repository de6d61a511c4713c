//! Black-box test harness: simulated providers on 127.0.0.1 (wiremock for the HTTP APIs, a
//! real SMTP server for email) and the real `lifeboat` binary started on a config pointing at
//! them, with its store in a temporary folder. Tests talk to it over HTTP only.
//!
//! A test usually reads:
//!
//! ```text
//! let gw = TestApp::accepting().await;                 // providers accept, gateway started
//! whatsapp_fails(&gw.providers, 1, 400, 131031, "(#131031) …", None).await;
//! gw.contact("ana").whatsapp("+48…").telegram("555…").consents_to(&["transactional"]).put().await;
//! let n = gw.notify_and_wait(json!({"contact_id": "ana", "text": "…"})).await;
//! assert_eq!(trail(&n), ["whatsapp:channel_banned", "telegram:sent"]);
//! ```
//!
//! `TestApp::with(settings)` / `bare()` for other settings or no accepting providers;
//! `Rig::new()/accepting()` then `rig.start_on(|providers, dir| config)` (or `start_at` with a
//! test clock) when mocks must be mounted before start-up or the config is custom;
//! `gw.kill9()` / `gw.terminate()` give the `Rig` back for `rig.restart()`.
//!
//! **The store.** By default every gateway keeps its store in its data folder (sled). With
//! `LIFEBOAT_TEST_STORE=postgres` every `Rig` also creates a throw-away PostgreSQL database
//! ([`TestDb`], on `LIFEBOAT_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`),
//! kept across `kill9()`/`restart()` and dropped with the `Rig`/`TestApp`; the config a test
//! starts a gateway on goes through [`Rig::store_config`], which rewrites its `[store] path = ...`
//! into `url = "..."` (the one place that does). Tests that only make sense on the embedded store
//! call [`sled_only`] first, which prints why they are skipped on PostgreSQL.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lifeboat_email::sink::SmtpSink;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const API_KEY: &str = "test-api-key-1";
/// A second app's api key (idempotency keys are per api key).
pub const API_KEY_2: &str = "test-api-key-2";
pub const ADMIN_TOKEN: &str = "test-admin-token-1";
pub const WA_PHONE_ID: &str = "1234567890";
pub const TG_TOKEN: &str = "123456:TEST-token";
pub const WA_PATH: &str = "/1234567890/messages";
pub const TG_SEND_PATH: &str = "/bot123456:TEST-token/SendMessage";
pub const LINE_PUSH_PATH: &str = "/v2/bot/message/push";
/// Signs WhatsApp webhooks (`X-Hub-Signature-256`).
pub const WA_APP_SECRET: &str = "wa-app-secret-1";
/// The WhatsApp subscribe handshake token.
pub const WA_VERIFY_TOKEN: &str = "wa-verify-token-1";
/// Signs LINE webhooks (`X-Line-Signature`).
pub const LINE_CHANNEL_SECRET: &str = "line-channel-secret-1";

/// The four simulated providers.
pub struct Providers {
    pub whatsapp: MockServer,
    pub telegram: MockServer,
    pub line: MockServer,
    pub smtp: SmtpSink,
}

impl Providers {
    pub async fn start() -> Providers {
        Providers {
            whatsapp: MockServer::start().await,
            telegram: MockServer::start().await,
            line: MockServer::start().await,
            smtp: SmtpSink::start("127.0.0.1:0").await.expect("smtp sink"),
        }
    }

    /// Every provider accepts every message (lowest priority: tests mount failures above).
    pub async fn accept_all(&self) {
        Mock::given(method("POST"))
            .and(path(WA_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": "+48600100200", "wa_id": "48600100200"}],
                "messages": [{"id": "wamid.TEST", "message_status": "accepted"}]
            })))
            .with_priority(10)
            .mount(&self.whatsapp)
            .await;
        Mock::given(method("POST"))
            .and(path(TG_SEND_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "ok": true,
                "result": {"message_id": 812, "date": 1_700_000_000,
                    "chat": {"id": 5551234, "type": "private", "first_name": "Ana"},
                    "text": "x"}
            })))
            .with_priority(10)
            .mount(&self.telegram)
            .await;
        Mock::given(method("POST"))
            .and(path(LINE_PUSH_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "sentMessages": [{"id": "461230966842064897", "quoteToken": "q"}]
            })))
            .with_priority(10)
            .mount(&self.line)
            .await;
    }

    /// How many messages `channel` (`whatsapp`, `telegram`, `line`) was asked to send.
    pub async fn sends(&self, channel: &str) -> usize {
        let (server, p) = self.send_endpoint(channel);
        hits(server, p).await
    }

    /// The bodies of the messages `channel` was asked to send, in order.
    pub async fn sent(&self, channel: &str) -> Vec<Value> {
        let (server, p) = self.send_endpoint(channel);
        bodies(server, p).await
    }

    fn send_endpoint(&self, channel: &str) -> (&MockServer, &'static str) {
        match channel {
            "whatsapp" => (&self.whatsapp, WA_PATH),
            "telegram" => (&self.telegram, TG_SEND_PATH),
            "line" => (&self.line, LINE_PUSH_PATH),
            other => panic!("no simulated send endpoint for {other}"),
        }
    }

    /// The gateway config for these providers; `extra` is appended (later keys win per table
    /// only if the test writes whole tables, so tests pass routing/channel overrides via
    /// `Settings`).
    pub fn config(&self, data: &Path, settings: &Settings) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
api_keys = ["{API_KEY}", "{API_KEY_2}"]
admin_token = "{ADMIN_TOKEN}"
concurrency = 32
shutdown_grace = "5s"

[store]
path = "{data}"

[routing]
order = ["whatsapp", "telegram", "line", "email"]
max_wait = "{max_wait}"
retry = {{ attempts = 3, base = "50ms", max = "200ms" }}
cooldown = "1h"

[channels.whatsapp]
api_base = "{wa}"
phone_number_id = "{WA_PHONE_ID}"
access_token = "wa-test-token"
app_secret = "{WA_APP_SECRET}"
verify_token = "{WA_VERIFY_TOKEN}"
business_number = "+15550001111"
timeout = "2s"
cooldown = "{wa_cooldown}"

[channels.telegram]
api_url = "{tg}"
bot_token = "{TG_TOKEN}"
bot_username = "acme_test_bot"
timeout = "2s"

[channels.line]
api_base = "{line}"
channel_access_token = "line-test-token"
channel_secret = "{LINE_CHANNEL_SECRET}"
timeout = "2s"

[channels.email]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "Acme <notify@acme.example>"
timeout = "2s"

{policy}
"#,
            data = data.join("lifeboat.sled").display(),
            max_wait = settings.max_wait,
            wa_cooldown = settings.whatsapp_cooldown,
            wa = self.whatsapp.uri(),
            tg = self.telegram.uri(),
            line = self.line.uri(),
            smtp_port = self.smtp.addr().port(),
            policy = settings.policy,
        )
    }
}

/// Knobs tests turn.
pub struct Settings {
    pub max_wait: &'static str,
    pub whatsapp_cooldown: &'static str,
    /// The whole `[policy]` section. The default turns off the two guardrails that depend on
    /// the hour and on WhatsApp conversations, so the other tests run the same at any time of
    /// day and can send free-form WhatsApp text, and lifts Telegram's one-message-a-second
    /// pace per chat, since the load tests send hundreds of messages to one test chat (as fast as the gateway goes);
    /// tests/gateway/guardrails.rs sets its own.
    pub policy: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_wait: "2s",
            whatsapp_cooldown: "1h",
            policy: "[policy]\nquiet_hours = \"off\"\n[policy.whatsapp]\nservice_window = false\n\
                     [policy.telegram]\nrate = 1000\nper_chat_rate = 1000\n"
                .into(),
        }
    }
}

/// A running `lifeboat serve`.
pub struct Gateway {
    child: Child,
    pub base: String,
    client: reqwest::Client,
    pub stderr: tokio::task::JoinHandle<String>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_lifeboat")
}

impl Gateway {
    /// Writes `config` next to the store and starts the binary on it.
    pub async fn start(dir: &Path, config: &str) -> Gateway {
        let config_path = dir.join("lifeboat.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self::start_with(&config_path).await
    }

    pub async fn start_with(config_path: &Path) -> Gateway {
        Self::spawn(
            Command::new(binary())
                .args(["serve", "--config"])
                .arg(config_path),
        )
        .await
    }

    /// Like [`Gateway::start`], with the gateway's clock read from `clock_file` (an RFC 3339
    /// time; write another to move the clock): `LIFEBOAT_TEST_CLOCK_FILE`, debug builds only.
    pub async fn start_with_clock(dir: &Path, config: &str, clock_file: &Path) -> Gateway {
        let config_path = dir.join("lifeboat.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self::spawn(
            Command::new(binary())
                .args(["serve", "--config"])
                .arg(&config_path)
                .env("LIFEBOAT_TEST_CLOCK_FILE", clock_file),
        )
        .await
    }

    /// Like [`Gateway::start`], with the process's open-files limit lowered to `max_files`
    /// (`ulimit -n`), so tests can reach it with a few hundred connections.
    pub async fn start_with_fd_limit(dir: &Path, config: &str, max_files: u32) -> Gateway {
        let config_path = dir.join("lifeboat.toml");
        std::fs::write(&config_path, config).expect("write config");
        Self::spawn(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ulimit -n {max_files} && exec \"$0\" serve --config \"$1\""
                ))
                .arg(binary())
                .arg(&config_path),
        )
        .await
    }

    /// `lifeboat sandbox` on an ephemeral port with its data in `dir`.
    pub async fn start_sandbox(dir: &Path) -> Gateway {
        Self::spawn(
            Command::new(binary())
                .args(["sandbox", "--listen", "127.0.0.1:0", "--data"])
                .arg(dir),
        )
        .await
    }

    /// Starts the binary and waits for its `lifeboat listening on` line.
    pub async fn spawn(command: &mut Command) -> Gateway {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn lifeboat");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("lifeboat listening on ") {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await
        .expect("lifeboat did not start within 20 s");
        let Some(base) = base else {
            let logs = stderr.await.unwrap_or_default();
            panic!("lifeboat exited before listening:\n{logs}");
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway {
            child,
            base,
            client: reqwest::Client::new(),
            stderr,
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then the exit status and everything logged.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("pid") as i32;
        unsafe_kill(pid, "TERM");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("lifeboat did not stop within 20 s of SIGTERM")
            .expect("wait");
        let logs = self.stderr.await.unwrap_or_default();
        (status, logs)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, Some(API_KEY), None)
            .await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(API_KEY), Some(body))
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(API_KEY), Some(body))
            .await
    }
    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, Some(ADMIN_TOKEN), None)
            .await
    }
    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(ADMIN_TOKEN), Some(body))
            .await
    }

    /// A raw request for the bad-input tests.
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A contact with a WhatsApp number and a Telegram chat, consenting to transactional
    /// messages on both: the usual subject of the failover tests.
    pub async fn on_whatsapp_and_telegram(&self, id: &str) {
        self.contact(id)
            .whatsapp("+48600100200")
            .telegram("5551234")
            .consents_to(&["transactional"])
            .put()
            .await;
    }

    /// Posts a notification and returns its id (asserting 202).
    pub async fn notify(&self, body: Value) -> String {
        let (status, answer) = self.post("/v1/notifications", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["id"].as_str().expect("id").to_string()
    }

    /// Polls a notification until its status is final (or `want`), up to 15 s.
    pub async fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, n) = self.get(&format!("/v1/notifications/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{n}");
            let s = n["status"].as_str().unwrap_or("").to_string();
            if !matches!(s.as_str(), "queued" | "sending") {
                return n;
            }
            if Instant::now() > deadline {
                panic!("notification {id} still {s} after 15 s: {n}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn channel_state(&self, channel: &str) -> Value {
        let (status, rows) = self.admin_get("/v1/admin/channels").await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array()
            .expect("array")
            .iter()
            .find(|r| r["channel"] == channel)
            .cloned()
            .expect("channel row")
    }
}

fn unsafe_kill(pid: i32, signal: &str) {
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill command");
}

/// Outcomes of a notification's attempts, as `channel:outcome[:reason]`.
pub fn trail(n: &Value) -> Vec<String> {
    n["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            let mut s = format!(
                "{}:{}",
                a["channel"].as_str().unwrap_or(""),
                a["outcome"].as_str().unwrap_or("")
            );
            if let Some(r) = a["reason"].as_str() {
                s.push(':');
                s.push_str(r);
            }
            s
        })
        .collect()
}

/// How many requests a wiremock server got on `path`.
pub async fn hits(server: &MockServer, p: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == p)
        .count()
}

/// The bodies a wiremock server got on `path`.
pub async fn bodies(server: &MockServer, p: &str) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == p)
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

/// A temporary data folder, and the providers, per test.
pub async fn setup() -> (tempfile::TempDir, Providers) {
    let dir = tempfile::tempdir().expect("tempdir");
    let providers = Providers::start().await;
    (dir, providers)
}

/// A Graph API error body as WhatsApp answers it.
pub fn whatsapp_error(code: u64, message: &str) -> Value {
    serde_json::json!({"error": {"message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "AbCdEf"}})
}

/// Makes WhatsApp answer the next `times` sends with `status` and this error (and `Retry-After`
/// when given); other sends go on as mounted before.
pub async fn whatsapp_fails(
    providers: &Providers,
    times: u64,
    status: u16,
    code: u64,
    message: &str,
    retry_after: Option<&str>,
) {
    let mut answer = ResponseTemplate::new(status).set_body_json(whatsapp_error(code, message));
    if let Some(secs) = retry_after {
        answer = answer.insert_header("Retry-After", secs);
    }
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .respond_with(answer)
        .with_priority(1)
        .up_to_n_times(times)
        .mount(&providers.whatsapp)
        .await;
}

/// `LIFEBOAT_TEST_STORE=postgres`: the gateways of this run keep their store in PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var("LIFEBOAT_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Ok("") | Err(_) => false,
        Ok(other) => panic!("LIFEBOAT_TEST_STORE is `sled` or `postgres`, not `{other}`"),
    }
}

/// For a test that only makes sense on the embedded store: `true` (and why, printed) when this
/// run is on PostgreSQL, so the test returns at once: `if sled_only("...") { return; }`.
pub fn sled_only(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        println!("skipped on PostgreSQL: {why}");
    }
    skip
}

/// The server the tests create their databases on (a user allowed to `CREATE DATABASE`).
pub fn admin_database_url() -> String {
    std::env::var("LIFEBOAT_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `name` (the query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// Runs `sql` with psql on the database `url` names; stdout (unaligned, tuples only), or the
/// error psql printed.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql (is PostgreSQL's client installed?): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A throw-away PostgreSQL database (`lifeboat_t_gw_<random>`), created empty and dropped
/// (`WITH (FORCE)`: a gateway still connected, e.g. killed a moment ago, does not keep it) when
/// this is dropped.
pub struct TestDb {
    pub name: String,
    admin: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        let admin = admin_database_url();
        let name = format!("lifeboat_t_gw_{}", uuid::Uuid::new_v4().simple());
        psql(&admin, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        TestDb { name, admin }
    }

    /// The URL the gateway connects with.
    pub fn url(&self) -> String {
        with_database(&self.admin, &self.name)
    }

    /// Everything stored in this database as text (`pg_dump --data-only`): what a search for
    /// leftovers of a contact reads. `bytea` values are in hex there: search with [`hex`] too.
    pub fn dump(&self) -> String {
        let out = std::process::Command::new("pg_dump")
            .args(["--data-only", "--no-owner", "--no-privileges"])
            .arg(self.url())
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sql` run on this database (psql's unaligned output), panicking on an error.
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.url(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// `config` with the `path = ...` of its `[store]` table replaced by `url = "<url>"` (a
/// `[store]` table added if it has none). A config whose `[store]` names a `url` already (a test
/// of PostgreSQL itself) is left as it is.
pub fn store_on(config: &str, url: &str) -> String {
    let url_line = format!("url = {}", toml_string(url));
    let store_keys: Vec<&str> = {
        let mut in_store = false;
        config
            .lines()
            .map(str::trim)
            .filter(|t| {
                if t.starts_with('[') {
                    in_store = *t == "[store]";
                    return false;
                }
                in_store
            })
            .filter_map(|t| t.split_once('=').map(|(k, _)| k.trim()))
            .collect()
    };
    if store_keys.contains(&"url") {
        return config.to_string();
    }
    let has_path = store_keys.contains(&"path");
    let mut out = Vec::new();
    let (mut in_store, mut seen_store) = (false, false);
    for line in config.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_store = trimmed == "[store]";
            seen_store |= in_store;
        }
        let is_path = in_store
            && trimmed
                .split_once('=')
                .is_some_and(|(k, _)| k.trim() == "path");
        if is_path {
            out.push(url_line.clone());
            continue;
        }
        out.push(line.to_string());
        if trimmed == "[store]" && !has_path {
            out.push(url_line.clone());
        }
    }
    if !seen_store {
        out.push(String::new());
        out.push("[store]".into());
        out.push(url_line);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// `bytes` in lowercase hex, as `pg_dump` writes a `bytea`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A started gateway with its own data folder and simulated providers: what most tests begin
/// with (zero-to-production's `TestApp`). Derefs to its [`Gateway`], so requests read
/// `gw.notify(..)`; the providers are `gw.providers`, the data folder `gw.dir`.
/// Fields drop in order: the process first, then the providers, then the folder, then the
/// database (on PostgreSQL).
pub struct TestApp {
    pub gateway: Gateway,
    pub providers: Providers,
    pub dir: tempfile::TempDir,
    pub db: Option<TestDb>,
}

impl std::ops::Deref for TestApp {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gateway
    }
}

impl TestApp {
    /// Providers that accept every message, and a gateway on the default [`Settings`].
    /// Tests mount failures on `gw.providers` afterwards (they take precedence).
    pub async fn accepting() -> TestApp {
        Self::with(Settings::default()).await
    }

    /// Providers that accept every message, and a gateway on `settings`.
    pub async fn with(settings: Settings) -> TestApp {
        Rig::accepting()
            .await
            .start_on(|providers, dir| providers.config(dir, &settings))
            .await
    }

    /// A gateway on the default settings whose providers have nothing mounted (wiremock answers
    /// 404): for tests that send nothing or mount every answer themselves.
    pub async fn bare() -> TestApp {
        Rig::new().await.start_default().await
    }

    /// SIGKILL (no shutdown, no flush); the folder and providers stay for [`Rig::restart`].
    pub async fn kill9(self) -> Rig {
        self.gateway.kill9().await;
        Rig {
            dir: self.dir,
            providers: self.providers,
            db: self.db,
        }
    }

    /// SIGTERM: the exit status, everything logged, and the folder and providers (for
    /// [`Rig::restart`] or for looking at what the providers got).
    pub async fn terminate(self) -> (std::process::ExitStatus, String, Rig) {
        let (status, logs) = self.gateway.terminate().await;
        let rig = Rig {
            dir: self.dir,
            providers: self.providers,
            db: self.db,
        };
        (status, logs, rig)
    }
}

/// A data folder and the simulated providers before the gateway starts: for tests that mount
/// answers the gateway needs at start-up, or write their own config. `rig.start_on(..)` turns it
/// into a [`TestApp`].
pub struct Rig {
    pub providers: Providers,
    pub dir: tempfile::TempDir,
    /// The gateway's database when this run is on PostgreSQL (dropped after the folder).
    pub db: Option<TestDb>,
}

impl Rig {
    /// Providers with nothing mounted (and a fresh database on PostgreSQL).
    pub async fn new() -> Rig {
        let (dir, providers) = setup().await;
        let db = if on_postgres() {
            Some(
                tokio::task::spawn_blocking(TestDb::create)
                    .await
                    .expect("create the test database"),
            )
        } else {
            None
        };
        Rig { providers, dir, db }
    }

    /// The config a gateway of this rig starts on: `config` itself on the embedded store; on
    /// PostgreSQL, its `[store] path` replaced by this rig's database `url`.
    pub fn store_config(&self, config: &str) -> String {
        match &self.db {
            Some(db) => store_on(config, &db.url()),
            None => config.to_string(),
        }
    }

    /// Providers that accept every message.
    pub async fn accepting() -> Rig {
        let rig = Self::new().await;
        rig.providers.accept_all().await;
        rig
    }

    /// Starts the gateway on the default config.
    pub async fn start_default(self) -> TestApp {
        self.start_on(|providers, dir| providers.config(dir, &Settings::default()))
            .await
    }

    /// Starts the gateway on the config `config` writes for these providers and this folder.
    pub async fn start_on(self, config: impl FnOnce(&Providers, &Path) -> String) -> TestApp {
        let config = self.store_config(&config(&self.providers, self.dir.path()));
        let gateway = Gateway::start(self.dir.path(), &config).await;
        self.into_app(gateway)
    }

    /// Like [`Rig::start_on`], with the gateway's clock read from `dir/clock`, first set to `at`
    /// (see [`Gateway::start_with_clock`]); tests move it by writing `gw.clock()`.
    pub async fn start_at(
        self,
        at: &str,
        config: impl FnOnce(&Providers, &Path) -> String,
    ) -> TestApp {
        let clock = self.dir.path().join("clock");
        std::fs::write(&clock, at).expect("write clock");
        let config = self.store_config(&config(&self.providers, self.dir.path()));
        let gateway = Gateway::start_with_clock(self.dir.path(), &config, &clock).await;
        self.into_app(gateway)
    }

    /// Like [`Rig::start_on`], with the process's open-files limit lowered to `max_files`
    /// (see [`Gateway::start_with_fd_limit`]).
    pub async fn start_with_fd_limit(
        self,
        max_files: u32,
        config: impl FnOnce(&Providers, &Path) -> String,
    ) -> TestApp {
        let config = self.store_config(&config(&self.providers, self.dir.path()));
        let gateway = Gateway::start_with_fd_limit(self.dir.path(), &config, max_files).await;
        self.into_app(gateway)
    }

    /// Starts the gateway again on the config the last one ran on (same folder, same store).
    pub async fn restart(self) -> TestApp {
        let gateway = Gateway::start_with(&self.dir.path().join("lifeboat.toml")).await;
        self.into_app(gateway)
    }

    fn into_app(self, gateway: Gateway) -> TestApp {
        TestApp {
            gateway,
            providers: self.providers,
            dir: self.dir,
            db: self.db,
        }
    }
}

impl TestApp {
    /// The file the gateway's test clock is read from (after [`Rig::start_at`]).
    pub fn clock(&self) -> std::path::PathBuf {
        self.dir.path().join("clock")
    }

    /// Moves the gateway's test clock to `rfc3339` and waits until the gateway reads it (it
    /// looks at the file every 20 ms): a request sent at once could still be stamped with the
    /// old time.
    pub async fn move_clock(&self, rfc3339: &str) {
        std::fs::write(self.clock(), rfc3339).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A contact to create: `gw.contact("ana").telegram("5551234").consents_to(&["transactional"])
/// .put().await` (addresses first, then consents; `put` asserts each answer is 200).
#[must_use = "a contact is created by .put().await"]
pub struct NewContact<'a> {
    gw: &'a Gateway,
    id: String,
    body: serde_json::Map<String, Value>,
    consents: Vec<(String, Vec<String>)>,
}

impl<'a> NewContact<'a> {
    /// The contact's address on `channel` (or any other contact field).
    pub fn address(mut self, channel: &str, value: impl Into<String>) -> Self {
        self.body
            .insert(channel.to_string(), Value::String(value.into()));
        self
    }
    pub fn whatsapp(self, number: impl Into<String>) -> Self {
        self.address("whatsapp", number)
    }
    pub fn telegram(self, chat_id: impl Into<String>) -> Self {
        self.address("telegram", chat_id)
    }
    pub fn line(self, user_id: impl Into<String>) -> Self {
        self.address("line", user_id)
    }
    pub fn email(self, address: impl Into<String>) -> Self {
        self.address("email", address)
    }
    pub fn timezone(self, zone: &str) -> Self {
        self.address("timezone", zone)
    }
    /// Consent granted on `channel` for `scopes` (`web_form`, evidence `test`).
    pub fn consent(mut self, channel: &str, scopes: &[&str]) -> Self {
        self.consents.push((
            channel.to_string(),
            scopes.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }
    /// Consent for `scopes` on every channel given an address so far.
    pub fn consents_to(mut self, scopes: &[&str]) -> Self {
        let channels: Vec<String> = self
            .body
            .keys()
            .filter(|k| matches!(k.as_str(), "whatsapp" | "telegram" | "line" | "email"))
            .cloned()
            .collect();
        for channel in channels {
            self = self.consent(&channel, scopes);
        }
        self
    }
    /// `PUT /v1/contacts/{id}`, then one consent `PUT` per channel, each asserted 200.
    pub async fn put(self) {
        let (status, body) = self
            .gw
            .put(
                &format!("/v1/contacts/{}", self.id),
                Value::Object(self.body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for (channel, scopes) in &self.consents {
            let (status, body) = self
                .gw
                .put(
                    &format!("/v1/contacts/{}/consents/{channel}", self.id),
                    json!({"status": "granted", "scopes": scopes, "source": "web_form", "evidence": "test"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
}

/// Typed helpers for the calls tests make again and again.
impl Gateway {
    /// Starts describing a contact to create; see [`NewContact`].
    pub fn contact(&self, id: impl Into<String>) -> NewContact<'_> {
        NewContact {
            gw: self,
            id: id.into(),
            body: serde_json::Map::new(),
            consents: Vec::new(),
        }
    }

    /// Posts a notification and waits for its final state.
    pub async fn notify_and_wait(&self, body: Value) -> Value {
        let id = self.notify(body).await;
        self.wait_final(&id).await
    }

    /// `POST /v1/admin/channels/{channel}/disable` with `reason`.
    pub async fn disable_channel(&self, channel: &str, reason: &str) -> (StatusCode, Value) {
        self.admin_post(
            &format!("/v1/admin/channels/{channel}/disable"),
            json!({ "reason": reason }),
        )
        .await
    }

    /// `POST /v1/admin/channels/{channel}/enable`.
    pub async fn enable_channel(&self, channel: &str) -> (StatusCode, Value) {
        self.admin_post(&format!("/v1/admin/channels/{channel}/enable"), json!({}))
            .await
    }

    /// A `POST` with another app's api key (idempotency keys are per key).
    pub async fn post_as(&self, api_key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(api_key), Some(body))
            .await
    }

    /// A `GET` without credentials (`/healthz`, `/readyz`, `/metrics`).
    pub async fn get_public(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None, None).await
    }
}
