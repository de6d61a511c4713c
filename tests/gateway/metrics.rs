//! `GET /metrics`, end to end: scrape, make things happen (a WhatsApp send, a WhatsApp ban that
//! falls over to Telegram, signed webhooks), scrape again and check that the right series moved
//! by the right amount. The exposition is parsed line by line into (name, labels) → value.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::json;
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::harness::*;

type Series = (String, BTreeMap<String, String>);

/// A parsed exposition: every sample, and the declared type of every family.
struct Scrape {
    samples: BTreeMap<Series, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of `name{labels}` (exactly these labels); 0 if the series is not there yet.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }
}

/// Parses the text exposition format: `# TYPE name type` lines, other comments, and samples
/// `name{k="v",...} value` (label values may hold escaped `\"`, `\\` and `\n`).
fn parse(text: &str) -> Scrape {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(inner) => parse_labels(inner, line),
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value_text = rest.trim().split(' ').next().expect("value");
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let series = (name.to_string(), labels);
        assert!(
            samples.insert(series, value).is_none(),
            "duplicate series: {line}"
        );
    }
    Scrape { samples, types }
}

/// Reads `k="v",...}` (the text after `{`) and returns the labels and what follows the `}`.
fn parse_labels<'a>(inner: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    let mut chars = inner.char_indices();
    let mut key = String::new();
    loop {
        let (i, c) = chars
            .next()
            .unwrap_or_else(|| panic!("unclosed labels: {line}"));
        match c {
            '}' if key.is_empty() => return (labels, &inner[i + 1..]),
            ',' if key.is_empty() => {}
            '=' => {
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars
                        .next()
                        .unwrap_or_else(|| panic!("unclosed value: {line}"))
                        .1
                    {
                        '"' => break,
                        '\\' => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        other => value.push(other),
                    }
                }
                let key = std::mem::take(&mut key);
                assert!(
                    labels.insert(key.clone(), value).is_none(),
                    "label {key} twice: {line}"
                );
            }
            c => key.push(c),
        }
    }
}

async fn scrape(gw: &Gateway) -> Scrape {
    // No credential: like /healthz.
    let resp = gw.raw(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    parse(&text)
}

fn hmac(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn the_parser_reads_labels_escapes_and_special_values() {
    let s = parse(
        "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\",q=\"say \\\"hi\\\", a\\\\b\"} 3\n\
         h_bucket{le=\"+Inf\"} 2\nplain 1.5\n# EOF\n",
    );
    assert_eq!(
        s.value("a_total", &[("k", "v"), ("q", "say \"hi\", a\\b")]),
        3.0
    );
    assert_eq!(s.value("h_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(s.get("plain", &[]), Some(1.5));
    assert_eq!(s.get("a_total", &[("k", "v")]), None);
    assert_eq!(s.types["a"], "counter");
}

#[tokio::test]
async fn metrics_move_with_sends_failovers_state_changes_and_webhooks() {
    let gw = TestApp::accepting().await;
    gw.contact("c-1")
        .whatsapp("+48600100200")
        .telegram("5551234")
        .consents_to(&["transactional"])
        .put()
        .await;

    let before = scrape(&gw).await;
    assert_eq!(
        before.get(
            "lifeboat_channel_state",
            &[("channel", "whatsapp"), ("state", "active")]
        ),
        Some(1.0)
    );

    // One carried by WhatsApp.
    let first = gw.notify(json!({"contact_id": "c-1", "text": "one"})).await;
    let n = gw.wait_final(&first).await;
    assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");

    // Then WhatsApp answers with a ban: the next one falls over to Telegram.
    Mock::given(method("POST"))
        .and(path(WA_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "(#131031) Business Account locked", "type": "OAuthException",
            "code": 131031, "fbtrace_id": "AbCdEf"}})))
        .with_priority(1)
        .up_to_n_times(1)
        .mount(&gw.providers.whatsapp)
        .await;
    let n = gw
        .notify_and_wait(json!({"contact_id": "c-1", "text": "two"}))
        .await;
    assert_eq!(
        trail(&n),
        ["whatsapp:channel_banned", "telegram:sent"],
        "{n}"
    );

    // Signed webhooks: a WhatsApp receipt for the first send, a LINE follow.
    let wa = serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "419561257915477", "changes": [{
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "statuses": [{"id": "wamid.TEST", "status": "delivered",
                    "timestamp": "1749416400", "recipient_id": "48600100200"}]
            },
            "field": "messages"
        }]}]
    }))
    .unwrap();
    let resp = gw
        .raw(Method::POST, "/webhooks/whatsapp")
        .header("Content-Type", "application/json")
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", hex::encode(hmac(WA_APP_SECRET, &wa))),
        )
        .body(wa)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = serde_json::to_vec(&json!({
        "destination": "U0123456789abcdef0123456789abcdef",
        "events": [{"type": "follow", "mode": "active", "timestamp": 1_700_000_000_000_u64,
            "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZR",
            "deliveryContext": {"isRedelivery": false},
            "source": {"type": "user", "userId": "U4af4980629aaaaaaaaaaaaaaaaaaaaaa"},
            "replyToken": "r"}]
    }))
    .unwrap();
    let signature =
        base64::engine::general_purpose::STANDARD.encode(hmac(LINE_CHANNEL_SECRET, &line));
    let resp = gw
        .raw(Method::POST, "/webhooks/line")
        .header("Content-Type", "application/json")
        .header("X-Line-Signature", signature)
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let after = scrape(&gw).await;
    // A family shows once it has a series: all have one now.
    for (family, kind) in [
        ("lifeboat_notifications_accepted", "counter"),
        ("lifeboat_attempts", "counter"),
        ("lifeboat_failovers", "counter"),
        ("lifeboat_channel_state", "gauge"),
        ("lifeboat_channel_state_changes", "counter"),
        ("lifeboat_queue_depth", "gauge"),
        ("lifeboat_send_duration_seconds", "histogram"),
        ("lifeboat_webhook_events", "counter"),
    ] {
        assert_eq!(
            after.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let transactional = [("category", "transactional")];
    assert_eq!(
        moved("lifeboat_notifications_accepted_total", &transactional),
        2.0
    );
    assert_eq!(
        moved(
            "lifeboat_attempts_total",
            &[("channel", "whatsapp"), ("outcome", "sent")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "lifeboat_attempts_total",
            &[("channel", "whatsapp"), ("outcome", "channel_banned")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "lifeboat_attempts_total",
            &[("channel", "telegram"), ("outcome", "sent")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "lifeboat_failovers_total",
            &[("from", "whatsapp"), ("to", "telegram")]
        ),
        1.0
    );
    // Only that one: the first notification never left WhatsApp.
    let failovers: f64 = after
        .samples
        .iter()
        .filter(|((name, _), _)| name == "lifeboat_failovers_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(failovers, 1.0);
    for (state, want) in [("banned", 1.0), ("active", 0.0), ("restricted", 0.0)] {
        assert_eq!(
            after.get(
                "lifeboat_channel_state",
                &[("channel", "whatsapp"), ("state", state)]
            ),
            Some(want),
            "whatsapp {state}"
        );
    }
    assert_eq!(
        after.get(
            "lifeboat_channel_state",
            &[("channel", "telegram"), ("state", "active")]
        ),
        Some(1.0)
    );
    assert_eq!(
        moved(
            "lifeboat_channel_state_changes_total",
            &[("channel", "whatsapp"), ("to", "banned")]
        ),
        1.0
    );
    let whatsapp = [("channel", "whatsapp")];
    assert_eq!(
        moved("lifeboat_send_duration_seconds_count", &whatsapp),
        2.0
    );
    assert_eq!(
        moved(
            "lifeboat_send_duration_seconds_count",
            &[("channel", "telegram")]
        ),
        1.0
    );
    assert!(moved("lifeboat_send_duration_seconds_sum", &whatsapp) > 0.0);
    let inf = after.value(
        "lifeboat_send_duration_seconds_bucket",
        &[("channel", "whatsapp"), ("le", "+Inf")],
    );
    assert_eq!(
        inf,
        after.value("lifeboat_send_duration_seconds_count", &whatsapp)
    );
    let buckets: BTreeSet<String> = after
        .samples
        .keys()
        .filter(|(name, labels)| {
            name == "lifeboat_send_duration_seconds_bucket" && labels["channel"] == "whatsapp"
        })
        .map(|(_, labels)| labels["le"].clone())
        .collect();
    assert!(
        buckets.contains("0.001") && buckets.contains("10.0"),
        "{buckets:?}"
    );
    assert_eq!(
        moved(
            "lifeboat_webhook_events_total",
            &[("provider", "whatsapp"), ("type", "status_delivered")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "lifeboat_webhook_events_total",
            &[("provider", "line"), ("type", "follow")]
        ),
        1.0
    );
    assert_eq!(after.get("lifeboat_queue_depth", &[]), Some(0.0));
}
