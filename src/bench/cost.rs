//! What a phase cost per notification, summed over every gateway of the phase: CPU of the
//! gateway processes, of the load generator (this process) and of the PostgreSQL backends
//! serving the phase's database (from `/proc`, the server being on this machine), and what the
//! gateways did with the database (`/readyz`'s `database.work`: grouped transactions and their
//! sizes, claims, lease renewals, pool waits). With these, one instance and two compare per
//! notification, whatever the machine's load did to the rates.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::gateway::Gateway;
use super::pg::BenchDb;
use super::probe::{cpu_time_of, cpu_us_per_request};
use crate::sandbox::API_KEY;

/// One reading of the counters.
pub(super) struct Reading {
    gateways: Vec<Duration>,
    generator: Duration,
    /// CPU so far of each backend (by pid) serving the database.
    backends: HashMap<i32, Duration>,
    /// Each gateway's `database.work`.
    work: Vec<Value>,
}

pub(super) async fn read(gateways: &[&Gateway], db: Option<&BenchDb>) -> Reading {
    let mut work = Vec::new();
    for gw in gateways {
        let ready = gw.call("GET", "/readyz", API_KEY, None).await;
        work.push(
            ready
                .map(|(_, v)| v["database"]["work"].clone())
                .unwrap_or(Value::Null),
        );
    }
    let backends = match db {
        Some(db) => db
            .backend_pids()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|pid| (pid, cpu_time_of(&pid.to_string())))
            .collect(),
        None => HashMap::new(),
    };
    Reading {
        gateways: gateways.iter().map(|g| g.cpu_time()).collect(),
        generator: cpu_time_of("self"),
        backends,
        work,
    }
}

/// The cost per notification between two readings of the same gateways, `n` notifications.
pub(super) fn per_notification(before: &Reading, after: &Reading, n: u64) -> Value {
    let spent = |a: Duration, b: Duration| a.saturating_sub(b);
    let per_gw: Vec<Duration> = (after.gateways.iter().zip(&before.gateways))
        .map(|(a, b)| spent(*a, *b))
        .collect();
    let gateways: Duration = per_gw.iter().sum();
    let generator = spent(after.generator, before.generator);
    // A backend that started during the phase spent all its time in it; one that ended took
    // its time with it (the pools keep theirs open, so few do).
    let database: Duration = (after.backends.iter())
        .map(|(pid, t)| spent(*t, before.backends.get(pid).copied().unwrap_or_default()))
        .sum();
    let us = |d: Duration| cpu_us_per_request(d, n);
    let work: Vec<Value> = (after.work.iter().zip(&before.work))
        .map(|(a, b)| work_between(b, a, n))
        .collect();
    json!({
        "notifications": n,
        "gateways_cpu_us": us(gateways),
        "per_gateway_cpu_us": per_gw.iter().map(|d| us(*d)).collect::<Vec<_>>(),
        "database_cpu_us": us(database),
        "generator_cpu_us": us(generator),
        "total_cpu_us": us(gateways + database + generator),
        "work": work,
    })
}

/// One gateway's `database.work` between two readings, with the group sizes.
fn work_between(before: &Value, after: &Value, n: u64) -> Value {
    let d = |k: &str| {
        after[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before[k].as_u64().unwrap_or(0))
    };
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            (a as f64 / b as f64 * 10.0).round() / 10.0
        }
    };
    json!({
        "accepts_per_group": ratio(d("accepts"), d("accept_groups")),
        "saves_per_group": ratio(d("saves"), d("save_groups")),
        "reads_per_group": ratio(d("reads"), d("read_groups")),
        "claims": d("claims"),
        "claimed_per_claim": ratio(d("claimed"), d("claims")),
        "renewals": d("renewals"),
        "transactions_per_100": ratio((d("accept_groups") + d("save_groups") + d("read_groups") + d("claims") + d("renewals")) * 100, n),
        "pool_gets_per_notification": ratio(d("pool_gets"), n),
        "pool_wait_us_per_get": ratio(d("pool_wait_us"), d("pool_gets")),
    })
}
