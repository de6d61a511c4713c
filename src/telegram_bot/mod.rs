//! The Telegram bot's side of consent: people opt in with `/start <token>` (from an opt-in
//! link), opt out with `/stop` or by blocking the bot, and ask `/status`. It runs inside the
//! gateway whenever `[channels.telegram]` is configured, so consent changes land in the same
//! store the dispatcher reads.
//!
//! Updates arrive by long polling (`mode = "polling"`, the default: one poller per bot token,
//! elected among the instances sharing the store, see [`election`])
//! or, with `mode = "webhook"` and `secret_token`, at `POST /webhooks/telegram`. In webhook mode
//! the operator registers the URL once (`setWebhook` with `url = <public_url>/webhooks/telegram`
//! and the same `secret_token`); the gateway does not call `setWebhook` itself, since the public
//! URL must be HTTPS on a port Telegram accepts, which only the operator knows.
//!
//! Gateway keys read from `[channels.telegram]` besides the channel crate's: `timeout` (each
//! reply) and `poll_timeout` (the long-poll wait, default `"25s"`, at most `"50s"`).

mod election;
#[cfg(test)]
mod fleet_tests;
mod handler;
mod polling;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use lifeboat_channel::ChannelKind;
use lifeboat_telegram::{Mode, TelegramChannel, TelegramConfig};
use teloxide::requests::Requester;
use teloxide::types::BotCommand;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{parse_duration, ChannelSection, Config};
use crate::store::Store;

pub use election::{Election, Timing};
pub use handler::{handle, BotContext, Reply};

/// The long-poll wait when `poll_timeout` is not set.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(25);
const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(50);
/// How long [`BotHandle::stop`] waits for the loop to finish its update.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The running bot: its task, and in webhook mode its route.
pub struct BotHandle {
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
    routes: Option<Router>,
}

impl BotHandle {
    /// No bot (Telegram not configured).
    pub fn disabled() -> Self {
        BotHandle {
            stop: None,
            task: None,
            routes: None,
        }
    }

    /// The `POST /webhooks/telegram` route, in webhook mode.
    pub fn take_routes(&mut self) -> Option<Router> {
        self.routes.take()
    }

    /// Stops the update loop (the update in hand is finished first, within a few seconds).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                tracing::warn!("telegram: the update loop did not stop in time; aborting it");
                task.abort();
            }
        }
    }
}

fn poll_timeout(table: &toml::Table) -> Duration {
    match table.get("poll_timeout") {
        None => DEFAULT_POLL_TIMEOUT,
        Some(toml::Value::String(s)) => match parse_duration(s) {
            Ok(d) => d.min(MAX_POLL_TIMEOUT),
            Err(e) => {
                tracing::warn!("channels.telegram.poll_timeout: {e}; using 25s");
                DEFAULT_POLL_TIMEOUT
            }
        },
        Some(_) => {
            tracing::warn!(
                "channels.telegram.poll_timeout must be a string like \"25s\"; using 25s"
            );
            DEFAULT_POLL_TIMEOUT
        }
    }
}

/// Starts the bot if `[channels.telegram]` is configured. Never fails the gateway: a problem is
/// logged and the bot stays off.
pub fn start(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<crate::metrics::Metrics>,
    events: Arc<crate::events::Events>,
    instance: crate::fleet::InstanceId,
) -> BotHandle {
    let Some(ChannelSection::Configured { table, timeout, .. }) =
        config.channels.get(&ChannelKind::Telegram)
    else {
        return BotHandle::disabled();
    };
    let tg: TelegramConfig =
        match crate::channels::provider_config(ChannelKind::Telegram, table, &config.source) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("telegram bot not started: {e}");
                return BotHandle::disabled();
            }
        };
    let poll = poll_timeout(table);
    let mode = tg.mode;
    let secret = tg.secret_token.clone();
    // The HTTP client's own timeout must outlast a long poll; each call is also bounded below.
    let channel = match TelegramChannel::new(tg, poll + *timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("telegram bot not started: {e}");
            return BotHandle::disabled();
        }
    };
    let election = Election::new(store.clone(), clock.clone(), instance, Timing::default());
    let ctx = Arc::new(BotContext {
        store,
        clock,
        business: config.server.business_name.clone(),
        bot: channel.bot().clone(),
        call_timeout: *timeout,
        metrics,
        events: Some(events),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let commands_ctx = ctx.clone();
    let (task, routes) = match (mode, secret) {
        (Mode::Webhook, Some(secret)) => {
            tracing::info!("telegram: webhook mode, updates at POST /webhooks/telegram");
            let task = tokio::spawn(async move { set_commands(&commands_ctx).await });
            (task, Some(webhook::routes(ctx, &secret)))
        }
        _ => {
            let task = tokio::spawn(async move {
                set_commands(&commands_ctx).await;
                polling::run(ctx, poll, election, stop_rx).await;
            });
            (task, None)
        }
    };
    BotHandle {
        stop: Some(stop_tx),
        task: Some(task),
        routes,
    }
}

/// Registers /start, /stop and /status in Telegram's command menu; a failure is only logged.
async fn set_commands(ctx: &BotContext) {
    let commands = [
        ("start", "Subscribe with your personal link"),
        ("stop", "Stop all messages"),
        ("status", "What you are subscribed to"),
    ]
    .map(|(command, description)| BotCommand::new(command, description));
    match tokio::time::timeout(ctx.call_timeout, ctx.bot.set_my_commands(commands)).await {
        Ok(Ok(_)) => tracing::debug!("telegram: bot commands set"),
        Ok(Err(e)) => tracing::warn!(
            error = %lifeboat_telegram::classify::scrub(&e.to_string(), ctx.bot.token()),
            "telegram: could not set the bot's commands (the bot works without them)"
        ),
        Err(_) => tracing::warn!("telegram: setMyCommands got no answer in time"),
    }
}
