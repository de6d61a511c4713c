//! Black-box tests of the whole gateway: the real binary, real HTTP, a real store on disk,
//! simulated providers on 127.0.0.1. One test binary (one link) for all of them.

mod admin_page;
mod api_errors;
mod channels_cli;
mod config_errors;
mod container;
mod dispatch_limits;
mod edge;
mod events;
mod failover;
mod fleet;
mod guardrails;
mod harness;
mod inbound;
mod lifecycle;
mod metrics;
mod postgres;
mod readme;
mod retention;
mod signals;
mod store_copy;
mod telegram_bot;
mod walkthrough;
mod webhooks;
mod whatsapp_2026;
