//! The README's walk-through, executed: every `curl` command in its "Five-minute walk-through"
//! section is parsed out of README.md and run, in order, against a freshly spawned sandbox.
//! If a command in the README stops working (a route, a body, a key), this test fails.
//!
//! Only the curl features the walk-through uses are understood: `-X`, `-H`, `-d`, `-s`, a
//! `$LIFEBOAT` URL, and `ID=$(curl ... | jq -r .id)` to keep a notification's id. A
//! `GET /v1/notifications/$ID` is repeated until the notification is no longer queued, which
//! is what "a moment later" means in the text.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::harness::Gateway;

/// The shell commands of the walk-through section, continuation lines joined.
fn walkthrough_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("## Five-minute walk-through")
        .expect("README has a walk-through section");
    let rest = &readme[start + 3..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let line = line.trim();
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
        } else {
            current.push_str(line);
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

/// Splits like a shell would for these commands: whitespace outside single quotes.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut has = false;
    for c in command.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                has = true;
            }
            c if c.is_whitespace() && !quoted => {
                if has {
                    out.push(std::mem::take(&mut word));
                    has = false;
                }
            }
            c => {
                word.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(word);
    }
    out
}

struct Curl {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    keeps_id: bool,
}

fn parse(command: &str) -> Option<Curl> {
    let keeps_id = command.starts_with("ID=$(");
    let command = command
        .trim_start_matches("ID=$(")
        .split(" | jq")
        .next()
        .unwrap_or(command);
    let w = words(command);
    if w.first().map(String::as_str) != Some("curl") {
        return None;
    }
    let mut curl = Curl {
        method: Method::GET,
        url: String::new(),
        headers: Vec::new(),
        body: None,
        keeps_id,
    };
    let mut explicit_method = false;
    let mut i = 1;
    while i < w.len() {
        match w[i].as_str() {
            "-X" => {
                curl.method = w[i + 1].parse().expect("method");
                explicit_method = true;
                i += 1;
            }
            "-H" => {
                let (k, v) = w[i + 1].split_once(':').expect("header");
                curl.headers
                    .push((k.trim().to_string(), v.trim().to_string()));
                i += 1;
            }
            "-d" => {
                curl.body = Some(w[i + 1].clone());
                if !explicit_method {
                    curl.method = Method::POST;
                }
                i += 1;
            }
            "-s" => {}
            other if other.starts_with("$LIFEBOAT") => curl.url = other.to_string(),
            other => panic!("the README uses a curl option this test does not know: {other}"),
        }
        i += 1;
    }
    Some(curl)
}

#[tokio::test]
async fn every_curl_command_of_the_readme_walkthrough_works() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_sandbox(dir.path()).await;
    let client = reqwest::Client::new();
    let commands = walkthrough_commands();
    let curls: Vec<Curl> = commands.iter().filter_map(|c| parse(c)).collect();
    assert!(
        curls.len() >= 10,
        "the walk-through should have its curl commands: {commands:?}"
    );

    let mut id = String::new();
    let mut carried = Vec::new();
    for curl in curls {
        let url = curl.url.replace("$LIFEBOAT", &gw.base).replace("$ID", &id);
        let polls_notification =
            curl.method == Method::GET && curl.url.contains("/v1/notifications/$ID");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut req = client.request(curl.method.clone(), &url);
            for (k, v) in &curl.headers {
                req = req.header(k, v);
            }
            if let Some(b) = &curl.body {
                req = req.body(b.clone());
            }
            let resp = req.send().await.expect("request");
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(
                status.is_success(),
                "{} {url} answered {status}: {body}",
                curl.method
            );
            if curl.keeps_id {
                id = body["id"].as_str().expect("an id to keep").to_string();
            }
            if polls_notification && matches!(body["status"].as_str(), Some("queued" | "sending")) {
                assert!(Instant::now() < deadline, "{url} still queued: {body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if polls_notification {
                carried.push(body["channel"].as_str().unwrap_or("").to_string());
            }
            break;
        }
    }
    // What the text promises: WhatsApp, then Telegram during the ban, then WhatsApp again;
    // then Telegram twice while the template is paused (once after Meta's 132015, once
    // without asking WhatsApp).
    assert_eq!(
        carried,
        ["whatsapp", "telegram", "whatsapp", "telegram", "telegram"]
    );
}

/// Every text file of the repository (`git ls-files`, or a walk of the source folders when git
/// is not there) below the workspace root.
fn repository_text_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut todo: Vec<std::path::PathBuf> = ["src", "channels", "tests", "config", "docs", ".ci"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    files.extend(["README.md", "Dockerfile", "Cargo.toml", "BENCHMARKS.md"].map(|f| root.join(f)));
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.components().all(|c| c.as_os_str() != "vendor") {
                files.push(path);
            }
        }
    }
    files
}

/// A plain clone must build, test and explain itself: no file may point outside the
/// repository (the project's specs used to live in a `shared/` folder beside it).
#[test]
fn no_file_points_outside_the_repository() {
    let outside = [
        concat!("../", "shared/"),
        concat!("/work", "/shared"),
        concat!("vendor", "-specs"),
    ];
    let mut found = Vec::new();
    for path in repository_text_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|o| line.contains(o)) {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

/// The docs the README, module comments and config point to are in the repository.
#[test]
fn the_docs_the_code_points_to_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["docs/failover.md", "docs/guardrails.md", "docs/receipts.md"] {
        assert!(root.join(doc).is_file(), "{doc} is missing");
    }
    for vendor in [
        "channels/whatsapp/vendor/whatsapp-business-messaging-api_v23.0.yaml",
        "channels/line/vendor/line-messaging-api.yml",
    ] {
        assert!(root.join(vendor).is_file(), "{vendor} is missing");
    }
}
