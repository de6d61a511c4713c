//! `lifeboat bench`: measures the gateway the way an operator would, and prints figures.
//!
//! The gateway runs as `lifeboat sandbox` in its own process (this same binary, so a release
//! build measures a release build), with its store on disk and the simulated providers in
//! that process; this process is the load generator ([`load`]). Phases:
//!
//! 0. **store** ([`store`]): the sled store alone in this process, before any gateway runs:
//!    accepts and the dispatcher's claim + contact read + save, per second and CPU each: the
//!    ceiling under the gateway's figures.
//! 1. **no-op and accept** (a sandbox holding deliveries, so the accept path is measured
//!    alone): `GET /healthz` and `POST /v1/notifications` from `--clients` keep-alive
//!    connections for `--duration`; every accept must answer 202. The accept rate is also
//!    given as a ratio to the no-op rate: the machine's HTTP ceiling. (Run after phase 2:)
//!    **accept with the dispatcher at work** ([`phases::dispatching`]), as a real gateway
//!    runs: (a) channels paced at the providers' rates, so the queue grows, then the CPU while
//!    `--queued` notifications wait on pacing; (b) every channel sending.
//! 2. **memory and restart** (same sandbox): accept more until `--queued` notifications wait
//!    in the queue; peak RSS and bytes on disk per queued notification; then SIGTERM and a
//!    fresh start on the same data: time until `/readyz` answers and until the first send.
//! 3. **delivery** (a fresh sandbox, delivering): `--deliveries` notifications; sends per
//!    second from the first 202 to the last provider receipt, and the time from each 202 to
//!    its receipt at the simulated provider.
//! 4. **failover** (same sandbox): `--failover` notifications with a WhatsApp ban injected
//!    once half are accepted: how many sends still reached WhatsApp after the ban answer, how
//!    long until the first fallback send, and that every notification ended `sent`.
//! 5. **events** (three fresh sandboxes): `--failover` notifications delivered with no events
//!    endpoint, with the sandbox's own receiver (live), and with it plus an endpoint that
//!    accepts connections and never answers (dead): sends per second for each, and the dead
//!    setup's rate relative to the live one's. The phases above run with no endpoint.
//!
//! 6. **two instances** (`--instances 2`, with `--store` only): [`fleet`]: accept, delivery and
//!    failover with two sandboxes on one database, beside the one-instance figures.
//!
//! `--retention <age>` runs none of these but [`retention`]: a steady load on the store with a
//! short retention, and its size on disk over time.
//!
//! Figures come from runs. Benchmarks are not tests: nothing here asserts a timing; `--smoke`
//! runs every phase with tiny sizes to keep the command working in CI.//!
//! Here: the command's arguments and `measure`, which runs the phases in order. The phases are
//! in [`phases`], the sandbox child process in [`gateway`], `/proc` readings in [`probe`], and
//! the printed table in [`table`](mod@table).

mod cost;
mod cpucap;
mod fleet;
mod gateway;
mod load;
mod pg;
mod phases;
mod probe;
mod retention;
mod store;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use secrecy::SecretString;
use serde_json::{json, Value};

use crate::config::parse_duration;
use crate::exit::fail;
use gateway::Place;
use pg::BenchDb;
use table::table;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long the no-op and accept phases each run.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Notifications in the delivery phase.
    #[arg(long, default_value_t = 50_000)]
    pub deliveries: u64,
    /// Notifications in the failover phase.
    #[arg(long, default_value_t = 20_000)]
    pub failover: u64,
    /// Notifications queued for the memory and restart phase.
    #[arg(long, default_value_t = 1_000_000)]
    pub queued: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Tiny sizes (a few seconds), to check the command works.
    #[arg(long)]
    pub smoke: bool,
    /// Where the sandboxes keep their stores (a temporary folder by default).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Instead of the phases above: a steady load on the store for `--duration` with finished
    /// notifications kept this long (e.g. "10s"), printing its size on disk over time.
    #[arg(long)]
    pub retention: Option<String>,
    /// Notifications a second in the `--retention` run.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Measure on PostgreSQL: a server URL (postgres://user:password@host:5432/postgres) on
    /// which each phase gets a throw-away database, created empty and dropped after it (the
    /// user needs CREATEDB). Without it, the embedded store in `--data`.
    #[arg(
        long,
        value_name = "URL",
        env = "LIFEBOAT_BENCH_STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// Gateways on the one database (1 or 2): with 2, the two-instance accept, delivery and
    /// failover figures are added (needs `--store`: the embedded store is one process's).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub instances: u8,
    /// Only the accept phases with the dispatcher at work (paced, and every channel
    /// sending): the figures of issue 19 without the rest.
    #[arg(long)]
    pub dispatching_only: bool,
    /// With `--instances 2`: only the accept and delivery phases, on one instance and then on
    /// two, with their CPU per notification (no store-alone, queue, restart, failover or events
    /// phases): the quick comparison of one instance with two.
    #[arg(long, requires = "store")]
    pub compare_only: bool,
    /// Run every gateway the bench starts with at most this many cores (a control group's CPU
    /// quota, as a container's `--cpus`; needs root): on a small machine, a second instance
    /// then brings CPU of its own, as on a machine of its own, instead of sharing the first's.
    #[arg(long, value_name = "CORES")]
    pub instance_cpu: Option<f64>,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    match measure(args).await {
        Ok((figures, json)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&figures).unwrap_or_default()
                );
            } else {
                print!("{}", table(&figures));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, format!("bench: {e}")),
    }
}

/// Runs the phases (or the `--retention` run) and gathers their figures; the `bool` is
/// `--json`.
async fn measure(mut args: BenchArgs) -> Result<(Value, bool), String> {
    if args.smoke {
        args.duration = "1s".into();
        args.deliveries = args.deliveries.min(500);
        args.failover = args.failover.min(400);
        args.queued = args.queued.min(3000);
        args.clients = args.clients.min(16);
    }
    let duration = parse_duration(&args.duration)?;
    let server = args
        .store
        .as_deref()
        .map(|url| SecretString::from(url.to_string()));
    if args.instances > 1 && server.is_none() {
        return Err(
            "--instances 2 needs --store postgres://...: the embedded store is opened by one process only"
                .into(),
        );
    }
    if let Some(cores) = args.instance_cpu {
        cpucap::cap_gateways(cores)?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-bench")
        .tempdir_in(args.data.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|e| e.to_string())?;
    let mut figures = json!({
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "clients": args.clients,
        "smoke": args.smoke,
        "store_kind": if server.is_some() { "postgres" } else { "sled" },
        "instances": args.instances,
        "compare_only": args.compare_only,
        "instance_cpu": cpucap::cores(),
    });

    if let Some(retention) = &args.retention {
        if server.is_some() {
            return Err(
                "--retention measures the embedded store's size on disk: not with --store".into(),
            );
        }
        let retention = parse_duration(retention)?;
        eprintln!(
            "bench: retention ({}/s for {}s, kept {}s)",
            args.rate,
            duration.as_secs_f64(),
            retention.as_secs_f64()
        );
        figures["retention"] = retention::measure(
            &tmp.path().join("retention"),
            args.rate,
            retention,
            duration,
        )
        .await?;
        return Ok((figures, args.json));
    }

    // A phase's store: a folder under `tmp`, and with `--store` a database of its own.
    let place = |name: &str| {
        let dir = tmp.path().join(name);
        let server = server.clone();
        async move {
            let db = match &server {
                Some(server) => Some(BenchDb::create(server).await?),
                None => None,
            };
            Ok::<_, String>(Place { dir, db })
        }
    };

    if args.dispatching_only {
        dispatching_phases(&args, duration, &place, &mut figures).await?;
        return Ok((figures, args.json));
    }

    let full = !args.compare_only;
    // 0. The store alone, in this process, before any gateway runs.
    if full {
        let store_count = args.deliveries.saturating_mul(2).max(1);
        eprintln!("bench: the store alone ({store_count} notifications)");
        figures["store"] = match &server {
            None => {
                store::measure_sled(&tmp.path().join("store"), args.clients, store_count).await?
            }
            Some(server) => {
                let db = BenchDb::create(server).await?;
                store::measure_postgres(&db, args.clients, store_count).await?
            }
        };
    }

    // 1. No-op ceiling and accept, deliveries held.
    eprintln!(
        "bench: no-op and accept ({} clients, {}s each)",
        args.clients,
        duration.as_secs_f64()
    );
    let held = place("held").await?;
    let gw = held.start(true).await?;
    gw.setup_contact().await?;
    let (noop, noop_rate) = phases::noop(&gw, args.clients, duration).await;
    figures["noop"] = noop;
    let before = cost::read(&[&gw], held.db.as_ref()).await;
    let (accept, accepted) = phases::accept(&gw, args.clients, duration, noop_rate).await;
    let after = cost::read(&[&gw], held.db.as_ref()).await;
    figures["accept"] = accept;
    figures["accept"]["cost"] = cost::per_notification(&before, &after, accepted);

    // 2. Memory with a full queue, then restart, then the backlog drained alone.
    if full {
        phases::fill_queue(&gw, args.clients, args.queued, accepted).await?;
        let memory = phases::memory(gw, &held).await?;
        eprintln!(
            "bench: restarting on {} queued notifications",
            memory["queued"]
        );
        let (gw, restart) = phases::restart(&held).await?;
        let backlog = phases::backlog(&gw, duration).await?;
        drop(gw);
        figures["memory"] = memory;
        figures["restart"] = restart;
        figures["backlog"] = backlog;
    } else {
        drop(gw);
    }
    drop(held);

    // 1a, 1b. Accept with the dispatcher at work.
    if full {
        dispatching_phases(&args, duration, &place, &mut figures).await?;
    }

    // 3. Delivery.
    eprintln!("bench: delivering {} notifications", args.deliveries);
    let live = place("live").await?;
    let gw = live.start(false).await?;
    gw.setup_contact().await?;
    let before = cost::read(&[&gw], live.db.as_ref()).await;
    figures["delivery"] = phases::delivery(&gw, args.clients, args.deliveries).await?;
    let after = cost::read(&[&gw], live.db.as_ref()).await;
    let delivered = figures["delivery"]["notifications"].as_u64().unwrap_or(0);
    figures["delivery"]["cost"] = cost::per_notification(&before, &after, delivered);

    if full {
        // 4. Failover: ban WhatsApp once half are accepted.
        eprintln!("bench: failover with {} notifications", args.failover);
        figures["failover"] = phases::failover(&gw, args.clients, args.failover).await?;
    }
    drop(gw);
    drop(live);

    // 5. Events: delivery with no endpoint, a live one, and a live one plus a dead one.
    if full {
        eprintln!(
            "bench: events, {} notifications per setup (no endpoint, live, live + dead)",
            args.failover
        );
        figures["events"] = phases::events(
            &tmp.path().join("events"),
            server.as_ref(),
            args.clients,
            args.failover,
        )
        .await?;
    }

    // 6. Two instances on one database.
    if let (2, Some(server)) = (args.instances, &server) {
        figures["fleet"] = fleet::measure(
            &tmp.path().join("fleet"),
            server,
            args.clients,
            duration,
            args.deliveries,
            full.then_some(args.failover),
            &figures,
        )
        .await?;
    }
    Ok((figures, args.json))
}

/// Phases 1a and 1b: accept with the dispatcher at work, paced at the providers' rates (the
/// queue grows; then the CPU while `--queued` notifications wait on pacing), and with every
/// channel sending (accept and delivery share the cores).
async fn dispatching_phases<F, Fut>(
    args: &BenchArgs,
    duration: std::time::Duration,
    place: &F,
    figures: &mut Value,
) -> Result<(), String>
where
    F: Fn(&str) -> Fut,
    Fut: std::future::Future<Output = Result<Place, String>>,
{
    eprintln!(
        "bench: accept with the dispatcher at work, paced ({} clients, {}s)",
        args.clients,
        duration.as_secs_f64()
    );
    let paced = place("paced").await?;
    let gw = paced.start_paced().await?;
    gw.setup_contact().await?;
    figures["accept_paced"] =
        phases::dispatching(&gw, args.clients, duration, Some(args.queued)).await?;
    drop(gw);
    drop(paced);
    eprintln!(
        "bench: accept with the dispatcher at work, every channel sending ({} clients, {}s)",
        args.clients,
        duration.as_secs_f64()
    );
    let sending = place("sending").await?;
    let gw = sending.start(false).await?;
    gw.setup_contact().await?;
    figures["accept_sending"] = phases::dispatching(&gw, args.clients, duration, None).await?;
    Ok(())
}
