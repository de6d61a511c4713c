//! Two instances' bots on one store and one (fake) Bot API: exactly one polls, the other takes
//! over when it dies, starting from the stored offset, and every update is answered once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::election::{Election, Timing};
use super::handler::BotContext;
use super::polling;
use crate::clock::{Clock, SystemClock};
use crate::fleet::lease::Lease;
use crate::fleet::InstanceId;
use crate::store::{SledStore, Store};

const TOKEN: &str = "123456:TEST-token";

/// `GetUpdates` like Telegram: the queued updates from the request's `offset` on.
#[derive(Clone, Default)]
struct Feed(Arc<Mutex<Vec<Value>>>);

impl Respond for Feed {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let offset = body["offset"].as_i64().unwrap_or(i64::MIN);
        let result: Vec<Value> = (self.0.lock().unwrap().iter())
            .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
            .cloned()
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": result}))
    }
}

fn status_update(id: i64) -> Value {
    json!({"update_id": id, "message": {"message_id": id, "date": 1_750_000_000,
        "chat": {"id": id, "type": "private", "first_name": "P"},
        "from": {"id": id, "is_bot": false, "first_name": "P"}, "text": "/status"}})
}

/// A fake Bot API (one per instance, so the test sees who polls) sharing `feed`.
async fn bot_api(feed: &Feed) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/bot{TOKEN}/GetUpdates")))
        .respond_with(feed.clone())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/bot{TOKEN}/SendMessage")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": {
            "message_id": 1, "date": 1_750_000_000, "chat": {"id": 1, "type": "private"}, "text": "ok"}})))
        .mount(&server)
        .await;
    server
}

fn timing() -> Timing {
    Timing {
        ttl: Duration::from_millis(800),
        renew: Duration::from_millis(150),
        retry: Duration::from_millis(50),
    }
}

/// Starts one instance's polling loop.
fn instance(
    name: &str,
    store: &Arc<dyn Store>,
    server: &MockServer,
) -> (tokio::task::JoinHandle<()>, watch::Sender<bool>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let bot = teloxide::Bot::new(TOKEN).set_api_url(server.uri().parse().unwrap());
    let ctx = Arc::new(BotContext {
        store: store.clone(),
        clock: clock.clone(),
        business: "Acme".into(),
        bot,
        call_timeout: Duration::from_secs(5),
        metrics: Arc::default(),
        events: None,
    });
    let election = Election::new(store.clone(), clock, InstanceId::named(name), timing());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(polling::run(ctx, Duration::from_secs(1), election, stopped));
    (task, stop)
}

async fn requests(server: &MockServer, what: &str) -> Vec<Value> {
    (server.received_requests().await.unwrap_or_default().iter())
        .filter(|r| r.url.path().ends_with(what))
        .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
        .collect()
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn holder(store: &Arc<dyn Store>) -> Option<String> {
    let lease = Lease::new(
        "telegram",
        "poller",
        InstanceId::named("probe"),
        timing().ttl,
    );
    lease
        .holder(store.as_ref(), chrono::Utc::now())
        .await
        .unwrap()
        .map(|h| h.owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_polls_and_the_other_takes_over_from_the_stored_offset_when_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
    let feed = Feed::default();
    let (api_a, api_b) = (bot_api(&feed).await, bot_api(&feed).await);
    let (a, _stop_a) = instance("a", &store, &api_a);
    until("a to be elected", || async {
        holder(&store).await.as_deref() == Some("a")
    })
    .await;
    let (b, stop_b) = instance("b", &store, &api_b);

    for id in 1..=5 {
        feed.0.lock().unwrap().push(status_update(id));
    }
    let offset = || async {
        store
            .kv_get("telegram", "offset")
            .await
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    };
    until("a to handle 1..5", || async {
        offset().await.as_deref() == Some("6")
    })
    .await;
    assert_eq!(requests(&api_a, "SendMessage").await.len(), 5);
    assert!(
        requests(&api_b, "GetUpdates").await.is_empty(),
        "b stood by"
    );

    // a dies (no clean stop: its lease is left to run out); b takes over.
    a.abort();
    let _ = a.await;
    for id in 6..=8 {
        feed.0.lock().unwrap().push(status_update(id));
    }
    until("b to handle 6..8", || async {
        offset().await.as_deref() == Some("9")
    })
    .await;
    assert_eq!(holder(&store).await.as_deref(), Some("b"));
    let polls = requests(&api_b, "GetUpdates").await;
    assert_eq!(polls[0]["offset"], 6, "b starts where a left off");
    let mut answered: Vec<i64> = requests(&api_a, "SendMessage")
        .await
        .into_iter()
        .chain(requests(&api_b, "SendMessage").await)
        .map(|m| m["chat_id"].as_i64().unwrap())
        .collect();
    answered.sort();
    assert_eq!(
        answered,
        (1..=8).collect::<Vec<_>>(),
        "each update answered once"
    );

    // A clean stop gives the lease back at once.
    stop_b.send(true).unwrap();
    b.await.unwrap();
    assert_eq!(holder(&store).await, None);
}
