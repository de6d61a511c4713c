//! Lifeboat: one HTTP endpoint for notifications, delivered over WhatsApp, Telegram, email or
//! LINE in the business's order of preference, failing over when a channel is restricted or
//! banned.
//!
//! The pieces, each in its own module:
//! - [`api`]: the HTTP API (accepting, contacts and consents, admin);
//! - [`store`]: the durable store behind a trait (embedded sled by default);
//! - [`dispatch`]: the scheduler and the workers (docs/failover.md);
//! - [`states`]: the channel states and their history, below dispatch, policy and api;
//! - [`channels`]: builds the channel crates from config;
//! - [`config`]: the TOML config with `${ENV}` references;
//! - [`config_env`]: `LIFEBOAT_LISTEN`, `LIFEBOAT_PUBLIC_URL`, `LIFEBOAT_STORE_PATH` override it;
//! - [`server`]: wires them together and runs until a signal;
//! - [`edge`]: the HTTP serve loop (connection cap, timeouts, bounded shutdown) and the
//!   error shape of every answer (docs/http-edge.md);
//! - [`sandbox`]: `lifeboat sandbox`, the gateway against simulated providers in-process;
//! - [`telegram_bot`]: the Telegram bot's opt-in/opt-out commands (polling or webhook);
//! - [`webhooks`], [`unsubscribe`], [`optout`]: consent from the providers' webhooks, email
//!   one-click unsubscribe, and the opt-out line every marketing message carries;
//! - [`policy`]: the guardrails (docs/guardrails.md) that keep the accounts from being restricted:
//!   caps, quiet hours, pacing, WhatsApp's tier and service window, the risk monitor;
//! - [`fleet`]: what instances sharing one store agree through it (instance id, leases);
//! - [`events`]: events to the app's endpoints (Standard Webhooks) and alerts to the admins;
//! - [`metrics`]: the Prometheus metrics behind `GET /metrics`, one registry per gateway;
//! - [`web`]: what the HTTP handlers share (state, error shape, extractors, auth, HTML escaping);
//! - [`cli`]: the `lifeboat` command line; [`exit`]: how its commands fail.
//!
//! The modules form layers, each using only the ones below it (docs/architecture.md,
//! checked by `tests/architecture.rs`).

pub mod api;
pub mod bench;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_env;
pub mod dispatch;
pub mod edge;
pub mod events;
pub mod exit;
pub mod fleet;
pub mod metrics;
pub mod model;
pub mod optin;
pub mod optout;
pub mod policy;
pub mod sandbox;
pub mod server;
pub mod states;
pub mod store;
pub mod tasks;
pub mod telegram_bot;
pub mod unsubscribe;
pub mod web;
pub mod webhooks;
