//! `lifeboat check-config` and `lifeboat serve` on a bad config: exit 2 and one line on stderr,
//! `FILE:LINE: KEY: what is wrong`, for type errors, unknown values, unknown keys (also inside
//! channel tables, with a "did you mean"), TOML syntax errors and `[policy]` errors.

use std::path::Path;

use crate::harness::{binary, ADMIN_TOKEN, API_KEY, TG_TOKEN};

/// A small valid config; each test breaks one line of it.
fn good_config() -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
api_keys = ["{API_KEY}"]
admin_token = "{ADMIN_TOKEN}"

[routing]
order = ["telegram", "email"]
max_wait = "30s"

[channels.telegram]
api_url = "http://127.0.0.1:9"
bot_token = "{TG_TOKEN}"
bot_username = "acme_test_bot"
timeout = "2s"

[policy]
quiet_hours = "off"
"#
    )
}

/// Runs `lifeboat ARGS --config FILE` on `text`; returns the exit code, stdout, stderr and the
/// config's path.
fn run(dir: &Path, command: &str, text: &str) -> (Option<i32>, String, String, String) {
    let file = dir.join("bad.toml");
    std::fs::write(&file, text).expect("write config");
    let out = std::process::Command::new(binary())
        .args([command, "--config"])
        .arg(&file)
        .current_dir(dir)
        .output()
        .expect("run lifeboat");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.display().to_string(),
    )
}

/// The 1-based line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in the config"))
        + 1
}

/// `good_config()` with `from` replaced by `to` must fail with exit 2 and the single line
/// `lifeboat: FILE:LINE: KEY: ...` (LINE being the line holding `to`), the rest containing
/// `detail`.
fn assert_config_error(from: &str, to: &str, key: &str, detail: &str) {
    let text = good_config().replacen(from, to, 1);
    assert_ne!(text, good_config(), "`{from}` not in the config");
    let line = line_of(&text, to.lines().last().unwrap_or(to));
    let dir = tempfile::tempdir().unwrap();
    for command in ["check-config", "serve"] {
        let (code, stdout, stderr, file) = run(dir.path(), command, &text);
        assert_eq!(code, Some(2), "{command}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{command}: one line: {stderr}");
        let prefix = format!("lifeboat: {file}:{line}: {key}: ");
        assert!(
            stderr.starts_with(&prefix),
            "{command}: expected `{prefix}...`, got: {stderr}"
        );
        assert!(
            stderr.contains(detail),
            "{command}: expected `{detail}` in: {stderr}"
        );
        assert!(!stdout.contains("is valid"), "{stdout}");
    }
}

#[test]
fn the_good_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr, _) = run(dir.path(), "check-config", &good_config());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
}

#[test]
fn a_wrong_type_in_routing_names_the_key_and_line() {
    assert_config_error(
        "max_wait = \"30s\"",
        "max_wait = 30",
        "routing.max_wait",
        "invalid type: integer `30`",
    );
}

#[test]
fn an_unknown_channel_in_the_order_names_the_entry() {
    assert_config_error(
        "order = [\"telegram\", \"email\"]",
        "order = [\"telegram\", \"sms\"]",
        "routing.order[1]",
        "unknown variant `sms`",
    );
}

#[test]
fn a_bad_listen_address_names_the_key() {
    assert_config_error(
        "listen = \"127.0.0.1:0\"",
        "listen = \"localhost\"",
        "server.listen",
        "`localhost`",
    );
}

#[test]
fn an_unknown_key_in_server_is_an_error() {
    assert_config_error(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nlisten_addr = \"127.0.0.1:0\"",
        "server.listen_addr",
        "unknown key",
    );
}

#[test]
fn unknown_keys_in_a_channel_table_are_errors_with_a_suggestion() {
    assert_config_error(
        "timeout = \"2s\"",
        "timout = \"2s\"",
        "channels.telegram.timout",
        "did you mean `timeout`?",
    );
    assert_config_error(
        "bot_username = \"acme_test_bot\"",
        "bot_usrname = \"acme_test_bot\"",
        "channels.telegram.bot_usrname",
        "did you mean `bot_username`?",
    );
}

#[test]
fn a_bad_value_in_a_channel_table_names_the_key() {
    assert_config_error(
        "api_url = \"http://127.0.0.1:9\"",
        "api_url = \"ftp://127.0.0.1:9\"",
        "channels.telegram.api_url",
        "http or https",
    );
}

#[test]
fn policy_errors_name_the_key_and_line() {
    assert_config_error(
        "quiet_hours = \"off\"",
        "quiet_hours = 5",
        "policy.quiet_hours",
        "must be a string",
    );
    assert_config_error(
        "quiet_hours = \"off\"",
        "quiet_hours = \"off\"\nmarketing_per_dya = 2",
        "policy.marketing_per_dya",
        "did you mean `marketing_per_day`?",
    );
    // Keys of the nested tables too, at their own line.
    assert_config_error(
        "quiet_hours = \"off\"",
        "quiet_hours = \"off\"\n[policy.telegram]\nrate = 0",
        "policy.telegram.rate",
        "must be a number above 0",
    );
    assert_config_error(
        "quiet_hours = \"off\"",
        "quiet_hours = \"off\"\n[policy.whatsapp.warmup]\ngrowth = 0.5",
        "policy.whatsapp.warmup.growth",
        "at least 1",
    );
    assert_config_error(
        "quiet_hours = \"off\"",
        "quiet_hours = \"off\"\n[policy.risk]\nwindw = 5",
        "policy.risk.windw",
        "did you mean `window`?",
    );
}

#[test]
fn a_toml_syntax_error_gives_the_line() {
    let text = good_config().replacen("max_wait = \"30s\"", "max_wait = \"30s", 1);
    let line = line_of(&text, "max_wait = \"30s");
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr, file) = run(dir.path(), "check-config", &text);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let prefix = format!("lifeboat: {file}:{line}: ");
    assert!(
        stderr.starts_with(&prefix),
        "expected `{prefix}...`, got: {stderr}"
    );
}
