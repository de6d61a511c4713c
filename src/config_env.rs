//! Environment variables that override the config file (twelve-factor), applied after the TOML
//! is parsed and validated, so one image and one config file serve every environment:
//!
//! | variable | overrides | example |
//! |---|---|---|
//! | `LIFEBOAT_LISTEN` | `server.listen` | `0.0.0.0:8080` (inside a container) |
//! | `LIFEBOAT_PUBLIC_URL` | `server.public_url` | `https://notify.example.com` |
//! | `LIFEBOAT_STORE_PATH` | `store.path` | `/data/lifeboat.sled` |
//!
//! `LIFEBOAT_CONFIG` (the config file itself) is read by the command line as the default of
//! `--config`. An unset or empty variable leaves the file's value; a value that does not parse
//! is an error naming the variable and the key, and nothing is started.

use std::path::PathBuf;

use crate::config::Config;

/// The variables [`apply`] reads, with the key each one overrides.
pub const OVERRIDES: [(&str, &str); 3] = [
    ("LIFEBOAT_LISTEN", "server.listen"),
    ("LIFEBOAT_PUBLIC_URL", "server.public_url"),
    ("LIFEBOAT_STORE_PATH", "store.path"),
];

/// A variable whose value cannot be used for the key it overrides.
#[derive(Debug, thiserror::Error)]
pub enum EnvOverrideError {
    #[error("environment variable LIFEBOAT_LISTEN (overrides `server.listen`) is not an address:port: `{value}`")]
    Listen {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("environment variable LIFEBOAT_PUBLIC_URL (overrides `server.public_url`) is not an absolute URL: `{value}`")]
    PublicUrl {
        value: String,
        #[source]
        source: url::ParseError,
    },
}

/// Applies the overrides `env` holds to `config`; returns what was overridden, as
/// `key = value (from VARIABLE)` lines for the log. `env` is `std::env::var` in the binary;
/// tests pass their own.
pub fn apply(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, EnvOverrideError> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    // Everything is parsed before anything is changed: a bad value changes nothing.
    let listen = match get("LIFEBOAT_LISTEN") {
        Some(value) => Some((
            value
                .trim()
                .parse()
                .map_err(|source| EnvOverrideError::Listen {
                    value: value.clone(),
                    source,
                })?,
            value,
        )),
        None => None,
    };
    let public_url = match get("LIFEBOAT_PUBLIC_URL") {
        Some(value) => {
            url::Url::parse(value.trim()).map_err(|source| EnvOverrideError::PublicUrl {
                value: value.clone(),
                source,
            })?;
            Some(value)
        }
        None => None,
    };
    let store_path = get("LIFEBOAT_STORE_PATH");

    let mut applied = Vec::new();
    if let Some((addr, value)) = listen {
        config.server.listen = addr;
        applied.push(format!("server.listen = {value} (from LIFEBOAT_LISTEN)"));
    }
    if let Some(value) = public_url {
        config.server.public_url = value.trim().to_string();
        applied.push(format!(
            "server.public_url = {value} (from LIFEBOAT_PUBLIC_URL)"
        ));
    }
    if let Some(value) = store_path {
        if config.store.url.is_some() {
            // The container image sets LIFEBOAT_STORE_PATH for everyone; a configuration on
            // PostgreSQL keeps its database and says the path is not used (not an error: the
            // same image serves both stores).
            applied.push(format!(
                "LIFEBOAT_STORE_PATH={value} is not used: store.url is set (the store is PostgreSQL)"
            ));
        } else {
            config.store.path = PathBuf::from(&value);
            applied.push(format!("store.path = {value} (from LIFEBOAT_STORE_PATH)"));
        }
    }
    Ok(applied)
}

/// [`apply`] with the process environment, logging one line per override.
pub fn apply_from_process(config: &mut Config) -> Result<(), EnvOverrideError> {
    for line in apply(config, &|name| std::env::var(name).ok())? {
        tracing::info!("config override: {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn config() -> Config {
        let text = r#"
[server]
listen = "127.0.0.1:8080"
api_keys = ["api-key-12345"]
admin_token = "admin-token-12345"
public_url = "http://127.0.0.1:8080"

[store]
path = "data/lifeboat.sled"
"#;
        Config::from_toml(text, Path::new("test.toml"), &|_| None).expect("valid config")
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn each_variable_overrides_its_key() {
        let mut c = config();
        let applied = apply(
            &mut c,
            &env(&[
                ("LIFEBOAT_LISTEN", "0.0.0.0:9090"),
                ("LIFEBOAT_PUBLIC_URL", "https://notify.example.com"),
                ("LIFEBOAT_STORE_PATH", "/data/lifeboat.sled"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.server.public_url, "https://notify.example.com");
        assert_eq!(c.store.path, PathBuf::from("/data/lifeboat.sled"));
        assert_eq!(applied.len(), 3);
        assert!(applied[0].contains("LIFEBOAT_LISTEN"), "{applied:?}");
    }

    #[test]
    fn unset_or_empty_variables_leave_the_file_alone() {
        let mut c = config();
        let applied = apply(&mut c, &env(&[("LIFEBOAT_LISTEN", "")])).unwrap();
        assert!(applied.is_empty());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.store.path, PathBuf::from("data/lifeboat.sled"));
    }

    #[test]
    fn a_bad_value_is_an_error_naming_variable_and_key_and_changes_nothing() {
        let mut c = config();
        let e = apply(&mut c, &env(&[("LIFEBOAT_LISTEN", "0.0.0.0")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("LIFEBOAT_LISTEN") && text.contains("server.listen"),
            "{text}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");

        let e = apply(
            &mut c,
            &env(&[
                ("LIFEBOAT_LISTEN", "0.0.0.0:9090"),
                ("LIFEBOAT_PUBLIC_URL", "notify.example.com"),
            ]),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("LIFEBOAT_PUBLIC_URL") && text.contains("server.public_url"),
            "{text}"
        );
        assert_eq!(c.server.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn the_store_path_variable_says_it_is_not_used_on_postgresql() {
        let text = r#"
[server]
listen = "127.0.0.1:8080"
api_keys = ["api-key-12345"]
admin_token = "admin-token-12345"
public_url = "http://127.0.0.1:8080"

[store]
url = "postgres://lifeboat:pw-not-shown@db:5432/lifeboat"
"#;
        let mut c = Config::from_toml(text, Path::new("test.toml"), &|_| None).unwrap();
        let before = c.store.path.clone();
        let applied = apply(
            &mut c,
            &env(&[("LIFEBOAT_STORE_PATH", "/data/lifeboat.sled")]),
        )
        .unwrap();
        assert_eq!(c.store.path, before, "the path must not change");
        assert_eq!(applied.len(), 1, "{applied:?}");
        assert!(
            applied[0].contains("not used") && applied[0].contains("store.url"),
            "{applied:?}"
        );
        assert!(!applied[0].contains("pw-not-shown"), "{applied:?}");
    }
}
