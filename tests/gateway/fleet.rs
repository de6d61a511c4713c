//! Two `lifeboat serve` processes on one fresh PostgreSQL database behave as one gateway
//! (docs/fleet.md): each notification sent once, one notification per idempotency key, a ban
//! or a disable seen on one instance stops the other's sends, a killed instance's work is
//! finished by the other after its leases, the Telegram poll moves to the survivor, and the
//! fleet's combined send rate keeps the configured pacing.
//!
//! Both gateways talk to the same simulated providers, so a provider's request log is the
//! fleet's. Gated: they run when `LIFEBOAT_TEST_STORE=postgres` (CI runs the gateway suite a
//! second time that way); on the embedded store (one process only) they are skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::harness::*;
use crate::telegram_bot::{mount_bot_api, mount_updates, text_update};

/// `true` (and why, printed) on the embedded store: the test returns at once.
fn needs_postgres() -> bool {
    let skip = !on_postgres();
    if skip {
        println!(
            "skipped on the embedded store: two gateway processes need one shared PostgreSQL \
             store (run with LIFEBOAT_TEST_STORE=postgres)"
        );
    }
    skip
}

/// The rig's config for a gateway in `dir` on the rig's database, with a 2 s claim lease.
fn fleet_config(rig: &Rig, config: &str) -> String {
    let config = rig.store_config(config);
    assert!(config.contains("url = "), "on the rig's database: {config}");
    config.replacen("[store]\n", "[store]\nlease = \"2s\"\n", 1)
}

/// A second data folder (for the second gateway's config file; the store is the database).
fn second_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Starts a gateway of the fleet in `dir` on `config(providers, dir)`.
async fn member(rig: &Rig, dir: &Path, config: impl Fn(&Providers, &Path) -> String) -> Gateway {
    Gateway::start(dir, &fleet_config(rig, &config(&rig.providers, dir))).await
}

/// Two gateways on the rig's database and providers, started together.
async fn two(
    rig: &Rig,
    dir_b: &Path,
    config: impl Fn(&Providers, &Path) -> String + Copy,
) -> (Gateway, Gateway) {
    tokio::join!(
        member(rig, rig.dir.path(), config),
        member(rig, dir_b, config)
    )
}

fn default_config(providers: &Providers, dir: &Path) -> String {
    providers.config(dir, &Settings::default())
}

/// The requests a provider got per text sent, for the texts starting with `prefix`.
async fn sends_per_text(bodies: Vec<Value>, prefix: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for b in bodies {
        let text = b["text"]
            .as_str()
            .or_else(|| b["text"]["body"].as_str())
            .unwrap_or("")
            .to_string();
        if text.starts_with(prefix) {
            *out.entry(text).or_insert(0) += 1;
        }
    }
    out
}

/// `GET /readyz`'s body (asserting 200).
async fn readyz(gw: &Gateway) -> Value {
    let (status, body) = gw.get_public("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// One metric's value in `GET /metrics` (0 if absent).
async fn metric(gw: &Gateway, line_start: &str) -> f64 {
    let text = gw
        .raw(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 50 ms for up to `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn notifications_posted_to_both_instances_are_each_sent_exactly_once() {
    if needs_postgres() {
        return;
    }
    let rig = Rig::accepting().await;
    // Sends take a moment, so both instances hold claims at the same time.
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"messaging_product": "whatsapp",
                    "messages": [{"id": "wamid.FLEET"}]}))
                .set_delay(Duration::from_millis(150)),
        )
        .with_priority(5)
        .mount(&rig.providers.whatsapp)
        .await;
    let dir_b = second_dir();
    let (a, b) = two(&rig, dir_b.path(), default_config).await;
    a.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;
    let count = 60;
    let mut ids = Vec::new();
    for i in 0..count {
        let gw = if i % 2 == 0 { &a } else { &b };
        ids.push(
            gw.notify(json!({"contact_id": "ana", "text": format!("fleet {i}")}))
                .await,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let gw = if i % 3 == 0 { &b } else { &a };
        let n = gw.wait_final(id).await;
        assert_eq!(n["status"], "sent", "{n}");
        assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");
    }
    let per_text = sends_per_text(rig.providers.sent("whatsapp").await, "fleet ").await;
    assert_eq!(per_text.len(), count, "every notification was sent");
    let twice: Vec<_> = per_text.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let sent = "lifeboat_attempts_total{channel=\"whatsapp\",outcome=\"sent\"} ";
    println!(
        "sent by a: {}, by b: {}",
        metric(&a, sent).await,
        metric(&b, sent).await
    );
}

#[tokio::test]
async fn the_same_idempotency_key_posted_to_both_at_once_creates_one_notification() {
    if needs_postgres() {
        return;
    }
    let rig = Rig::accepting().await;
    let dir_b = second_dir();
    let (a, b) = two(&rig, dir_b.path(), default_config).await;
    a.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;
    for k in 0..8 {
        let body = json!({"contact_id": "ana", "text": format!("once {k}"),
            "idempotency_key": format!("order-{k}")});
        let ((sa, ba), (sb, bb)) = tokio::join!(
            a.post("/v1/notifications", body.clone()),
            b.post("/v1/notifications", body.clone())
        );
        let mut statuses = [sa.as_u16(), sb.as_u16()];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 202],
            "one creates, the other repeats: {ba} {bb}"
        );
        assert_eq!(ba["id"], bb["id"], "the same notification: {ba} {bb}");
    }
    let (status, list) = b.get("/v1/notifications?contact_id=ana&limit=100").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(8), "{list}");
    // A different body under a taken key conflicts, whichever instance gets it.
    let (status, body) = b
        .post(
            "/v1/notifications",
            json!({"contact_id": "ana", "text": "something else", "idempotency_key": "order-0"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_ban_answered_to_one_instance_stops_the_others_sends_on_that_channel() {
    if needs_postgres() {
        return;
    }
    let rig = Rig::accepting().await;
    whatsapp_fails(
        &rig.providers,
        1,
        400,
        131031,
        "(#131031) Business Account locked",
        None,
    )
    .await;
    let dir_b = second_dir();
    let (a, b) = two(&rig, dir_b.path(), default_config).await;
    a.on_whatsapp_and_telegram("c-1").await;

    let n = a
        .notify_and_wait(json!({"contact_id": "c-1", "text": "ban one"}))
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:channel_banned", "telegram:sent"],
        "{n}"
    );
    // Posted to a, but either instance may have sent it (b is woken by a's accept too): the
    // one that stored the ban announced it; the other is the one under test.
    let (sent, heard) = (
        "lifeboat_db_announcements_total{backend=\"postgres\",channel=\"states\",direction=\"sent\"} ",
        "lifeboat_db_announcements_total{backend=\"postgres\",channel=\"states\",direction=\"heard\"} ",
    );
    let (sent_a, sent_b) = (metric(&a, sent).await, metric(&b, sent).await);
    assert!(
        (sent_a > 0.0) != (sent_b > 0.0),
        "one instance stored the ban: a {sent_a}, b {sent_b}"
    );
    let (banned_by, other) = if sent_a > 0.0 { (&a, &b) } else { (&b, &a) };
    // The other heard of it through the database's announcement (not only its re-read).
    eventually(
        5,
        "the other instance counts a heard state announcement",
        || async { metric(other, heard).await > 0.0 },
    )
    .await;
    assert_eq!(
        metric(banned_by, heard).await,
        0.0,
        "nobody else changed a state"
    );

    // Everything posted to the other instance from now on skips WhatsApp.
    let mut later = Vec::new();
    for i in 0..5 {
        later.push(
            other
                .notify(json!({"contact_id": "c-1", "text": format!("ban later {i}")}))
                .await,
        );
    }
    for id in later {
        let n = other.wait_final(&id).await;
        assert_eq!(
            trail(&n),
            ["whatsapp:skipped:channel_banned", "telegram:sent"],
            "{n}"
        );
    }
    assert_eq!(
        rig.providers.sends("whatsapp").await,
        1,
        "the ban answer was the only request WhatsApp got from the fleet"
    );
    assert_eq!(other.channel_state("whatsapp").await["state"], "banned");
}

#[tokio::test]
async fn an_admin_disable_on_one_instance_takes_effect_on_the_other() {
    if needs_postgres() {
        return;
    }
    let rig = Rig::accepting().await;
    let dir_b = second_dir();
    let (a, b) = two(&rig, dir_b.path(), default_config).await;
    a.on_whatsapp_and_telegram("c-1").await;

    let (status, row) = a
        .disable_channel("whatsapp", "ban appeal in progress")
        .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    eventually(5, "b's channel table shows the disable", || async {
        b.channel_state("whatsapp").await["state"] == "disabled"
    })
    .await;
    let n = b
        .notify_and_wait(json!({"contact_id": "c-1", "text": "while disabled"}))
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:skipped:channel_disabled", "telegram:sent"],
        "{n}"
    );
    assert_eq!(rig.providers.sends("whatsapp").await, 0);

    // And back, the other way round.
    let (status, row) = b.enable_channel("whatsapp").await;
    assert_eq!(status, StatusCode::OK, "{row}");
    let n = a
        .notify_and_wait(json!({"contact_id": "c-1", "text": "enabled again"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");
}

#[tokio::test]
async fn kill_9_of_one_instance_loses_nothing_the_other_finishes_its_work() {
    if needs_postgres() {
        return;
    }
    let rig = Rig::accepting().await;
    // WhatsApp answers slowly: the killed instance dies with every send in flight.
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"messaging_product": "whatsapp",
                    "messages": [{"id": "wamid.SLOW"}]}))
                .set_delay(Duration::from_secs(4)),
        )
        .with_priority(5)
        .mount(&rig.providers.whatsapp)
        .await;
    let dir_b = second_dir();
    // A WhatsApp timeout above that delay: the sends are slow, not failing.
    let slow = |providers: &Providers, dir: &Path| {
        let config = default_config(providers, dir);
        let longer = config.replacen(
            "timeout = \"2s\"\ncooldown",
            "timeout = \"10s\"\ncooldown",
            1,
        );
        assert_ne!(config, longer);
        longer
    };
    let a = member(&rig, rig.dir.path(), slow).await;
    a.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;
    let count = 12;
    let mut ids = Vec::new();
    for i in 0..count {
        ids.push(
            a.notify(json!({"contact_id": "ana", "text": format!("orphan {i}")}))
                .await,
        );
    }
    // a holds a claim (a lease) on every one of them, as its /readyz says.
    eventually(10, "a holds claims on all of them", || async {
        readyz(&a).await["leases"]["claims"] == count
    })
    .await;
    let b = member(&rig, dir_b.path(), slow).await;
    let in_flight = rig.providers.sends("whatsapp").await;
    a.kill9().await;
    println!("killed a with {in_flight} sends in flight");

    // b takes each over once a's lease has run out, and sends it.
    for id in &ids {
        let n = b.wait_final(id).await;
        assert_eq!(n["status"], "sent", "{n}");
    }
    let per_text = sends_per_text(rig.providers.sent("whatsapp").await, "orphan ").await;
    assert_eq!(
        per_text.len(),
        count,
        "every notification was sent: {per_text:?}"
    );
    // At least once: a send in flight at the kill may go twice (docs/fleet.md), never more.
    assert!(
        per_text.values().all(|n| (1..=2).contains(n)),
        "{per_text:?}"
    );
    let (status, list) = b.get("/v1/notifications?contact_id=ana&limit=100").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "sent"),
        "{list}"
    );
}

#[tokio::test]
async fn the_telegram_poll_moves_to_the_survivor_and_each_update_is_handled_once() {
    if needs_postgres() {
        return;
    }
    let rig = Rig::new().await;
    mount_bot_api(&rig.providers).await;
    let updates = mount_updates(&rig.providers).await;
    let dir_b = second_dir();
    let (a, b) = two(&rig, dir_b.path(), |providers, dir| {
        crate::telegram_bot::config(providers, dir, "")
    })
    .await;

    // Exactly one of the two holds the poller lease.
    let polls = |body: &Value| {
        body["leases"]["held"]
            .as_array()
            .is_some_and(|h| h.iter().any(|l| l == "telegram/poller"))
    };
    eventually(15, "one instance polls", || async {
        polls(&readyz(&a).await) || polls(&readyz(&b).await)
    })
    .await;
    let (ra, rb) = (readyz(&a).await, readyz(&b).await);
    assert!(polls(&ra) != polls(&rb), "exactly one polls: {ra} {rb}");
    let (poller, survivor) = if polls(&ra) { (a, b) } else { (b, a) };

    for (update, chat) in [(1, 9001), (2, 9002), (3, 9003)] {
        updates.push(text_update(update, chat, "/status"));
    }
    for chat in [9001, 9002, 9003] {
        crate::telegram_bot::wait_reply(&rig.providers.telegram, chat, "subscribed").await;
    }
    // The offset after them is stored before the poller dies (else the survivor would,
    // rightly, handle the last one again: at least once).
    let db = rig.db.as_ref().unwrap();
    eventually(10, "the offset after update 3 is stored", || async {
        db.sql(
            "select coalesce((select convert_from(value, 'UTF8') from kv \
             where namespace = 'telegram' and key = 'offset'), '0')",
        )
        .parse::<i64>()
        .unwrap_or(0)
            >= 4
    })
    .await;
    poller.kill9().await;

    for (update, chat) in [(4, 9004), (5, 9005), (6, 9006)] {
        updates.push(text_update(update, chat, "/status"));
    }
    // The survivor takes the lease over (within 10 s of the death) and handles the new ones.
    let started = Instant::now();
    eventually(20, "the survivor answers the new updates", || async {
        let mut all = true;
        for chat in [9004, 9005, 9006] {
            all &= !crate::telegram_bot::replies_to(&rig.providers.telegram, chat)
                .await
                .is_empty();
        }
        all
    })
    .await;
    println!(
        "the survivor answered {:?} after the kill",
        started.elapsed()
    );
    assert!(
        polls(&readyz(&survivor).await),
        "the survivor holds the poller lease"
    );
    for chat in 9001..=9006 {
        let replies = crate::telegram_bot::replies_to(&rig.providers.telegram, chat).await;
        assert_eq!(
            replies.len(),
            1,
            "update from {chat} handled once: {replies:?}"
        );
    }
}

/// Answers Telegram's `sendMessage` and notes when each request arrived.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Instant>>>);

impl Respond for Arrivals {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "result": {"message_id": 812, "date": 1_700_000_000,
                "chat": {"id": 5551234, "type": "private", "first_name": "Ana"}, "text": "x"}
        }))
    }
}

#[tokio::test]
async fn the_combined_send_rate_of_two_instances_keeps_the_configured_pacing() {
    if needs_postgres() {
        return;
    }
    let rate = 5.0;
    let rig = Rig::accepting().await;
    let arrivals = Arrivals::default();
    Mock::given(method("POST"))
        .and(path(TG_SEND_PATH))
        .respond_with(arrivals.clone())
        .with_priority(1)
        .mount(&rig.providers.telegram)
        .await;
    let dir_b = second_dir();
    let paced = |providers: &Providers, dir: &Path| {
        let settings = Settings::default();
        let policy = settings
            .policy
            .replace("rate = 1000\nper_chat_rate", "rate = 5\nper_chat_rate");
        assert_ne!(policy, settings.policy);
        providers.config(dir, &Settings { policy, ..settings })
    };
    let (a, b) = two(&rig, dir_b.path(), paced).await;
    a.contact("tg")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;
    let count = 60;
    let mut ids = Vec::new();
    for i in 0..count {
        let gw = if i % 2 == 0 { &a } else { &b };
        ids.push(
            gw.notify(json!({"contact_id": "tg", "text": format!("paced {i}")}))
                .await,
        );
    }
    for id in &ids {
        let n = a.wait_final(id).await;
        assert_eq!(n["status"], "sent", "{n}");
    }
    let times = arrivals.0.lock().unwrap().clone();
    assert_eq!(times.len(), count, "each sent once");
    let first = *times.iter().min().unwrap();
    let span = times
        .iter()
        .max()
        .unwrap()
        .duration_since(first)
        .as_secs_f64();
    // The fleet's budget is `rate` sends per 1 s window; a span of S seconds touches at most
    // ceil(S) + 1 windows. One send more for a request that crossed a window's edge on its way.
    let bound = rate * (span.ceil() + 1.0) + 1.0;
    let mut per_second = BTreeMap::<u64, usize>::new();
    for t in &times {
        *per_second
            .entry(t.duration_since(first).as_secs())
            .or_default() += 1;
    }
    println!("{count} sends over {span:.2} s (bound {bound}): per second {per_second:?}");
    assert!(
        count as f64 <= bound,
        "{count} sends in {span:.2} s: more than {rate}/s across the fleet (bound {bound})"
    );
    let sent = "lifeboat_attempts_total{channel=\"telegram\",outcome=\"sent\"} ";
    println!(
        "sent by a: {}, by b: {}",
        metric(&a, sent).await,
        metric(&b, sent).await
    );
}

#[tokio::test]
async fn readyz_and_metrics_show_the_database_the_listener_and_what_each_instance_holds() {
    if needs_postgres() {
        return;
    }
    let rig = Rig::accepting().await;
    let dir_b = second_dir();
    let (a, b) = two(&rig, dir_b.path(), default_config).await;
    for gw in [&a, &b] {
        eventually(10, "the listener listens", || async {
            readyz(gw).await["database"]["listener"] == "listening"
        })
        .await;
        let body = readyz(gw).await;
        assert_eq!(body["database"]["status"], "ok", "{body}");
        assert_eq!(body["database"]["pool"]["size"], 16, "{body}");
        assert!(
            body["database"]["pool"]["open"].as_u64().unwrap() >= 1,
            "{body}"
        );
        assert_eq!(body["leases"]["claims"], 0, "{body}");
        assert!(body["leases"]["held"].is_array(), "{body}");
        assert_eq!(
            metric(gw, "lifeboat_db_pool_size{backend=\"postgres\"} ").await,
            16.0
        );
        assert_eq!(
            metric(gw, "lifeboat_db_listener_up{backend=\"postgres\"} ").await,
            1.0
        );
        assert_eq!(metric(gw, "lifeboat_claims_held ").await, 0.0);
    }
    assert_ne!(
        readyz(&a).await["instance"],
        readyz(&b).await["instance"],
        "two instances"
    );
    // Work accepted by a is announced to b (one announcement for the burst's window or two).
    a.contact("ana")
        .whatsapp("+48600100200")
        .consents_to(&["transactional"])
        .put()
        .await;
    let work_heard = "lifeboat_db_announcements_total{backend=\"postgres\",channel=\"work\",direction=\"heard\"} ";
    let before = metric(&b, work_heard).await;
    for i in 0..20 {
        a.notify(json!({"contact_id": "ana", "text": format!("announced {i}")}))
            .await;
    }
    eventually(5, "b hears a's accepts", || async {
        metric(&b, work_heard).await > before
    })
    .await;
    let sent = metric(
        &a,
        "lifeboat_db_announcements_total{backend=\"postgres\",channel=\"work\",direction=\"sent\"} ",
    )
    .await;
    println!("20 accepts on a: {sent} work announcements sent");
    assert!(
        (1.0..20.0).contains(&sent),
        "coalesced, not one per accept: {sent}"
    );
}
