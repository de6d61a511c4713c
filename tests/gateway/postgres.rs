//! The gateway on PostgreSQL when things go wrong: a config naming two stores, a database that
//! is not there at start, a schema newer than the binary, a password that must never be
//! printed, a database that goes away while serving (a TCP proxy in this test between the
//! gateway and PostgreSQL, cut and restored), `lifeboat migrate`, and two instances starting at
//! once on one fresh database.
//!
//! These run in every test run, whatever `LIFEBOAT_TEST_STORE` says: they need PostgreSQL on
//! `LIFEBOAT_TEST_DATABASE_URL` (127.0.0.1:5432 by default; `.ci/run` makes sure it runs), each
//! on a throw-away database of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

/// In URLs of these tests; must never be printed (trust auth on 127.0.0.1 ignores it).
const PASSWORD: &str = "Pw-never-printed-7f3a";

/// `url` (a server's address and database) with user `postgres` and [`PASSWORD`].
fn with_password(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{}postgres:{PASSWORD}@{host}", &url[..scheme_end])
}

/// `url` pointed at `addr` instead of its own host and port.
fn via(url: &str, addr: SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let (user, host_and_path) = match rest.rsplit_once('@') {
        Some((user, hp)) => (format!("{user}@"), hp),
        None => (String::new(), rest),
    };
    let path = host_and_path.find('/').map_or("", |i| &host_and_path[i..]);
    format!("{}{user}{addr}{path}", &url[..scheme_end])
}

/// The PostgreSQL server of the tests, as `host:port`.
fn server_addr() -> SocketAddr {
    let url = admin_database_url();
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split(['/', '?']).next().unwrap_or(host);
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    let host = host.replace("localhost", "127.0.0.1");
    host.parse()
        .expect("LIFEBOAT_TEST_DATABASE_URL names an IP address and port")
}

/// Runs `lifeboat <args> --config <dir>/lifeboat.toml` on `config` to its end (at most 60 s).
async fn run_to_end(dir: &Path, args: &[&str], config: &str) -> (Output, Duration) {
    let config_path = dir.join("lifeboat.toml");
    std::fs::write(&config_path, config).unwrap();
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("`lifeboat {args:?}` did not end within 60 s"))
    .expect("run lifeboat");
    (out, started.elapsed())
}

/// The exit code and the one line (`lifeboat: ...`) a failed start printed, checking that it is
/// one line with no panic and no password.
fn one_error_line(out: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains(PASSWORD) && !stdout.contains(PASSWORD),
        "the password was printed:\n{stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("lifeboat: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    (out.status.code().unwrap_or(-1), lines[0].to_string())
}

/// The harness config on `url` instead of the data folder.
fn config_on(providers: &Providers, dir: &Path, url: &str) -> String {
    store_on(&providers.config(dir, &Settings::default()), url)
}

#[tokio::test]
async fn url_and_path_together_is_one_line_naming_both_and_exit_2() {
    let (dir, providers) = setup().await;
    let config = providers.config(dir.path(), &Settings::default()).replacen(
        "[store]\n",
        &format!(
            "[store]\nurl = \"{}\"\n",
            with_password(&admin_database_url())
        ),
        1,
    );
    assert!(config.contains("path = "), "both keys are set: {config}");
    for command in ["serve", "check-config"] {
        let (out, _) = run_to_end(dir.path(), &[command], &config).await;
        let (code, line) = one_error_line(&out);
        assert_eq!(code, 2, "{command}: {line}");
        assert!(line.contains("path") && line.contains("url"), "{line}");
    }
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_one_line_and_exit_1_not_a_hang() {
    let (dir, providers) = setup().await;
    // Nothing listens on port 1; and a server that accepts but never answers (a database
    // behind a dead network): both end the start with one line, neither hangs.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    for addr in ["127.0.0.1:1".parse().unwrap(), silent_addr] {
        let url = via(&with_password(&admin_database_url()), addr);
        let config = config_on(&providers, dir.path(), &url);
        let (out, took) = run_to_end(dir.path(), &["serve"], &config).await;
        let (code, line) = one_error_line(&out);
        assert_eq!(code, 1, "{line}");
        assert!(line.contains(&addr.to_string()), "names the server: {line}");
        println!("{addr}: exit 1 after {took:?}: {line}");
    }
    held.abort();
}

#[tokio::test]
async fn a_wrong_password_is_one_line_without_the_password() {
    let (dir, providers) = setup().await;
    // A role that does not exist: the server refuses the login whatever the password.
    let url = with_password(&admin_database_url()).replacen("//postgres:", "//no_such_role:", 1);
    assert!(url.contains("no_such_role:"), "{url}");
    let config = config_on(&providers, dir.path(), &url);
    let (out, _) = run_to_end(dir.path(), &["serve"], &config).await;
    let (code, line) = one_error_line(&out);
    assert_eq!(code, 1, "{line}");
}

#[tokio::test]
async fn migrate_applies_the_schema_and_a_newer_schema_is_refused() {
    let db = TestDb::create();
    let (dir, providers) = setup().await;
    let url = with_password(&db.url());
    let config = config_on(&providers, dir.path(), &url);

    let (out, _) = run_to_end(dir.path(), &["migrate"], &config).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let version: i64 = db
        .sql("select max(version) from lifeboat_schema")
        .parse()
        .unwrap();
    assert!(version >= 1, "{version}");
    let tables = db.sql(
        "select count(*) from information_schema.tables where table_schema = 'public' \
         and table_name in ('notifications', 'queue', 'contacts')",
    );
    assert_eq!(tables, "3");
    // Again: nothing to do, still exit 0, the schema as it was.
    let (out, _) = run_to_end(dir.path(), &["migrate"], &config).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        db.sql("select count(*) from lifeboat_schema where version = 1"),
        "1"
    );
    // check-config says the schema is current.
    let (out, _) = run_to_end(dir.path(), &["check-config"], &config).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A later release migrated this database: this binary refuses to run on it.
    db.sql("insert into lifeboat_schema (version, applied_at) values (9999, now())");
    for command in ["serve", "migrate"] {
        let (out, _) = run_to_end(dir.path(), &[command], &config).await;
        let (code, line) = one_error_line(&out);
        assert_eq!(code, 1, "{command}: {line}");
        assert!(line.contains("9999"), "{command}: {line}");
    }
}

#[tokio::test]
async fn two_gateways_starting_at_once_on_one_fresh_database_both_start() {
    let db = TestDb::create();
    let url = db.url();
    let (a, b) = (Rig::accepting().await, Rig::accepting().await);
    let config_a = config_on(&a.providers, a.dir.path(), &url);
    let config_b = config_on(&b.providers, b.dir.path(), &url);
    let (ga, gb) = tokio::join!(
        Gateway::start(a.dir.path(), &config_a),
        Gateway::start(b.dir.path(), &config_b)
    );
    assert_eq!(
        db.sql("select count(distinct version) = count(*) from lifeboat_schema"),
        "t",
        "each migration applied once"
    );
    for (gw, rig) in [(&ga, &a), (&gb, &b)] {
        let (status, body) = gw.get_public("/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let _ = rig;
    }
    // One store: a contact written through one is seen by the other.
    ga.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;
    let n = gb
        .notify_and_wait(json!({"contact_id": "ana", "text": "hello"}))
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    let (status, seen) = ga
        .get(&format!("/v1/notifications/{}", n["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
}

/// What the proxy does with the gateway's connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    /// Bytes flow both ways.
    Up,
    /// Every connection is closed and new ones are closed at once (a database that stopped).
    Refused,
    /// Connections are accepted but nothing flows (a network that lost the database).
    Silent,
}

/// A TCP proxy on 127.0.0.1 to the PostgreSQL server, which the test cuts and restores.
struct Proxy {
    addr: SocketAddr,
    link: Arc<watch::Sender<Link>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let link = Arc::new(watch::Sender::new(Link::Up));
        let shared = link.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pump(client, upstream, shared.subscribe()));
            }
        });
        Proxy { addr, link, task }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.link.send_replace(Link::Refused);
    }
}

/// One connection through the proxy, for as long as the link stays up.
async fn pump(mut client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    let state = *link.borrow_and_update();
    match state {
        Link::Refused => return,
        Link::Silent => {
            // Held open, silent, until the link changes; then closed.
            let _ = link.changed().await;
            return;
        }
        Link::Up => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = async {
            while link.changed().await.is_ok() {
                if *link.borrow() != Link::Up {
                    break;
                }
            }
        } => {
            if *link.borrow() == Link::Silent {
                // The bytes stop; the sockets stay open until the link changes again.
                let _ = link.changed().await;
            }
        }
    }
    let _ = client.shutdown().await;
}

/// A gateway whose store is reached through `proxy` (user postgres, with a password), with a
/// short lease so work claimed before a cut is taken up again soon after.
async fn gateway_through(proxy: &Proxy, db: TestDb, rig: Rig) -> TestApp {
    let url = with_password(&via(&db.url(), proxy.addr));
    let mut rig = rig;
    rig.db = Some(db);
    rig.start_on(|providers, dir| {
        config_on(providers, dir, &url)
            .replacen("[store]\n", "[store]\nlease = \"2s\"\n", 1)
            .replacen("[server]\n", "[server]\nrequest_timeout = \"20s\"\n", 1)
    })
    .await
}

/// Polls `GET path` until it answers `want` (at most 20 s).
async fn until_status(gw: &Gateway, path: &str, want: StatusCode) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = gw.get_public(path).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still {status} after 20 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /v1/notifications` while the database is away: 503 `overloaded` with `Retry-After`,
/// answered (the client gives up after 25 s, past the gateway's request timeout of 20 s).
async fn refused_accept(gw: &Gateway, key: &str) {
    let response = gw
        .raw(reqwest::Method::POST, "/v1/notifications")
        .bearer_auth(API_KEY)
        .json(
            &json!({"contact_id": "ana", "text": format!("during the outage {key}"),
            "idempotency_key": key}),
        )
        .timeout(Duration::from_secs(25))
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer to an accept while the database is away: {e}"));
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert!(retry_after.is_some(), "Retry-After: {body}");
}

#[tokio::test]
async fn a_database_that_goes_away_pauses_accepting_and_both_resume_when_it_returns() {
    let proxy = Proxy::start(server_addr()).await;
    let rig = Rig::accepting().await;
    // WhatsApp answers slowly: sends are in flight when the database goes away.
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"messaging_product": "whatsapp",
                    "messages": [{"id": "wamid.SLOW"}]}))
                .set_delay(Duration::from_millis(1500)),
        )
        .with_priority(5)
        .mount(&rig.providers.whatsapp)
        .await;
    let gw = gateway_through(&proxy, TestDb::create(), rig).await;
    gw.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;
    let before = gw
        .notify_and_wait(json!({"contact_id": "ana", "text": "before"}))
        .await;
    assert_eq!(before["status"], "sent", "{before}");
    let mut accepted = vec![before["id"].as_str().unwrap().to_string()];
    for i in 0..3 {
        accepted.push(
            gw.notify(json!({"contact_id": "ana", "text": format!("in flight {i}")}))
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The database goes away.
    proxy.set(Link::Refused);
    for i in 0..3 {
        refused_accept(&gw, &format!("outage-{i}")).await;
    }
    let body = until_status(&gw, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["ready"], false, "{body}");
    let (status, _) = gw.get_public("/healthz").await;
    assert_eq!(status, StatusCode::OK, "the process is alive");

    // It comes back: ready again, accepting again, and every accepted notification is sent.
    proxy.set(Link::Up);
    until_status(&gw, "/readyz", StatusCode::OK).await;
    accepted.push(
        gw.notify(json!({"contact_id": "ana", "text": "after"}))
            .await,
    );
    for id in &accepted {
        let n = gw.wait_final(id).await;
        assert_eq!(n["status"], "sent", "{n}");
    }
    // Nothing half-stored: none of the refused accepts exists.
    let (status, list) = gw.get("/v1/notifications?contact_id=ana&limit=100").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(!list.to_string().contains("during the outage"), "{list}");
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(accepted.len()),
        "{list}"
    );
    let db = gw.db.as_ref().unwrap();
    assert_eq!(
        db.sql("select count(*) from notifications"),
        accepted.len().to_string()
    );

    let (status, logs) = gw.gateway.terminate().await;
    assert!(status.success(), "{logs}");
    assert!(
        !logs.contains(PASSWORD),
        "the password is in the log:\n{logs}"
    );
}

#[tokio::test]
async fn a_silent_database_answers_503_within_the_request_timeout_not_a_hang() {
    let proxy = Proxy::start(server_addr()).await;
    let gw = gateway_through(&proxy, TestDb::create(), Rig::accepting().await).await;
    gw.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;

    proxy.set(Link::Silent);
    let started = Instant::now();
    refused_accept(&gw, "silent-1").await;
    println!("503 after {:?} of silence", started.elapsed());
    let (status, _) = gw.get_public("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    until_status(&gw, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;

    proxy.set(Link::Up);
    until_status(&gw, "/readyz", StatusCode::OK).await;
    let n = gw
        .notify_and_wait(json!({"contact_id": "ana", "text": "after the silence"}))
        .await;
    assert_eq!(n["status"], "sent", "{n}");
    let (_, logs) = gw.gateway.terminate().await;
    assert!(
        !logs.contains(PASSWORD),
        "the password is in the log:\n{logs}"
    );
}
