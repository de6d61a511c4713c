//! `lifeboat channels list|enable|disable`: the admin API from a terminal.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::fail;

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Print every channel's state.
    List,
    /// Put a channel back in rotation (clears restricted, banned, disabled).
    Enable {
        /// The channel: whatsapp, telegram, line or email.
        name: String,
    },
    /// Take a channel out of rotation for every queued and future notification.
    Disable {
        /// The channel: whatsapp, telegram, line or email.
        name: String,
        /// Why, in words: shown in `channels list`, the admin page and GET /v1/admin/channels.
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(action: Action, server: &str, token: Option<String>) -> ExitCode {
    let Some(token) = token else {
        return fail(
            2,
            "no admin token: pass --admin-token or set LIFEBOAT_ADMIN_TOKEN",
        );
    };
    let base = server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = match &action {
        Action::List => client.get(format!("{base}/v1/admin/channels")),
        Action::Enable { name } => client.post(format!("{base}/v1/admin/channels/{name}/enable")),
        Action::Disable { name, reason } => client
            .post(format!("{base}/v1/admin/channels/{name}/disable"))
            .json(&serde_json::json!({ "reason": reason })),
    };
    let response = match request.bearer_auth(&token).send().await {
        Ok(r) => r,
        Err(e) => return fail(1, format!("cannot reach {base}: {}", e.without_url())),
    };
    let status = response.status();
    let body: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => {
            return fail(
                1,
                format!("{base} answered {status} with a body that is not JSON: {e}"),
            )
        }
    };
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("unknown error");
        let code = if status.is_client_error() { 2 } else { 1 };
        return fail(code, format!("{status}: {message}"));
    }
    let rows = match body {
        Value::Array(rows) => rows,
        row => vec![row],
    };
    print!("{}", table(&rows));
    ExitCode::SUCCESS
}

/// The channel table, one line per channel.
pub fn table(rows: &[Value]) -> String {
    let mut out = format!(
        "{:<9} {:<10} {:<11} {:>7} {:>9}  {}\n",
        "CHANNEL", "STATE", "CONFIGURED", "SENT_1H", "FAILED_1H", "REASON / UNTIL"
    );
    for row in rows {
        let text = |k: &str| row[k].as_str().unwrap_or("").to_string();
        let mut reason = text("reason");
        if let Some(until) = row["until"].as_str() {
            reason = format!("{reason} (until {until})");
        }
        out.push_str(&format!(
            "{:<9} {:<10} {:<11} {:>7} {:>9}  {}\n",
            text("channel"),
            text("state"),
            if row["configured"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            row["counts"]["sent_1h"].as_u64().unwrap_or(0),
            row["counts"]["failed_1h"].as_u64().unwrap_or(0),
            reason
        ));
    }
    out
}
