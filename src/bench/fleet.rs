//! `lifeboat bench --store postgres://... --instances 2`: two sandboxes on one database (a
//! fleet of two behind a load balancer that splits the load evenly), after the one-instance
//! phases:
//!
//! - **accept** (deliveries held): each instance gets half the `--clients` for `--duration`;
//!   the accepts of both per second, beside the one-instance figure;
//! - **delivery**: `--deliveries` notifications, half posted to each; sends per second from
//!   the first 202 to the last receipt at either instance's simulated provider, and how many
//!   each instance sent (any instance sends any notification);
//! - **failover**: `--failover` notifications, half to each; once half are accepted, instance
//!   A's simulated WhatsApp bans the account. B's simulated WhatsApp does not know (each
//!   sandbox has its own providers), so B stops only because it learnt the ban from the
//!   database: the figures are the WhatsApp sends started after the ban was recorded by either
//!   instance (A's refused requests, B's accepted ones), and how long after the ban was
//!   recorded B's `GET /v1/admin/channels` showed it (polled every 5 ms).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::{json, Value};

use super::cost;
use super::gateway::{notify_request, wait_until, Gateway};
use super::load::{self, LoadResult, Until};
use super::pg::BenchDb;
use super::probe::ms;
use crate::sandbox::ADMIN_TOKEN;

/// Sequence numbers of the notifications posted to B start here (A's at 0), so the two
/// instances' messages are told apart at the providers.
const B_OFFSET: u64 = 1_000_000_000;

/// Two sandboxes on one fresh database.
struct Pair {
    a: Gateway,
    b: Gateway,
    db: BenchDb,
}

async fn pair(dir: &Path, server: &SecretString, hold: bool) -> Result<Pair, String> {
    let db = BenchDb::create(server).await?;
    let a = Gateway::start(&dir.join("a"), Some(&db), hold).await?;
    let b = Gateway::start(&dir.join("b"), Some(&db), hold).await?;
    a.setup_contact().await?;
    Ok(Pair { a, b, db })
}

/// `count` notifications (or `duration` of them) posted to `gw` from `clients` connections,
/// their texts `<prefix> <n + offset>`.
fn post(
    gw: &Gateway,
    clients: usize,
    until: Until,
    keep: bool,
    prefix: &'static str,
    offset: u64,
    progress: Option<Arc<AtomicU64>>,
) -> tokio::task::JoinHandle<LoadResult> {
    let addr = gw.addr;
    let make: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> =
        Arc::new(move |n| notify_request(&format!("{prefix} {}", n + offset)));
    tokio::spawn(async move { load::run(addr, clients, until, 202, keep, make, progress).await })
}

async fn both(
    a: tokio::task::JoinHandle<LoadResult>,
    b: tokio::task::JoinHandle<LoadResult>,
) -> Result<(LoadResult, LoadResult), String> {
    let a = a.await.map_err(|e| e.to_string())?;
    let b = b.await.map_err(|e| e.to_string())?;
    Ok((a, b))
}

/// The two-instance figures (see the module docs). `one` holds the one-instance figures of
/// the same run, for the comparison.
pub(super) async fn measure(
    dir: &Path,
    server: &SecretString,
    clients: usize,
    duration: Duration,
    deliveries: u64,
    failover_count: Option<u64>,
    one: &Value,
) -> Result<Value, String> {
    let half = (clients / 2).max(1);

    eprintln!(
        "bench: two instances, accept ({half} clients each, {}s)",
        duration.as_secs_f64()
    );
    let held = pair(&dir.join("held"), server, true).await?;
    let before = cost::read(&[&held.a, &held.b], Some(&held.db)).await;
    let (ra, rb) = both(
        post(
            &held.a,
            half,
            Until::Elapsed(duration),
            false,
            "accept",
            0,
            None,
        ),
        post(
            &held.b,
            half,
            Until::Elapsed(duration),
            false,
            "accept",
            B_OFFSET,
            None,
        ),
    )
    .await?;
    let after = cost::read(&[&held.a, &held.b], Some(&held.db)).await;
    drop(held);
    let elapsed = ra.elapsed.max(rb.elapsed).as_secs_f64().max(1e-9);
    let mut lat: Vec<Duration> = ra.latencies.iter().chain(&rb.latencies).copied().collect();
    lat.sort_unstable();
    let accept = json!({
        "per_sec": ((ra.ok + rb.ok) as f64 / elapsed).round(),
        "a_per_sec": (ra.ok as f64 / elapsed).round(), "b_per_sec": (rb.ok as f64 / elapsed).round(),
        "p50_ms": ms(load::percentile(&lat, 0.5)), "p99_ms": ms(load::percentile(&lat, 0.99)),
        "errors": ra.errors + rb.errors,
        "one_instance_per_sec": one["accept"]["per_sec"],
        "cost": cost::per_notification(&before, &after, ra.ok + rb.ok),
        "one_instance_cost": one["accept"]["cost"],
    });

    eprintln!("bench: two instances, delivering {deliveries} notifications");
    let live = pair(&dir.join("live"), server, false).await?;
    let before = cost::read(&[&live.a, &live.b], Some(&live.db)).await;
    let mut delivery = delivery(&live, half, deliveries, one).await?;
    let after = cost::read(&[&live.a, &live.b], Some(&live.db)).await;
    let delivered = delivery["notifications"].as_u64().unwrap_or(0);
    delivery["cost"] = cost::per_notification(&before, &after, delivered);
    delivery["one_instance_cost"] = one["delivery"]["cost"].clone();

    let mut out = json!({"accept": accept, "delivery": delivery});
    if let Some(count) = failover_count {
        eprintln!("bench: two instances, failover with {count} notifications");
        out["failover"] = failover(&live, half, count).await?;
    }
    drop(live);
    Ok(out)
}

/// When each `delivery <n>` message reached either simulated WhatsApp, by `n`, and how many
/// each got.
async fn receipts(p: &Pair) -> Result<(HashMap<u64, DateTime<Utc>>, u64, u64), String> {
    let mut out = HashMap::new();
    let mut per = [0u64; 2];
    for (i, gw) in [&p.a, &p.b].into_iter().enumerate() {
        for r in gw
            .received("whatsapp")
            .await?
            .as_array()
            .into_iter()
            .flatten()
        {
            let seq = r["text"].as_str().and_then(|t| t.strip_prefix("delivery "));
            let at = r["at"].as_str().and_then(|s| s.parse().ok());
            if let (Some(seq), Some(at)) = (seq.and_then(|s| s.parse().ok()), at) {
                out.insert(seq, at);
                per[i] += 1;
            }
        }
    }
    Ok((out, per[0], per[1]))
}

async fn delivery(p: &Pair, clients: usize, count: u64, one: &Value) -> Result<Value, String> {
    let wall0 = SystemTime::now();
    let inst0 = Instant::now();
    let to_wall = |i: Instant| -> DateTime<Utc> { DateTime::<Utc>::from(wall0 + (i - inst0)) };
    let (ra, rb) = both(
        post(
            &p.a,
            clients,
            Until::Count(count / 2),
            true,
            "delivery",
            0,
            None,
        ),
        post(
            &p.b,
            clients,
            Until::Count(count - count / 2),
            true,
            "delivery",
            B_OFFSET,
            None,
        ),
    )
    .await?;
    let n = ra.ok + rb.ok;
    wait_until(Duration::from_secs(600), || async {
        Ok(p.a.received_count("whatsapp").await? + p.b.received_count("whatsapp").await? >= n)
    })
    .await?;
    let (receipts, sent_a, sent_b) = receipts(p).await?;
    let answers = (ra.answers.iter().map(|(s, at, _)| (*s, *at)))
        .chain(rb.answers.iter().map(|(s, at, _)| (*s + B_OFFSET, *at)));
    let mut first_202 = None::<Instant>;
    let mut lat = Vec::new();
    for (seq, at) in answers {
        first_202 = Some(first_202.map_or(at, |f| f.min(at)));
        if let Some(receipt) = receipts.get(&seq) {
            lat.push((*receipt - to_wall(at)).to_std().unwrap_or_default());
        }
    }
    lat.sort_unstable();
    let span = receipts
        .values()
        .max()
        .and_then(|last| (*last - to_wall(first_202.unwrap_or(inst0))).to_std().ok())
        .unwrap_or(Duration::from_secs(1));
    Ok(json!({
        "notifications": n, "per_sec": (receipts.len() as f64 / span.as_secs_f64().max(1e-9)).round(),
        "sent_by_a": sent_a, "sent_by_b": sent_b,
        "accept_to_provider_p50_ms": ms(load::percentile(&lat, 0.5)), "accept_to_provider_p99_ms": ms(load::percentile(&lat, 0.99)),
        "errors": ra.errors + rb.errors,
        "one_instance_per_sec": one["delivery"]["per_sec"],
    }))
}

/// WhatsApp's row of an instance's `GET /v1/admin/channels`.
async fn whatsapp_row(gw: &Gateway) -> Result<Value, String> {
    let rows = gw
        .expect("GET", "/v1/admin/channels", ADMIN_TOKEN, None)
        .await?;
    Ok(rows
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["channel"] == "whatsapp"))
        .cloned()
        .unwrap_or(Value::Null))
}

fn times(list: &Value) -> Vec<DateTime<Utc>> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["at"].as_str()?.parse().ok())
        .collect()
}

async fn failover(p: &Pair, clients: usize, count: u64) -> Result<Value, String> {
    for gw in [&p.a, &p.b] {
        gw.clear_received("whatsapp").await?;
        gw.clear_received("telegram").await?;
    }
    let progress = Arc::new(AtomicU64::new(0));
    let runs = (
        post(
            &p.a,
            clients,
            Until::Count(count / 2),
            false,
            "failover",
            0,
            Some(progress.clone()),
        ),
        post(
            &p.b,
            clients,
            Until::Count(count - count / 2),
            false,
            "failover",
            B_OFFSET,
            Some(progress.clone()),
        ),
    );
    wait_until(Duration::from_secs(300), || async {
        Ok(progress.load(Ordering::Relaxed) >= count / 2)
    })
    .await?;
    p.a.expect(
        "POST",
        "/sandbox/providers/whatsapp",
        ADMIN_TOKEN,
        Some(json!({"mode": "ban"})),
    )
    .await?;
    // B learns the ban only from the database: when does its table show it?
    let b_saw = wait_until(Duration::from_secs(60), || async {
        Ok(whatsapp_row(&p.b).await?["state"] == "banned")
    })
    .await
    .ok()
    .map(|_| Utc::now());
    let (ra, rb) = both(runs.0, runs.1).await?;
    let accepted = ra.ok + rb.ok;
    wait_until(Duration::from_secs(600), || async {
        let mut total = 0;
        for gw in [&p.a, &p.b] {
            total += gw.received_count("whatsapp").await? + gw.received_count("telegram").await?;
        }
        Ok(total >= accepted)
    })
    .await?;

    let banned_since: Option<DateTime<Utc>> = whatsapp_row(&p.a).await?["since"]
        .as_str()
        .and_then(|s| s.parse().ok());
    let refused: Vec<DateTime<Utc>> = serde_json::from_value(
        p.a.expect(
            "GET",
            "/sandbox/providers/whatsapp/refused",
            ADMIN_TOKEN,
            None,
        )
        .await?,
    )
    .unwrap_or_default();
    let b_whatsapp = times(&p.b.received("whatsapp").await?);
    let after = |list: &[DateTime<Utc>]| match banned_since {
        Some(s) => list.iter().filter(|t| **t > s).count(),
        None => list.len(),
    };
    let mut fallback = times(&p.a.received("telegram").await?);
    fallback.extend(times(&p.b.received("telegram").await?));
    let first_fallback = fallback.into_iter().min();
    let first_ban = refused.first().copied();
    let gap = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| match (from, to) {
        (Some(f), Some(t)) => ms((t - f).to_std().unwrap_or_default()),
        _ => -1.0,
    };
    Ok(json!({
        "notifications": accepted,
        "whatsapp_sends_after_ban_recorded": after(&refused) + after(&b_whatsapp),
        "a_requests_after_ban_recorded": after(&refused),
        "b_sends_after_ban_recorded": after(&b_whatsapp),
        "b_saw_ban_after_ms": gap(banned_since, b_saw),
        "b_last_whatsapp_send_after_ban_ms": gap(banned_since, b_whatsapp.iter().max().copied().filter(|t| banned_since.is_some_and(|s| *t > s))),
        "first_fallback_after_ban_ms": gap(first_ban, first_fallback),
        "not_sent": super::phases::not_sent(&p.a).await?,
        "errors": ra.errors + rb.errors,
    }))
}
