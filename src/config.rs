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
use std::sync::Arc;
use std::time::Duration;

use lifeboat_channel::ChannelKind;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

pub mod channel_keys;
pub mod events;
pub mod policy;
pub mod retention;
pub use channel_keys::{channel_table, extra_stop_words, unsubscribe_mailto};
pub use events::{AlertsConfig, EndpointConfig, EventsConfig};
pub use retention::RetentionConfig;

/// The largest `server.max_header_bytes` accepted (the HTTP edge's ceiling, docs/http-edge.md).
pub const MAX_HEADER_BYTES_CEILING: usize = 256 * 1024;

/// A config that cannot be used; the message names the key or variable at fault.
///
/// Errors about the file's content print as one line, `FILE:LINE: KEY: what is wrong` (the
/// line of the key, or of the nearest table above it when the key is missing).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", at(path, *line))]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("environment variable {var} (used by `{key}`) is not set")]
    MissingVar { var: String, key: String },
    #[error("invalid config: {0}")]
    Invalid(String),
    /// A key with a bad or unknown value: `FILE:LINE: KEY: message`.
    #[error("{}: {key}: {message}", at(path, *line))]
    Key {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// `FILE:LINE`, or `FILE` when the line is unknown.
fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// The whole gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub routing: RoutingConfig,
    pub channels: BTreeMap<ChannelKind, ChannelSection>,
    /// The guardrails (`[policy]`, docs/guardrails.md), read and checked with the rest.
    pub policy: policy::PolicyConfig,
    /// `[events]`: the app's event endpoints (docs/events.md).
    pub events: EventsConfig,
    /// `[alerts]`: the admins alerted when a channel changes state.
    pub alerts: AlertsConfig,
    /// Warnings found while loading (e.g. a channel left unconfigured by a missing variable).
    pub warnings: Vec<String>,
    /// Where the config came from, to give later errors (channel tables) a file and line.
    pub source: Arc<ConfigSource>,
}

/// The config file's path and text, to find the line of a key for an error message.
/// `Debug` shows the path only: the text may hold secrets.
pub struct ConfigSource {
    path: PathBuf,
    text: String,
}

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ConfigSource {
    pub fn new(path: &Path, text: &str) -> ConfigSource {
        ConfigSource {
            path: path.to_path_buf(),
            text: text.to_string(),
        }
    }

    /// An error about `key` (a dotted path like `routing.order[1]`), located in the file.
    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::Key {
            path: self.path.clone(),
            line: self.line_of(key),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// An error whose message starts with the key it is about (`policy.rate must be ...`,
    /// `channels.line.api_base: ...`): the key is split off and located. `context` is the
    /// key used when the message names none (and prefixes a relative key like `api_base`).
    pub fn keyed_error(&self, context: &str, message: &str) -> ConfigError {
        let end = message
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']')))
            .unwrap_or(message.len());
        let (head, rest) = message.split_at(end);
        let rest = rest.trim_start_matches(':').trim_start();
        let absolute = !context.is_empty() && head.starts_with(&format!("{context}."));
        let top_level = context.is_empty() && head.contains('.');
        if !head.is_empty() && !rest.is_empty() && (absolute || top_level) {
            return self.error(head, rest);
        }
        let relative = format!("{context}.{head}");
        if !head.is_empty()
            && !rest.is_empty()
            && self.find(&relative).is_some_and(|(_, exact)| exact)
        {
            return self.error(&relative, rest);
        }
        self.error(context, message)
    }

    /// The 1-based line of `key`, or of its nearest ancestor present in the file.
    fn line_of(&self, key: &str) -> Option<usize> {
        let (offset, _) = self.find(key)?;
        Some(
            self.text[..offset.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
        )
    }

    /// The byte offset of `key` (or of the deepest ancestor found) and whether it was found
    /// whole.
    fn find(&self, key: &str) -> Option<(usize, bool)> {
        use toml_edit::{Item, Value};
        let doc = toml_edit::ImDocument::parse(self.text.as_str()).ok()?;
        let mut item = doc.as_item();
        let mut found: Option<usize> = None;
        let segments = key_segments(key);
        for (n, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Key(name) => {
                    let Some((k, v)) = item.as_table_like().and_then(|t| t.get_key_value(name))
                    else {
                        return found.map(|o| (o, false));
                    };
                    if let Some(span) = k.span().or_else(|| v.span()) {
                        found = Some(span.start);
                    }
                    item = v;
                }
                Segment::Index(i) => {
                    let span = match item {
                        Item::Value(Value::Array(a)) => a.get(*i).and_then(Value::span),
                        Item::ArrayOfTables(a) => a.get(*i).and_then(toml_edit::Table::span),
                        _ => None,
                    };
                    let Some(span) = span else {
                        return found.map(|o| (o, false));
                    };
                    // Array elements are not walked into: their line is close enough.
                    return Some((span.start, n + 1 == segments.len()));
                }
            }
        }
        found.map(|o| (o, true))
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `routing.order[1]` → `routing`, `order`, `1`.
fn key_segments(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, mut indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(rest) = indexes.strip_prefix('[') {
            let Some(end) = rest.find(']') else { break };
            if let Ok(i) = rest[..end].parse() {
                out.push(Segment::Index(i));
            }
            indexes = &rest[end + 1..];
        }
    }
    out
}

/// The message for an unknown key: names it and suggests the closest known key, if close.
pub fn unknown_key(key: &str, known: &[&str]) -> String {
    match closest(key, known) {
        Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
        None => format!("unknown key `{key}` (known keys: {})", known.join(", ")),
    }
}

/// The known key within a small edit distance of `key` (a typo), if any.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Turns serde's `unknown field `x`, expected one of `a`, `b`` into [`unknown_key`]'s message
/// (with `extra` known keys added), and the key path to the unknown key itself. Other
/// messages pass through.
pub(crate) fn explain_unknown_field(path: &str, message: &str, extra: &[&str]) -> (String, String) {
    let under = |field: &str| match path {
        "" | "." => field.to_string(),
        p if p == field || p.ends_with(&format!(".{field}")) => p.to_string(),
        p => format!("{p}.{field}"),
    };
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return (under(field), "is required but missing".to_string());
    }
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return (path.to_string(), message.to_string());
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return (path.to_string(), message.to_string());
    };
    let mut known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    known.extend_from_slice(extra);
    (under(field), unknown_key(field, &known))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen", deserialize_with = "socket_addr")]
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
    /// The key of the email unsubscribe links' signatures, if the operator sets one (every
    /// instance of a fleet with the same value); else one is made once and kept in the store.
    #[serde(default)]
    pub unsubscribe_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The embedded store's folder (the default store). Only its default may stand beside
    /// `url`: both written is an error.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Whether `path` was written in the file (rather than defaulted).
    #[serde(skip)]
    pub path_set: bool,
    /// The PostgreSQL store shared by several instances (docs/postgres.md):
    /// `postgres://user:password@host:5432/db`. A secret (it holds the password): printed
    /// only through [`StoreConfig::printable_url`].
    #[serde(default)]
    pub url: Option<SecretString>,
    /// Connections in this instance's pool (PostgreSQL only).
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// Memory sled may use for its page cache, in MiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// How long a claim on a notification lasts without renewal: after a crash, how long its
    /// notifications wait before another worker (or instance) takes them over.
    #[serde(default = "default_lease", deserialize_with = "duration")]
    pub lease: Duration,
    /// `[store.retention]`: how long finished records are kept (docs/retention.md).
    #[serde(default)]
    pub retention: RetentionConfig,
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

impl StoreConfig {
    /// The database URL without its password (`postgres://user@host:5432/db`), for logs.
    pub fn printable_url(&self) -> Option<String> {
        use secrecy::ExposeSecret;
        self.url.as_ref().map(|u| printable_url(u.expose_secret()))
    }
}

/// A database URL as logs and errors show it: `postgres://user@host:5432/db`, never the
/// password (nor any query parameter, where a password may also be given).
pub fn printable_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let user = if u.username().is_empty() {
                String::new()
            } else {
                format!("{}@", u.username())
            };
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{user}{host}{port}{}", u.scheme(), u.path())
        }
        Err(_) => "(an unreadable database URL)".to_string(),
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            path_set: false,
            url: None,
            pool: default_pool(),
            cache_mb: default_cache_mb(),
            lease: default_lease(),
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
/// `[store] lease` when not configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
fn default_lease() -> Duration {
    DEFAULT_LEASE
}
fn default_pool() -> usize {
    16
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
/// The keys the gateway itself reads from a `[channels.NAME]` table; the channel's crate owns
/// (and checks) all the others.
pub fn gateway_keys(kind: ChannelKind) -> &'static [&'static str] {
    match kind {
        ChannelKind::Whatsapp => &["cooldown", "timeout", "stop_words"],
        ChannelKind::Telegram => &["cooldown", "timeout", "poll_timeout"],
        ChannelKind::Email => &["cooldown", "timeout", "unsubscribe_mailto"],
        ChannelKind::Line => &["cooldown", "timeout"],
    }
}

const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses `"30s"`, `"15m"`, `"24h"`, `"1d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"30s\", \"15m\" or \"24h\" ({e})"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration like \"30s\", \"15m\" or \"24h\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor)
}

/// `listen`: an `address:port`, with an error quoting what was written.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an address:port like \"127.0.0.1:8080\" or \"0.0.0.0:8080\""
        ))
    })
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
    /// Guardrail settings (docs/guardrails.md): every key optional, each checked as read.
    #[serde(default)]
    policy: policy::PolicyConfig,
    #[serde(default)]
    events: EventsConfig,
    #[serde(default)]
    alerts: AlertsConfig,
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
        let source = Arc::new(ConfigSource::new(path, text));
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().trim_end().replace('\n', "; "),
        })?;
        let mut warnings = Vec::new();
        let mut unconfigured: BTreeMap<String, String> = BTreeMap::new();

        for (section, value) in tree.iter_mut() {
            if section == "channels" {
                let Some(channels) = value.as_table_mut() else {
                    return Err(
                        source.error("channels", "must be a table of [channels.NAME] tables")
                    );
                };
                for (name, table) in channels.iter_mut() {
                    let key = format!("channels.{name}");
                    match expand_value(table, &key, env) {
                        Err(ConfigError::MissingVar { var, key }) => {
                            let reason =
                                format!("environment variable {var} (used by `{key}`) is not set");
                            warnings.push(format!("channel {name} is not configured: {reason}"));
                            unconfigured.insert(name.clone(), reason);
                        }
                        Err(ConfigError::Key { key, message, .. }) => {
                            return Err(source.error(&key, message))
                        }
                        _ => {}
                    }
                }
            } else {
                expand_value(value, section, env).map_err(|e| match e {
                    ConfigError::MissingVar { var, key } => {
                        source.error(&key, format!("environment variable {var} is not set"))
                    }
                    ConfigError::Key { key, message, .. } => source.error(&key, message),
                    other => other,
                })?;
            }
        }

        let store_path_set = tree
            .get("store")
            .and_then(|s| s.as_table())
            .is_some_and(|s| s.contains_key("path"));
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let (key, message) =
                    explain_unknown_field(&e.path().to_string(), e.inner().message(), &[]);
                source.error(&key, message)
            },
        )?;

        let mut channels = BTreeMap::new();
        for (name, mut table) in raw.channels {
            let key = format!("channels.{name}");
            let kind: ChannelKind = name.parse().map_err(|e| source.error(&key, e))?;
            if let Some(reason) = unconfigured.remove(&name) {
                channels.insert(kind, ChannelSection::NotConfigured { reason });
                continue;
            }
            let cooldown = take_duration(&mut table, &name, "cooldown", &source)?;
            let timeout = take_duration(&mut table, &name, "timeout", &source)?
                .unwrap_or(DEFAULT_SEND_TIMEOUT);
            channels.insert(
                kind,
                ChannelSection::Configured {
                    table,
                    cooldown,
                    timeout,
                },
            );
        }

        let mut store = raw.store;
        store.path_set = store_path_set;
        let config = Config {
            server: raw.server,
            store,
            routing: raw.routing,
            channels,
            policy: raw.policy,
            events: raw.events,
            alerts: raw.alerts,
            warnings,
            source,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let err = |key: &str, message: &str| Err(self.source.error(key, message));
        if self.server.admin_token.expose_secret().len() < 8 {
            return err("server.admin_token", "must be at least 8 characters");
        }
        if self.server.api_keys.is_empty() {
            return err("server.api_keys", "must list at least one key");
        }
        for (i, key) in self.server.api_keys.iter().enumerate() {
            let name = format!("server.api_keys[{i}]");
            if key.expose_secret().len() < 8 {
                return err(&name, "must be at least 8 characters");
            }
            if key.expose_secret() == self.server.admin_token.expose_secret() {
                return err(&name, "must differ from server.admin_token");
            }
        }
        if let Some(secret) = &self.server.unsubscribe_secret {
            if secret.expose_secret().chars().count() < 32 {
                return err(
                    "server.unsubscribe_secret",
                    "must be at least 32 characters",
                );
            }
        }
        if url::Url::parse(&self.server.public_url).is_err() {
            return Err(self.source.error(
                "server.public_url",
                format!("`{}` is not an absolute URL", self.server.public_url),
            ));
        }
        if self.server.concurrency == 0 {
            return err("server.concurrency", "must be at least 1");
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "server.max_connections must be at least 1".into(),
            ));
        }
        if !(1024..=MAX_HEADER_BYTES_CEILING).contains(&self.server.max_header_bytes) {
            return Err(ConfigError::Invalid(format!(
                "server.max_header_bytes must be between 1024 and {}",
                MAX_HEADER_BYTES_CEILING
            )));
        }
        if self.server.header_timeout.is_zero() || self.server.request_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "server.header_timeout and server.request_timeout must be longer than 0s".into(),
            ));
        }
        if self.store.lease < Duration::from_secs(1) || self.store.lease > Duration::from_secs(3600)
        {
            return err("store.lease", "must be between 1s and 1h");
        }
        if let Some(url) = &self.store.url {
            if self.store.path_set {
                return err(
                    "store.url",
                    "store.url and store.path are both set: keep one (url for PostgreSQL, path for the embedded store)",
                );
            }
            let text = url.expose_secret();
            if !(text.starts_with("postgres://") || text.starts_with("postgresql://"))
                || url::Url::parse(text).is_err()
            {
                // The value is never quoted: it may hold a password.
                return err(
                    "store.url",
                    "must be a PostgreSQL URL like postgres://user:password@host:5432/database",
                );
            }
            if !(1..=1000).contains(&self.store.pool) {
                return err("store.pool", "must be between 1 and 1000");
            }
        }
        self.store
            .retention
            .validate()
            .map_err(ConfigError::Invalid)?;
        if self.routing.order.is_empty() {
            return err("routing.order", "must name at least one channel");
        }
        if self.routing.retry.attempts == 0 {
            return err("routing.retry.attempts", "must be at least 1");
        }
        channel_keys::check(self).map_err(|e| self.source.keyed_error("channels", &e))?;
        self.events
            .validate()
            .map_err(|e| self.source.keyed_error("events", &e))?;
        for (i, id) in self.alerts.contacts.iter().enumerate() {
            if id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c))
            {
                return Err(self.source.error(
                    &format!("alerts.contacts[{i}]"),
                    format!("`{id}` is not a contact id (1-128 of A-Z a-z 0-9 . _ : @ -)"),
                ));
            }
        }
        Ok(())
    }

    /// Whether marketing messages get an opt-out line / `List-Unsubscribe` (on by default).
    pub fn opt_out_footer(&self) -> bool {
        self.policy.opt_out_footer
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
    source: &ConfigSource,
) -> Result<Option<Duration>, ConfigError> {
    let name = format!("channels.{channel}.{key}");
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => parse_duration(&s)
            .map(Some)
            .map_err(|e| source.error(&name, e)),
        Some(_) => Err(source.error(&name, "must be a string like \"10s\"")),
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

/// A key error without file and line yet (`from_toml` locates it).
fn unlocated(key: &str, message: String) -> ConfigError {
    ConfigError::Key {
        path: PathBuf::new(),
        line: None,
        key: key.to_string(),
        message,
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
            return Err(unlocated(key, "has an unclosed `${` reference".into()));
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(unlocated(
                key,
                format!("refers to `${{{name}}}`, which is not a valid variable name"),
            ));
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
    fn an_unsubscribe_secret_must_be_long_and_is_never_shown() {
        let env = env_with(&[("API_KEY", "app-key-123"), ("TG_TOKEN", "1:abc")]);
        let with = |secret: &str| {
            BASE.replace(
                "[server]\n",
                &format!("[server]\nunsubscribe_secret = \"{secret}\"\n"),
            )
        };
        let err = Config::from_toml(&with("short-secret"), Path::new("x.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.unsubscribe_secret"), "{err}");
        assert!(err.contains("at least 32 characters"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
        let long = "0123456789abcdef0123456789abcdef";
        let cfg = Config::from_toml(&with(long), Path::new("x.toml"), &env).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(
            cfg.server
                .unsubscribe_secret
                .as_ref()
                .map(|s| s.expose_secret()),
            Some(long)
        );
        assert!(!format!("{cfg:?}").contains(long));
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

    #[test]
    fn a_database_url_selects_postgres_and_never_shows_its_password() {
        let env = env_with(&[
            ("API_KEY", "app-key-123"),
            ("TG_TOKEN", "1:abc"),
            (
                "DB_URL",
                "postgres://lifeboat:s3cret-pw@db.internal:5432/lifeboat?sslmode=require",
            ),
        ]);
        let text = format!("{BASE}\n[store]\nurl = \"${{DB_URL}}\"\npool = 4\n");
        let cfg = Config::from_toml(&text, Path::new("x.toml"), &env).unwrap();
        assert_eq!(cfg.store.pool, 4);
        assert_eq!(
            cfg.store.printable_url().as_deref(),
            Some("postgres://lifeboat@db.internal:5432/lifeboat")
        );
        assert!(
            !format!("{cfg:?}").contains("s3cret-pw"),
            "Debug shows no password"
        );
        // The default path may stand beside it.
        assert!(!cfg.store.path_set);
    }

    #[test]
    fn a_database_url_and_a_store_path_together_are_refused_naming_both() {
        let env = env_with(&[("API_KEY", "app-key-123"), ("TG_TOKEN", "1:abc")]);
        let text = format!(
            "{BASE}\n[store]\npath = \"data/x.sled\"\nurl = \"postgres://u:s3cret-pw@h/db\"\n"
        );
        let err = Config::from_toml(&text, Path::new("x.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store.url") && err.contains("store.path"),
            "{err}"
        );
        assert!(!err.contains("s3cret-pw"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let text = format!("{BASE}\n[store]\nurl = \"mysql://u:s3cret-pw@h/db\"\n");
        let err = Config::from_toml(&text, Path::new("x.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url: must be a PostgreSQL URL"), "{err}");
        assert!(!err.contains("s3cret-pw"), "{err}");
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
