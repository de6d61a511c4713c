//! The admin page in a real headless browser: sign in through the form, watch WhatsApp get
//! banned by the simulated provider (the hint, the chart, the timeline), type a reason that
//! must survive, click Enable, see it active again and the return on the timeline.
//!
//! How: Debian's `chromium` driven by Debian's `chromedriver` (package `chromium-driver`),
//! spoken to over the W3C WebDriver protocol (plain HTTP + JSON) with the reqwest the tests
//! already use — no browser download, no extra crate. The gateway is the real binary as
//! `lifeboat sandbox`.
//!
//! The test is `#[ignore]`d, so a plain `cargo test` on a machine without a browser reports it
//! as ignored in its summary instead of a pass. Run it with
//! `cargo test --test admin_browser -- --include-ignored` (.ci/run does, after installing
//! both with apt); asked to run without chromium or chromedriver, it fails saying which.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ADMIN_TOKEN: &str = "sandbox-admin-token";
const API_KEY: &str = "sandbox-api-key";
/// The W3C WebDriver name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in candidates {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Chromium and chromedriver; a failure naming what is missing.
fn browser() -> (PathBuf, PathBuf) {
    let chromium = find(&["chromium", "chromium-browser"]);
    let driver = find(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => {
            let missing = [("chromium", c.is_none()), ("chromedriver", d.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" and ");
            panic!("{missing} is not installed: apt-get install chromium chromium-driver (.ci/run does)");
        }
    }
}

/// A child process killed when dropped.
async fn spawn_listening(mut command: Command, prefix: &str) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
        panic!("the process exited before printing `{prefix}`");
    })
    .await
    .expect("the process did not start within 20 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, found)
}

/// A WebDriver session.
struct Driver {
    http: reqwest::Client,
    session: String,
}

impl Driver {
    async fn start(chromium: &Path, driver: &str, profile: &Path) -> Driver {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{driver}/status")).send().await;
            if let Ok(r) = ready {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let answer: Value = http
            .post(format!("{driver}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-first-run",
                        format!("--user-data-dir={}", profile.display())],
                }
            }}}))
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session JSON");
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"));
        Driver {
            http,
            session: format!("{driver}/session/{id}"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(v) => v,
            Err(answer) => panic!("webdriver {path}: {answer}"),
        }
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            request = request.json(&b);
        }
        let answer: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver JSON");
        if answer["value"]["error"].is_string() {
            return Err(answer);
        }
        Ok(answer["value"].clone())
    }

    /// Waits up to 10 s for the element's text to be `want` (a click's page load may still be
    /// under way), and returns the last text seen.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            let found = self
                .try_call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Ok(e) = found {
                let id = e[ELEMENT].as_str().unwrap_or_default();
                if let Ok(t) = self
                    .try_call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
                    .await
                {
                    last = t.as_str().unwrap_or_default().to_string();
                    if last == want {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Whether the page has an element matching `css` now.
    async fn exists(&self, css: &str) -> bool {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array().is_some_and(|a| !a.is_empty())
    }

    /// The current value of a form field (what the user typed).
    async fn value(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{e}/property/value"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// On drop, ends the browser processes started with this profile folder (found through their
/// command lines, ended by id): a test that fails mid-way never calls `quit`, and chromedriver
/// leaves its browser running when it is killed.
struct Reap(PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        let needle = format!("--user-data-dir={}", self.0.display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> Value {
    let answer = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = answer.status();
    let value: Value = answer.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {value}");
    value
}

async fn whatsapp_state(http: &reqwest::Client, base: &str) -> String {
    let rows: Value = http
        .get(format!("{base}/v1/admin/channels"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("channels")
        .json()
        .await
        .expect("JSON");
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "whatsapp")
        .expect("whatsapp row")["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver: cargo test --test admin_browser -- --include-ignored"]
async fn sign_in_see_a_ban_and_enable_the_channel_in_a_browser() {
    let (chromium, chromedriver) = browser();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    sandbox
        .args(["sandbox", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"));
    let (_gateway, base) = spawn_listening(sandbox, "lifeboat listening on ").await;

    let port = free_port();
    let mut driver_cmd = Command::new(&chromedriver);
    driver_cmd.arg(format!("--port={port}"));
    let _chromedriver = driver_cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chromedriver");
    let profile = dir.path().join("profile");
    let _reap = Reap(profile.clone());
    let driver = Driver::start(&chromium, &format!("http://127.0.0.1:{port}"), &profile).await;

    // Sign in through the form.
    driver.goto(&format!("{base}/admin")).await;
    driver.type_into("#token", ADMIN_TOKEN).await;
    driver.click("#sign-in").await;
    assert_eq!(
        driver.wait_text("#state-whatsapp", "active").await,
        "active"
    );
    assert!(
        !driver.url().await.contains(ADMIN_TOKEN),
        "the token is in the URL"
    );
    // An active channel offers Disable, not Enable; every channel has its chart.
    assert!(
        !driver.exists("#enable-whatsapp").await,
        "Enable on an active channel"
    );
    assert!(driver.exists("#disable-whatsapp").await);
    for channel in ["whatsapp", "telegram", "email", "line"] {
        assert!(
            driver.exists(&format!("svg#chart-{channel}")).await,
            "no chart for {channel}"
        );
    }

    // The simulated WhatsApp bans the business; a notification meets the ban.
    let http = reqwest::Client::new();
    api(
        &http,
        reqwest::Method::POST,
        format!("{base}/sandbox/providers/whatsapp"),
        ADMIN_TOKEN,
        json!({"mode": "ban"}),
    )
    .await;
    api(
        &http,
        reqwest::Method::PUT,
        format!("{base}/v1/contacts/c-browser"),
        API_KEY,
        json!({"whatsapp": "+48600100200", "telegram": "5551234"}),
    )
    .await;
    for channel in ["whatsapp", "telegram"] {
        api(
            &http,
            reqwest::Method::PUT,
            format!("{base}/v1/contacts/c-browser/consents/{channel}"),
            API_KEY,
            json!({"status": "granted", "scopes": ["transactional"], "source": "web_form"}),
        )
        .await;
    }
    api(
        &http,
        reqwest::Method::POST,
        format!("{base}/v1/notifications"),
        API_KEY,
        json!({"contact_id": "c-browser", "text": "Your order has shipped."}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while whatsapp_state(&http, &base).await != "banned" {
        assert!(Instant::now() < deadline, "WhatsApp was not banned in 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The page shows it after a reload (its Refresh link).
    driver.click("#refresh").await;
    assert_eq!(
        driver.wait_text("#state-whatsapp", "banned").await,
        "banned"
    );
    assert!(
        driver
            .text("#hint-whatsapp")
            .await
            .contains("comes back only when you press Enable after Meta lifts the ban (appeal)"),
        "no hint on the banned channel"
    );
    assert!(
        driver
            .text("#timeline li.to-banned")
            .await
            .contains("whatsapp"),
        "the ban is not on the timeline"
    );
    assert!(
        driver.exists("svg#chart-whatsapp rect.failed").await,
        "the ban answer is not on the chart"
    );

    // A reason being typed survives longer than the old 10 s self-reload.
    driver
        .type_into("#reason-telegram", "Telegram flood wait")
        .await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        driver.value("#reason-telegram").await,
        "Telegram flood wait",
        "the reason was wiped"
    );

    // The provider lifts the ban; the admin clicks Enable.
    api(
        &http,
        reqwest::Method::POST,
        format!("{base}/sandbox/providers/whatsapp"),
        ADMIN_TOKEN,
        json!({"mode": "accept"}),
    )
    .await;
    driver.click("#enable-whatsapp").await;
    assert_eq!(
        driver.wait_text("#state-whatsapp", "active").await,
        "active"
    );
    assert_eq!(whatsapp_state(&http, &base).await, "active");
    assert!(driver.url().await.ends_with("/admin"));
    assert!(
        !driver.exists("#enable-whatsapp").await,
        "Enable on an active channel"
    );
    // The timeline shows the return above the ban.
    let back = driver.text("#timeline li.to-active").await;
    assert!(
        back.contains("whatsapp") && back.contains("enabled by admin"),
        "{back}"
    );
    assert!(driver
        .text("#timeline li.to-banned")
        .await
        .contains("Back in rotation"));

    driver.quit().await;
}
