//! The config file: TOML with `${ENV_VAR}` references, read once at start.
//!
//! Loading happens in two steps. First every string in the TOML tree has its `${NAME}`
//! references replaced from the environment; a missing variable is an error naming it, except
//! inside a `[channels.*]` table, where it only makes that channel "not configured" (so one
//! missing credential never stops the gateway). Then the tree is deserialized into typed
//! sections. Channel tables stay raw TOML here: each channel crate owns its own keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifeboat_channel::ChannelKind;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// A config that cannot be used; the message names the key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var} (used by `{key}`) is not set")]
    MissingVar { var: String, key: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub routing: RoutingConfig,
    pub channels: BTreeMap<ChannelKind, ChannelSection>,
    /// The raw `[policy]` table (docs/guardrails.md); typed accessors below read what is used.
    pub policy: toml::Table,
    /// Warnings found while loading (e.g. a channel left unconfigured by a missing variable).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer keys accepted on `/v1` (apps).
    #[serde(default)]
    pub api_keys: Vec<SecretString>,
    /// Bearer token for `/v1/admin` and the admin page.
    pub admin_token: SecretString,
    #[serde(default = "default_public_url")]
    pub public_url: String,
    #[serde(default = "default_business_name")]
    pub business_name: String,
    /// How many sends may be in flight at once across all channels.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long shutdown waits for in-flight sends before giving up on them (they are retried
    /// after the next start).
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers, counted from the connection's
    /// opening or from the previous answer (so it is also the keep-alive idle timeout).
    #[serde(default = "default_header_timeout", deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// How long a request may take from the end of its headers to its answer, body included.
    #[serde(default = "default_request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Client connections served at once; past it only `/healthz` and `/readyz` are answered.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The largest request head (request line and headers), in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A shared PostgreSQL store for several instances: not available yet.
    pub url: Option<String>,
    /// Memory sled may use for its page cache, in MiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// `[store.retention]`: how long finished records are kept (docs/retention.md).
    #[serde(default)]
    pub retention: crate::store::RetentionConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default = "default_order")]
    pub order: Vec<ChannelKind>,
    #[serde(default = "default_max_wait", deserialize_with = "duration")]
    pub max_wait: Duration,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default = "default_cooldown", deserialize_with = "duration")]
    pub cooldown: Duration,
    /// Default lifetime of a notification (`expires_in` overrides it per notification).
    #[serde(default = "default_expires_in", deserialize_with = "duration")]
    pub expires_in: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub attempts: u32,
    #[serde(deserialize_with = "duration")]
    pub base: Duration,
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 4,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// One `[channels.NAME]` table.
#[derive(Debug, Clone)]
pub enum ChannelSection {
    /// Usable: the provider keys (for the channel crate) plus the gateway's own keys.
    Configured {
        table: toml::Table,
        cooldown: Option<Duration>,
        timeout: Duration,
    },
    /// Present but unusable, with the reason (a missing variable).
    NotConfigured { reason: String },
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            order: default_order(),
            max_wait: default_max_wait(),
            retry: RetryConfig::default(),
            cooldown: default_cooldown(),
            expires_in: default_expires_in(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            url: None,
            cache_mb: default_cache_mb(),
            retention: Default::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("static address")
}
fn default_public_url() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_business_name() -> String {
    "Lifeboat".into()
}
fn default_concurrency() -> usize {
    256
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    512
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_store_path() -> PathBuf {
    PathBuf::from("data/lifeboat.sled")
}
fn default_cache_mb() -> u64 {
    64
}
fn default_order() -> Vec<ChannelKind> {
    ChannelKind::ALL.to_vec()
}
fn default_max_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(3600)
}
fn default_expires_in() -> Duration {
    Duration::from_secs(24 * 3600)
}
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `"30s"`, `"15m"`, `"24h"`, `"1d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"30s\", \"15m\" or \"24h\" ({e})"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: ServerConfig,
    #[serde(default)]
    store: StoreConfig,
    #[serde(default)]
    routing: RoutingConfig,
    #[serde(default)]
    channels: BTreeMap<String, toml::Table>,
    /// Guardrail settings (docs/guardrails.md), kept raw on [`Config::policy`].
    #[serde(default)]
    policy: Option<toml::Table>,
}

impl Config {
    /// Reads and validates a config file, resolving `${ENV}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `env` resolves `${NAME}` references (tests pass their own).
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let mut warnings = Vec::new();
        let mut unconfigured: BTreeMap<String, String> = BTreeMap::new();

        for (section, value) in tree.iter_mut() {
            if section == "channels" {
                let Some(channels) = value.as_table_mut() else {
                    return Err(ConfigError::Invalid("`channels` must be a table".into()));
                };
                for (name, table) in channels.iter_mut() {
                    let key = format!("channels.{name}");
                    if let Err(ConfigError::MissingVar { var, key }) =
                        expand_value(table, &key, env)
                    {
                        let reason =
                            format!("environment variable {var} (used by `{key}`) is not set");
                        warnings.push(format!("channel {name} is not configured: {reason}"));
                        unconfigured.insert(name.clone(), reason);
                    }
                }
            } else {
                expand_value(value, section, env)?;
            }
        }

        let raw: RawConfig = tree
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;

        let mut channels = BTreeMap::new();
        for (name, mut table) in raw.channels {
            let kind: ChannelKind = name
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("[channels.{name}]: {e}")))?;
            if let Some(reason) = unconfigured.remove(&name) {
                channels.insert(kind, ChannelSection::NotConfigured { reason });
                continue;
            }
            let cooldown = take_duration(&mut table, &name, "cooldown")?;
            let timeout =
                take_duration(&mut table, &name, "timeout")?.unwrap_or(DEFAULT_SEND_TIMEOUT);
            channels.insert(
                kind,
                ChannelSection::Configured {
                    table,
                    cooldown,
                    timeout,
                },
            );
        }

        let config = Config {
            server: raw.server,
            store: raw.store,
            routing: raw.routing,
            channels,
            policy: raw.policy.unwrap_or_default(),
            warnings,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        if self.server.admin_token.expose_secret().len() < 8 {
            return Err(ConfigError::Invalid(
                "server.admin_token must be at least 8 characters".into(),
            ));
        }
        if self.server.api_keys.is_empty() {
            return Err(ConfigError::Invalid(
                "server.api_keys must list at least one key".into(),
            ));
        }
        for key in &self.server.api_keys {
            if key.expose_secret().len() < 8 {
                return Err(ConfigError::Invalid(
                    "every server.api_keys entry must be at least 8 characters".into(),
                ));
            }
            if key.expose_secret() == self.server.admin_token.expose_secret() {
                return Err(ConfigError::Invalid(
                    "server.admin_token must differ from every api key".into(),
                ));
            }
        }
        if url::Url::parse(&self.server.public_url).is_err() {
            return Err(ConfigError::Invalid(format!(
                "server.public_url `{}` is not an absolute URL",
                self.server.public_url
            )));
        }
        if self.server.concurrency == 0 {
            return Err(ConfigError::Invalid(
                "server.concurrency must be at least 1".into(),
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "server.max_connections must be at least 1".into(),
            ));
        }
        if !(1024..=crate::edge::MAX_HEADER_BYTES_CEILING).contains(&self.server.max_header_bytes) {
            return Err(ConfigError::Invalid(format!(
                "server.max_header_bytes must be between 1024 and {}",
                crate::edge::MAX_HEADER_BYTES_CEILING
            )));
        }
        if self.server.header_timeout.is_zero() || self.server.request_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "server.header_timeout and server.request_timeout must be longer than 0s".into(),
            ));
        }
        if self.store.url.is_some() {
            return Err(ConfigError::Invalid(
                "store.url (a shared PostgreSQL store) is not supported yet: remove it to use the embedded store at store.path".into(),
            ));
        }
        self.store
            .retention
            .validate()
            .map_err(ConfigError::Invalid)?;
        if self.routing.order.is_empty() {
            return Err(ConfigError::Invalid(
                "routing.order must name at least one channel".into(),
            ));
        }
        if self.routing.retry.attempts == 0 {
            return Err(ConfigError::Invalid(
                "routing.retry.attempts must be at least 1".into(),
            ));
        }
        self.policy_config().map_err(ConfigError::Invalid)?;
        crate::optout::check_config(self).map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The typed `[policy]` section (docs/guardrails.md); an error names the key at fault.
    pub fn policy_config(&self) -> Result<crate::policy::PolicyConfig, String> {
        crate::policy::PolicyConfig::from_table(&self.policy)
    }

    /// Whether marketing messages get an opt-out line / `List-Unsubscribe` (on by default).
    pub fn opt_out_footer(&self) -> bool {
        self.policy
            .get("opt_out_footer")
            .and_then(toml::Value::as_bool)
            .unwrap_or(true)
    }

    /// The cooldown of a restricted channel before its probe.
    pub fn cooldown(&self, kind: ChannelKind) -> Duration {
        match self.channels.get(&kind) {
            Some(ChannelSection::Configured {
                cooldown: Some(c), ..
            }) => *c,
            _ => self.routing.cooldown,
        }
    }
}

fn take_duration(
    table: &mut toml::Table,
    channel: &str,
    key: &str,
) -> Result<Option<Duration>, ConfigError> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => parse_duration(&s)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("channels.{channel}.{key}: {e}"))),
        Some(_) => Err(ConfigError::Invalid(format!(
            "channels.{channel}.{key} must be a string like \"10s\""
        ))),
    }
}

/// Replaces `${NAME}` in every string below `value`; `key` is the dotted path for messages.
fn expand_value(
    value: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => {
            *s = expand_str(s, key, env)?;
            Ok(())
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{key}[{i}]"), env)?;
            }
            Ok(())
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                expand_value(v, &format!("{key}.{k}"), env)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn expand_str(
    text: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ConfigError::Invalid(format!(
                "`{key}` has an unclosed `${{` reference"
            )));
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Invalid(format!(
                "`{key}` refers to `${{{name}}}`, which is not a valid variable name"
            )));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(ConfigError::MissingVar {
                    var: name.to_string(),
                    key: key.to_string(),
                })
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
api_keys = ["${API_KEY}"]
admin_token = "admin-token-123"

[routing]
order = ["telegram", "email"]
max_wait = "5s"

[channels.telegram]
bot_token = "${TG_TOKEN}"
timeout = "3s"
cooldown = "2m"
"#;

    fn env_with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn expands_variables_and_reads_gateway_keys() {
        let env = env_with(&[("API_KEY", "app-key-123"), ("TG_TOKEN", "1:abc")]);
        let cfg = Config::from_toml(BASE, Path::new("x.toml"), &env).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(cfg.server.api_keys[0].expose_secret(), "app-key-123");
        assert_eq!(cfg.routing.max_wait, Duration::from_secs(5));
        match &cfg.channels[&ChannelKind::Telegram] {
            ChannelSection::Configured {
                table,
                timeout,
                cooldown,
            } => {
                assert_eq!(table["bot_token"].as_str(), Some("1:abc"));
                assert!(!table.contains_key("timeout"));
                assert_eq!(*timeout, Duration::from_secs(3));
                assert_eq!(*cooldown, Some(Duration::from_secs(120)));
            }
            other => panic!("expected configured, got {other:?}"),
        }
        assert_eq!(
            cfg.cooldown(ChannelKind::Telegram),
            Duration::from_secs(120)
        );
        assert_eq!(cfg.cooldown(ChannelKind::Email), Duration::from_secs(3600));
    }

    #[test]
    fn missing_variable_in_a_channel_only_unconfigures_it() {
        let env = env_with(&[("API_KEY", "app-key-123")]);
        let cfg = Config::from_toml(BASE, Path::new("x.toml"), &env).unwrap();
        match &cfg.channels[&ChannelKind::Telegram] {
            ChannelSection::NotConfigured { reason } => assert!(reason.contains("TG_TOKEN")),
            other => panic!("expected not configured, got {other:?}"),
        }
        assert!(cfg.warnings[0].contains("TG_TOKEN"));
    }

    #[test]
    fn missing_variable_outside_channels_is_an_error_naming_it() {
        let env = env_with(&[("TG_TOKEN", "1:abc")]);
        let err = Config::from_toml(BASE, Path::new("x.toml"), &env).unwrap_err();
        assert!(err.to_string().contains("API_KEY"), "{err}");
        assert!(err.to_string().contains("server.api_keys"), "{err}");
    }

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
        let registry = crate::channels::Registry::from_config(&cfg).unwrap();
        for kind in ChannelKind::ALL {
            assert!(registry.get(kind).is_some(), "{kind} should be configured");
        }
    }

    #[test]
    fn a_retention_shorter_than_the_idempotency_window_is_refused() {
        let env = env_with(&[("API_KEY", "app-key-123"), ("TG_TOKEN", "1:abc")]);
        let text = format!("{BASE}\n[store.retention]\nidempotency = \"1h\"\n");
        let err = Config::from_toml(&text, Path::new("x.toml"), &env).unwrap_err();
        assert!(
            err.to_string()
                .contains("store.retention.idempotency must be at least 24h"),
            "{err}"
        );
        let text = format!("{BASE}\n[store.retention]\nnotifications = \"90d\"\n");
        let cfg = Config::from_toml(&text, Path::new("x.toml"), &env).unwrap();
        assert_eq!(
            cfg.store.retention.notifications,
            Duration::from_secs(90 * 86_400)
        );
    }

    #[test]
    fn bad_values_are_named() {
        let env = env_with(&[("API_KEY", "app-key-123"), ("TG_TOKEN", "1:abc")]);
        let text = BASE.replace("max_wait = \"5s\"", "max_wait = \"soon\"");
        let err = Config::from_toml(&text, Path::new("x.toml"), &env).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
        let text = BASE.replace("[channels.telegram]", "[channels.sms]");
        let err = Config::from_toml(&text, Path::new("x.toml"), &env).unwrap_err();
        assert!(err.to_string().contains("sms"), "{err}");
        let text = BASE.replace("[routing]", "[routing]\nfoo = 1");
        let err = Config::from_toml(&text, Path::new("x.toml"), &env).unwrap_err();
        assert!(err.to_string().contains("foo"), "{err}");
    }
}
