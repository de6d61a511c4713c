//! `lifeboat channels list|enable|disable` against a running gateway: the table shows what
//! the server says, and usage errors exit 2 with one line on stderr.

use crate::harness::{binary, Gateway, TestApp, ADMIN_TOKEN};

/// Runs `lifeboat channels ARGS --server BASE` with `token` in the environment (or none).
async fn channels(g: &Gateway, args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(binary());
    command
        .arg("channels")
        .args(args)
        .args(["--server", &g.base])
        .env_remove("LIFEBOAT_ADMIN_TOKEN");
    if let Some(t) = token {
        command.env("LIFEBOAT_ADMIN_TOKEN", t);
    }
    let out = command.output().await.expect("run lifeboat channels");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table's row for `channel`, split on whitespace.
fn row(table: &str, channel: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{channel} ")))
        .unwrap_or_else(|| panic!("no {channel} row in:\n{table}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_table_shows_a_disable_and_errors_exit_2_with_one_line() {
    let g = TestApp::bare().await;

    let (code, table, _) = channels(&g, &["list"], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 0);
    assert!(table.starts_with("CHANNEL"), "{table}");
    assert_eq!(row(&table, "whatsapp")[1], "active");

    let (code, table, stderr) = channels(
        &g,
        &["disable", "whatsapp", "--reason", "Meta review pending"],
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(row(&table, "whatsapp")[1], "disabled", "{table}");

    let (code, table, _) = channels(&g, &["list"], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 0);
    let wa = row(&table, "whatsapp");
    assert_eq!(wa[1], "disabled", "{table}");
    assert!(table.contains("Meta review pending"), "{table}");
    assert_eq!(row(&table, "telegram")[1], "active");
    assert_eq!(g.channel_state("whatsapp").await["state"], "disabled");

    let (code, table, _) = channels(&g, &["enable", "whatsapp"], Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 0);
    assert_eq!(row(&table, "whatsapp")[1], "active", "{table}");

    for (args, token) in [
        (&["enable", "fax"][..], Some(ADMIN_TOKEN)),
        (&["list"][..], None),
        (&["list"][..], Some("wrong-admin-token")),
    ] {
        let (code, stdout, stderr) = channels(&g, args, token).await;
        assert_eq!(code, 2, "{args:?} {token:?}: {stdout}{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}

/// `lifeboat ARGS -h`.
fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(binary())
        .args(args)
        .arg("-h")
        .output()
        .expect("run lifeboat -h");
    assert!(out.status.success(), "{args:?} -h failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_argument_of_every_command_has_help_text() {
    let commands: &[&[&str]] = &[
        &["serve"],
        &["sandbox"],
        &["healthcheck"],
        &["bench"],
        &["check-config"],
        &["channels", "list"],
        &["channels", "enable"],
        &["channels", "disable"],
    ];
    let mut bare = Vec::new();
    for args in commands {
        let text = help(args);
        for line in text.lines() {
            let spec = line.trim_start();
            if !line.starts_with("  ") || !(spec.starts_with('-') || spec.starts_with('<')) {
                continue;
            }
            // `  --config <CONFIG>  The config file ...`: text after the two-space gap.
            let words = spec.split_once("  ").map(|(_, w)| w.trim()).unwrap_or("");
            if words.is_empty() || words.starts_with('[') {
                bare.push(format!("lifeboat {}: {spec}", args.join(" ")));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "arguments without help:\n{}",
        bare.join("\n")
    );
}
