//! The keys of the `[channels.*]` tables that the gateway itself reads (the rest belong to
//! each channel's crate): the email `unsubscribe_mailto` (used by `optout`) and the WhatsApp
//! `stop_words` (used by `webhooks`). Parsed and checked here, so config imports neither.

use lifeboat_channel::ChannelKind;

use super::{ChannelSection, Config};

/// The raw table of a configured channel.
pub fn channel_table(config: &Config, kind: ChannelKind) -> Option<&toml::Table> {
    match config.channels.get(&kind) {
        Some(ChannelSection::Configured { table, .. }) => Some(table),
        _ => None,
    }
}

/// `[channels.whatsapp] stop_words`: an array of strings, or an error naming the key.
pub fn extra_stop_words(table: &toml::Table) -> Result<Vec<String>, String> {
    match table.get("stop_words") {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    "channels.whatsapp.stop_words must be an array of strings".to_string()
                })
            })
            .collect(),
        Some(_) => Err("channels.whatsapp.stop_words must be an array of strings".into()),
    }
}

/// `[channels.email] unsubscribe_mailto`: an optional address for the `mailto:` part of
/// `List-Unsubscribe`, checked so it can't break the header.
pub fn unsubscribe_mailto(config: &Config) -> Result<Option<String>, String> {
    let Some(table) = channel_table(config, ChannelKind::Email) else {
        return Ok(None);
    };
    match table.get("unsubscribe_mailto") {
        None => Ok(None),
        Some(toml::Value::String(s)) => {
            let s = s.trim();
            let ok = s.len() <= 254
                && s.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
                && s.chars()
                    .all(|c| c.is_ascii_graphic() && !"<>,?\"".contains(c));
            if ok {
                Ok(Some(s.to_string()))
            } else {
                Err(format!(
                    "channels.email.unsubscribe_mailto `{s}` is not a plain email address"
                ))
            }
        }
        Some(_) => Err("channels.email.unsubscribe_mailto must be a string".into()),
    }
}

/// The checks of the keys the gateway itself reads from the channel tables.
pub fn check(config: &Config) -> Result<(), String> {
    unsubscribe_mailto(config)?;
    if let Some(table) = channel_table(config, ChannelKind::Whatsapp) {
        extra_stop_words(table)?;
    }
    Ok(())
}
