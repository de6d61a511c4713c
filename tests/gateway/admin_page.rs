//! The admin page over plain HTTP (no browser): sign-in, the cookie's flags, CSRF, escaping,
//! and that the admin token never shows up in a page, a URL or a cookie.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{trail, whatsapp_fails, Gateway, Rig, Settings, TestApp, ADMIN_TOKEN};

/// A client that shows redirects instead of following them (to see the sign-in's cookie).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in; returns the `Set-Cookie` header and the `name=value` to send back.
pub(crate) async fn sign_in(g: &Gateway) -> (String, String) {
    let answer = client()
        .post(g.url("/admin/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("login");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()[LOCATION], "/admin");
    let set_cookie = answer.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let pair = set_cookie.split(';').next().unwrap().trim().to_string();
    (set_cookie, pair)
}

pub(crate) async fn page(g: &Gateway, cookie: &str) -> (StatusCode, String) {
    let answer = client()
        .get(g.url("/admin"))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("page");
    (answer.status(), answer.text().await.unwrap())
}

/// The CSRF token of a signed-in page.
fn csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

async fn post_form(
    g: &Gateway,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = client().post(g.url(path)).form(form);
    if let Some(c) = cookie {
        request = request.header(COOKIE, c);
    }
    let answer = request.send().await.expect("post");
    (answer.status(), answer.text().await.unwrap())
}

#[tokio::test]
async fn sign_in_with_the_token_sets_a_strict_session_cookie_and_a_wrong_token_is_401() {
    let g = TestApp::bare().await;

    let (status, html) = page(&g, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("action=\"/admin/login\""), "{html}");

    let answer = client()
        .post(g.url("/admin/login"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(answer.headers().get(SET_COOKIE).is_none());
    let html = answer.text().await.unwrap();
    assert!(html.contains("not the admin token"), "{html}");
    assert!(html.contains("action=\"/admin/login\""));

    let (set_cookie, pair) = sign_in(&g).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set_cookie.contains(flag), "{flag} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http: {set_cookie}");
    assert!(
        !set_cookie.contains(ADMIN_TOKEN),
        "the cookie holds the token"
    );
    let (status, html) = page(&g, &pair).await;
    assert_eq!(status, StatusCode::OK);
    for channel in ["whatsapp", "telegram", "line", "email"] {
        assert!(html.contains(&format!("id=\"row-{channel}\"")), "{html}");
    }
    // No self-reload that would wipe a reason being typed: a Refresh link instead.
    assert!(!html.contains("http-equiv=\"refresh\""), "{html}");
    assert!(
        html.contains("<a href=\"/admin\" id=\"refresh\">"),
        "{html}"
    );
    assert!(html.contains("Last updated "), "{html}");
    assert!(!html.contains(ADMIN_TOKEN), "the page shows the token");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external asset: {html}"
    );

    // Signing out ends the session: the old cookie gets the sign-in form again.
    let token = csrf(&html);
    let (status, _) = post_form(&g, "/admin/logout", Some(&pair), &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page(&g, &pair).await;
    assert!(html.contains("action=\"/admin/login\""), "{html}");

    let (_, logs, _) = g.terminate().await;
    assert!(!logs.contains(ADMIN_TOKEN), "the token was logged");
}

/// Sessions are kept in the store (so every instance of a fleet knows them): a sign-in outlives
/// a kill -9 and restart, and a sign-out is durable too.
#[tokio::test]
async fn a_session_is_kept_in_the_store_and_outlives_a_restart() {
    let g = TestApp::bare().await;
    let (_, pair) = sign_in(&g).await;
    let (_, html) = page(&g, &pair).await;
    let token = csrf(&html);
    let g = g.kill9().await.restart().await;
    let (status, html) = page(&g, &pair).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"row-line\""), "still signed in: {html}");
    assert_eq!(csrf(&html), token, "the same session");
    let (status, _) = post_form(&g, "/admin/logout", Some(&pair), &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let g = g.kill9().await.restart().await;
    let (_, html) = page(&g, &pair).await;
    assert!(
        html.contains("action=\"/admin/login\""),
        "signed out for good: {html}"
    );
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_public_url_is_https() {
    let g = Rig::new()
        .await
        .start_on(|providers, dir| {
            providers.config(dir, &Settings::default()).replacen(
                "[server]\n",
                "[server]\npublic_url = \"https://notify.example\"\n",
                1,
            )
        })
        .await;
    let (set_cookie, _) = sign_in(&g).await;
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
}

#[tokio::test]
async fn posts_without_a_session_or_csrf_token_are_403_and_change_nothing() {
    let g = TestApp::bare().await;
    let (_, pair) = sign_in(&g).await;
    let (_, html) = page(&g, &pair).await;
    let token = csrf(&html);

    let disable = "/admin/channels/whatsapp/disable";
    /// A cookie (or none) and the form fields.
    type Attempt<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>);
    let attempts: [Attempt; 4] = [
        (Some(&pair), vec![("reason", "no csrf")]),
        (
            Some(&pair),
            vec![("reason", "wrong csrf"), ("csrf", "0000")],
        ),
        (None, vec![("reason", "no session"), ("csrf", &token)]),
        (
            Some("lifeboat_admin=forged"),
            vec![("reason", "forged"), ("csrf", &token)],
        ),
    ];
    for (cookie, form) in &attempts {
        let (status, html) = post_form(&g, disable, *cookie, form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{form:?}: {html}");
        assert!(html.contains("Nothing was changed"));
    }
    assert_eq!(g.channel_state("whatsapp").await["state"], "active");

    // With both, it goes through ChannelStates like the API: the API sees it.
    let (status, _) = post_form(
        &g,
        disable,
        Some(&pair),
        &[("reason", "Meta review"), ("csrf", &token)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let row = g.channel_state("whatsapp").await;
    assert_eq!(row["state"], "disabled");
    assert!(
        row["reason"].as_str().unwrap().ends_with("Meta review"),
        "{row}"
    );
    let (status, _) = post_form(
        &g,
        disable,
        Some(&pair),
        &[("reason", "  "), ("csrf", &token)],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let enable = "/admin/channels/whatsapp/enable";
    let (status, _) = post_form(&g, enable, Some(&pair), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(g.channel_state("whatsapp").await["state"], "disabled");
    let (status, _) = post_form(&g, enable, Some(&pair), &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(g.channel_state("whatsapp").await["state"], "active");

    let (status, _) = post_form(
        &g,
        "/admin/channels/fax/enable",
        Some(&pair),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_page_escapes_untrusted_reasons() {
    let g = TestApp::bare().await;
    let (status, body) = g
        .disable_channel("telegram", "<script>alert('x')</script> & \"more\"")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, pair) = sign_in(&g).await;
    let (_, html) = page(&g, &pair).await;
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"),
        "{html}"
    );
    assert!(html.contains("id=\"state-telegram\">disabled<"), "{html}");
}

/// The history's changes, newest first.
async fn history(g: &Gateway) -> Vec<serde_json::Value> {
    let (status, body) = g.admin_get("/v1/admin/channels/history").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["history"].as_array().expect("history array").clone()
}

#[tokio::test]
async fn an_enabled_channel_drops_its_old_reason_and_the_history_keeps_the_ban_across_a_restart() {
    let g = TestApp::accepting().await;
    whatsapp_fails(
        &g.providers,
        1,
        400,
        131031,
        "(#131031) Business Account locked",
        None,
    )
    .await;
    g.on_whatsapp_and_telegram("c-1").await;

    let n = g
        .notify_and_wait(json!({"contact_id": "c-1", "text": "one"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:channel_banned", "telegram:sent"]);
    let row = g.channel_state("whatsapp").await;
    assert_eq!(row["state"], "banned", "{row}");
    assert!(row["reason"].as_str().unwrap().contains("131031"), "{row}");
    let h = history(&g).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(
        (&h[0]["channel"], &h[0]["from"], &h[0]["to"]),
        (&json!("whatsapp"), &json!("active"), &json!("banned"))
    );
    assert!(h[0]["reason"].as_str().unwrap().contains("131031"));
    assert_eq!(h[0]["back_at"], json!(null));
    assert_eq!(h[0]["carried_by_others"]["telegram"], 1, "{h:?}");

    let (status, row) = g.enable_channel("whatsapp").await;
    assert_eq!(status, StatusCode::OK, "{row}");
    let row = g.channel_state("whatsapp").await;
    assert_eq!(row["state"], "active", "{row}");
    assert_eq!(row["reason"], json!(null), "the ban's reason stayed: {row}");
    let n = g
        .notify_and_wait(json!({"contact_id": "c-1", "text": "two"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:sent"]);

    let h = history(&g).await;
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        (&h[0]["from"], &h[0]["to"]),
        (&json!("banned"), &json!("active"))
    );
    assert_eq!(h[0]["reason"], "enabled by admin");
    assert_eq!(h[1]["to"], "banned");
    assert_eq!(h[1]["back_at"], h[0]["at"], "{h:?}");
    assert_eq!(h[1]["carried_by_others"]["telegram"], 1, "{h:?}");

    // The history is in the store: a restart keeps it.
    let (_, _, rig) = g.terminate().await;
    let g = rig.restart().await;
    assert_eq!(history(&g).await, h);
}

#[tokio::test]
async fn a_successful_probe_and_an_ended_throttle_leave_no_old_reason() {
    let g = TestApp::with(Settings {
        whatsapp_cooldown: "1s",
        ..Settings::default()
    })
    .await;
    whatsapp_fails(
        &g.providers,
        1,
        400,
        368,
        "(#368) Temporarily blocked for policies violations",
        None,
    )
    .await;
    g.on_whatsapp_and_telegram("c-1").await;
    let n = g
        .notify_and_wait(json!({"contact_id": "c-1", "text": "one"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:channel_restricted", "telegram:sent"]);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let n = g
        .notify_and_wait(json!({"contact_id": "c-1", "text": "probe"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:sent"], "{n}");
    let row = g.channel_state("whatsapp").await;
    assert_eq!(row["state"], "active", "{row}");
    assert_eq!(row["reason"], json!(null), "{row}");
    let h = history(&g).await;
    assert_eq!(
        (&h[0]["to"], &h[0]["reason"]),
        (&json!("active"), &json!("probe succeeded"))
    );
    assert_eq!(h[1]["to"], "restricted");

    // A channel throttle of 1 s: waited out, then the row is active without the throttle's reason.
    whatsapp_fails(
        &g.providers,
        1,
        429,
        130429,
        "(#130429) Rate limit hit",
        Some("1"),
    )
    .await;
    let n = g
        .notify_and_wait(json!({"contact_id": "c-1", "text": "slow"}))
        .await;
    assert_eq!(trail(&n), ["whatsapp:throttled", "whatsapp:sent"], "{n}");
    let row = g.channel_state("whatsapp").await;
    assert_eq!(row["state"], "active", "{row}");
    assert_eq!(row["reason"], json!(null), "{row}");
    assert_eq!(
        history(&g).await.len(),
        2,
        "throttles are not in the history"
    );
}

/// The part of the page between `<tr id="row-{channel}"` and its `</tr>`.
fn row_html<'a>(html: &'a str, channel: &str) -> &'a str {
    let start = html
        .find(&format!("<tr id=\"row-{channel}\""))
        .unwrap_or_else(|| panic!("no row for {channel}: {html}"));
    &html[start..start + html[start..].find("</tr>").unwrap()]
}

#[tokio::test]
async fn during_a_ban_the_page_offers_the_right_buttons_says_how_it_comes_back_and_shows_the_timeline(
) {
    let g = TestApp::accepting().await;
    whatsapp_fails(
        &g.providers,
        1,
        400,
        131031,
        "(#131031) Business Account locked",
        None,
    )
    .await;
    g.on_whatsapp_and_telegram("c-1").await;
    let (status, _) = g.disable_channel("line", "no LINE account yet").await;
    assert_eq!(status, StatusCode::OK);
    for text in ["one", "two"] {
        g.notify_and_wait(json!({"contact_id": "c-1", "text": text}))
            .await;
    }
    assert_eq!(g.channel_state("whatsapp").await["state"], "banned");

    let (_, pair) = sign_in(&g).await;
    let (_, html) = page(&g, &pair).await;
    let whatsapp = row_html(&html, "whatsapp");
    assert!(whatsapp.contains("id=\"enable-whatsapp\""), "{whatsapp}");
    assert!(whatsapp.contains("id=\"disable-whatsapp\""), "{whatsapp}");
    assert!(
        whatsapp
            .contains("comes back only when you press Enable after Meta lifts the ban (appeal)"),
        "{whatsapp}"
    );
    // Readable times: seconds precision, UTC, an age; since and until both.
    assert!(whatsapp.contains("since <time datetime=\""), "{whatsapp}");
    assert!(whatsapp.contains("until — (no end set)"), "{whatsapp}");
    assert!(
        whatsapp.contains(" UTC <span class=\"muted\">("),
        "{whatsapp}"
    );
    let nanos = regex_free_fraction(&html);
    assert!(nanos.is_none(), "a raw timestamp with fractions: {nanos:?}");
    // The chart: one failed send (the ban answer) in the current minute.
    assert!(
        whatsapp.contains("<svg id=\"chart-whatsapp\""),
        "{whatsapp}"
    );
    assert!(whatsapp.contains("class=\"failed\""), "{whatsapp}");
    assert!(whatsapp.contains("0 sent / 1 failed"), "{whatsapp}");
    assert!(row_html(&html, "telegram").contains("2 sent / 0 failed"));

    // Active: no Enable. Disabled: no Disable, and how it comes back.
    let telegram = row_html(&html, "telegram");
    assert!(!telegram.contains("id=\"enable-telegram\""), "{telegram}");
    assert!(telegram.contains("id=\"disable-telegram\""), "{telegram}");
    let line = row_html(&html, "line");
    assert!(line.contains("id=\"enable-line\""), "{line}");
    assert!(!line.contains("id=\"disable-line\""), "{line}");
    assert!(line.contains("until someone presses Enable"), "{line}");

    // The timeline: the ban, newest first, with what Telegram carried since.
    let timeline = &html[html.find("<ol id=\"timeline\"").expect("a timeline")..];
    let ban = timeline
        .find("class=\"change to-banned\"")
        .expect("the ban");
    let disable = timeline
        .find("class=\"change to-disabled\"")
        .expect("the disable");
    assert!(ban < disable, "newest first: {timeline}");
    assert!(
        timeline.contains("Sent by other channels since then: telegram 2."),
        "{timeline}"
    );
    assert!(timeline.contains("Still out of rotation."), "{timeline}");

    // Enable: the reason goes, Enable goes, the timeline shows the return.
    let token = csrf(&html);
    let (status, _) = post_form(
        &g,
        "/admin/channels/whatsapp/enable",
        Some(&pair),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page(&g, &pair).await;
    let whatsapp = row_html(&html, "whatsapp");
    assert!(!whatsapp.contains("id=\"enable-whatsapp\""), "{whatsapp}");
    assert!(!whatsapp.contains("131031</td>"), "{whatsapp}");
    assert!(
        whatsapp.contains("id=\"reason-text-whatsapp\"></td>"),
        "{whatsapp}"
    );
    let timeline = &html[html.find("<ol id=\"timeline\"").unwrap()..];
    assert!(
        timeline.contains("banned → <span class=\"state active\">active</span> — enabled by admin"),
        "{timeline}"
    );
    assert!(
        timeline.contains("Sent by other channels meanwhile: telegram 2. Back in rotation"),
        "{timeline}"
    );
}

/// A fraction of a second in an RFC 3339 time (`:31.123`), which the page should not show.
fn regex_free_fraction(html: &str) -> Option<String> {
    let b = html.as_bytes();
    (2..b.len().saturating_sub(1)).find_map(|i| {
        (b[i] == b'.'
            && b[i - 1].is_ascii_digit()
            && b[i - 2].is_ascii_digit()
            && b[i + 1].is_ascii_digit()
            && i >= 3
            && b[i - 3] == b':')
            .then(|| html[i - 8..(i + 10).min(html.len())].to_string())
    })
}

/// A gateway with no channel table at all can't send anything: `/readyz` says so (503, with the
/// reason), and the admin API and page show every channel as not configured, not `active`.
#[tokio::test]
async fn a_gateway_without_channels_is_not_ready_and_shows_them_not_configured() {
    let g = Rig::new()
        .await
        .start_on(|_, dir| {
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\napi_keys = [\"{}\"]\nadmin_token = \"{ADMIN_TOKEN}\"\n\n\
                 [store]\npath = \"{}\"\n",
                crate::harness::API_KEY,
                dir.join("lifeboat.sled").display()
            )
        })
        .await;

    let (status, body) = g.get_public("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["reason"], "no channel is configured", "{body}");

    for channel in ["whatsapp", "telegram", "line", "email"] {
        let row = g.channel_state(channel).await;
        assert_eq!(row["configured"], false, "{row}");
        assert_eq!(row["state"], "not_configured", "{row}");
    }

    let (_, cookie) = sign_in(&g).await;
    let (status, html) = page(&g, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("id=\"state-telegram\">not configured</td>"),
        "{html}"
    );
    assert!(!html.contains("data-state=\"active\""), "{html}");
}

/// Every configured channel disabled: still ready (the queue accepts and keeps notifications),
/// with a warning in the body.
#[tokio::test]
async fn all_channels_disabled_is_ready_with_a_warning() {
    let g = TestApp::bare().await;

    let (status, body) = g.get_public("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    assert!(body["warning"].is_null(), "{body}");
    for channel in ["whatsapp", "telegram", "line", "email"] {
        let (status, _) = g.disable_channel(channel, "test").await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = g.get_public("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    assert!(
        body["warning"]
            .as_str()
            .is_some_and(|w| w.contains("disabled or banned")),
        "{body}"
    );
}
