//! `lifeboat sandbox`: the whole gateway with every channel pointed at simulated providers
//! running in the same process, so a newcomer can watch failover work without a single
//! provider account, and nothing reaches the internet.
//!
//! Start-up, in order: bind the gateway's listener (so its port is known, `--listen
//! 127.0.0.1:0` included); start the simulated WhatsApp, Telegram and LINE ([`providers`]) and
//! the mail server ([`smtp`]) on ephemeral 127.0.0.1 ports, on threads of their own; build the config in code (a TOML
//! text through [`Config::from_toml`], so it is checked exactly like a file) with the fixed
//! demo keys [`API_KEY`] and [`ADMIN_TOKEN`], the store in its own folder (`--data`, default
//! `data/sandbox`; delete the folder to reset the sandbox), demo-sized timings (cooldown 30 s,
//! retries from 200 ms) and every channel pointed at the simulated providers; then run the real
//! gateway ([`server::run`]) with the `/sandbox/...` controls ([`controls`]) merged into its
//! API, until Ctrl-C or SIGTERM. The banner (URLs, keys, a few curl commands) is printed by the
//! server once the store is open, so a data folder in use fails with one line and no banner.

pub mod controls;
pub mod events;
pub mod providers;
pub mod smtp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use lifeboat_channel::ChannelKind;
use tokio::net::TcpListener;

use crate::channels::Registry;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::exit::fail;
use crate::server::{self, RunOptions};

/// The sandbox's api key (for `/v1`). Fixed and printed: the sandbox guards nothing real.
pub const API_KEY: &str = "sandbox-api-key";
/// The sandbox's admin token (for `/v1/admin` and `/sandbox`).
pub const ADMIN_TOKEN: &str = "sandbox-admin-token";

/// The config the sandbox runs with: `listen` is the address actually bound, `data` the store
/// folder (or `store_url` the PostgreSQL database), and the four URLs/ports those of the
/// simulated providers.
#[allow(clippy::too_many_arguments)]
pub fn config_text(
    listen: SocketAddr,
    data: &Path,
    store_url: Option<&str>,
    whatsapp: &str,
    telegram: &str,
    line: &str,
    smtp_port: u16,
) -> String {
    use providers::*;
    // A TOML basic string, so any path (Windows backslashes, quotes) survives.
    let store = match store_url {
        Some(url) => format!("url = {}", toml::Value::String(url.to_string())),
        None => format!(
            "path = {}",
            toml::Value::String(data.join("lifeboat.sled").display().to_string())
        ),
    };
    format!(
        r#"
[server]
listen = "{listen}"
api_keys = ["{API_KEY}"]
admin_token = "{ADMIN_TOKEN}"
public_url = "http://{listen}"
business_name = "Lifeboat Sandbox"
shutdown_grace = "5s"

[store]
{store}

[routing]
order = ["whatsapp", "telegram", "line", "email"]
max_wait = "5s"
retry = {{ attempts = 3, base = "200ms", max = "2s" }}
cooldown = "30s"

[channels.whatsapp]
api_base = "{whatsapp}"
phone_number_id = "{WHATSAPP_PHONE_NUMBER_ID}"
access_token = "{WHATSAPP_ACCESS_TOKEN}"
app_secret = "{WHATSAPP_APP_SECRET}"
business_number = "+15550000001"
timeout = "3s"

[channels.telegram]
api_url = "{telegram}"
bot_token = "{TELEGRAM_BOT_TOKEN}"
bot_username = "{TELEGRAM_BOT_USERNAME}"
timeout = "3s"

[channels.line]
api_base = "{line}"
channel_access_token = "{LINE_CHANNEL_ACCESS_TOKEN}"
basic_id = "@lifeboat-sandbox"
timeout = "3s"

[channels.email]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "Lifeboat Sandbox <notify@sandbox.lifeboat.test>"
timeout = "3s"

# Events go to the sandbox's own receiver (GET /sandbox/events lists what it got).
[events]
retry_first = "1s"
retry_max = "30s"

{own_endpoint}
# Create the contact `admin` (the README walk-through does) to get the alerts.
[alerts]
contacts = ["admin"]

# The simulated WhatsApp has no conversations to open, and the walk-through sends free-form
# text to a contact who never wrote: a real number keeps the 24 h service window on.
[policy.whatsapp]
service_window = false
"#,
        own_endpoint = own_endpoint(listen),
    )
}

/// The `[[events.endpoints]]` table of the sandbox's own receiver.
fn own_endpoint(listen: SocketAddr) -> String {
    format!(
        "[[events.endpoints]]\nurl = \"http://{listen}{}\"\nsecret = \"{}\"\nname = \"sandbox\"\n",
        events::RECEIVE_PATH,
        events::EVENTS_SECRET
    )
}

/// Where the sandbox sends its events (`lifeboat bench` measures the three).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsSetup {
    /// To its own receiver (the default).
    Own,
    /// Nowhere: no endpoint, nothing recorded.
    Off,
    /// To its own receiver and to this URL too (signed with the same secret).
    AlsoTo(String),
}

/// Runs `lifeboat sandbox`.
/// `unpaced` lifts the channels' pacing (the benchmark measures the gateway, not the pace
/// the providers allow); `hold_deliveries` keeps everything queued.
pub async fn run(
    listen: SocketAddr,
    data: PathBuf,
    store_url: Option<String>,
    hold_deliveries: bool,
    unpaced: bool,
    events_setup: EventsSetup,
) -> ExitCode {
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            let hint = server::bind_hint(&e, "--listen");
            return fail(1, format!("cannot listen on {listen}: {e}{hint}"));
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => return fail(1, format!("cannot read the listening address: {e}")),
    };
    if let Err(e) = std::fs::create_dir_all(&data) {
        return fail(
            1,
            format!("cannot create the data folder {}: {e}", data.display()),
        );
    }

    // The simulated providers get threads of their own, so the CPU they use is not counted
    // as the gateway's (the benchmark reads it per thread name).
    let simulation = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("lifeboat-sim")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                1,
                format!("cannot start the simulated providers' threads: {e}"),
            )
        }
    };
    let started = simulation.spawn(async {
        let (whatsapp, wa_url) = providers::start_whatsapp().await?;
        let (telegram, tg_url) = providers::start_telegram().await?;
        let (line, line_url) = providers::start_line().await?;
        let (email, smtp_port) = smtp::Email::start().await?;
        std::io::Result::Ok((
            whatsapp, wa_url, telegram, tg_url, line, line_url, email, smtp_port,
        ))
    });
    let (whatsapp, wa_url, telegram, tg_url, line, line_url, email, smtp_port) = match started.await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(1, format!("cannot start the simulated providers: {e}")),
        Err(e) => return fail(1, format!("the simulated providers failed to start: {e}")),
    };

    let mut text = config_text(
        addr,
        &data,
        store_url.as_deref(),
        &wa_url,
        &tg_url,
        &line_url,
        smtp_port,
    );
    let own = own_endpoint(addr);
    match &events_setup {
        EventsSetup::Own => {}
        EventsSetup::Off => text = text.replace(&own, ""),
        EventsSetup::AlsoTo(url) => {
            let extra = format!(
                "{own}\n[[events.endpoints]]\nurl = {}\nsecret = \"{}\"\nname = \"extra\"\n",
                toml::Value::String(url.clone()),
                events::EVENTS_SECRET
            );
            text = text.replace(&own, &extra);
        }
    }
    if unpaced {
        // Appended to the `[policy.whatsapp]` table the config text ends with.
        text.push_str(
            "rate = 1000000\n\n[policy.telegram]\nrate = 1000000\nper_chat_rate = 1000000\n\n\
             [policy.line]\nrate = 1000000\n\n[policy.email]\nrate = 1000000\n",
        );
    }
    let config = match Config::from_toml(&text, Path::new("<sandbox>"), &|_| None) {
        Ok(c) => c,
        Err(e) => return fail(2, format!("the sandbox config is invalid (a bug): {e}")),
    };
    let registry = match Registry::from_config(&config) {
        Ok(r) => r,
        Err(e) => return fail(2, format!("the sandbox channels are invalid (a bug): {e}")),
    };

    let providers = controls::Providers {
        http: BTreeMap::from([
            (ChannelKind::Whatsapp, whatsapp),
            (ChannelKind::Telegram, telegram),
            (ChannelKind::Line, line),
        ]),
        email,
        gateway: format!("http://{addr}"),
    };
    // Printed by the server once the store is open: a second sandbox on the same data
    // folder fails with one line, not after a banner that says it is ready.
    let store = match &store_url {
        Some(url) => Store::Database(crate::config::printable_url(url)),
        None => Store::Folder(&data),
    };
    let banner = banner(addr, store, &providers);
    let options = RunOptions {
        clock: Arc::new(SystemClock::default()),
        extra_routes: Some(controls::router(providers).merge(events::router())),
        hold_deliveries,
        banner: Some(banner),
    };
    let outcome = server::run(
        config,
        registry,
        listener,
        options,
        server::shutdown_signal(),
    )
    .await;
    // Dropping a runtime may block, which an async context must not do.
    simulation.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// The text printed at start: where everything is, the demo keys, and how to begin.
/// Where the sandbox keeps its store, as the banner shows it.
pub enum Store<'a> {
    Folder(&'a Path),
    /// The database's URL without its password.
    Database(String),
}

pub fn banner(addr: SocketAddr, store: Store<'_>, providers: &controls::Providers) -> String {
    let base = format!("http://{addr}");
    let mut out = String::new();
    out.push_str("Lifeboat sandbox: the real gateway, with simulated providers in this process.\n");
    out.push_str("Nothing here reaches the internet.\n\n");
    out.push_str(&format!("  gateway      {base}\n"));
    out.push_str(&format!(
        "  api key      {API_KEY}      (Authorization: Bearer, for /v1)\n"
    ));
    out.push_str(&format!(
        "  admin token  {ADMIN_TOKEN}  (Authorization: Bearer, for /v1/admin and /sandbox)\n"
    ));
    out.push_str(&match store {
        Store::Folder(data) => format!(
            "  data         {}  (delete this folder to reset the sandbox)\n\n",
            data.display()
        ),
        Store::Database(url) => format!("  store        {url}  (PostgreSQL)\n\n"),
    });
    out.push_str(
        "A restart keeps the data (contacts, notifications, channel states) but the simulated\n\
         providers start afresh, accepting: a channel left banned or disabled stays so until\n\
         POST /v1/admin/channels/{channel}/enable (or delete the data folder).\n\n",
    );
    out.push_str(&format!(
        "Events (Standard Webhooks) go to the sandbox's own receiver, {base}{}\n\
         (secret {}); GET /sandbox/events lists what it got. Alerts go to the contact `admin`.\n\n",
        events::RECEIVE_PATH,
        events::EVENTS_SECRET
    ));
    out.push_str("Simulated providers:\n");
    for kind in ChannelKind::ALL {
        let row = providers.row(kind);
        out.push_str(&format!(
            "  {:<9} {}\n",
            kind.as_str(),
            row["url"].as_str().unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "\nTry it (see the README for the whole walk-through):\n\
         \n  export LIFEBOAT={base}\
         \n  curl -X PUT $LIFEBOAT/v1/contacts/ana -H 'Authorization: Bearer {API_KEY}' \\\
         \n    -H 'Content-Type: application/json' -d '{{\"whatsapp\": \"+48600100200\", \"telegram\": \"5551234\"}}'\
         \n  curl -X PUT $LIFEBOAT/v1/contacts/ana/consents/whatsapp -H 'Authorization: Bearer {API_KEY}' \\\
         \n    -H 'Content-Type: application/json' -d '{{\"status\": \"granted\", \"source\": \"web_form\"}}'\
         \n  curl -X POST $LIFEBOAT/v1/notifications -H 'Authorization: Bearer {API_KEY}' \\\
         \n    -H 'Content-Type: application/json' -d '{{\"contact_id\": \"ana\", \"text\": \"Your order has shipped.\"}}'\
         \n  curl -X POST $LIFEBOAT/sandbox/providers/whatsapp -H 'Authorization: Bearer {ADMIN_TOKEN}' \\\
         \n    -H 'Content-Type: application/json' -d '{{\"mode\": \"ban\"}}'\
         \n  curl $LIFEBOAT/sandbox/providers -H 'Authorization: Bearer {ADMIN_TOKEN}'\
         \n\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_generated_config_is_valid_and_points_at_localhost() {
        let text = config_text(
            "127.0.0.1:8080".parse().unwrap(),
            Path::new("data/sandbox"),
            None,
            "http://127.0.0.1:1/v23.0",
            "http://127.0.0.1:2",
            "http://127.0.0.1:3",
            4,
        );
        let config = Config::from_toml(&text, Path::new("<sandbox>"), &|_| None).unwrap();
        assert!(config.warnings.is_empty());
        assert_eq!(config.channels.len(), 4);
        assert_eq!(config.events.endpoints.len(), 1);
        assert_eq!(config.alerts.contacts, ["admin"]);
        assert_eq!(
            config.cooldown(ChannelKind::Whatsapp),
            std::time::Duration::from_secs(30)
        );
        Registry::from_config(&config).unwrap();
        for line in text.lines() {
            if line.contains("://") {
                assert!(line.contains("127.0.0.1"), "{line}");
            }
        }
    }
}
