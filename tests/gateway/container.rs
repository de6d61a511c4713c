//! The container image, without a Docker engine: the binary is started with exactly the
//! Dockerfile's ENTRYPOINT + CMD, ENV and shipped config, and its HEALTHCHECK command is run,
//! all parsed out of the Dockerfile so this test breaks when the Dockerfile changes.
//!
//! What Docker would do is mapped onto the host the way `docker run -p` does: the image's
//! paths are replaced by their sources (a `COPY`'s destination by the repository file, the
//! `VOLUME` by a temporary folder, `WORKDIR` too), and the `EXPOSE`d port by a free one. The
//! environment holds only the image's `ENV` and what the README's `docker run` line passes
//! (`LIFEBOAT_API_KEY`, `LIFEBOAT_ADMIN_TOKEN`). Traffic goes to 127.0.0.1 only.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use tokio::process::Command;

use crate::harness::{binary, sled_only, Gateway, ADMIN_TOKEN, API_KEY};

/// The instructions of the final stage that the test needs.
#[derive(Default, Debug)]
struct Image {
    env: Vec<(String, String)>,
    /// `(destination, source)` of each `COPY` from the build context.
    copies: Vec<(String, String)>,
    volume: String,
    workdir: String,
    expose: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
}

fn json_array(text: &str, what: &str) -> Vec<String> {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("Dockerfile {what} is not a JSON array ({e}): {text}"))
}

fn parse_dockerfile(text: &str) -> Image {
    // Continuation lines joined, comments dropped.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut image = Image::default();
    for instruction in instructions {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        let rest = rest.trim();
        match keyword.to_ascii_uppercase().as_str() {
            // A new stage starts afresh: only the final stage is the image.
            "FROM" => image = Image::default(),
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV `{pair}` is not KEY=VALUE"));
                    image.env.push((k.to_string(), v.to_string()));
                }
            }
            "COPY" if !rest.starts_with("--from") => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                assert_eq!(parts.len(), 2, "COPY with one source: {rest}");
                image
                    .copies
                    .push((parts[1].to_string(), parts[0].to_string()));
            }
            "VOLUME" => image.volume = json_array(rest, "VOLUME").remove(0),
            "WORKDIR" => image.workdir = rest.to_string(),
            "EXPOSE" => image.expose = rest.to_string(),
            "ENTRYPOINT" => image.entrypoint = json_array(rest, "ENTRYPOINT"),
            "CMD" => image.cmd = json_array(rest, "CMD"),
            "HEALTHCHECK" => {
                let (_, cmd) = rest
                    .split_once("CMD ")
                    .expect("HEALTHCHECK has a CMD in exec form");
                image.healthcheck = json_array(cmd, "HEALTHCHECK CMD");
            }
            _ => {}
        }
    }
    image
}

/// Container paths and port → host paths and port.
struct HostMap {
    root: PathBuf,
    volume: PathBuf,
    image: Image,
    port: u16,
}

impl HostMap {
    fn map(&self, value: &str) -> String {
        let mut v = value.replace(
            &format!(":{}", self.image.expose),
            &format!(":{}", self.port),
        );
        for (dest, src) in &self.image.copies {
            if v == *dest {
                v = self.root.join(src).display().to_string();
            }
        }
        if let Some(rest) = v.strip_prefix(&self.image.volume) {
            v = format!("{}{rest}", self.volume.display());
        }
        v
    }

    /// The image's program and arguments (`lifeboat` is the binary under test).
    fn command(&self, argv: &[String]) -> Command {
        assert_eq!(argv[0], "lifeboat", "the image runs lifeboat: {argv:?}");
        let mut command = Command::new(binary());
        command
            .args(argv[1..].iter().map(|a| self.map(a)))
            .env_clear()
            .current_dir(self.map(&self.image.workdir));
        for (k, v) in &self.image.env {
            command.env(k, self.map(v));
        }
        command
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn the_image_listens_on_every_interface_and_its_healthcheck_passes() {
    if sled_only("runs the image's own command and config: the embedded store in its volume") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let image = parse_dockerfile(&dockerfile);
    assert!(!image.healthcheck.is_empty(), "the image has a HEALTHCHECK");
    let volume = tempfile::tempdir().unwrap();
    let host = HostMap {
        root: root.to_path_buf(),
        volume: volume.path().to_path_buf(),
        image,
        port: free_port(),
    };

    let argv: Vec<String> = host
        .image
        .entrypoint
        .iter()
        .chain(&host.image.cmd)
        .cloned()
        .collect();
    let mut command = host.command(&argv);
    // What the README's `docker run` line passes.
    command
        .env("LIFEBOAT_API_KEY", API_KEY)
        .env("LIFEBOAT_ADMIN_TOKEN", ADMIN_TOKEN);
    let mut gw = Gateway::spawn(&mut command).await;

    // `docker run -p 8080:8080` reaches only a gateway listening on every interface.
    assert_eq!(gw.base, format!("http://0.0.0.0:{}", host.port));
    gw.base = format!("http://127.0.0.1:{}", host.port);
    let (status, body) = gw.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The store is in the volume.
    let entries: Vec<String> = std::fs::read_dir(volume.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries.iter().any(|e| e == "lifeboat.sled"),
        "the store is in the volume: {entries:?}"
    );

    // Docker's health check, as the HEALTHCHECK line runs it.
    let health = host
        .command(&host.image.healthcheck)
        .output()
        .await
        .expect("run the healthcheck");
    assert!(
        health.status.success(),
        "HEALTHCHECK failed: {}",
        String::from_utf8_lossy(&health.stderr)
    );

    let (status, logs) = gw.terminate().await;
    assert!(status.success(), "{logs}");
}
