//! `lifeboat check-config`: is the config valid, does the store answer (PostgreSQL: with a
//! current schema), and which channels can be used?

use std::path::Path;
use std::process::ExitCode;

use lifeboat_channel::{ChannelKind, Health};

use super::fail;
use crate::channels::Registry;
use crate::config::Config;

pub async fn run(path: &Path, probe: bool) -> ExitCode {
    let mut config = match Config::load(path) {
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
    println!("config {} is valid", path.display());
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    // A PostgreSQL store must answer, with a schema this binary can use.
    let mut probe_failed = !super::migrate::check_store(&config.store).await;
    for kind in ChannelKind::ALL {
        let Some(channel) = registry.get(kind) else {
            println!(
                "{:<9} not configured: {}",
                kind.as_str(),
                registry.missing(kind).unwrap_or("-")
            );
            continue;
        };
        if !probe {
            println!("{:<9} configured", kind.as_str());
            continue;
        }
        match channel.health().await {
            Health::Ok(what) => println!("{:<9} ok: {what}", kind.as_str()),
            Health::ConfigError(why) => {
                probe_failed = true;
                println!("{:<9} config error: {why}", kind.as_str())
            }
            Health::Unreachable(why) => {
                probe_failed = true;
                println!("{:<9} unreachable: {why}", kind.as_str())
            }
        }
    }
    if probe_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
