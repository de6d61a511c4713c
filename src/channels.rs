//! The configured channels, built from the `[channels.*]` tables by each channel's crate.
//! This is the only place the gateway names a channel crate; everything after it sees
//! `dyn Channel`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lifeboat_channel::{Channel, ChannelKind};

use crate::config::{
    explain_unknown_field, gateway_keys, ChannelSection, Config, ConfigError, ConfigSource,
};

/// Why a channel can't be used, for `check-config`, `/v1/admin/channels` and skip reasons.
#[derive(Debug, Clone)]
pub struct NotConfigured(pub String);

/// Every channel the gateway can send on.
#[derive(Clone, Default)]
pub struct Registry {
    channels: BTreeMap<ChannelKind, Arc<dyn Channel>>,
    missing: BTreeMap<ChannelKind, NotConfigured>,
}

/// The part of a `[channels.NAME]` table that belongs to the channel's crate: without the
/// gateway's own keys ([`gateway_keys`]).
pub fn provider_table(kind: ChannelKind, table: &toml::Table) -> toml::Table {
    let mut table = table.clone();
    for key in gateway_keys(kind) {
        table.remove(*key);
    }
    table
}

/// The channel crate's config from its table; an error names the key (unknown keys get a
/// "did you mean").
pub fn provider_config<C: serde::de::DeserializeOwned>(
    kind: ChannelKind,
    table: &toml::Table,
    source: &ConfigSource,
) -> Result<C, ConfigError> {
    let value = toml::Value::Table(provider_table(kind, table));
    serde_path_to_error::deserialize(value).map_err(
        |e: serde_path_to_error::Error<toml::de::Error>| {
            let path = match e.path().to_string() {
                p if p == "." => format!("channels.{kind}"),
                p => format!("channels.{kind}.{p}"),
            };
            let (key, message) =
                explain_unknown_field(&path, e.inner().message(), gateway_keys(kind));
            source.error(&key, message)
        },
    )
}

fn build<C, T, E>(
    kind: ChannelKind,
    table: &toml::Table,
    timeout: Duration,
    source: &ConfigSource,
    new: impl FnOnce(C, Duration) -> Result<T, E>,
) -> Result<Arc<dyn Channel>, ConfigError>
where
    C: serde::de::DeserializeOwned,
    T: Channel,
    E: std::fmt::Display,
{
    let config: C = provider_config(kind, table, source)?;
    let channel = new(config, timeout)
        .map_err(|e| source.keyed_error(&format!("channels.{kind}"), &e.to_string()))?;
    Ok(Arc::new(channel))
}

impl Registry {
    /// Builds every configured channel; a table the channel's crate rejects is a config error.
    pub fn from_config(config: &Config) -> Result<Registry, ConfigError> {
        let mut registry = Registry::default();
        for kind in ChannelKind::ALL {
            match config.channels.get(&kind) {
                None => {
                    registry.missing.insert(
                        kind,
                        NotConfigured(format!("no [channels.{kind}] table in the config")),
                    );
                }
                Some(ChannelSection::NotConfigured { reason }) => {
                    registry.missing.insert(kind, NotConfigured(reason.clone()));
                }
                Some(ChannelSection::Configured { table, timeout, .. }) => {
                    let source = &config.source;
                    let channel = match kind {
                        ChannelKind::Whatsapp => build(
                            kind,
                            table,
                            *timeout,
                            source,
                            lifeboat_whatsapp::WhatsappChannel::new,
                        )?,
                        ChannelKind::Telegram => build(
                            kind,
                            table,
                            *timeout,
                            source,
                            lifeboat_telegram::TelegramChannel::new,
                        )?,
                        ChannelKind::Email => build(
                            kind,
                            table,
                            *timeout,
                            source,
                            lifeboat_email::EmailChannel::new,
                        )?,
                        ChannelKind::Line => build(
                            kind,
                            table,
                            *timeout,
                            source,
                            lifeboat_line::LineChannel::new,
                        )?,
                    };
                    registry.channels.insert(kind, channel);
                }
            }
        }
        Ok(registry)
    }

    /// A registry of ready-made channels (tests, the sandbox).
    pub fn from_channels(channels: Vec<Arc<dyn Channel>>) -> Registry {
        let mut registry = Registry::default();
        for channel in channels {
            registry.channels.insert(channel.kind(), channel);
        }
        for kind in ChannelKind::ALL {
            if !registry.channels.contains_key(&kind) {
                registry
                    .missing
                    .insert(kind, NotConfigured(format!("{kind} is not configured")));
            }
        }
        registry
    }

    pub fn get(&self, kind: ChannelKind) -> Option<&Arc<dyn Channel>> {
        self.channels.get(&kind)
    }

    /// Why `kind` is not configured, if it isn't.
    pub fn missing(&self, kind: ChannelKind) -> Option<&str> {
        self.missing.get(&kind).map(|m| m.0.as_str())
    }

    pub fn configured(&self) -> impl Iterator<Item = (ChannelKind, &Arc<dyn Channel>)> {
        self.channels.iter().map(|(k, c)| (*k, c))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    /// The example config stays valid: with every variable set, all four channels build.
    #[test]
    fn the_example_config_is_valid_and_configures_every_channel() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/lifeboat.toml"));
        let text = std::fs::read_to_string(path).unwrap();
        let env = |name: &str| -> Option<String> {
            Some(match name {
                "WHATSAPP_PHONE_NUMBER_ID" => "1234567890".into(),
                "TELEGRAM_BOT_TOKEN" => "123456:ABC-example".into(),
                other => format!("{}-value", other.to_lowercase().replace('_', "-")),
            })
        };
        let cfg = Config::from_toml(&text, path, &env).unwrap();
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let registry = Registry::from_config(&cfg).unwrap();
        for kind in ChannelKind::ALL {
            assert!(registry.get(kind).is_some(), "{kind} should be configured");
        }
    }
}
