//! The phases `measure` runs against a sandbox, one function each, each answering its part of
//! the figures: the no-op ceiling, accept, filling the queue, memory, restart, delivery alone
//! (the backlog after a restart), delivery while posting, and failover under a ban.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::gateway::{load_phase, notify_request, wait_until, Gateway, Place};
use super::load::{self, LoadResult, Until};
use super::probe::{cpu_time_of, cpu_us_per_request, ms, threads_us_per_request};
use crate::sandbox::{ADMIN_TOKEN, API_KEY};

/// `GET /healthz` from `clients` connections for `duration`: the machine's HTTP ceiling.
/// Answers the figures and the rate the accept phase compares itself with.
pub(super) async fn noop(gw: &Gateway, clients: usize, duration: Duration) -> (Value, f64) {
    let noop_req = load::request("GET", "/healthz", API_KEY, None);
    let (gw_cpu, gen_cpu) = (gw.cpu_time(), cpu_time_of("self"));
    let noop = load::run(
        gw.addr,
        clients,
        Until::Elapsed(duration),
        200,
        false,
        Arc::new(move |_| noop_req.clone()),
        None,
    )
    .await;
    let noop_gw_cpu = gw.cpu_time().saturating_sub(gw_cpu);
    let noop_gen_cpu = cpu_time_of("self").saturating_sub(gen_cpu);
    let figures = json!({
        "per_sec": noop.rate().round(), "p50_ms": ms(noop.percentile(0.5)), "p99_ms": ms(noop.percentile(0.99)), "errors": noop.errors,
        "gateway_cpu_us": cpu_us_per_request(noop_gw_cpu, noop.ok), "generator_cpu_us": cpu_us_per_request(noop_gen_cpu, noop.ok),
    });
    (figures, noop.rate())
}

/// `POST /v1/notifications` from `clients` connections for `duration` (deliveries held, so the
/// accept path is measured alone). Answers the figures and how many were accepted.
pub(super) async fn accept(
    gw: &Gateway,
    clients: usize,
    duration: Duration,
    noop_rate: f64,
) -> (Value, u64) {
    let (gw_cpu, gen_cpu) = (gw.cpu_time(), cpu_time_of("self"));
    let threads0 = gw.thread_cpu();
    let accept = load_phase(gw, clients, Until::Elapsed(duration), false, "accept", None).await;
    let accept_gw_cpu = gw.cpu_time().saturating_sub(gw_cpu);
    let accept_gen_cpu = cpu_time_of("self").saturating_sub(gen_cpu);
    let accept_threads = threads_us_per_request(&threads0, &gw.thread_cpu(), accept.ok);
    let figures = json!({
        "per_sec": accept.rate().round(), "p50_ms": ms(accept.percentile(0.5)), "p99_ms": ms(accept.percentile(0.99)),
        "errors": accept.errors, "accepted": accept.ok, "ratio_to_noop": (accept.rate() / noop_rate.max(1.0) * 100.0).round() / 100.0,
        "gateway_cpu_us": cpu_us_per_request(accept_gw_cpu, accept.ok), "generator_cpu_us": cpu_us_per_request(accept_gen_cpu, accept.ok),
        "gateway_threads_us": accept_threads,
    });
    (figures, accept.ok)
}

/// Accepts more (held) until `queued` notifications wait, `already` being queued.
pub(super) async fn fill_queue(
    gw: &Gateway,
    clients: usize,
    queued: u64,
    already: u64,
) -> Result<(), String> {
    if queued <= already {
        return Ok(());
    }
    eprintln!("bench: queueing {queued} notifications (held)");
    let fill = load_phase(
        gw,
        clients,
        Until::Count(queued - already),
        false,
        "queued",
        None,
    )
    .await;
    if fill.errors > 0 {
        return Err(format!(
            "{} accepts failed while filling the queue",
            fill.errors
        ));
    }
    Ok(())
}

/// The queue depth, peak RSS and bytes on disk (of the folder, or of the database) of a
/// gateway with a full queue, then how long it takes to stop on SIGTERM.
pub(super) async fn memory(gw: Gateway, place: &Place) -> Result<Value, String> {
    let depth = gw.expect("GET", "/readyz", API_KEY, None).await?["queue_depth"]
        .as_u64()
        .unwrap_or(0);
    let rss = gw.peak_rss_bytes().unwrap_or(0);
    let disk = place.bytes().await?;
    let shutdown = gw.terminate().await;
    Ok(json!({
        "queued": depth, "peak_rss_mb": (rss as f64 / 1048576.0).round(),
        "disk_bytes_per_queued": disk.checked_div(depth).unwrap_or(0),
        "shutdown_ms": ms(shutdown),
    }))
}

/// A fresh start on the same data: the time until `/readyz` answers 200 and until the first
/// send reaches the simulated WhatsApp. Answers the running gateway and the figures.
pub(super) async fn restart(place: &Place) -> Result<(Gateway, Value), String> {
    let t0 = Instant::now();
    let gw = place.start(false).await?;
    wait_until(Duration::from_secs(120), || async {
        Ok(gw
            .call("GET", "/readyz", API_KEY, None)
            .await
            .map(|(s, _)| s == 200)
            .unwrap_or(false))
    })
    .await?;
    let ready = t0.elapsed();
    wait_until(Duration::from_secs(120), || async {
        Ok(gw.received_count("whatsapp").await? > 0)
    })
    .await?;
    let first_send = t0.elapsed();
    let figures = json!({"ready_ms": ms(ready), "first_send_ms": ms(first_send)});
    Ok((gw, figures))
}

/// Delivery alone: the restarted gateway drains its backlog with nothing else running, for
/// `duration` (5 s at most).
pub(super) async fn backlog(gw: &Gateway, duration: Duration) -> Result<Value, String> {
    let (sent0, cpu0, threads0, drain0) = (
        gw.received_count("whatsapp").await?,
        gw.cpu_time(),
        gw.thread_cpu(),
        Instant::now(),
    );
    tokio::time::sleep(duration.min(Duration::from_secs(5))).await;
    let drained = gw.received_count("whatsapp").await?.saturating_sub(sent0);
    let drain_secs = drain0.elapsed().as_secs_f64();
    let drain_cpu = gw.cpu_time().saturating_sub(cpu0);
    let drain_threads = threads_us_per_request(&threads0, &gw.thread_cpu(), drained);
    Ok(json!({
        "per_sec": (drained as f64 / drain_secs.max(1e-9)).round(), "sent": drained,
        "gateway_cpu_us": cpu_us_per_request(drain_cpu, drained),
        "gateway_threads_us": drain_threads,
    }))
}

/// `count` notifications posted while the gateway delivers them: sends per second from the
/// first 202 to the last provider receipt, and the time from each 202 to its receipt.
pub(super) async fn delivery(gw: &Gateway, clients: usize, count: u64) -> Result<Value, String> {
    let wall0 = SystemTime::now();
    let inst0 = Instant::now();
    let to_wall = |i: Instant| -> DateTime<Utc> { DateTime::<Utc>::from(wall0 + (i - inst0)) };
    let (gw_cpu, threads0) = (gw.cpu_time(), gw.thread_cpu());
    let delivery = load_phase(gw, clients, Until::Count(count), true, "delivery", None).await;
    let first_202 = delivery.answers.iter().map(|a| a.1).min().unwrap_or(inst0);
    let n = delivery.ok;
    wait_until(Duration::from_secs(600), || async {
        Ok(gw.received_count("whatsapp").await? >= n)
    })
    .await?;
    let delivery_gw_cpu = gw.cpu_time().saturating_sub(gw_cpu);
    let delivery_threads = threads_us_per_request(&threads0, &gw.thread_cpu(), n);
    let receipts = receipts(&gw.received("whatsapp").await?);
    let mut lat: Vec<Duration> = delivery
        .answers
        .iter()
        .filter_map(|(seq, at, _)| {
            let receipt = receipts.get(seq)?;
            (*receipt - to_wall(*at))
                .to_std()
                .ok()
                .or(Some(Duration::ZERO))
        })
        .collect();
    lat.sort_unstable();
    let last_receipt = receipts.values().max().copied();
    let span = last_receipt
        .and_then(|l| (l - to_wall(first_202)).to_std().ok())
        .unwrap_or(Duration::from_secs(1));
    Ok(json!({
        "notifications": n, "per_sec": (receipts.len() as f64 / span.as_secs_f64().max(1e-9)).round(),
        "accept_to_provider_p50_ms": ms(load::percentile(&lat, 0.5)), "accept_to_provider_p99_ms": ms(load::percentile(&lat, 0.99)),
        "errors": delivery.errors,
        "gateway_cpu_us": cpu_us_per_request(delivery_gw_cpu, n),
        "gateway_threads_us": delivery_threads,
    }))
}

/// Accept with the dispatcher at work (issue 19): `POST /v1/notifications` from `clients`
/// connections for `duration` while the gateway delivers, as every real gateway runs. With a
/// `paced` sandbox (channels paced at the providers' rates: WhatsApp 80/s) the queue grows:
/// then the backlog is topped up to `wait` notifications and the gateway's CPU is read for
/// 5 s while they wait on pacing (% of one core), with WhatsApp's sends per second meanwhile.
/// Unpaced, every channel can send, so accept and delivery share the cores.
pub(super) async fn dispatching(
    gw: &Gateway,
    clients: usize,
    duration: Duration,
    wait: Option<u64>,
) -> Result<Value, String> {
    let (cpu0, sent0, t0) = (
        gw.cpu_time(),
        gw.received_count("whatsapp").await?,
        Instant::now(),
    );
    let posted = load_phase(
        gw,
        clients,
        Until::Elapsed(duration),
        false,
        "dispatching",
        None,
    )
    .await;
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let sent = gw.received_count("whatsapp").await?.saturating_sub(sent0);
    let cpu = gw.cpu_time().saturating_sub(cpu0);
    let mut figures = json!({
        "per_sec": posted.rate().round(), "p50_ms": ms(posted.percentile(0.5)), "p99_ms": ms(posted.percentile(0.99)),
        "errors": posted.errors, "accepted": posted.ok,
        "whatsapp_sends_per_sec": (sent as f64 / secs).round(),
        "gateway_cpu_us": cpu_us_per_request(cpu, posted.ok),
    });
    let Some(wait) = wait else {
        return Ok(figures);
    };
    let depth = || async {
        Ok::<u64, String>(
            gw.expect("GET", "/readyz", API_KEY, None).await?["queue_depth"]
                .as_u64()
                .unwrap_or(0),
        )
    };
    let waiting = depth().await?;
    if wait > waiting {
        eprintln!("bench: topping the paced backlog up to {wait} notifications");
        let more = load_phase(
            gw,
            clients,
            Until::Count(wait - waiting),
            false,
            "waiting",
            None,
        )
        .await;
        if more.errors > 0 {
            return Err(format!("{} accepts failed while topping up", more.errors));
        }
    }
    // Settle (the last accepts' wake-ups), then read the CPU of the waiting gateway.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = depth().await?;
    let (cpu0, sent0, t0) = (
        gw.cpu_time(),
        gw.received_count("whatsapp").await?,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = gw.cpu_time().saturating_sub(cpu0);
    let sent = gw.received_count("whatsapp").await?.saturating_sub(sent0);
    figures["waiting"] = json!({
        "queued": waiting,
        "cpu_percent_of_a_core": (cpu.as_secs_f64() / secs * 1000.0).round() / 10.0,
        "whatsapp_sends_per_sec": (sent as f64 / secs).round(),
    });
    Ok(figures)
}

/// When the simulated provider received each `delivery <n>` message, by `n`.
fn receipts(received: &Value) -> HashMap<u64, DateTime<Utc>> {
    received
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| {
                    let seq = r["text"]
                        .as_str()?
                        .strip_prefix("delivery ")?
                        .parse()
                        .ok()?;
                    let at = r["at"].as_str()?.parse().ok()?;
                    Some((seq, at))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `count` notifications with a WhatsApp ban injected once half are accepted; waits until
/// every accepted one reached WhatsApp or Telegram, then reads what the ban cost.
pub(super) async fn failover(gw: &Gateway, clients: usize, count: u64) -> Result<Value, String> {
    gw.clear_received("whatsapp").await?;
    gw.clear_received("telegram").await?;
    let progress = Arc::new(AtomicU64::new(0));
    let runner = {
        let (addr, progress) = (gw.addr, progress.clone());
        tokio::spawn(async move {
            let make: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> =
                Arc::new(|n| notify_request(&format!("failover {n}")));
            load::run(
                addr,
                clients,
                Until::Count(count),
                202,
                false,
                make,
                Some(progress),
            )
            .await
        })
    };
    wait_until(Duration::from_secs(300), || async {
        Ok(progress.load(Ordering::Relaxed) >= count / 2)
    })
    .await?;
    gw.expect(
        "POST",
        "/sandbox/providers/whatsapp",
        ADMIN_TOKEN,
        Some(json!({"mode": "ban"})),
    )
    .await?;
    let failover: LoadResult = runner.await.map_err(|e| e.to_string())?;
    let accepted = failover.ok;
    wait_until(Duration::from_secs(600), || async {
        let wa = gw.received_count("whatsapp").await?;
        let tg = gw.received_count("telegram").await?;
        Ok(wa + tg >= accepted)
    })
    .await?;
    failover_figures(gw, accepted).await
}

/// What the ban cost: WhatsApp requests after its ban answer (and after the ban was
/// recorded), the time to the first Telegram send, and the notifications not `sent`.
async fn failover_figures(gw: &Gateway, accepted: u64) -> Result<Value, String> {
    let refused: Vec<DateTime<Utc>> = serde_json::from_value(
        gw.expect(
            "GET",
            "/sandbox/providers/whatsapp/refused",
            ADMIN_TOKEN,
            None,
        )
        .await?,
    )
    .unwrap_or_default();
    let channels = gw
        .expect("GET", "/v1/admin/channels", ADMIN_TOKEN, None)
        .await?;
    let banned_since: Option<DateTime<Utc>> = channels
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["channel"] == "whatsapp"))
        .and_then(|r| r["since"].as_str())
        .and_then(|s| s.parse().ok());
    let first_ban = refused.first().copied();
    let tg = gw.received("telegram").await?;
    let first_fallback = tg.as_array().and_then(|l| {
        l.iter()
            .filter_map(|r| r["at"].as_str()?.parse::<DateTime<Utc>>().ok())
            .min()
    });
    Ok(json!({
        "notifications": accepted,
        "whatsapp_requests_after_ban_answer": refused.len().saturating_sub(1),
        "whatsapp_requests_after_ban_recorded": match banned_since { Some(s) => refused.iter().filter(|t| **t > s).count(), None => refused.len() },
        "first_fallback_after_ban_ms": match (first_ban, first_fallback) { (Some(b), Some(f)) => ms((f - b).to_std().unwrap_or_default()), _ => -1.0 },
        "not_sent": not_sent(gw).await?,
    }))
}

/// How many notifications are not `sent` (up to 100 per status).
pub(super) async fn not_sent(gw: &Gateway) -> Result<usize, String> {
    let mut count = 0;
    for status in ["queued", "sending", "failed", "expired"] {
        let page = gw
            .expect(
                "GET",
                &format!("/v1/notifications?status={status}&limit=100"),
                API_KEY,
                None,
            )
            .await?;
        count += page["data"].as_array().map(|d| d.len()).unwrap_or(0);
    }
    Ok(count)
}

/// A TCP endpoint that accepts connections and never answers (a hung app), until dropped.
pub(super) async fn dead_endpoint() -> Result<(String, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind the dead endpoint: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok((format!("http://{addr}/hook"), task))
}

/// Delivery with events: `count` notifications on a fresh sandbox for each of no endpoint,
/// the sandbox's own (live) receiver, and that receiver plus an endpoint that never answers.
/// Sends per second for each, and how many events the live receiver got.
/// With `server` (`--store`), each setup on a database of its own, as the other phases: the
/// embedded store otherwise.
pub(super) async fn events(
    dir: &std::path::Path,
    server: Option<&secrecy::SecretString>,
    clients: usize,
    count: u64,
) -> Result<Value, String> {
    let (dead_url, dead) = dead_endpoint().await?;
    let mut out = json!({});
    let setups: [(&str, Vec<&str>); 3] = [
        ("no_endpoint", vec!["--events-off"]),
        ("live_endpoint", vec![]),
        (
            "live_and_dead_endpoint",
            vec!["--events-also-to", dead_url.as_str()],
        ),
    ];
    for (name, args) in setups {
        let db = match server {
            Some(server) => Some(super::pg::BenchDb::create(server).await?),
            None => None,
        };
        let gw = Gateway::start_with(&dir.join(name), db.as_ref(), false, &args).await?;
        gw.setup_contact().await?;
        let figures = delivery(&gw, clients, count).await?;
        let events = gw
            .expect("GET", "/sandbox/events", ADMIN_TOKEN, None)
            .await?;
        out[name] = json!({
            "per_sec": figures["per_sec"],
            "accept_to_provider_p99_ms": figures["accept_to_provider_p99_ms"],
            "events_received_by_live_endpoint": events.as_array().map_or(0, |e| e.len()),
        });
        drop(gw);
        drop(db);
    }
    dead.abort();
    let rate = |k: &str| out[k]["per_sec"].as_f64().unwrap_or(0.0);
    let live = rate("live_endpoint");
    out["dead_vs_live_pct"] = json!(if live > 0.0 {
        ((rate("live_and_dead_endpoint") / live - 1.0) * 1000.0).round() / 10.0
    } else {
        0.0
    });
    Ok(out)
}
