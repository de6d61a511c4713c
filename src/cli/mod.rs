//! The `lifeboat` command line (README): `serve`, `sandbox`, `check-config`, `migrate`,
//! `store copy`, `channels`.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 usage or config error. Errors are one line on stderr.

mod channels_cmd;
mod check_config;
mod migrate;
mod store_copy;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::channels::Registry;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::server::{self, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "lifeboat",
    version,
    about = "A notification gateway that fails over between WhatsApp, Telegram, email and LINE"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway: HTTP API and delivery workers.
    Serve {
        /// The config file; LIFEBOAT_LISTEN, LIFEBOAT_PUBLIC_URL and LIFEBOAT_STORE_PATH
        /// override its keys.
        #[arg(long, default_value = "config/lifeboat.toml", env = "LIFEBOAT_CONFIG")]
        config: PathBuf,
    },
    /// Run the gateway against simulated providers in this process, with fixed demo keys.
    Sandbox {
        /// Address:port of the gateway (the simulated providers take free ports on 127.0.0.1).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The sandbox's own data folder (delete it to reset the sandbox).
        #[arg(long, default_value = "data/sandbox")]
        data: PathBuf,
        /// Keep the sandbox's store in this PostgreSQL database instead of the data folder
        /// (postgres://user:password@host:5432/db; used by `lifeboat bench --store`).
        #[arg(long, env = "LIFEBOAT_SANDBOX_STORE_URL", hide_env_values = true)]
        store_url: Option<String>,
        /// Accept and store notifications but send none (used by `lifeboat bench`).
        #[arg(long, hide = true)]
        hold_deliveries: bool,
        /// Lift every channel's pacing (used by `lifeboat bench`).
        #[arg(long, hide = true)]
        unpaced: bool,
        /// Configure no events endpoint (used by `lifeboat bench`).
        #[arg(long, hide = true)]
        events_off: bool,
        /// Send the events to this URL too (used by `lifeboat bench`).
        #[arg(long, hide = true)]
        events_also_to: Option<String>,
    },
    /// Exit 0 if a running gateway answers `GET /healthz` (for container health checks).
    Healthcheck {
        /// The gateway's /healthz URL.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Measure accept, delivery, failover, memory and restart against a sandbox.
    Bench(crate::bench::BenchArgs),
    /// Validate the config and say, per channel, whether it is usable.
    ///
    /// Exit 0 when valid (and, with --probe, every configured channel answered its health
    /// check), 1 when a probe failed or the PostgreSQL store (`[store] url`) is unreachable or
    /// newer than this binary, 2 when the config is invalid.
    CheckConfig {
        /// The config file (with the same environment overrides as `serve`).
        #[arg(long, default_value = "config/lifeboat.toml", env = "LIFEBOAT_CONFIG")]
        config: PathBuf,
        /// Also call each configured provider's cheap health check (exit 1 if one fails).
        #[arg(long)]
        probe: bool,
    },
    /// Apply the PostgreSQL store's schema migrations (as `serve` does at start) and exit.
    ///
    /// Exit 0 when the schema is current, 1 when the database is unreachable or newer than
    /// this binary, 2 when the config is invalid or names no database (`[store] url`).
    Migrate {
        /// The config file (with the same environment overrides as `serve`).
        #[arg(long, default_value = "config/lifeboat.toml", env = "LIFEBOAT_CONFIG")]
        config: PathBuf,
    },
    /// Work on a stopped gateway's store: `store copy` moves its records to another store.
    Store {
        #[command(subcommand)]
        action: store_copy::Action,
    },
    /// Show and switch channels on a running gateway (through the admin API).
    Channels {
        #[command(subcommand)]
        action: channels_cmd::Action,
        /// The gateway's base URL.
        #[arg(
            long,
            global = true,
            default_value = "http://127.0.0.1:8080",
            env = "LIFEBOAT_SERVER"
        )]
        server: String,
        /// The admin token.
        #[arg(
            long,
            global = true,
            env = "LIFEBOAT_ADMIN_TOKEN",
            hide_env_values = true
        )]
        admin_token: Option<String>,
    },
}

pub use crate::exit::fail;

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Sandbox {
            listen,
            data,
            store_url,
            hold_deliveries,
            unpaced,
            events_off,
            events_also_to,
        } => {
            let events = match (events_off, events_also_to) {
                (true, _) => crate::sandbox::EventsSetup::Off,
                (false, Some(url)) => crate::sandbox::EventsSetup::AlsoTo(url),
                (false, None) => crate::sandbox::EventsSetup::Own,
            };
            crate::sandbox::run(listen, data, store_url, hold_deliveries, unpaced, events).await
        }
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Healthcheck { url } => healthcheck(&url).await,
        Command::CheckConfig { config, probe } => check_config::run(&config, probe).await,
        Command::Migrate { config } => migrate::run(&config).await,
        Command::Store { action } => store_copy::run(action).await,
        Command::Channels {
            action,
            server,
            admin_token,
        } => channels_cmd::run(action, &server, admin_token).await,
    }
}

async fn healthcheck(url: &str) -> ExitCode {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build();
    let answer = match client {
        Ok(c) => c.get(url).send().await,
        Err(e) => return fail(1, e),
    };
    match answer {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => fail(1, format!("{url} answered {}", r.status())),
        Err(e) => fail(1, format!("{url} is not answering: {}", e.without_url())),
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    if let Err(e) = crate::config_env::apply_from_process(&mut config) {
        return fail(2, e);
    }
    let registry = match Registry::from_config(&config) {
        Ok(r) => r,
        Err(e) => return fail(2, e),
    };
    let listener = match server::bind(&config).await {
        Ok(l) => l,
        Err(e) => return fail(1, e),
    };
    let options = RunOptions {
        clock: Arc::new(SystemClock::default()),
        extra_routes: None,
        hold_deliveries: false,
        banner: None,
    };
    match server::run(
        config,
        registry,
        listener,
        options,
        server::shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}
