//! The admin page's HTML, drawn on the server with no script: the page frame and its security
//! headers, the sign-in form, the channel table with its per-minute SVG chart and hints, the
//! timeline of recent state changes, and the error pages. Everything printed is HTML-escaped.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use lifeboat_channel::ChannelKind;
use serde_json::Value;

use crate::api::admin::{channel_row, history_rows};
use crate::api::AppState;
use crate::model::Timestamp;
use crate::web::html::escape;

/// The 403 page for a refused post.
pub(super) fn forbidden(why: &str) -> Response {
    html(
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!(
            "<p class=\"error\">{}</p><p><a href=\"/admin\">Back to the admin page</a></p>",
            escape(why)
        ),
    )
}

/// A complete page with the security headers every admin answer carries.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let text = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · Lifeboat</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Lifeboat · {title}</h1>\n{body}\n</body>\n</html>\n",
        title = escape(title),
    );
    let mut response = (status, text).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.4rem;\
text-align:left;vertical-align:top}th{background:#f4f4f4}.state{font-weight:bold}\
.active{color:#17702a}.throttled,.restricted{color:#a15c00}.banned,.disabled{color:#b00020}\
.error{color:#b00020}.muted{color:#777;font-size:.9em}form.inline{display:inline}\
input[type=text],input[type=password]{padding:.3rem}button{padding:.3rem .7rem}\
.hint{margin:.3rem 0 0;font-size:.9em;max-width:28rem}#timeline li{margin:.3rem 0}";

pub(super) fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\" id=\"message\">{}</p>\n", escape(m)))
        .unwrap_or_default();
    html(
        status,
        "Sign in",
        &format!(
            "{message}<form method=\"post\" action=\"/admin/login\" id=\"login\">\n\
             <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" \
             autocomplete=\"current-password\" required></label>\n\
             <button type=\"submit\" id=\"sign-in\">Sign in</button>\n</form>"
        ),
    )
}

fn text(row: &Value, key: &str) -> String {
    row[key].as_str().map(escape).unwrap_or_default()
}

/// A time as the page shows it: `2026-12-04 15:40:31 UTC (5 min ago)`, in a `<time>` element.
fn when(at: Timestamp, now: Timestamp) -> String {
    format!(
        "<time datetime=\"{}\">{} <span class=\"muted\">({})</span></time>",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        at.format("%Y-%m-%d %H:%M:%S UTC"),
        relative(at, now)
    )
}

/// `just now`, `5 min ago`, `in 3 h 20 min`, `2 d ago`.
fn relative(at: Timestamp, now: Timestamp) -> String {
    let secs = (now - at).num_seconds();
    let (future, secs) = (secs < 0, secs.unsigned_abs());
    let span = match secs {
        0..=9 => return "just now".into(),
        10..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => match secs % 3600 / 60 {
            0 => format!("{} h", secs / 3600),
            m => format!("{} h {m} min", secs / 3600),
        },
        _ => format!("{} d", secs / 86_400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A JSON time of a channel row.
fn time_of(v: &Value) -> Option<Timestamp> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What the admin should know about a channel in this state: how it comes back.
fn hint(kind: ChannelKind, state: &str, until: Option<Timestamp>, now: Timestamp) -> String {
    let provider = if kind == ChannelKind::Whatsapp {
        "Meta"
    } else {
        "the provider"
    };
    match state {
        "banned" => format!(
            "Out of rotation; its traffic goes to the next channel. It comes back only when you \
             press Enable after {provider} lifts the ban (appeal). Nothing brings it back by \
             itself."
        ),
        "restricted" => match until {
            Some(u) if u > now => format!(
                "Resting; its traffic goes to the next channel. After the cooldown, at {}, one \
                 notification probes it: success brings it back, another restriction rests it \
                 twice as long. Enable brings it back now.",
                when(u, now)
            ),
            _ => "Cooldown over: the next notification probes it; success brings it back. \
                  Enable brings it back now."
                .into(),
        },
        "disabled" => "Out of rotation until someone presses Enable (a configuration error: \
                       fix the credentials or settings first)."
            .into(),
        "throttled" => match until {
            Some(u) => format!(
                "The provider asked to slow down; sending resumes by itself at {}.",
                when(u, now)
            ),
            None => "The provider asked to slow down; sending resumes by itself.".into(),
        },
        _ => String::new(),
    }
}

/// Sends (green) and failures (red, stacked on top) per minute over the last hour, as an SVG
/// bar chart drawn on the server: no script needed.
fn chart(name: &str, minutes: &[(u64, u64)]) -> String {
    const W: usize = 4;
    const H: u64 = 40;
    let top = minutes.iter().map(|(s, f)| s + f).max().unwrap_or(0).max(1);
    let (sent, failed) = minutes
        .iter()
        .fold((0, 0), |(s, f), (ds, df)| (s + ds, f + df));
    let mut bars = String::new();
    for (i, (s, f)) in minutes.iter().enumerate() {
        let x = i * W;
        let hs = (s * H).div_ceil(top);
        let hf = (f * H).div_ceil(top);
        if hs > 0 {
            bars.push_str(&format!(
                "<rect class=\"sent\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{hs}\" fill=\"#2e8b57\"/>",
                H - hs,
                W - 1
            ));
        }
        if hf > 0 {
            bars.push_str(&format!(
                "<rect class=\"failed\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{hf}\" fill=\"#c62828\"/>",
                H.saturating_sub(hs + hf),
                W - 1
            ));
        }
    }
    let width = minutes.len() * W;
    format!(
        "<svg id=\"chart-{name}\" class=\"chart\" width=\"{width}\" height=\"{h}\" \
         viewBox=\"0 0 {width} {h}\" role=\"img\" aria-label=\"{name}: {sent} sent, {failed} \
         failed per minute over the last hour\">\
         <title>{name}: {sent} sent, {failed} failed in the last hour (peak {top}/min)</title>\
         <line x1=\"0\" y1=\"{H}\" x2=\"{width}\" y2=\"{H}\" stroke=\"#bbb\"/>{bars}</svg>\
         <br><span class=\"muted\">{sent} sent / {failed} failed · peak {top}/min · \
         60 min → now</span>",
        h = H + 1,
    )
}

/// The recent state changes, newest first: when a channel went out, why, what the others
/// carried meanwhile, when it came back.
fn timeline(state: &AppState, now: Timestamp) -> String {
    const SHOWN: usize = 30;
    let rows = history_rows(state);
    if rows.is_empty() {
        return "<p class=\"muted\" id=\"timeline-empty\">No state changes recorded yet.</p>"
            .into();
    }
    let mut items = String::new();
    for row in rows.iter().take(SHOWN) {
        let at = time_of(&row["at"]).unwrap_or(now);
        let to = text(row, "to");
        let reason = match text(row, "reason") {
            r if r.is_empty() => String::new(),
            r => format!(" — {r}"),
        };
        let mut after = String::new();
        if let Some(carried) = row["carried_by_others"].as_object() {
            let parts: Vec<String> = carried
                .iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(k, n)| format!("{} {}", escape(k), n))
                .collect();
            let period = if row["back_at"].is_null() {
                "since then"
            } else {
                "meanwhile"
            };
            after = if parts.is_empty() {
                format!("<br>Sent by other channels {period}: none.")
            } else {
                format!("<br>Sent by other channels {period}: {}.", parts.join(", "))
            };
        } else if row.get("carried_by_others").is_some() {
            after =
                "<br>Sent by other channels meanwhile: not known (the gateway restarted).".into();
        }
        match time_of(&row["back_at"]) {
            Some(back) => after.push_str(&format!(" Back in rotation {}.", when(back, now))),
            None if row.get("back_at").is_some() => after.push_str(" Still out of rotation."),
            None => {}
        }
        items.push_str(&format!(
            "<li id=\"change-{seq}\" class=\"change to-{to}\">{at} <b>{channel}</b>: \
             {from} → <span class=\"state {to}\">{to}</span>{reason}{after}</li>\n",
            seq = row["seq"],
            at = when(at, now),
            channel = text(row, "channel"),
            from = text(row, "from"),
        ));
    }
    format!("<ol id=\"timeline\" reversed>\n{items}</ol>")
}

/// The WhatsApp section under the table: templates and their state at Meta.
async fn whatsapp_section(state: &AppState, now: Timestamp) -> String {
    let details = match crate::api::admin::whatsapp_details(state).await {
        Ok(details) => details,
        Err(e) => {
            let reference = uuid::Uuid::new_v4();
            tracing::error!(%reference, error = %crate::store::error_chain(&e), "admin page: the store could not read the WhatsApp details");
            return format!(
                "<p class=\"error\" id=\"whatsapp-details-error\">The WhatsApp details could not \
                 be read: internal error (reference {reference}); see the gateway's log.</p>"
            );
        }
    };
    let mut out = String::from("<h2>WhatsApp</h2>\n");
    for (key, value) in &details {
        out.push_str(&match *key {
            "templates" => templates_table(value, now),
            "portfolio" => portfolio_line(value),
            "restrictions" => restrictions_list(value, now),
            "pricing" => pricing_line(value),
            _ => String::new(),
        });
    }
    out
}

fn pricing_line(pricing: &Value) -> String {
    let Some(categories) = pricing.as_object().filter(|c| !c.is_empty()) else {
        return String::new();
    };
    let parts: Vec<String> = categories
        .iter()
        .map(|(category, c)| {
            format!(
                "{}: {} billable, {} free",
                escape(category),
                c["billable"].as_u64().unwrap_or(0),
                c["free"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    format!(
        "<p id=\"pricing\">Messages Meta priced (from its status webhooks): {}. Notifications \
         that fell over to other channels are not in these counts.</p>\n",
        parts.join("; ")
    )
}

fn restrictions_list(restrictions: &Value, now: Timestamp) -> String {
    let items: Vec<String> = restrictions
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let kind = text(r, "restriction_type");
            let until = time_of(&r["until"])
                .map(|u| when(u, now))
                .unwrap_or_default();
            format!(
                "<li class=\"restriction\" data-type=\"{kind}\"><b>{kind}</b> until {until}: {}. \
                 It ends by itself then.</li>\n",
                text(r, "effect")
            )
        })
        .collect();
    if items.is_empty() {
        return String::new();
    }
    format!(
        "<p>Meta restricts the WhatsApp account:</p>\n<ul id=\"restrictions\">\n{}</ul>\n",
        items.concat()
    )
}

fn portfolio_line(p: &Value) -> String {
    let reached = p["reached_24h"].as_u64().unwrap_or(0);
    let text = match (&p["limit"], p["left"].as_u64()) {
        (Value::Number(limit), Some(left)) => format!(
            "Messaging limit of the business portfolio: {reached} of {limit} new people reached \
             in the last 24 h, <b id=\"portfolio-left\">{left} left</b> <span class=\"muted\">({})</span>.",
            escape(p["source"].as_str().unwrap_or(""))
        ),
        (Value::String(_), _) => format!(
            "Messaging limit of the business portfolio: unlimited ({reached} new people reached \
             in the last 24 h)."
        ),
        _ => format!(
            "Messaging limit of the business portfolio: not known yet (Meta names it in the \
             business_capability_update webhook; or set policy.whatsapp.portfolio_limit). \
             {reached} new people reached in the last 24 h."
        ),
    };
    format!("<p id=\"portfolio\">{text}</p>\n")
}

fn templates_table(templates: &Value, now: Timestamp) -> String {
    let rows: Vec<String> = templates
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let name = format!("{}/{}", text(t, "name"), text(t, "language"));
            let state = text(t, "state");
            let until = time_of(&t["paused_until"])
                .map(|u| format!(" until {}", when(u, now)))
                .unwrap_or_default();
            format!(
                "<tr class=\"template\" data-state=\"{state}\"><td>{name}</td>\
                 <td class=\"state {state}\">{state}{until}</td><td>{quality}</td>\
                 <td>{reason}</td></tr>\n",
                quality = text(t, "quality"),
                reason = text(t, "reason"),
            )
        })
        .collect();
    if rows.is_empty() {
        return "<p class=\"muted\" id=\"templates-empty\">No WhatsApp template used yet.</p>\n"
            .into();
    }
    format!(
        "<table id=\"templates\">\n<thead><tr><th>Template</th><th>State at Meta</th>\
         <th>Quality</th><th>Last change</th></tr></thead>\n<tbody>\n{}</tbody>\n</table>\n\
         <p class=\"muted\">A paused or disabled template is not tried: notifications using it \
         go to their alternative template, or to the next channel.</p>\n",
        rows.concat()
    )
}

/// The signed-in page: the channel table with a form per action, then the timeline.
pub(super) async fn dashboard(
    state: &AppState,
    csrf: &str,
    status: StatusCode,
    message: Option<&str>,
) -> Response {
    let csrf = escape(csrf);
    let now = state.clock.now();
    let mut rows = String::new();
    for kind in ChannelKind::ALL {
        let read = async {
            Ok::<_, crate::store::StoreError>((
                channel_row(state, kind).await?,
                state.states.per_minute(kind, now).await?,
            ))
        };
        let (row, minutes) = match read.await {
            Ok(read) => read,
            Err(e) => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, error = %crate::store::error_chain(&e), "admin page: the store could not read the channel table");
                return html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Lifeboat admin",
                    &format!(
                        "<p class=\"error\" id=\"message\">The channel table could not be read: \
                         internal error (reference {reference}); see the gateway's log.</p>"
                    ),
                );
            }
        };
        let name = kind.as_str();
        let channel_state = text(&row, "state");
        let state_label = channel_state.replace('_', " ");
        let configured = if row["configured"].as_bool() == Some(true) {
            "yes".to_string()
        } else {
            format!(
                "no<br><span class=\"muted\">{}</span>",
                text(&row, "not_configured_reason")
            )
        };
        let last_error = match &row["last_error"] {
            Value::Object(_) => {
                let e = &row["last_error"];
                let code = e["code"]
                    .as_str()
                    .map(|c| format!(" ({})", escape(c)))
                    .unwrap_or_default();
                format!(
                    "{}{code}<br>{}<br>{}",
                    text(e, "outcome"),
                    text(e, "detail"),
                    time_of(&e["at"]).map(|t| when(t, now)).unwrap_or_default(),
                )
            }
            _ => String::new(),
        };
        let until = time_of(&row["until"]);
        let since = time_of(&row["since"])
            .map(|t| when(t, now))
            .unwrap_or_default();
        let until_text = until
            .map(|t| when(t, now))
            .unwrap_or_else(|| "— (no end set)".into());
        let hint = match hint(kind, &channel_state, until, now) {
            h if h.is_empty() => String::new(),
            h => format!("<p class=\"hint\" id=\"hint-{name}\">{h}</p>"),
        };
        let enable = if channel_state != "active" {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/admin/channels/{name}/enable\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button type=\"submit\" id=\"enable-{name}\">Enable</button></form>\n"
            )
        } else {
            String::new()
        };
        let disable = if channel_state != "disabled" {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/admin/channels/{name}/disable\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"text\" name=\"reason\" id=\"reason-{name}\" placeholder=\"reason\" \
                 maxlength=\"500\" required> \
                 <button type=\"submit\" id=\"disable-{name}\">Disable</button></form>\n"
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr id=\"row-{name}\" data-state=\"{channel_state}\">\n\
             <td>{name}</td>\n<td>{configured}</td>\n\
             <td class=\"state {channel_state}\" id=\"state-{name}\">{state_label}</td>\n\
             <td class=\"reason\" id=\"reason-text-{name}\">{reason}{hint}</td>\n\
             <td>since {since}<br>until {until_text}</td>\n<td>{last_error}</td>\n\
             <td>{chart}</td>\n<td>\n{enable}{disable}</td>\n</tr>\n",
            reason = text(&row, "reason"),
            chart = chart(name, &minutes),
        ));
    }
    let message = message
        .map(|m| format!("<p class=\"error\" id=\"message\">{}</p>\n", escape(m)))
        .unwrap_or_default();
    let body = format!(
        "{message}<p id=\"updated\">Last updated {updated} · <a href=\"/admin\" id=\"refresh\">\
         Refresh</a> <span class=\"muted\">(the page does not reload by itself, so nothing you \
         type is lost)</span></p>\n\
         <table>\n<thead><tr><th>Channel</th><th>Configured</th><th>State</th>\
         <th>Reason</th><th>Since / until</th><th>Last error</th>\
         <th>Sent / failed per minute (1 h)</th><th>Actions</th></tr></thead>\n\
         <tbody>\n{rows}</tbody>\n</table>\n{whatsapp}\
         <h2>Recent changes</h2>\n{timeline}\n\
         <p class=\"muted\">Counts per minute are the whole fleet's, kept in the store for an \
         hour. The changes are kept in the store (the last {limit}).</p>\n\
         <form method=\"post\" action=\"/admin/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
        updated = when(now, now),
        whatsapp = whatsapp_section(state, now).await,
        timeline = timeline(state, now),
        limit = crate::states::history::HISTORY_LIMIT,
    );
    html(status, "Channels", &body)
}

pub(super) fn no_such_channel(name: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        "No such channel",
        &format!(
            "<p class=\"error\">There is no channel named “{}”.</p>\
             <p><a href=\"/admin\">Back to the admin page</a></p>",
            escape(name)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_seconds_with_an_age() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T15:40:31.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = now - chrono::Duration::seconds(5 * 60 + 7);
        let shown = when(at, now);
        assert!(shown.contains(">2026-12-04 15:35:24 UTC <"), "{shown}");
        assert!(shown.contains("(5 min ago)"), "{shown}");
        assert!(
            shown.contains("datetime=\"2026-12-04T15:35:24Z\""),
            "{shown}"
        );
        assert_eq!(relative(now, now), "just now");
        assert_eq!(
            relative(now + chrono::Duration::seconds(3 * 3600 + 1200), now),
            "in 3 h 20 min"
        );
        assert_eq!(relative(now - chrono::Duration::days(2), now), "2 d ago");
    }

    #[test]
    fn the_chart_has_a_bar_per_busy_minute_scaled_to_the_peak() {
        let mut minutes = vec![(0, 0); 60];
        minutes[0] = (4, 0);
        minutes[59] = (1, 1);
        let svg = chart("whatsapp", &minutes);
        assert!(svg.starts_with("<svg id=\"chart-whatsapp\""), "{svg}");
        assert_eq!(svg.matches("class=\"sent\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"failed\"").count(), 1, "{svg}");
        // The peak (4/min) is full height; the last minute's 1 + 1 stack to half.
        assert!(
            svg.contains("x=\"0\" y=\"0\" width=\"3\" height=\"40\""),
            "{svg}"
        );
        assert!(
            svg.contains("x=\"236\" y=\"20\" width=\"3\" height=\"10\""),
            "{svg}"
        );
        assert!(svg.contains("5 sent / 1 failed"), "{svg}");
    }
}
