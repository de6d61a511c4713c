//! The admin page over plain HTTP (no browser): sign-in, the cookie's flags, CSRF, escaping,
//! and that the admin token never shows up in a page, a URL or a cookie.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{setup, Gateway, Settings, ADMIN_TOKEN};

/// A client that shows redirects instead of following them (to see the sign-in's cookie).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in; returns the `Set-Cookie` header and the `name=value` to send back.
async fn sign_in(g: &Gateway) -> (String, String) {
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

async fn page(g: &Gateway, cookie: &str) -> (StatusCode, String) {
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
    let (dir, providers) = setup().await;
    let g = Gateway::start(
        dir.path(),
        &providers.config(dir.path(), &Settings::default()),
    )
    .await;

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
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
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

    let (_, logs) = g.terminate().await;
    assert!(!logs.contains(ADMIN_TOKEN), "the token was logged");
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_public_url_is_https() {
    let (dir, providers) = setup().await;
    let config = providers.config(dir.path(), &Settings::default()).replacen(
        "[server]\n",
        "[server]\npublic_url = \"https://notify.example\"\n",
        1,
    );
    let g = Gateway::start(dir.path(), &config).await;
    let (set_cookie, _) = sign_in(&g).await;
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
}

#[tokio::test]
async fn posts_without_a_session_or_csrf_token_are_403_and_change_nothing() {
    let (dir, providers) = setup().await;
    let g = Gateway::start(
        dir.path(),
        &providers.config(dir.path(), &Settings::default()),
    )
    .await;
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
    let (dir, providers) = setup().await;
    let g = Gateway::start(
        dir.path(),
        &providers.config(dir.path(), &Settings::default()),
    )
    .await;
    let (status, body) = g
        .admin_post(
            "/v1/admin/channels/telegram/disable",
            json!({"reason": "<script>alert('x')</script> & \"more\""}),
        )
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

/// A gateway with no channel table at all can't send anything: `/readyz` says so (503, with the
/// reason), and the admin API and page show every channel as not configured, not `active`.
#[tokio::test]
async fn a_gateway_without_channels_is_not_ready_and_shows_them_not_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_keys = [\"{}\"]\nadmin_token = \"{ADMIN_TOKEN}\"\n\n\
         [store]\npath = \"{}\"\n",
        crate::harness::API_KEY,
        dir.path().join("lifeboat.sled").display()
    );
    let g = Gateway::start(dir.path(), &config).await;

    let (status, body) = g.send(reqwest::Method::GET, "/readyz", None, None).await;
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
    let (dir, providers) = setup().await;
    let g = Gateway::start(
        dir.path(),
        &providers.config(dir.path(), &Settings::default()),
    )
    .await;
    let (status, body) = g.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    assert!(body["warning"].is_null(), "{body}");
    for channel in ["whatsapp", "telegram", "line", "email"] {
        let (status, _) = g
            .admin_post(
                &format!("/v1/admin/channels/{channel}/disable"),
                json!({"reason": "test"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = g.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    assert!(
        body["warning"]
            .as_str()
            .is_some_and(|w| w.contains("disabled or banned")),
        "{body}"
    );
}
